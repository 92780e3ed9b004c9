"""Batch grading with a fake single-submission grader: no Docker, fast.

The fake reads what to do from ``behaviour.json`` in each submission (which
tests pass, how long it takes, whether it crashes), runs a real child process
as its "container", and logs every call, so these tests can check scheduling,
resumption and Ctrl-C without the engine. ``tests/test_batch_docker.py`` runs
the real grader.
"""

from __future__ import annotations

import dataclasses
import io
import json
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import psutil
import pytest

from grader import batch, gradebook, labs
from grader.executor import Executor, GradeJob, LocalPool, Resources, format_cpuset, parse_memory

KEYS = ["test_demo.py::test_a", "test_demo.py::test_b", "test_demo.py::test_c", "test_hidden_demo.py::test_d"]
POINTS = [25.0, 25.0, 30.0, 20.0]


def demo_lab(folder: Path, cpus=1, memory="256m") -> labs.Lab:
    tests = {k: labs.TestSpec(key=k, points=p, hint="h", hidden=k.startswith("test_hidden")) for k, p in zip(KEYS, POINTS)}
    return labs.Lab(id="lab9", title="Demo", folder=folder, modules=["demo.py"], timeout=5,
                    resources={"cpus": cpus, "memory": memory}, hidden_points=20, tests=tests, raw={})


@dataclasses.dataclass
class FakeResult:
    status: str
    score: float
    max_score: float
    reason: str
    report: dict
    out_dir: Path


class FakeGrader:
    """Grades by reading ``behaviour.json``; each grading runs one child process (its "container")."""

    def __init__(self, log: Path, token: str | None = None):
        self.log = log
        self.token = token or uuid.uuid4().hex
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopped = False

    def backend(self) -> batch.Backend:
        return batch.Backend(grade=self.grade, tests_hash=lambda lab: "tests-1", submission_hash=self.submission_hash,
                             image_id=lambda: "image-1", stop_all=self.stop_all, write_reports=self.write_reports)

    @staticmethod
    def submission_hash(path: Path) -> str:
        import hashlib
        digest = hashlib.sha256()
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()
        for file in sorted(path.rglob("*")):
            if file.is_file():
                digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
        return digest.hexdigest()

    @staticmethod
    def write_reports(report: dict, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "results.json"):
            (out_dir / name).write_text(json.dumps(report))

    def grade(self, lab, submission, out_dir, *, image=None, cpuset=None, only_tests=None, student_id=None):
        submission = Path(submission)
        if not submission.is_dir():  # the real grader unpacks archives; this fake only says it cannot
            report = {"student_id": student_id, "tests": [], "score": 0.0, "max_score": 100.0,
                      "reason": f"cannot unpack {submission.name}"}
            self.write_reports(report, out_dir)
            return FakeResult("graded", 0.0, 100.0, report["reason"], report, out_dir)
        spec_file = submission / "behaviour.json"
        spec = json.loads(spec_file.read_text()) if spec_file.exists() else {"passed": []}
        if spec.get("crash"):
            raise RuntimeError(spec["crash"])
        # Load is what makes these tests time out: any run without the whole (two-core) pool is under load.
        under_load = cpuset != "0-1"
        with self.lock:
            if self.stopped:
                return FakeResult("grader_error", 0, 100, "stopped", {}, out_dir)
            proc = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))",
                                     str(spec.get("sleep", 0.01)), self.token])
            self.procs.add(proc)
        try:
            code = proc.wait()
        finally:
            with self.lock:
                self.procs.discard(proc)
        if code != 0:
            return FakeResult("grader_error", 0, 100, f"container exited with {code}", {}, out_dir)
        if spec.get("grader_error"):
            return FakeResult("grader_error", 0, 100, spec["grader_error"], {}, out_dir)
        tests = []
        for key, points in zip(KEYS, POINTS):
            if only_tests and key not in only_tests:
                continue
            status = "passed" if key in spec.get("passed", []) else "failed"
            if under_load and key in spec.get("timeout_under_load", []):
                status = "timeout"
            tests.append({"name": key, "points": points if status == "passed" else 0.0, "max": points,
                          "status": status, "duration": 0.01})
        report = {"student_id": student_id, "tests": tests, "score": sum(t["points"] for t in tests),
                  "max_score": sum(t["max"] for t in tests), "reason": "", "notes": []}
        self.write_reports(report, out_dir)
        with open(self.log, "a") as log:  # one short O_APPEND write per call: lines never interleave
            log.write(json.dumps({"student": student_id, "cpuset": cpuset, "alone_rerun": only_tests}) + "\n")
        return FakeResult("graded", report["score"], report["max_score"], "", report, out_dir)

    def stop_all(self):
        with self.lock:
            self.stopped = True
            for proc in self.procs:
                proc.kill()

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def make_student(root: Path, name: str, passed=(), **behaviour) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "demo.py").write_text(f"# {name}\n")
    (folder / "behaviour.json").write_text(json.dumps({"passed": list(passed), **behaviour}))
    return folder


