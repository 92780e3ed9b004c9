"""The student bundle hides every solution; the Classroom workflow grades public tests."""

import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from grader import distribute, labs

ROOT = labs.KIT_ROOT


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    tarball = distribute.student_bundle(out)
    with tarfile.open(tarball) as tar:
        tar.extractall(out / "unpacked", filter="data")
    (top,) = (out / "unpacked").iterdir()
    return tarball, top


def _texts(folder: Path):
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def test_bundle_is_named_by_version_and_has_every_lab(bundle):
    tarball, top = bundle
    assert tarball.name == f"ipclab-student-{distribute.kit_version()}.tar.gz"
    for lab in labs.all_labs():
        for module in lab.modules:
            assert (top / "labs" / lab.name / module).is_file()
        assert (top / "labs" / lab.name / "lab.yaml").is_file()
    assert "make test-lab1" in (top / "README.md").read_text()


def test_bundle_holds_no_reference_code_and_no_hidden_test(bundle):
    _, top = bundle
    assert not (top / "reference").exists() and not (top / "tests").exists()
    contents = [data for _, data in _texts(top)]
    reference_files = [p for p in (ROOT / "reference").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert reference_files
    for ref in reference_files:
        data = ref.read_bytes().strip()
        assert not any(data in text for text in contents), f"{ref} is inside the bundle"
    for lab in labs.all_labs():
        for key, spec in lab.tests.items():
            if spec.hidden:
                name = key.split("::")[-1].encode()
                leaks = [str(p) for p, text in _texts(top) if b"def " + name in text]
                assert not leaks, f"hidden test {key} appears in {leaks}"


def test_bundle_sets_up_and_grades_lab1_on_its_own(bundle):
    _, top = bundle
    setup = subprocess.run(["make", "setup"], cwd=top, capture_output=True, text=True, timeout=600)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-2000:]
    run = subprocess.run(["make", "test-lab1"], cwd=top, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0, "the untouched stub must not pass"
    assert "lab1: 0/100" in run.stdout, run.stdout[-3000:]
    assert "Traceback" not in run.stdout


@pytest.mark.parametrize("lab", labs.all_labs(), ids=lambda lab: lab.id)
def test_classroom_workflow_grades_every_public_test(lab, tmp_path):
    path = distribute.write_classroom(lab, tmp_path)
    assert path.relative_to(tmp_path).as_posix() == f"classroom-{lab.id}/.github/workflows/classroom.yml"
    workflow = yaml.safe_load(path.read_text())
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    graders = [s for s in steps if s.get("uses", "").startswith("classroom-resources/autograding-command-grader")]
    public = {k: s for k, s in lab.tests.items() if not s.hidden}
    assert [g["with"]["test-name"] for g in graders] == list(public)
    assert sum(g["with"]["max-score"] for g in graders) == sum(s.points for s in public.values())
    reporter = steps[-1]
    assert reporter["uses"].startswith("classroom-resources/autograding-grading-reporter")
    assert reporter["with"]["runners"].split(",") == [g["id"] for g in graders]
    assert all(f"{g['id'].upper()}_RESULTS" in reporter["env"] for g in graders)
    assert steps[0]["uses"].startswith("actions/checkout")
