"""Lab 6 hidden tests: is a "process" really a process, is memory counted once,
and does the report hold numbers that were really measured?"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from grader.i18n import say
from lab6_report import report_numbers  # the public tests' rules for reading report.md

_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


@pytest.fixture
def compare(impl):
    return impl.load("compare")


# -- a "process" must be a process -------------------------------------------------------


class ChildWatcher:
    """Notes every descendant process that exists while a call runs."""

    def __init__(self):
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                try:
                    # Python's own helpers (resource tracker, fork server) are
                    # not workers; the fork server's children, which are, share
                    # its command line but not its parent.
                    helper = any(h in " ".join(child.cmdline()) for h in _HELPERS)
                    if not (helper and child.ppid() == me.pid):
                        self.seen.add(child.pid)
                except psutil.Error:   # it exited while we looked: it still existed
                    self.seen.add(child.pid)
            self._stop.wait(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def test_process_kind_starts_processes(compare):
    with ChildWatcher() as watcher:
        compare.cpu_bound_speedup("process", workers=2)
    assert len(watcher.seen) >= 2, \
        say("cpu_bound_speedup('process', workers=2) started {count} child process(es): "
            "each of the 2 workers must be a process", count=len(watcher.seen))


def test_unknown_kind_is_rejected(compare):
    for name in ("cpu_bound_speedup", "io_bound_speedup", "creation_cost", "worker_memory",
                 "shares_memory", "crash_isolated"):
        with pytest.raises(ValueError):
            getattr(compare, name)("fiber")


# -- memory -------------------------------------------------------------------------------


def _fork_and_measure() -> tuple[int, int]:
    """USS and RSS of a child forked from this (test) process, waiting on a pipe."""
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(release_w)   # else our own copy keeps the pipe open and read never returns
            os.write(ready_w, b"r")
            os.read(release_r, 1)
        finally:
            os._exit(0)           # never fall back into the test runner
    os.close(ready_w)
    os.close(release_r)
    try:
        os.read(ready_r, 1)   # the child is running and waiting
        info = psutil.Process(pid).memory_full_info()
        return info.uss, info.rss
    finally:
        os.close(release_w)   # the child's read returns: it exits
        os.close(ready_r)
        os.waitpid(pid, 0)


def _spawn_and_measure(impl) -> int:
    """USS of a fresh interpreter that imported the implementation (the spawn start method's cost)."""
    program = ("import sys, compare, multiprocessing, multiprocessing.synchronize\n"
               "print('ready', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", program], env=impl.env(), cwd=impl.dir,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:   # compare may print things of its own when imported
            if line.strip() == "ready":
                break
        else:
            raise AssertionError(say("a fresh interpreter could not import compare"))
        return psutil.Process(proc.pid).memory_full_info().uss
    finally:
        proc.stdin.close()
        proc.wait(10)


def test_worker_memory_counts_unique_pages(compare, impl):
    measured = compare.worker_memory("process")
    fork_uss, fork_rss = _fork_and_measure()
    spawn_uss = _spawn_and_measure(impl)
    # Whether the student forks or spawns, a worker's own pages cannot much
    # exceed those of a fresh interpreter that imported the same module. A
    # forked worker's RSS also counts every page it still shares with us.
    ceiling = 1.5 * max(fork_uss, spawn_uss)
    mib = 2**20
    assert 0 < measured <= ceiling, \
        say("worker_memory('process') says {measured:.1f} MiB, but a worker's unique memory here is at most "
            "{ceiling:.1f} MiB (forked child: USS {fork_uss:.1f} MiB, RSS {fork_rss:.1f} MiB; "
            "fresh interpreter: USS {spawn_uss:.1f} MiB)", measured=measured / mib, ceiling=ceiling / mib,
            fork_uss=fork_uss / mib, fork_rss=fork_rss / mib, spawn_uss=spawn_uss / mib)


def test_thread_adds_less_memory_than_process(compare):
    thread, process = compare.worker_memory("thread"), compare.worker_memory("process")
    assert isinstance(thread, int) and isinstance(process, int), say("worker_memory must return an int (bytes)")
    assert 0 <= thread < process, say("a thread added {thread} bytes, a process {process} bytes",
                                      thread=thread, process=process)


# -- the report holds real measurements ---------------------------------------------------

# How far a number in the report may be from a fresh measurement of the same
# thing: (factor, absolute slack). Memory (USS) hardly moves from run to run,
# so it is held tight: a made-up size is caught there. Timings on a shared
# machine wobble, by a factor of two for speedups and of ten for starting a
# thread (mostly waiting to be scheduled), so their margins are wide; a
# number that was never measured is still rarely within all of them.
# The IO-bound speedups are read (the report must hold them) but not measured
# again: 16 waits, three times over, cost more of the suite's time than they
# are worth, since a made-up IO speedup (16x) is close to a real one anyway.
TOLERANCE = {
    "cpu_bound_speedup": (2.0, 0.0),
    "creation_cost": (5.0, 0.0),
    "worker_memory": (3.0, 128 * 1024),
}
FRESH_ATTEMPTS = 3
REPORT_ATTEMPTS = 2


def _agrees(reported: float, fresh: float, factor: float, slack: float) -> bool:
    if abs(reported - fresh) <= slack:
        return True
    return reported > 0 and fresh > 0 and 1 / factor <= reported / fresh <= factor


# build_report runs in a separate program: its workers, crashes and open
# plotting files stay out of the test process. The fresh measurements are
# taken by programs of the same kind, so that both sides start workers from a
# process of the same size (forking a big process costs more).
_REPORT_PROGRAM = """
import json, sys, compare
print("RETURNED=" + str(compare.build_report(sys.argv[1])), flush=True)
"""
_MEASURE_PROGRAM = """
import json, sys, compare
values = {f"{name} {kind}": float(getattr(compare, name)(kind))
          for name, kind in (item.split() for item in sys.argv[1:])}
print("VALUES=" + json.dumps(values), flush=True)
"""


def _run_program(impl, program: str, *args: str) -> str:
    run = subprocess.run([sys.executable, "-c", program, *args], env=impl.env(), cwd=impl.dir,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=150)
    tail = (run.stderr.strip().splitlines() or [""])[-1][:200]
    assert run.returncode == 0, say("the program calling compare failed (exit status {code}): {tail}",
                                    code=run.returncode, tail=tail)
    return run.stdout


def _returned(stdout: str, tag: str) -> str:
    found = re.findall(rf"^{tag}=(.*)$", stdout, re.MULTILINE)
    assert found, say("no {tag} line in the program's output", tag=tag)
    return found[-1]


def _build_and_compare(impl, out: Path) -> list[str]:
    """Build a report, measure afresh, and list the numbers that disagree."""
    returned = _returned(_run_program(impl, _REPORT_PROGRAM, str(out)), "RETURNED")
    report = Path(returned)
    if not report.is_absolute():
        report = impl.dir / report
    assert report.name == "report.md" and report.is_file(), \
        say("build_report must return the path of the report.md it wrote, not {returned!r}", returned=returned)
    assert (report.parent / "comparison.png").is_file(), say("build_report wrote no comparison.png next to report.md")
    reported = {f"{name} {kind}": value
                for name, by_kind in report_numbers(report.read_text(encoding="utf-8")).items()
                for kind, value in by_kind.items() if name in TOLERANCE}
    fresh = {item: [] for item in reported}
    pending = list(reported)
    for _ in range(FRESH_ATTEMPTS):   # measure again only what disagrees
        values = json.loads(_returned(_run_program(impl, _MEASURE_PROGRAM, *pending), "VALUES"))
        for item in pending:
            fresh[item].append(values[item])
        pending = [item for item in pending
                   if not _agrees(reported[item], fresh[item][-1], *TOLERANCE[item.split()[0]])]
        if not pending:
            break
    return [say("{item}: report says {reported:.3g}, measured now {fresh}", item=item, reported=reported[item],
                fresh=", ".join(f"{v:.3g}" for v in fresh[item])) for item in pending]


def test_report_matches_fresh_measurements(impl, tmp_path):
    # A burst of load can disturb the report's own measurement, and no fresh
    # measurement repairs that; so a disagreement earns one more report. A
    # number that was never measured disagrees both times.
    for attempt in range(REPORT_ATTEMPTS):
        disagreements = _build_and_compare(impl, tmp_path / f"out{attempt}")
        if not disagreements:
            return
    pytest.fail(say("report.md does not hold what was measured: {disagreements}", disagreements="; ".join(disagreements)),
                pytrace=False)
