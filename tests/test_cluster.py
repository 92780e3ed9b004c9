"""Batch grading on a real Dask cluster on loopback: a scheduler and worker processes.

Each test starts ``dask scheduler`` and ``dask worker`` processes bound to
127.0.0.1 (every wait bounded, every process killed and reaped in a
``finally``), then grades a class through :class:`grader.cluster.DaskExecutor`
and compares it with the local pool's batch. The workers grade with
:func:`fake_grade` (below): the fake grader of ``tests/test_batch.py``, which
needs no Docker. The worker processes import it from this module (``tests/``
is on their PYTHONPATH), so it must stay a module-level function.
``tests/test_cluster_docker.py`` grades with the real Docker grader.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader import batch, cluster
from grader.executor import GradeJob, LocalPool, Resources, format_cpuset
from test_batch import FakeGrader, demo_lab, make_class, make_student

KIT = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).parent / "dask"
START_WAIT = 60  # seconds for the scheduler to write its address / workers to join
LOG_ENV = "IPCLAB_CLUSTER_FAKE_LOG"
FAKE = "test_cluster:fake_grade"


_worker_grader: FakeGrader | None = None


def fake_grade(lab, submission, out_dir, **kw):
    """Runs on a worker: the batch tests' fake grader, plus a line saying when and where it ran.

    One FakeGrader per worker process, so it sees the jobs running beside it
    on that worker (and fakes a timeout under load when told to).
    """
    global _worker_grader
    log = Path(os.environ[LOG_ENV])
    if _worker_grader is None:
        _worker_grader = FakeGrader(log.with_suffix(".fake"))
    started = time.time()
    result = _worker_grader.grade(lab, submission, out_dir, **kw)
    with open(log, "a") as out:  # one short O_APPEND write per call
        out.write(json.dumps({"student": kw.get("student_id"), "cpuset": kw.get("cpuset"), "pid": os.getpid(),
                              "start": started, "end": time.time()}) + "\n")
    return result


def lab_in(folder: Path, **resources):
    """The batch tests' demo lab, in a folder that exists (workers on this machine use it as is)."""
    folder.mkdir(parents=True, exist_ok=True)
    return demo_lab(folder, **resources)


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# -- a cluster on loopback ----------------------------------------------------------------------------------


