"""Lab 6 public tests: threads versus processes, measured.

Semantic facts are checked exactly. Timings are checked with margins, and a
speedup is only asserted after checking that this process may really use two
CPUs (a machine, container or CI runner with one CPU cannot show a CPU-bound
speedup, and the test says so instead of blaming your code).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from grader.i18n import say
from lab6_report import report_numbers

GIL_ENABLED = getattr(sys, "_is_gil_enabled", lambda: True)()
ATTEMPTS = 3   # a speedup verdict is the best of this many measurements (see _best)


@pytest.fixture
def compare(impl):
    return impl.load("compare")


# -- how many CPUs may we really use? ---------------------------------------------------


def _cgroup_cpu_limits() -> list[float]:
    """CPU quotas (in CPUs) of the cgroups this process is in, v1 and v2 alike."""
    limits = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return limits
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            roots, files = [Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")], ("cpu.max",)
        elif "cpu" in controllers.split(","):
            roots, files = [Path("/sys/fs/cgroup") / controllers, Path("/sys/fs/cgroup/cpu")], \
                ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        for root in roots:
            folder = root / path.lstrip("/")
            # Every ancestor's quota limits us too; in a container the path may
            # not exist in our mount namespace, so the root itself is read as well.
            for level in [folder, *folder.parents]:
                if not str(level).startswith(str(root)):
                    break
                limit = _read_quota(level, files)
                if limit is not None:
                    limits.append(limit)
    return limits


def _read_quota(folder: Path, files) -> float | None:
    try:
        if len(files) == 1:
            quota, period = (folder / files[0]).read_text().split()[:2]
        else:
            quota, period = ((folder / name).read_text().strip() for name in files)
    except (OSError, ValueError):
        return None
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)


def usable_cpus() -> tuple[float, str]:
    """How many CPUs this process may use, and how that was found out."""
    affinity = len(os.sched_getaffinity(0))
    quotas = _cgroup_cpu_limits()
    usable = min([affinity, *quotas])
    how = (say("CPU affinity allows {affinity}, cgroup quota allows {quota:g}", affinity=affinity, quota=min(quotas))
           if quotas else say("CPU affinity allows {affinity}, no cgroup CPU quota", affinity=affinity))
    return usable, how


def require_two_cpus():
    usable, how = usable_cpus()
    if usable < 2:
        pytest.fail(say("this machine lets the tests use only {usable:g} CPU(s) ({how}): a speedup cannot be "
                        "measured here; run the lab with 2 CPUs (lab.yaml asks for cpus: 2)", usable=usable, how=how),
                    pytrace=False)


def load_note() -> str:
    """The machine's load, and what it means for a speedup verdict."""
    load = os.getloadavg()
    note = say("load average {loads}", loads=", ".join(f"{x:.2f}" for x in load))
    if load[0] > usable_cpus()[0]:
        note += "; " + say("the machine is busy with other programs, so measure again when it is quiet")
    return note


def _best(measure, better, attempts=ATTEMPTS) -> list[float]:
    """Measure up to ``attempts`` times, stopping at the first ``better`` value.

    Other programs on the machine disturb single measurements, mostly by
    taking the CPUs a parallel run needed. A correct implementation shows its
    speedup (or, for threads under the GIL, its lack of one) in at least one
    of a few attempts; a wrong one gives a wrong number every time and fails.
    """
    values = []
    for _ in range(attempts):
        values.append(measure())
        if better(values[-1]):
            break
    return values


# -- running a call in a separate program -------------------------------------------


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return say("killed by {signal}", signal=signal.Signals(-code).name)
        except ValueError:
            return say("killed by signal {number}", number=-code)
    return say("exit status {code}", code=code)