def make_class(root: Path, n: int = 12, sleep: float = 0.01) -> dict[str, float]:
    """n students with varied scores; returns the expected score of each."""
    expected = {}
    for i in range(n):
        passed = KEYS[: i % 5]
        make_student(root, f"s{i:03d}", passed, sleep=sleep)
        expected[f"s{i:03d}"] = sum(POINTS[: i % 5])
    return expected


def read_gradebook(out: Path) -> list[dict]:
    import csv
    return list(csv.DictReader(io.StringIO((out / "gradebook.csv").read_text())))


# -- the executor ----------------------------------------------------------------------------------------------


def _recording_grade(spans, lock, hold=0.05):
    def grade(lab, submission, out_dir, *, image=None, cpuset=None, only_tests=None, student_id=None):
        start = time.monotonic()
        time.sleep(hold)  # the "container" works; the pool must keep others off its cores meanwhile
        with lock:
            spans.append((start, time.monotonic(), cpuset, student_id))
        return student_id
    return grade


def _overlapping(spans):
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if a[0] < b[1] and b[0] < a[1]:
                yield a, b


def _cores(cpuset: str) -> set[int]:
    cores = set()
    for part in cpuset.split(","):
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


def run_jobs(pool, jobs):
    for job in jobs:
        pool.submit(job)
    return list(pool.results())


def test_pool_pins_each_job_to_its_own_cores(tmp_path):
    spans, lock = [], threading.Lock()
    record = _recording_grade(spans, lock)
    # The first two jobs meet at a barrier: it breaks (and fails them) unless the pool runs them side by side.
    barrier = threading.Barrier(2, timeout=30)

    def grade(lab, submission, out_dir, *, student_id=None, **kw):
        if student_id in ("s0", "s1"):
            barrier.wait()
        return record(lab, submission, out_dir, student_id=student_id, **kw)

    pool = LocalPool(grade, cores=[0, 1, 2, 3], memory=2**40)
    lab = demo_lab(tmp_path, cpus=2)
    done = run_jobs(pool, [GradeJob(lab, tmp_path, tmp_path, f"s{i}", Resources.of_lab(lab)) for i in range(8)])
    assert not [d.error for d in done if d.error], "two 2-core jobs fit on 4 cores: they must run side by side"
    assert sorted(d.result for d in done) == sorted(f"s{i}" for i in range(8))
    assert all(len(_cores(s[2])) == 2 for s in spans)
    for a, b in _overlapping(spans):
        assert not _cores(a[2]) & _cores(b[2]), f"{a[3]} and {b[3]} shared cores {a[2]} / {b[2]}"
    # at most two 2-core jobs at any instant on 4 cores
    for start, *_ in spans:
        assert sum(1 for s in spans if s[0] <= start < s[1]) <= 2


def test_pool_reserves_memory(tmp_path):
    spans, lock = [], threading.Lock()
    pool = LocalPool(_recording_grade(spans, lock), cores=[0, 1, 2, 3], memory=parse_memory("1g"))
    lab = demo_lab(tmp_path, cpus=1, memory="512m")
    run_jobs(pool, [GradeJob(lab, tmp_path, tmp_path, f"s{i}", Resources.of_lab(lab)) for i in range(6)])
    for start, *_ in spans:
        assert sum(1 for s in spans if s[0] <= start < s[1]) <= 2, "two 512m jobs fill a 1g budget"


def test_jobs_cap_and_alone_jobs(tmp_path):
    spans, lock = [], threading.Lock()
    pool = LocalPool(_recording_grade(spans, lock), cores=[0, 1], memory=2**40, max_jobs=1)
    lab = demo_lab(tmp_path)
    run_jobs(pool, [GradeJob(lab, tmp_path, tmp_path, f"s{i}", Resources.of_lab(lab)) for i in range(4)])
    assert not list(_overlapping(spans)), "--jobs 1 runs one job at a time"

    spans.clear()
    pool = LocalPool(_recording_grade(spans, lock), cores=[0, 1], memory=2**40)
    jobs = [GradeJob(lab, tmp_path, tmp_path, f"s{i}", Resources.of_lab(lab), alone=(i == 2)) for i in range(6)]
    done = run_jobs(pool, jobs)
    alone = next(s for s in spans if s[3] == "s2")
    assert alone[2] == "0-1", "an alone job gets every core"
    assert all(not (s[0] < alone[1] and alone[0] < s[1]) for s in spans if s is not alone)
    assert not next(d for d in done if d.job.student_id == "s2").concurrent


