"""The Docker grader on a tiny demo lab: reports, sandbox limits, attacks, hostile code, bad input.

Each fixture submission under tests/fixtures/attacks and tests/fixtures/hostile
is graded for real in the runner image; its ``fixture.yaml`` says how many
points it honestly earns, and the grader must never give it more.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path

import psutil
import pytest
import yaml

from graderkit import FIXTURES, make_demo_kit, my_containers, require_engine

from grader import grade

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine():
    return require_engine()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_kit(tmp_path_factory.mktemp("kit"))


def graded(demo, engine, submission: Path, out: Path, **kwargs) -> grade.GradeResult:
    result = grade.grade_submission(demo, submission, out, **kwargs)
    assert my_containers(engine) == [], "the grader left a container behind"
    return result


def statuses(report: dict) -> dict[str, str]:
    return {row["name"]: row["status"] for row in report["tests"]}


# -- the happy path and the four reports -----------------------------------------------


def test_reference_scores_100_in_all_four_reports(demo, engine, tmp_path):
    import junitparser

    result = graded(demo, engine, demo.reference_dir, tmp_path / "out", student_id="alice")
    assert (result.status, result.score, result.max_score) == ("graded", 100, 100), result.reason
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["schema_version"] == 1 and report["image"]["id"].startswith("sha256:")
    assert report["resources"]["cpu_seconds"] > 0 and report["resources"]["peak_memory_bytes"] > 0
    assert report["resources"]["peak_processes"] >= 1
    assert report["limits"]["memory"] == "512m" and report["limits"]["wall_clock"] == 20

    gradescope = json.loads((tmp_path / "out/results.json").read_text())
    assert gradescope["score"] == 100 and len(gradescope["tests"]) == 4
    assert {t["visibility"] for t in gradescope["tests"] if t["name"].startswith("test_hidden")} == {"after_published"}
    assert {t["visibility"] for t in gradescope["tests"] if not t["name"].startswith("test_hidden")} == {"visible"}

    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "out/junit.xml"))
    cases = [case for suite in xml for case in suite]
    assert len(cases) == 4 and all(case.is_passed for case in cases)

    html = (tmp_path / "out/report.html").read_text()
    assert "100 / 100" in html and "alice" in html


def test_stub_scores_0_with_feedback_and_hints(demo, engine, tmp_path):
    import junitparser

    result = graded(demo, engine, demo.folder, tmp_path / "out")
    assert (result.status, result.score) == ("graded", 0)
    rows = {row["name"]: row for row in result.report["tests"]}
    assert "NotImplementedError" in rows["test_demo.py::test_add"]["feedback"]
    assert rows["test_demo.py::test_add"]["hint"] == "Return the sum, not the product."
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "out/junit.xml"))
    assert not any(case.is_passed for suite in xml for case in suite)
    html = (tmp_path / "out/report.html").read_text()
    assert "0 / 100" in html and "Return the sum, not the product." in html


def test_partial_submission_from_a_zip_one_folder_down(demo, engine, tmp_path):
    archive = tmp_path / "bob.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("bob-lab9/demo.py", "def add(a, b):\n    return a + b\n")
        zf.writestr("bob-lab9/notes.txt", "extra file")
    result = graded(demo, engine, archive, tmp_path / "out")
    assert result.status == "graded" and result.score == 60
    assert result.report["submission"]["id"] == "bob"
    assert any("notes.txt" in note for note in result.report["notes"])


def test_only_tests_reruns_one_test(demo, engine, tmp_path):
    result = graded(demo, engine, demo.reference_dir, tmp_path / "out", only_tests=["test_demo.py::test_param"],
                    cpuset="0")
    assert (result.score, result.max_score) == (30, 30)
    assert [row["name"] for row in result.report["tests"]] == ["test_demo.py::test_param"]


# -- attacks: none scores more than it honestly earns ------------------------------------


def _fixtures(kind: str):
    return sorted(p.parent for p in (FIXTURES / kind).glob("*/fixture.yaml"))


@pytest.mark.parametrize("fixture", _fixtures("attacks"), ids=lambda p: p.name)
def test_attack_gains_nothing(demo, engine, fixture, tmp_path):
    spec = yaml.safe_load((fixture / "fixture.yaml").read_text())
    result = graded(demo, engine, fixture, tmp_path / "out")
    assert result.status == "graded", result.reason
    assert result.score <= spec["earns"], f"{fixture.name} ({spec['attack']}) scored {result.score}"
    assert (tmp_path / "out/results.json").exists()


# -- hostile code: contained, reported, cleaned up ------------------------------------------


@pytest.mark.parametrize("fixture", _fixtures("hostile"), ids=lambda p: p.name)
def test_hostile_submission_is_contained(demo, engine, fixture, tmp_path):
    spec = yaml.safe_load((fixture / "fixture.yaml").read_text())
    before = {p.pid for p in psutil.process_iter()}
    started = time.monotonic()
    result = graded(demo, engine, fixture, tmp_path / "out")
    took = time.monotonic() - started
    report = result.report
    assert result.status == "graded", result.reason
    assert result.score <= spec["earns"]
    assert took < report["limits"]["wall_clock"] + 30, "the grader overran its own wall clock"
    expect = spec.get("expect") or {}
    for name, status in (expect.get("statuses") or {}).items():
        assert statuses(report)[name] == status, report["tests"]
    for name, text in (expect.get("feedback") or {}).items():
        row = next(r for r in report["tests"] if r["name"] == name)
        assert text in row["feedback"] + row["output"], row
    if expect.get("event"):
        assert report["events"][expect["event"]], report["events"]
        assert "wall-clock" in report["reason"]
    # Nothing of the submission survives on the host: no process is left in the container's cgroup.
    assert report["container_id"]
    assert not _processes_in_cgroup_of(report["container_id"], exclude=before)
    assert (tmp_path / "out/report.html").exists()


def _processes_in_cgroup_of(container_id: str, exclude: set[int]) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        if proc.pid in exclude:
            continue
        try:
            if container_id in Path(f"/proc/{proc.pid}/cgroup").read_text():
                found.append(proc.pid)
        except OSError:
            pass
    return found


def test_big_output_is_capped(demo, engine, tmp_path):
    result = graded(demo, engine, FIXTURES / "hostile" / "big_output", tmp_path / "out")
    assert len(json.dumps(result.report)) < 2_000_000
    assert (tmp_path / "out/report.json").stat().st_size < 2_000_000


def test_memory_hog_is_reported(demo, engine, tmp_path):
    report = graded(demo, engine, FIXTURES / "hostile" / "memory_hog", tmp_path / "out").report
    assert report["events"]["oom_killed"] or "MemoryError" in json.dumps(report["tests"])


# -- bad input -------------------------------------------------------------------------------


def test_import_error_and_syntax_error_cost_points_with_a_reason(demo, engine, tmp_path):
    (tmp_path / "boom").mkdir()
    (tmp_path / "boom/demo.py").write_text("raise RuntimeError('boom at import')\n")
    report = graded(demo, engine, tmp_path / "boom", tmp_path / "out1").report
    assert report["score"] == 0 and "boom at import" in report["tests"][0]["feedback"]

    (tmp_path / "syntax").mkdir()
    (tmp_path / "syntax/demo.py").write_text("def add(a, b)\n    return a + b\n")
    result = graded(demo, engine, tmp_path / "syntax", tmp_path / "out2")
    assert result.status == "graded" and result.score == 0
    assert any("syntax error on line 1" in p for p in result.report["problems"])


@pytest.mark.parametrize("name", ["empty", "misnamed", "traversal"])
def test_unusable_submission_is_graded_zero_with_a_sentence(demo, tmp_path, name):
    # No container is needed for these: they never reach one.
    folder = tmp_path / "sub"
    folder.mkdir()
    target = folder
    if name == "misnamed":
        (folder / "Demo.py").write_text("def add(a, b):\n    return a + b\n")
    elif name == "traversal":
        target = tmp_path / "evil.zip"
        with zipfile.ZipFile(target, "w") as zf:
            zf.writestr("../../demo.py", "x = 1\n")
    result = grade.grade_submission(demo, target, tmp_path / "out")
    assert result.status == "graded" and result.score == 0
    assert result.reason and result.reason[0].isalpha()
    assert {row["status"] for row in result.report["tests"]} == {"not_run"}
    assert (tmp_path / "out/results.json").exists() and (tmp_path / "out/report.html").exists()


# -- grader errors are never a student's zero ----------------------------------------------


def test_missing_image_is_a_grader_error_not_a_zero(demo, engine, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")  # stale from an earlier run
    result = grade.grade_submission(demo, demo.reference_dir, out, image="ipclab-runner:no-such-version")
    assert result.status == "grader_error" and "not built" in result.reason
    assert json.loads((out / "report.json").read_text())["status"] == "grader_error"
    assert not (out / "results.json").exists() and not (out / "junit.xml").exists()
    assert "Not graded" in (out / "report.html").read_text()


def test_engine_down_is_a_grader_error(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    result = grade.grade_submission(demo, demo.reference_dir, tmp_path / "out")
    assert result.status == "grader_error" and "Docker" in result.reason


def test_cli_exit_status_keeps_graded_and_grader_error_apart(demo, engine, tmp_path):
    from grader.__main__ import main

    assert main(["grade", "--lab", str(demo.folder), str(demo.folder), "--out", str(tmp_path / "a")]) == 0
    assert main(["grade", "--lab", str(demo.folder), str(demo.folder), "--out", str(tmp_path / "b"),
                 "--image", "ipclab-runner:no-such-version"]) == 3