class LoopbackCluster:
    """A scheduler and workers started by a test; :meth:`stop` kills and reaps them all."""

    def __init__(self, tmp: Path, log: Path):
        self.tmp, self.log = tmp, log
        self.procs: dict[str, subprocess.Popen] = {}
        self.address = None

    def _start(self, name: str, args: list[str], cores: set[int] | None = None) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(KIT), str(KIT / "tests")]), **{LOG_ENV: str(self.log)})
        out = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(args, cwd=self.tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
        out.close()
        self.procs[name] = proc
        return proc

    def start_scheduler(self) -> str:
        info = self.tmp / "scheduler.json"
        self._start("scheduler", [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(info)])
        deadline = time.monotonic() + START_WAIT
        while not info.exists() or not info.read_text().strip():
            assert time.monotonic() < deadline, "the scheduler did not start: " + self.output("scheduler")
            assert self.procs["scheduler"].poll() is None, "the scheduler died: " + self.output("scheduler")
            time.sleep(0.1)
        self.address = json.loads(info.read_text())["address"]
        return self.address

    def start_worker(self, name: str, cores: set[int], memory: str = "4e9") -> None:
        self._start(name, [str(DASK), "worker", self.address, "--host", "127.0.0.1", "--name", name, "--no-nanny",
                           "--nthreads", str(len(cores)), "--resources", f"CPU={len(cores)},MEMORY={memory}",
                           "--memory-limit", "0", "--no-dashboard", "--death-timeout", "60"], cores)

    def wait_for_workers(self, client, n: int) -> None:
        try:
            client.wait_for_workers(n, timeout=START_WAIT)
        except TimeoutError:
            pytest.fail("workers did not join: " + " | ".join(self.output(n) for n in self.procs))

    def start_grader_worker(self, name: str, cores: set[int]) -> None:
        """``python -m grader worker``: the ipclab worker command (checks Docker and the image first)."""
        self._start(name, [sys.executable, "-m", "grader", "worker", "--scheduler", self.address, "--host",
                           "127.0.0.1", "--name", name, "--cores", ",".join(map(str, sorted(cores)))])

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def output(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.kill(name)


@pytest.fixture
def loopback(tmp_path):
    """``make(workers={name: cores})`` -> (cluster, executor); everything is stopped after the test."""
    started: list = []

    def make(workers: dict[str, set[int]], memory: str = "4e9", executor_class=cluster.DaskExecutor):
        lc = LoopbackCluster(tmp_path, tmp_path / "calls.jsonl")
        started.append(lc)
        lc.start_scheduler()
        for name, cores in workers.items():
            lc.start_worker(name, cores, memory)
        executor = executor_class(lc.address, grade=FAKE, worker_wait=START_WAIT)
        started.append(executor)
        lc.wait_for_workers(executor.client, len(workers))
        return lc, executor

    yield make
    for thing in reversed(started):  # close the client before its scheduler goes
        with contextlib.suppress(Exception):
            thing.close() if isinstance(thing, cluster.DaskExecutor) else thing.stop()
    for thing in started:
        if isinstance(thing, LoopbackCluster):
            thing.stop()


def two_cores() -> list[set[int]]:
    cores = sorted(os.sched_getaffinity(0))
    return [{cores[0]}, {cores[1 % len(cores)]}]


def gradebook(out: Path) -> dict[str, dict]:
    rows = csv.DictReader(io.StringIO((out / "gradebook.csv").read_text()))
    return {row["student_id"]: row for row in rows}


def reports(out: Path) -> dict[str, dict]:
    """Every student's report.json."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/report.json"))}


def local_batch(lab, subs: Path, out: Path, tmp: Path):
    grader = FakeGrader(tmp / "local-calls.jsonl")
    return batch.run_batch(lab, subs, out, backend=grader.backend(), stream=io.StringIO(),
                           executor=LocalPool(grader.grade, cores=[0, 1], memory=2**40))


def cluster_batch(lab, subs: Path, out: Path, tmp: Path, executor):
    grader = FakeGrader(tmp / "unused.jsonl")  # hashes, ids and report writing; the grading is on the workers
    return batch.run_batch(lab, subs, out, backend=grader.backend(), stream=io.StringIO(), executor=executor)


def class_of(root: Path, n: int, sleep: float) -> dict[str, float]:
    expected = make_class(root, n=n, sleep=sleep)
    make_student(root, "zz-crash", crash="the grade function crashed")  # an error row, on both sides
    (root / "zz-odd.txt").write_text("not a submission")
    return expected


def comparable(rows: dict[str, dict]) -> dict[str, dict]:
    return {sid: {k: v for k, v in row.items() if k != "duration"} for sid, row in rows.items()}


# -- the tests ------------------------------------------------------------------------------------------------


def test_a_class_graded_on_the_cluster_matches_the_local_batch(tmp_path, loopback):
    lc, executor = loopback({"w1": two_cores()[0], "w2": two_cores()[1]})
    lab = lab_in(tmp_path / "lab")
    subs = tmp_path / "subs"
    expected = class_of(subs, n=24, sleep=0.2)
    # a zipped entry travels as an archive (the fake grader scores what it cannot unpack 0, on both sides)
    make_student(tmp_path / "zipme", "s900", ["test_demo.py::test_a"])
    shutil.make_archive(str(subs / "s900"), "zip", tmp_path / "zipme" / "s900")

    local = local_batch(lab, subs, tmp_path / "local", tmp_path)
    remote = cluster_batch(lab, subs, tmp_path / "cluster", tmp_path, executor)

    assert not remote.interrupted and remote.exit_code == local.exit_code == 2, [r["reason"] for r in remote.rows][:3]
    assert comparable(gradebook(tmp_path / "cluster")) == comparable(gradebook(tmp_path / "local"))
    for sid, score in expected.items():
        assert float(gradebook(tmp_path / "cluster")[sid]["score"]) == score
    assert reports(tmp_path / "cluster") == reports(tmp_path / "local")
    assert sorted(p.name for p in (tmp_path / "cluster" / "s003").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local" / "s003").iterdir())
    ran = calls(lc.log)
    assert sorted(c["student"] for c in ran) == sorted([*expected, "s900"])  # each graded once
    assert {c["pid"] for c in ran} == {lc.procs["w1"].pid, lc.procs["w2"].pid}, "both workers should grade"
    by_pid = {lc.procs["w1"].pid: two_cores()[0], lc.procs["w2"].pid: two_cores()[1]}
    assert all(cluster.parse_cores(c["cpuset"]) == sorted(by_pid[c["pid"]]) for c in ran)
    crash = gradebook(tmp_path / "cluster")["zz-crash"]
    assert crash["status"] == "grader_error" and "the grade function crashed" in crash["reason"]

    again = cluster_batch(lab, subs, tmp_path / "cluster", tmp_path, executor)
    assert again.graded == [] and len(again.reused) == len(expected) + 1, "a rerun regrades nothing"


class KillAfter(cluster.DaskExecutor):
    """Kills a busy worker once ``kill_after`` results have come back."""

    kill_after = 4
    victim = None  # (LoopbackCluster, worker name)
    killed_while_busy = None

    def results(self):
        for count, done in enumerate(super().results(), start=1):
            if count == self.kill_after:
                lc, name = self.victim
                processing = self.client.processing()
                address = next(a for a, w in self.client.scheduler_info(n_workers=-1)["workers"].items()
                               if w.get("name") == name)
                type(self).killed_while_busy = bool(processing.get(address))
                lc.kill(name)
            yield done


def test_killing_a_worker_mid_batch_loses_nothing_and_grades_nothing_twice(tmp_path, loopback):
    lc, executor = loopback({"w1": two_cores()[0], "w2": two_cores()[1]}, executor_class=KillAfter)
    KillAfter.victim = (lc, "w2")
    lab = lab_in(tmp_path / "lab")
    subs = tmp_path / "subs"
    expected = make_class(subs, n=24, sleep=0.5)

    outcome = cluster_batch(lab, subs, tmp_path / "out", tmp_path, executor)

    assert KillAfter.killed_while_busy, "the victim had no job when it was killed: the test proved nothing"
    assert lc.procs["w2"].poll() is not None
    assert not outcome.interrupted and outcome.exit_code == 0
    book = gradebook(tmp_path / "out")
    assert {sid: float(row["score"]) for sid, row in book.items()} == expected
    assert sorted(outcome.graded) == sorted(expected), "every student graded once by this run"
    assert sorted(p.parent.name for p in (tmp_path / "out").glob("*/report.json")) == sorted(expected)
    assert sorted(p.stem for p in (tmp_path / "out" / ".ledger").glob("*.json")) == sorted(expected)
    ran = calls(lc.log)
    assert {c["student"] for c in ran} == set(expected)
    survivors = [c for c in ran if c["pid"] == lc.procs["w1"].pid]
    assert survivors, "the surviving worker took over"
    # rerun on the survivor alone: nothing left to grade
    again = cluster_batch(lab, subs, tmp_path / "out", tmp_path, executor)
    assert again.graded == [] and len(again.reused) == len(expected)


CLIENT = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from test_cluster import FAKE, cluster_batch, lab_in
from grader import cluster
tmp = Path(sys.argv[3])
executor = cluster.DaskExecutor(sys.argv[2], grade=FAKE)
cluster_batch(lab_in(tmp / "lab"), tmp / "subs", tmp / "out", tmp, executor)
"""


def test_killing_the_batch_client_mid_batch_then_rerunning_loses_nothing(tmp_path, loopback):
    lc, executor = loopback({"w1": two_cores()[0], "w2": two_cores()[1]})
    expected = make_class(tmp_path / "subs", n=20, sleep=0.4)
    ledger = tmp_path / "out" / ".ledger"
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(KIT), lc.address, str(tmp_path)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_WAIT
        while len(list(ledger.glob("*.json"))) < 4:
            assert client.poll() is None, client.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the batch client recorded nothing"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(client.pid, signal.SIGKILL)
        client.wait(timeout=30)
    first = {p.stem for p in ledger.glob("*.json")}
    assert 4 <= len(first) < len(expected), "the client should have died mid-batch"

    again = cluster_batch(lab_in(tmp_path / "lab"), tmp_path / "subs", tmp_path / "out", tmp_path, executor)

    assert set(again.reused) == first, "what the killed client recorded is kept"
    assert set(again.graded) == set(expected) - first, "the rest, and only the rest, is graded"
    book = gradebook(tmp_path / "out")
    assert {sid: float(row["score"]) for sid, row in book.items()} == expected
    assert not (tmp_path / "out" / ".work").exists()


def test_a_two_cpu_lab_never_shares_its_cores(tmp_path, loopback):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.fail("this test needs a machine with 2 cores")
    lc, executor = loopback({"big": set(cores[:2])})
    small, big = lab_in(tmp_path / "small", cpus=1), lab_in(tmp_path / "big", cpus=2)
    subs = tmp_path / "subs"
    for i in range(6):
        make_student(subs, f"s{i}", sleep=0.3)
    jobs = [GradeJob(big if i % 3 == 0 else small, subs / f"s{i}", tmp_path / "out" / f"s{i}", f"s{i}",
                     Resources.of_lab(big if i % 3 == 0 else small)) for i in range(6)]
    jobs[4].alone = True  # a rerun alone asks for a whole worker: here, the same as a 2-CPU job
    for job in jobs:
        executor.submit(job)
    done = list(executor.results())
    assert sorted(d.job.student_id for d in done) == [f"s{i}" for i in range(6)]
    assert all(d.error is None and d.result.status == "graded" for d in done), [d.error for d in done]
    spans = {c["student"]: c for c in calls(lc.log)}
    two = [s for s in spans if int(s[1:]) % 3 == 0 or s == "s4"]
    assert all(len(cluster.parse_cores(spans[s]["cpuset"])) == 2 for s in two)
    assert any(a["start"] < b["end"] and b["start"] < a["end"]
               for a in spans.values() for b in spans.values() if a is not b), \
        "two 1-CPU jobs should have run side by side on the 2-core worker"
    for s in two:
        a = spans[s]
        for other, b in spans.items():
            if other != s:
                assert not (a["start"] < b["end"] and b["start"] < a["end"]), f"{other} ran beside 2-CPU job {s}"
    for a in spans.values():  # 1-CPU jobs side by side are on different cores
        for b in spans.values():
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(cluster.parse_cores(a["cpuset"])) & set(cluster.parse_cores(b["cpuset"]))


def test_a_timeout_under_load_on_a_worker_is_rerun_with_the_worker_to_itself(tmp_path, loopback):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.fail("this test needs a machine with 2 cores")
    lc, executor = loopback({"big": set(cores[:2])})
    lab = lab_in(tmp_path / "lab")
    subs = tmp_path / "subs"
    everything = ["test_demo.py::test_a", "test_demo.py::test_b", "test_demo.py::test_c", "test_hidden_demo.py::test_d"]
    for i in range(4):
        make_student(subs, f"s{i}", everything, sleep=0.5, timeout_under_load=["test_demo.py::test_c"])

    outcome = cluster_batch(lab, subs, tmp_path / "out", tmp_path, executor)

    book = gradebook(tmp_path / "out")
    assert {sid: float(row["score"]) for sid, row in book.items()} == {f"s{i}": 100.0 for i in range(4)}
    reruns = [c for c in calls(lc.log) if c["cpuset"] == format_cpuset(cores[:2])]
    assert reruns, "some jobs ran side by side and timed out: their reruns take the whole worker"
    rerun_reports = [r for r in reports(tmp_path / "out").values()
                     if any(t.get("rerun_alone") for t in r["tests"])]
    assert len(rerun_reports) == len(reruns) and outcome.exit_code == 0


def test_a_job_no_worker_can_take_is_a_clear_error_row(tmp_path, loopback):
    lc, executor = loopback({"w1": two_cores()[0]})
    lab = lab_in(tmp_path / "lab", cpus=2)
    subs = tmp_path / "subs"
    make_class(subs, n=2)
    outcome = cluster_batch(lab, subs, tmp_path / "out", tmp_path, executor)
    assert outcome.exit_code == 2
    for row in gradebook(tmp_path / "out").values():
        assert row["status"] == "grader_error"
        assert "needs 2 CPU" in row["reason"] and "no worker offers that" in row["reason"]


def test_packing_keeps_archives_and_links_as_delivered(tmp_path):
    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "demo.py").write_text("x = 1\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.txt").write_text("d")
    (folder / "link.py").symlink_to("/etc/passwd")
    back = cluster.unpack_submission(cluster.pack_submission(folder), tmp_path / "worker")
    assert back.name == "alice" and (back / "demo.py").read_text() == "x = 1\n"
    assert (back / "sub" / "data.txt").read_text() == "d"
    assert (back / "link.py").is_symlink(), "the worker's grader must see (and refuse) the link, not its target"
    archive = tmp_path / "bob.zip"
    archive.write_bytes(b"PK not really a zip")
    again = cluster.unpack_submission(cluster.pack_submission(archive), tmp_path / "worker2")
    assert again.name == "bob.zip" and again.read_bytes() == archive.read_bytes()


def test_reports_from_a_worker_cannot_escape_the_output_folder(tmp_path):
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(tarfile.TarError):
        cluster.unpack_reports(buffer.getvalue(), tmp_path / "out")
    assert not (tmp_path / "escaped.json").exists()


def test_no_scheduler_is_one_clear_error(tmp_path):
    with pytest.raises(cluster.ClusterError, match="no Dask scheduler answers"):
        cluster.DaskExecutor("tcp://127.0.0.1:9", connect_timeout=2)


@pytest.mark.parametrize("text, cores", [("0", [0]), ("0-3", [0, 1, 2, 3]), ("0,2-3", [0, 2, 3])])
def test_parse_cores(text, cores):
    assert cluster.parse_cores(text) == cores


def test_worker_command_refuses_a_machine_without_the_image(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "grader", "worker", "--scheduler", "tcp://127.0.0.1:9",
                           "--image", "ipclab-runner:no-such-version", "--check-only"],
                          cwd=KIT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "cannot be a grading worker" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_a_scheduler_without_workers_is_one_clear_error(tmp_path):
    lc = LoopbackCluster(tmp_path, tmp_path / "calls.jsonl")
    try:
        lc.start_scheduler()
        with pytest.raises(cluster.ClusterError, match="no worker joined"):
            cluster.DaskExecutor(lc.address, worker_wait=2)
    finally:
        lc.stop()