def test_a_job_bigger_than_the_machine_still_runs(tmp_path):
    pool = LocalPool(lambda *a, **k: "ok", cores=[0], memory=2**20)
    lab = demo_lab(tmp_path, cpus=4, memory="1g")
    [done] = run_jobs(pool, [GradeJob(lab, tmp_path, tmp_path, "big", Resources.of_lab(lab))])
    assert done.result == "ok" and done.cpuset == "0"


def test_a_crashing_grade_function_becomes_an_error_not_a_lost_job(tmp_path):
    def grade(lab, submission, out_dir, **kw):
        raise ValueError("boom")
    pool = LocalPool(grade, cores=[0, 1])
    lab = demo_lab(tmp_path)
    done = run_jobs(pool, [GradeJob(lab, tmp_path, tmp_path, f"s{i}", Resources.of_lab(lab)) for i in range(3)])
    assert len(done) == 3 and all(isinstance(d.error, ValueError) for d in done)


def test_sizes_and_cpusets():
    assert parse_memory("512m") == 512 * 2**20
    assert parse_memory("1g") == parse_memory("1Gi") == 2**30
    assert parse_memory(4096) == 4096
    with pytest.raises(ValueError):
        parse_memory("lots")
    assert format_cpuset([0]) == "0"
    assert format_cpuset([3, 0, 1, 2, 5]) == "0-3,5"


# -- finding the students ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("alice", "alice"), ("alice.zip", "alice"), ("bob.tar.gz", "bob"), ("kim.min-su@uni.kr", "kim.min-su@uni.kr"),
    ("김민수", "김민수"),
])
def test_student_ids_come_from_entry_names(name, expected):
    assert batch.student_id_for(name) == expected


@pytest.mark.parametrize("name", ["..", "../etc", ".hidden", "a b", "gradebook.csv", "summary.json", "-rf", "=cmd()"])
def test_odd_names_become_safe_distinct_ids(name):
    student = batch.student_id_for(name)
    assert batch._SAFE_ID.fullmatch(student) and student not in batch._RESERVED
    assert "/" not in student and not student.startswith(".")
    assert student != batch.student_id_for(name + "x")


def _zip(path: Path, members: dict[str, bytes], symlinks=()):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path


