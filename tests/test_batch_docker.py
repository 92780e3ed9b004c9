"""Batch grading with the real Docker grader: a generated class of 40, interrupted and resumed.

Needs the engine and the runner image (fails, never skips, under
IPCLAB_REQUIRE_DOCKER=1). Takes a few minutes: it is the acceptance test of
batch grading, so it grades the class three ways (one submission at a time,
interrupted then resumed, straight through) and compares them.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graderkit import require_engine
from grader import batch, grade, labs, sandbox
from grader.executor import LocalPool

pytestmark = pytest.mark.docker

KIT = Path(__file__).resolve().parents[1]
CLASS_SIZE = 40


@pytest.fixture(scope="module")
def engine():
    return require_engine()


def gradebook(out: Path) -> dict[str, dict]:
    return {row["student_id"]: row for row in csv.DictReader(io.StringIO((out / "gradebook.csv").read_text()))}


def containers_of(client, pid: int) -> list:
    return [c for c in client.containers.list(all=True, filters={"label": sandbox.LABEL})
            if c.labels.get(sandbox.OWNER_LABEL, "").endswith(f":{pid}")]


def batch_command(subs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "grader", "batch", "--lab", "lab2", str(subs), "--out", str(out), "--jobs", "2"]


def run_batch_command(subs: Path, out: Path) -> subprocess.CompletedProcess:
    """The batch command; run again once if some students met a grader error (as an instructor would).

    Grader errors are not the batch's doing (e.g. another grader on a shared
    engine removing a container) and are never cached, so the second run
    regrades exactly those students.
    """
    for attempt in range(2):
        proc = subprocess.run(batch_command(subs, out), cwd=KIT, capture_output=True, text=True, timeout=1800)
        if proc.returncode == 0 or attempt == 1:
            return proc
        statuses = {row["status"] for row in gradebook(out).values()}
        if statuses - {"graded", "grader_error"}:
            return proc
        print(f"grader errors, running again: {proc.stdout[-1500:]}")
    return proc


def test_a_class_graded_in_batch_interrupted_and_resumed(engine, tmp_path):
    lab = labs.find_lab("lab2")
    subs = tmp_path / "class"
    students = batch.generate_class(lab, subs, CLASS_SIZE)
    kinds = set(students.values())
    assert {"reference", "stub"} <= kinds and any(k.startswith("bug:") for k in kinds)
    assert any(k.startswith("attack:") for k in kinds) and any(k.startswith("hostile:") for k in kinds)

    # What single grading gives each kind of submission.
    single = {}
    for kind in sorted(kinds):
        student = min(s for s, k in students.items() if k == kind)
        entry = subs / student if (subs / student).is_dir() else subs / f"{student}.zip"
        result = grade.grade_submission(lab, entry, tmp_path / "single" / student, student_id=student)
        assert result.status == "graded", result.reason
        single[kind] = result.score
    assert single["reference"] == 100 and single["stub"] == 0

    # Interrupted in the middle by SIGINT...
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_command(subs, out), cwd=KIT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and len(list((out / ".ledger").glob("*.json"))) < 8 and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == batch.EXIT_INTERRUPTED, output
    assert "Traceback" not in output, output
    assert not containers_of(engine, proc.pid), "a grading container outlived Ctrl-C"
    assert not (out / ".work").exists() and not list(out.rglob("*.tmp")), "half-done files were left"
    kept = {p.stem for p in (out / ".ledger").glob("*.json")}
    assert 8 <= len(kept) < CLASS_SIZE, "the interruption did not land in the middle"
    first_run = {s: json.loads((out / s / "report.json").read_text())["timings"]["started_at"] for s in kept}

    # ...then the same command finishes the job without regrading what was kept.
    resumed_at = time.time()
    proc = run_batch_command(subs, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for student in students:
        started = json.loads((out / student / "report.json").read_text())["timings"]["started_at"]
        if student in kept:
            assert started == first_run[student], f"{student} was graded twice"
        else:
            assert started >= resumed_at

    resumed = gradebook(out)
    assert sorted(resumed) == sorted(students), "every student has exactly one row"
    for student, kind in students.items():
        assert resumed[student]["status"] == "graded", resumed[student]
        assert float(resumed[student]["score"]) == single[kind], f"{student} ({kind}) scored differently in batch"
        assert (out / student / "results.json").is_file() and (out / student / "report.html").is_file()

    # The same as grading straight through.
    straight = tmp_path / "straight"
    proc = run_batch_command(subs, straight)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (straight / "gradebook.csv").read_text() == (out / "gradebook.csv").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["students"] == CLASS_SIZE and summary["counts"]["errors"] == 0
    assert "data:image/png;base64," in (out / "summary.html").read_text()


def test_tests_that_time_out_under_load_are_rerun_alone(engine, tmp_path):
    """Two spinning submissions graded side by side: their timed-out tests are rerun alone, and say so."""
    from graderkit import FIXTURES, make_demo_kit

    lab = make_demo_kit(tmp_path / "kit")
    subs = tmp_path / "class"
    for student in ("spin1", "spin2"):
        (subs / student).mkdir(parents=True)
        shutil.copy(FIXTURES / "hostile" / "infinite_loop" / "demo.py", subs / student / "demo.py")
    (subs / "ok").mkdir()
    shutil.copy(lab.reference_dir / "demo.py", subs / "ok" / "demo.py")
    single = grade.grade_submission(lab, subs / "spin1", tmp_path / "single")
    timed_out = sorted(t["name"] for t in single.report["tests"] if t["status"] == "timeout")
    assert timed_out, "the fixture should time out"

    out = tmp_path / "out"
    outcome = batch.run_batch(lab, subs, out, stream=io.StringIO(),
                              executor=LocalPool(grade.grade_submission, cores=[0, 1]))
    assert outcome.exit_code == 0
    rows = gradebook(out)
    assert float(rows["ok"]["score"]) == 100
    for student in ("spin1", "spin2"):
        assert float(rows[student]["score"]) == single.score
        report = json.loads((out / student / "report.json").read_text())
        rerun = sorted(t["name"] for t in report["tests"] if t.get("rerun_alone"))
        assert rerun == timed_out
        assert all(t["first_status"] == "timeout" for t in report["tests"] if t.get("rerun_alone"))
        assert any("rerun once with the machine to itself" in note for note in report["notes"])
        assert report["score"] == single.score and report["max_score"] == single.max_score
        assert (out / student / "results.json").is_file() and (out / student / "junit.xml").is_file()
        assert "rerun once" in (out / student / "report.html").read_text()
    assert {r["student_id"] for r in outcome.summary["reruns"]} == {"spin1", "spin2"}