def call_in_child(impl, call: str, timeout: float = 45):
    """Evaluate ``compare.<call>`` in a separate Python program; return (result, run).

    A submission that crashes its own process takes down only that program,
    not the test run. Core dumps are switched off for it and its children.
    """
    program = ("import json, resource\n"
               "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
               "import compare\n"
               f"print('RESULT=' + json.dumps(compare.{call}), flush=True)\n")
    try:
        run = subprocess.run([sys.executable, "-c", program], env=impl.env(), cwd=impl.dir,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(say("compare.{call} did not return within {timeout:g} s", call=call, timeout=timeout), pytrace=False)
    found = re.findall(r"^RESULT=(.*)$", run.stdout, re.MULTILINE)
    result = json.loads(found[-1]) if found else None
    return result, run


def _tail(run) -> str:
    lines = (run.stderr or "").strip().splitlines()
    return lines[-1][:200] if lines else ""


# -- memory space ---------------------------------------------------------------------


def test_threads_share_memory(compare):
    assert compare.shares_memory("thread") is True, \
        say("a thread's change to a module-level object must be seen by the parent")


def test_processes_do_not_share_memory(compare):
    assert compare.shares_memory("process") is False, \
        say("a worker process changes its own copy of a module-level object: the parent must not see it")


# -- fault isolation ------------------------------------------------------------------


def test_process_crash_is_isolated(impl):
    result, run = call_in_child(impl, "crash_isolated('process')")
    assert run.returncode >= 0, \
        say("crash_isolated('process') took down the program that called it ({exit}): "
            "the crashing worker was not a separate process", exit=describe_exit(run.returncode))
    assert run.returncode == 0, say("crash_isolated('process') raised: {tail}", tail=_tail(run))
    assert result is True, say("crash_isolated('process') returned {result!r}; {tail}", result=result, tail=_tail(run))


def test_thread_crash_is_observed_from_outside(impl):
    result, run = call_in_child(impl, "crash_isolated('thread')")
    assert run.returncode >= 0, \
        say("crash_isolated('thread') took down the program that called it ({exit}): a crashing thread kills its "
            "whole process, so start the crash in a separate program and watch it", exit=describe_exit(run.returncode))
    assert run.returncode == 0, say("crash_isolated('thread') raised: {tail}", tail=_tail(run))
    assert result is False, say("crash_isolated('thread') returned {result!r}, but a thread crash is not isolated",
                                result=result)


# -- speedups -------------------------------------------------------------------------


def test_cpu_bound_processes_speed_up(compare):
    require_two_cpus()
    # Five attempts, not three: on an idle 2-CPU virtual machine the reference
    # once measured 1.24, 1.23, 1.16 in a row (the host had taken a CPU for a
    # few seconds). Threads posing as processes rarely reach 1.4 (once in CI);
    # the deterministic tests of what "process" starts catch them every time.
    values = _best(lambda: compare.cpu_bound_speedup("process", workers=2), lambda v: v >= 1.4, attempts=5)
    assert max(values) >= 1.4, \
        say("2 processes gave CPU-bound speedups {speedups}, expected at least 1.4 ({load})",
            speedups=[round(v, 2) for v in values], load=load_note())


def test_cpu_bound_threads_and_the_gil(compare):
    require_two_cpus()
    if GIL_ENABLED:
        values = _best(lambda: compare.cpu_bound_speedup("thread", workers=2), lambda v: v < 1.3)
        assert min(values) < 1.3, \
            say("2 threads gave CPU-bound speedups {speedups} on a CPython with the GIL, expected under 1.3 ({load})",
                speedups=[round(v, 2) for v in values], load=load_note())
    else:
        values = _best(lambda: compare.cpu_bound_speedup("thread", workers=2), lambda v: v >= 1.4)
        assert max(values) >= 1.4, \
            say("2 threads gave CPU-bound speedups {speedups} on a free-threaded CPython, expected at least 1.4 ({load})",
                speedups=[round(v, 2) for v in values], load=load_note())


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_io_bound_speedup(compare, kind):
    require_two_cpus()
    values = _best(lambda: compare.io_bound_speedup(kind, workers=16), lambda v: v >= 4, attempts=2)
    assert max(values) >= 4, \
        say("16 {kind} workers gave IO-bound speedups {speedups}, expected at least 4 ({load})",
            kind=kind, speedups=[round(v, 2) for v in values], load=load_note())


# -- creation cost --------------------------------------------------------------------


def test_thread_is_cheaper_to_create(compare):
    thread = compare.creation_cost("thread", n=20)
    process = compare.creation_cost("process", n=20)
    assert thread > 0 and process > 0, say("creation costs must be positive, got {thread!r} and {process!r}",
                                              thread=thread, process=process)
    assert thread < process, \
        say("starting a thread took {thread_us:.0f} µs, a process {process_us:.0f} µs: a thread should be cheaper",
            thread_us=thread * 1e6, process_us=process * 1e6)


# -- the report -----------------------------------------------------------------------

def assert_png(path: Path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", say("{file} is not a PNG file", file=path.name)
    import matplotlib.image
    image = matplotlib.image.imread(str(path))
    assert image.shape[0] > 50 and image.shape[1] > 50, say("{file} is only {width}x{height} pixels", file=path.name,
                                                            width=image.shape[1], height=image.shape[0])


def test_report_command(impl, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(impl.path("compare.py")), "--out", str(out)],
                         env=impl.env(), cwd=tmp_path, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, say("python compare.py --out DIR failed ({exit}): {tail}",
                                    exit=describe_exit(run.returncode), tail=_tail(run))
    assert re.search(r"^\s*\|.*(thread|스레).*\|.*(process|프로세)", run.stdout, re.IGNORECASE | re.MULTILINE), \
        say("python compare.py --out DIR must print the table (a Markdown table with threads and processes columns)")
    report = out / "report.md"
    assert report.is_file(), say("python compare.py --out DIR wrote no report.md")
    assert (out / "comparison.png").is_file(), say("python compare.py --out DIR wrote no comparison.png")
    assert_png(out / "comparison.png")
    report_numbers(report.read_text(encoding="utf-8"))