def _tar(path: Path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_discover_handles_every_kind_of_entry(tmp_path):
    subs = tmp_path / "subs"
    make_student(subs, "alice")
    _zip(subs / "bob.zip", {"bob/demo.py": b"x", "__MACOSX/._demo.py": b"junk"})
    _tar(subs / "carol.tar.gz", {"demo.py": b"x"})
    make_student(subs, "dave")
    _zip(subs / "dave.zip", {"demo.py": b"x"})
    (subs / "notes.txt").write_text("hi")
    (subs / ".DS_Store").write_text("junk")
    (subs / "eve").symlink_to(subs / "alice")
    entries = {e.student_id: e for e in batch.discover(subs, tmp_path / "work")}
    assert set(entries) == {"alice", "bob", "carol", "dave", "eve", "notes.txt"}
    assert entries["alice"].problem is None and entries["bob"].problem is None
    assert "several entries" in entries["dave"].problem
    assert "symbolic link" in entries["eve"].problem
    assert "not a folder or an archive" in entries["notes.txt"].problem


@pytest.mark.parametrize("make, why", [
    (lambda p: _zip(p / "x.zip", {"../../escape.py": b"x"}), "outside"),
    (lambda p: _zip(p / "x.zip", {"/abs.py": b"x"}), "outside"),
    (lambda p: _zip(p / "x.zip", {"demo.py": b"x"}, symlinks=["link.py"]), "symbolic link"),
    (lambda p: _zip(p / "x.zip", {"big.bin": b"\0" * (2**20 + 1)}), "size limit"),
    (lambda p: _zip(p / "x.zip", {f"f{i}.py": b"" for i in range(101)}), "more than 100"),
    (lambda p: (p / "x.zip").write_bytes(b"not a zip") and p / "x.zip", "BadZipFile"),
])
def test_hostile_exports_are_refused(tmp_path, make, why):
    archive = make(tmp_path)
    with pytest.raises(batch.UnpackError, match=why):
        batch.unpack(archive, tmp_path / "dest", max_bytes=2**20, max_files=100)
    assert not (tmp_path.parent / "escape.py").exists()


def test_a_class_export_zip_is_unpacked(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("demo.py", "x")
    export = _zip(tmp_path / "export.zip", {"lab9/alice/demo.py": b"x", "lab9/bob.zip": inner.getvalue()})
    entries = batch.discover(export, tmp_path / "work")
    assert [e.student_id for e in entries] == ["alice", "bob"]


# -- the batch --------------------------------------------------------------------------------------------------


def run(lab, subs, out, grader, **kw):
    return batch.run_batch(lab, subs, out, backend=grader.backend(), stream=io.StringIO(), **kw)


def test_every_student_gets_one_row_and_the_right_score(tmp_path):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    expected = make_class(subs, 12)
    _zip(subs / "broken.zip", {})
    (subs / "broken.zip").write_bytes(b"garbage")
    make_student(subs, "crasher", crash="segfault in the grader")
    make_student(subs, "kitfault", grader_error="image missing")
    grader = FakeGrader(tmp_path / "calls.log")
    outcome = run(lab, subs, out, grader, jobs=2)
    rows = {r["student_id"]: r for r in read_gradebook(out)}
    assert set(rows) == set(expected) | {"broken", "crasher", "kitfault"}
    for student, score in expected.items():
        assert float(rows[student]["score"]) == score and rows[student]["status"] == "graded"
        assert (out / student / "report.json").is_file() and (out / student / "results.json").is_file()
    assert rows["broken"]["status"] == "graded" and rows["broken"]["score"] == "0", "the grader's verdict stands"
    assert "cannot unpack" in rows["broken"]["reason"]
    assert rows["crasher"]["status"] == "grader_error" and "segfault" in rows["crasher"]["reason"]
    assert rows["crasher"]["score"] == "", "a submission that was not graded has no score, not a zero"
    assert rows["kitfault"]["status"] == "grader_error"
    assert outcome.exit_code == 2
    assert rows["s004"][KEYS[0]] == "25" and rows["s000"][KEYS[0]] == "0"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"students": 15, "graded": 13, "full": 2, "partial": 11, "errors": 2, "late": 0}
    assert {e["student_id"] for e in summary["errors"]} == {"crasher", "kitfault"}
    assert summary["problems"] == [{"student_id": "broken", "score": 0.0, "reason": "cannot unpack broken.zip"}]
    html = (out / "summary.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "segfault in the grader" in html
    assert "cannot unpack broken.zip" in html
    assert not (out / ".work").exists()


def test_a_rerun_grades_only_what_changed_and_retries_grader_errors(tmp_path):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    make_class(subs, 6)
    make_student(subs, "kitfault", grader_error="image missing")
    grader = FakeGrader(tmp_path / "calls.log")
    run(lab, subs, out, grader)
    first = (out / "gradebook.csv").read_text()
    assert len(grader.calls()) == 6

    outcome = run(lab, subs, out, grader)
    assert len(grader.calls()) == 6, "nothing changed: nothing regraded"
    assert outcome.graded == [] and len(outcome.reused) == 6
    assert (out / "gradebook.csv").read_text() == first

    (subs / "s001" / "behaviour.json").write_text(json.dumps({"passed": KEYS}))
    (subs / "kitfault" / "behaviour.json").write_text(json.dumps({"passed": KEYS[:1]}))
    outcome = run(lab, subs, out, grader)
    assert sorted(outcome.graded) == ["kitfault", "s001"], "a changed submission and a grader error are regraded"
    rows = {r["student_id"]: r for r in read_gradebook(out)}
    assert rows["s001"]["score"] == "100" and rows["kitfault"]["score"] == "25"

    outcome = run(lab, subs, out, grader, force=True)
    assert len(outcome.graded) == 7


def test_reports_deleted_by_hand_are_regraded(tmp_path):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    make_class(subs, 3)
    grader = FakeGrader(tmp_path / "calls.log")
    run(lab, subs, out, grader)
    import shutil
    shutil.rmtree(out / "s002")
    assert run(lab, subs, out, grader).graded == ["s002"]


def test_a_timeout_under_load_is_rerun_alone(tmp_path):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    # a1 and a2 start together on two cores, so both run under load; s000.. follow
    make_student(subs, "a1", KEYS, sleep=0.3, timeout_under_load=[KEYS[2]])
    make_student(subs, "a2", KEYS, sleep=0.3, timeout_under_load=[KEYS[2]])
    make_class(subs, 3, sleep=0.05)
    grader = FakeGrader(tmp_path / "calls.log")
    batch.run_batch(lab, subs, out, backend=grader.backend(), stream=io.StringIO(),
                    executor=LocalPool(grader.grade, cores=[0, 1], memory=2**40))
    rows = {r["student_id"]: r for r in read_gradebook(out)}
    summary = json.loads((out / "summary.json").read_text())
    for student in ("a1", "a2"):
        calls = [c for c in grader.calls() if c["student"] == student]
        assert len(calls) == 2 and calls[0]["cpuset"] != "0-1" and calls[1]["cpuset"] == "0-1"
        assert rows[student]["score"] == "100", "the alone rerun passed: no points lost to load"
        assert calls[1]["alone_rerun"] == [KEYS[2]], "only the test that timed out is rerun"
        note = json.loads((out / student / "batch.json").read_text())
        assert note["rerun_alone"] == [KEYS[2]]
        report = json.loads((out / student / "report.json").read_text())
        assert report["score"] == 100 and len(report["tests"]) == 4
        rerun = next(t for t in report["tests"] if t["name"] == KEYS[2])
        assert rerun["rerun_alone"] and rerun["first_status"] == "timeout" and rerun["status"] == "passed"
        assert "rerun once with the machine to itself" in report["notes"][-1]
        assert {"student_id": student, "tests": [KEYS[2]]} in summary["reruns"]
    assert all(len([c for c in grader.calls() if c["student"] == s]) == 1 for s in ("s000", "s001", "s002"))


def test_progress_lines_when_not_on_a_terminal(tmp_path):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    make_class(subs, 3)
    stream = io.StringIO()
    batch.run_batch(lab, subs, out, backend=FakeGrader(tmp_path / "log").backend(), stream=stream)
    lines = [l for l in stream.getvalue().splitlines() if l.startswith("[")]
    assert len(lines) == 3 and lines[-1].startswith("[3/3]") and "/min" in lines[-1]


def test_a_second_batch_on_the_same_output_is_refused(tmp_path):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    make_class(subs, 1)
    out.mkdir()
    import fcntl
    with open(out / ".batch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another batch"):
            run(lab, subs, out, FakeGrader(tmp_path / "log"))


# -- Ctrl-C -------------------------------------------------------------------------------------------------------

CHILD = """
import io, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_batch as t
from grader import batch
tmp = Path({tmp!r})
grader = t.FakeGrader(tmp / "calls.log", token={token!r})
outcome = batch.run_batch(t.demo_lab(tmp), tmp / "subs", Path(sys.argv[1]), backend=grader.backend(), jobs=2,
                          stream=sys.stdout)
sys.exit(outcome.exit_code)
"""


def _leftover_children(token):
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if token in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _start(tmp_path, out, token):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), token=token))
    return subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_ctrl_c_stops_cleanly_and_the_rerun_finishes_the_job(tmp_path):
    """SIGINT mid-batch, then the same command: same gradebook as one uninterrupted run, nobody graded twice."""
    lab, subs = demo_lab(tmp_path), tmp_path / "subs"
    make_class(subs, 40, sleep=0.15)
    token = uuid.uuid4().hex
    out = tmp_path / "out"
    proc = _start(tmp_path, out, token)
    try:
        ledger = out / ".ledger"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(ledger.glob("*.json"))) < 8:
            time.sleep(0.05)
        assert len(list(ledger.glob("*.json"))) >= 8, "the batch did not get going"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == batch.EXIT_INTERRUPTED, output
    assert "Traceback" not in output, output
    assert not _leftover_children(token), "a fake container outlived Ctrl-C"
    assert not (out / ".work").exists(), "the staging area was left behind"
    assert not list(out.rglob("*.tmp")), "a half-written file was left behind"
    assert not (out / "gradebook.csv").exists(), "an interrupted batch writes no gradebook"
    kept = {p.stem for p in (out / ".ledger").glob("*.json")}
    assert 8 <= len(kept) < 40, "SIGINT came too late to test anything"
    for student in kept:
        assert json.loads((out / student / "report.json").read_text())["student_id"] == student
    graded_before = len(FakeGrader(tmp_path / "calls.log").calls())

    proc = _start(tmp_path, out, token)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    calls = [c["student"] for c in FakeGrader(tmp_path / "calls.log").calls()]
    second_run = calls[graded_before:]
    assert not set(second_run) & kept, "the rerun regraded results the first run had kept"
    assert set(second_run) | kept == {f"s{i:03d}" for i in range(40)}

    straight = tmp_path / "straight"
    batch.run_batch(lab, subs, straight, backend=FakeGrader(tmp_path / "calls2.log").backend(), stream=io.StringIO())
    assert (out / "gradebook.csv").read_text() == (straight / "gradebook.csv").read_text()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal(tmp_path):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    make_class(subs, 5)
    make_student(subs, "kitfault", grader_error="image missing")
    stream = _Terminal()
    batch.run_batch(lab, subs, out, backend=FakeGrader(tmp_path / "log").backend(), stream=stream)
    text = stream.getvalue()
    assert "6/6" in text and "errors=1" in text and "full=1" in text and "partial=4" in text
    assert "sub/s" in text or "s/sub" in text, "tqdm shows the rate"


