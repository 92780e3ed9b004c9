"""The Gradescope autograder zip (grader/gradescope.py).

``test_zip_layout`` checks the zip itself (no Docker). The docker-marked test
runs the zip as Gradescope would, in a container laid out like Gradescope's:
the zip's content in ``/autograder/source``, ``setup.sh`` run once as root,
then for each submission its files in ``/autograder/submission`` and
``/autograder/run_autograder``, and ``/autograder/results/results.json``
checked against Gradescope's documented format.

Said plainly, what differs from Gradescope: the container is the kit's runner
image (Debian bookworm, Python 3.11, run as root), not Gradescope's Ubuntu
image, and it has no network, so ``setup.sh`` runs for real but pip installs
from a wheelhouse made on the host (``pip download`` of the zip's
requirements.txt, cached) and apt-get is not needed (the image has the
Debian packages setup.sh asks for; setup.sh only calls apt-get for missing
ones).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from graderkit import make_demo_kit, require_engine
from grader import gradescope, image, labs

KIT = Path(__file__).resolve().parents[1]
FIXTURES = KIT / "tests" / "fixtures"
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
WHEELS = image.WHEEL_CACHE


def build(tmp_path: Path, lab_id: str) -> tuple[labs.Lab, Path]:
    lab = labs.find_lab(lab_id)
    return lab, gradescope.build_zip(lab, tmp_path / "dist")


def test_zip_layout(tmp_path):
    lab, path = build(tmp_path, "lab3")
    assert path.name == "gradescope-lab3.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in zf.infolist()}
        setup = zf.read("setup.sh").decode()
    for script in ("setup.sh", "run_autograder"):
        assert script in names and modes[script] & 0o111, f"{script} must be an executable at the zip's root"
    assert "requirements.txt" in names and "pytest>=7.4" in setup + "".join(gradescope.REQUIREMENTS)
    assert f"kit/labs/{lab.name}/lab.yaml" in names and f"kit/reference/{lab.name}/hidden.yaml" in names
    assert any(n.startswith(f"kit/labs/{lab.name}/tests/test_") for n in names)
    assert any(n.startswith(f"kit/reference/{lab.name}/tests/test_hidden") for n in names)
    for module in ("plugin.py", "sandbox_plugin.py", "harness.py", "labs.py", "reports.py", "gradescope.py"):
        assert f"kit/grader/{module}" in names
    assert "kit/grader/startup/sitecustomize.py" in names
    # No reference solution: no module of the lab anywhere in the zip.
    assert not [n for n in names if Path(n).name in lab.modules], "the zip must not carry a solution"
    assert not [n for n in names if n.startswith("kit/grader/") and Path(n).name in ("batch.py", "cluster.py")]


def validate_results(doc: dict) -> None:
    """Gradescope's results.json format (https://gradescope-autograders.readthedocs.io/en/latest/specs/)."""
    assert set(doc) <= {"score", "execution_time", "output", "output_format", "stdout_visibility",
                        "visibility", "extra_data", "tests", "leaderboard", "test_output_format"}
    assert isinstance(doc["score"], (int, float)) and isinstance(doc["execution_time"], (int, float))
    assert isinstance(doc["output"], str) and doc.get("stdout_visibility", "hidden") in VISIBILITIES
    assert isinstance(doc["tests"], list) and doc["tests"]
    for test in doc["tests"]:
        assert set(test) <= {"score", "max_score", "status", "name", "name_format", "number", "output",
                             "output_format", "tags", "visibility", "extra_data"}
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in ("passed", "failed") and test["visibility"] in VISIBILITIES
    assert abs(sum(t["max_score"] for t in doc["tests"]) - 100) < 1e-6
    assert abs(sum(t["score"] for t in doc["tests"]) - doc["score"]) < 0.05


def wheelhouse(requirements: str) -> Path:
    """Wheels for the runner image's Python, downloaded once from PyPI and cached (like grader/image.py)."""
    key = hashlib.sha256((requirements + image.PYTHON_VERSION).encode()).hexdigest()[:16]
    cache = WHEELS / f"gradescope-{key}"
    if not (cache / "requirements.txt").is_file():
        partial = cache.with_name(cache.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "req.txt").write_text(requirements)
        platforms = [a for p in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
                                 "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64") for a in ("--platform", p)]
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(partial),
                               "--python-version", image.PYTHON_VERSION, "--implementation", "cp",
                               "--only-binary=:all:", *platforms, "-r", str(partial / "req.txt")],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"pip download failed: {proc.stderr[-2000:]}"
        (partial / "req.txt").rename(partial / "requirements.txt")
        partial.rename(cache)
    return cache