def test_no_image_is_one_clear_error_not_a_class_of_zeros(tmp_path, capsys):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    make_class(subs, 2)
    backend = FakeGrader(tmp_path / "log").backend()

    def no_image():
        raise OSError("runner image ipclab-runner:0.1.0 is not built: run `make image`")
    backend.image_id = no_image
    with pytest.raises(RuntimeError, match="make image"):
        batch.run_batch(lab, subs, out, backend=backend, stream=io.StringIO())
    assert not (out / "gradebook.csv").exists() and not (out / ".work").exists()


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from grader.__main__ import main
    assert main(["batch", "--lab", "lab2", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err
    policy = tmp_path / "late.yaml"
    policy.write_text("penalty: 10\n")
    (tmp_path / "subs").mkdir()
    assert main(["batch", "--lab", "lab2", str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
                 "--policy", str(policy)]) == 2
    assert "deadline" in capsys.readouterr().err


def test_late_policy_from_the_manifest_reaches_the_gradebook(tmp_path):
    lab, subs, out = demo_lab(tmp_path), tmp_path / "subs", tmp_path / "out"
    make_student(subs, "ontime", KEYS)
    make_student(subs, "late", KEYS)
    make_student(subs, "nomanifest", KEYS)
    policy = gradebook.LatePolicy.from_dict({"deadline": "2026-03-01T23:59:00+00:00",
                                             "penalty": {"percent": 10, "per": "day"}})
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("student_id,submitted_at\nontime,2026-03-01T20:00:00+00:00\nlate,2026-03-03T08:00:00+00:00\n")
    run(lab, subs, out, FakeGrader(tmp_path / "log"), policy=policy, manifest=gradebook.load_manifest(manifest))
    rows = {r["student_id"]: r for r in read_gradebook(out)}
    assert (rows["ontime"]["late_penalty"], rows["ontime"]["final_score"]) == ("0", "100")
    assert (rows["late"]["late_penalty"], rows["late"]["final_score"]) == ("20", "80")
    assert rows["nomanifest"]["final_score"] == "100", "file times are not used unless the policy asks"


class SerialExecutor(Executor):
    """The smallest executor there is: runs each job when asked for results. The batch needs nothing more."""

    def __init__(self, grade):
        self.grade, self.queue = grade, []

    def submit(self, job):
        self.queue.append(job)

    def results(self):
        from grader.executor import Completed
        while self.queue:
            job = self.queue.pop(0)
            done = Completed(job=job, started_at=time.time())
            done.result = self.grade(job.lab, job.submission, job.out_dir, image=job.image, cpuset=None,
                                     only_tests=job.only_tests, student_id=job.student_id)
            done.finished_at = time.time()
            yield done

    def cancel(self):
        self.queue.clear()

    def wait_idle(self, timeout):
        return True


def test_any_executor_can_replace_the_local_pool(tmp_path):
    lab, subs = demo_lab(tmp_path), tmp_path / "subs"
    make_class(subs, 6)
    grader = FakeGrader(tmp_path / "log")
    batch.run_batch(lab, subs, tmp_path / "serial", backend=grader.backend(), stream=io.StringIO(),
                    executor=SerialExecutor(grader.grade))
    batch.run_batch(lab, subs, tmp_path / "pool", backend=grader.backend(), stream=io.StringIO())
    assert (tmp_path / "serial" / "gradebook.csv").read_text() == (tmp_path / "pool" / "gradebook.csv").read_text()