def tar_of(files: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_file(container, path: str) -> str:
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return tar.extractfile(tar.getmembers()[0]).read().decode()


def grade_in(container, files: dict[str, bytes]) -> tuple[int, str, dict | None]:
    """One Gradescope submission: fresh /autograder/submission and results, then run_autograder."""
    container.exec_run(["sh", "-c", "rm -rf /autograder/submission /autograder/results && "
                        "mkdir -p /autograder/submission /autograder/results"], user="root")
    container.put_archive("/autograder/submission", tar_of(files))
    code, output = container.exec_run(["/autograder/run_autograder"], user="root")
    output = output.decode("utf-8", "replace")
    check = container.exec_run(["test", "-f", "/autograder/results/results.json"], user="root")
    doc = json.loads(read_file(container, "/autograder/results/results.json")) if check.exit_code == 0 else None
    return code, output, doc


def zip_files(path: Path) -> tuple[dict[str, bytes], dict[str, int]]:
    with zipfile.ZipFile(path) as zf:
        return ({info.filename: zf.read(info) for info in zf.infolist()},
                {info.filename: (info.external_attr >> 16) & 0o777 for info in zf.infolist()})


def install(container, path: Path) -> None:
    """What Gradescope does with an uploaded zip: unzip into /autograder/source, run_autograder beside it."""
    files, modes = zip_files(path)
    container.exec_run(["sh", "-c", "rm -rf /autograder/source && mkdir -p /autograder/source"], user="root")
    container.put_archive("/autograder/source", tar_of(files, modes))
    container.exec_run(["cp", "/autograder/source/run_autograder", "/autograder/run_autograder"], user="root")


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A container laid out like Gradescope's, with lab 3's zip installed and its setup.sh run."""
    client = require_engine()
    lab, path = build(tmp_path_factory.mktemp("gradescope"), "lab3")
    wheels = wheelhouse(zip_files(path)[0]["requirements.txt"].decode())
    container = client.containers.run(image.image_tag(), ["sleep", "infinity"], user="root", detach=True,
                                      network_mode="none", volumes={str(wheels): {"bind": "/wheels", "mode": "ro"}},
                                      labels={"org.ipclab.test": "gradescope"}, shm_size="1g")
    try:
        install(container, path)
        code, out = container.exec_run(["bash", "/autograder/source/setup.sh"], user="root",
                                       environment={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheels"})
        assert code == 0, f"setup.sh failed: {out.decode()[-3000:]}"
        yield container
    finally:
        container.remove(force=True)


def no_student_processes(container) -> None:
    leftover = container.exec_run(["pgrep", "-a", "-u", gradescope.STUDENT_USER], user="root")
    assert leftover.exit_code == 1, f"processes of the student user left running: {leftover.output.decode()}"


@pytest.mark.docker
def test_lab3_reference_broken_and_empty(box, tmp_path):
    lab, path = build(tmp_path, "lab3")
    install(box, path)
    reference = {f"lab3/{m}": (lab.reference_dir / m).read_bytes() for m in lab.modules}  # one folder down
    code, out, doc = grade_in(box, reference)
    assert code == 0 and doc is not None, out[-3000:]
    validate_results(doc)
    assert doc["score"] == 100, out[-3000:]
    hidden = {t["name"] for t in doc["tests"] if t["visibility"] == "after_published"}
    assert hidden == {key for key, spec in lab.tests.items() if spec.hidden} and hidden

    fixture = FIXTURES / "lab3" / "no_mutex"
    broken = {m: (lab.reference_dir / m).read_bytes() for m in lab.modules}
    broken.update({p.name: p.read_bytes() for p in fixture.glob("*.py")})
    code, out, doc = grade_in(box, broken)
    assert code == 0 and doc is not None, out[-3000:]
    validate_results(doc)
    scores = {t["name"]: t for t in doc["tests"]}
    for key in _must_fail(fixture):
        assert scores[key]["score"] < scores[key]["max_score"], f"{key} should catch {fixture.name}: {out[-2000:]}"
    assert doc["score"] < 100

    # A submission without the lab's files is graded (to 0, saying why), not an autograder error.
    code, out, doc = grade_in(box, {"notes.txt": b"forgot the code"})
    assert code == 0 and doc is not None, out[-3000:]
    validate_results(doc)
    assert doc["score"] == 0 and "ringbuffer.py" in doc["output"]
    no_student_processes(box)


ATTACK = """\
import json, os, subprocess, sys
fake = {"score": 100, "execution_time": 1, "output": "", "tests": []}
for path in ("/autograder/results/results.json", "/autograder/source/kit/labs/lab3_shm/tests/test_ringbuffer.py",
             "/kit/labs/lab3_shm/tests/test_ringbuffer.py", "/kit/grader/plugin.py"):
    try:
        with open(path, "w") as f:
            json.dump(fake, f)
    except OSError:
        pass
subprocess.Popen(["sleep", "4242"], start_new_session=True)  # a daemon outliving the tests
try:
    os.kill(os.getppid(), 9)  # the supervisor: root's, out of reach
except OSError:
    pass
"""


@pytest.mark.docker
def test_lab3_attack_gains_nothing(box, tmp_path):
    lab, path = build(tmp_path, "lab3")
    install(box, path)
    attack = ATTACK + (lab.folder / lab.modules[0]).read_text()  # the stub's API after the attack
    code, out, doc = grade_in(box, {lab.modules[0]: attack.encode()})
    assert code == 0 and doc is not None, out[-3000:]
    validate_results(doc)
    assert doc["score"] == 0, out[-3000:]
    unchanged = box.exec_run(["cmp", "/autograder/source/kit/grader/plugin.py", "/kit/grader/plugin.py"], user="root")
    assert unchanged.exit_code == 0
    no_student_processes(box)


@pytest.mark.docker
@pytest.mark.parametrize("hostile, earns", [("sleep_past_wall_clock", 0), ("fork_bomb", 0), ("background_process", 60)])
def test_hostile_submissions_on_the_demo_lab(box, tmp_path, hostile, earns):
    """The grader's demo lab (tests/graderkit.py, wall clock 20 s) against the kit's hostile fixtures."""
    lab = make_demo_kit(tmp_path / "kit")
    install(box, gradescope.build_zip(lab, tmp_path / "dist"))
    code, out, doc = grade_in(box, {"demo.py": (FIXTURES / "hostile" / hostile / "demo.py").read_bytes()})
    assert code == 0 and doc is not None, out[-3000:]
    validate_results(doc)
    assert doc["score"] == earns, out[-3000:]
    if hostile == "sleep_past_wall_clock":
        assert "wall-clock" in doc["output"], doc["output"]
    no_student_processes(box)


def _must_fail(fixture: Path) -> list[str]:
    import yaml

    return yaml.safe_load((fixture / "fixture.yaml").read_text())["must_fail"]
