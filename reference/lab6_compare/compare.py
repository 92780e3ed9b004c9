"""Threads versus processes, measured.

The course notes end with a table that compares multithreading with
multiprocessing plus IPC: memory space, communication, synchronisation,
fault isolation, creation cost and use cases. This module measures every row
on the machine it runs on, so that the table is something you observed rather
than something you memorised.

Every measurement starts the same kind of worker in the same way, through
``_worker(kind, ...)``: a ``threading.Thread`` or a ``multiprocessing.Process``.
The two have the same start/join interface, which is exactly why the
comparison is fair: only the kind of worker changes.

Run ``python compare.py --out DIR`` to print the table and write the report.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

KINDS = ("thread", "process")
CPU_TASK = 6_000_000   # loop iterations: about 0.15 s of pure Python here
WAIT_SECONDS = 0.1     # how long each waiting task waits (think: a slow disk or server)
REPEATS = 3            # every timing is the median of this many runs


# -- the work ---------------------------------------------------------------------


def count_down(n: int = CPU_TASK) -> None:
    """Pure-Python CPU work: it holds the GIL for its whole run."""
    while n:
        n -= 1


def wait(seconds: float = WAIT_SECONDS) -> None:
    """Waiting work: time.sleep releases the GIL, like a blocking read does."""
    time.sleep(seconds)


def do_nothing() -> None:
    """A worker that returns at once, so that timing it times only start and join."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'thread' or 'process', not {kind!r}")


def _worker(kind: str, target, *args):
    """An unstarted thread or process: the one place where the two kinds differ."""
    _check_kind(kind)
    if kind == "thread":
        return threading.Thread(target=target, args=args)
    # The default start method: fork on Linux up to Python 3.13, forkserver
    # from 3.14. Either way the worker is a separate process with its own memory.
    return multiprocessing.Process(target=target, args=args)


# -- speedup ----------------------------------------------------------------------


def _serial_seconds(task, times: int) -> float:
    started = time.perf_counter()
    for _ in range(times):
        task()
    return time.perf_counter() - started


def _parallel_seconds(kind: str, task, workers: int) -> float:
    # Starting the workers is part of the price of parallelism, so it is timed too.
    started = time.perf_counter()
    pool = [_worker(kind, task) for _ in range(workers)]
    for worker in pool:
        worker.start()
    for worker in pool:
        worker.join()
    return time.perf_counter() - started


def _speedup(kind: str, task, workers: int) -> float:
    _check_kind(kind)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    # Serial and parallel runs alternate, so a burst of load from elsewhere on
    # the machine hits both; the medians then drop the odd disturbed run.
    task()   # warm-up: the first run pays for cold caches and a slow CPU clock
    serial, parallel = [], []
    for _ in range(REPEATS):
        serial.append(_serial_seconds(task, workers))
        parallel.append(_parallel_seconds(kind, task, workers))
    return statistics.median(serial) / statistics.median(parallel)


def cpu_bound_speedup(kind: str, workers: int = 2) -> float:
    """Serial time over parallel time for ``workers`` units of pure-Python CPU work.

    Serially, one thread does the units one after another; in parallel, each
    unit gets its own thread (``kind="thread"``) or process (``kind="process"``).
    On CPython with the GIL only one thread runs Python bytecode at a time, so
    threads give about 1.0; processes each have their own interpreter and GIL.
    """
    return _speedup(kind, count_down, workers)


def io_bound_speedup(kind: str, workers: int = 16) -> float:
    """Serial time over parallel time for ``workers`` waits of WAIT_SECONDS each.

    A waiting thread releases the GIL, so here threads overlap just as well as
    processes do.
    """
    return _speedup(kind, wait, workers)


# -- creation cost ----------------------------------------------------------------


def creation_cost(kind: str, n: int = 50) -> float:
    """Seconds to start and join one worker that does nothing, averaged over ``n``."""
    _check_kind(kind)
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    started = time.perf_counter()
    for _ in range(n):
        worker = _worker(kind, do_nothing)
        worker.start()
        worker.join()
    return (time.perf_counter() - started) / n


# -- memory -----------------------------------------------------------------------


def _uss(pid: int | None = None) -> int:
    """Unique set size: pages that belong to this process alone.

    RSS would also count pages shared with other processes (a forked child
    shares nearly all of its parent's pages until one of them writes), so
    adding up RSS counts the same memory many times over.
    """
    return psutil.Process(pid).memory_full_info().uss


def _thread_memory(count: int = 8) -> int:
    # Threads live in our own address space: what they add shows up as growth
    # of our own USS (mostly the pages of their stacks they have touched).
    release = threading.Event()
    gc.collect()
    before = _uss()
    threads = [_worker("thread", release.wait, 10) for _ in range(count)]
    for thread in threads:
        thread.start()     # returns once the thread is running
    after = _uss()
    release.set()
    for thread in threads:
        thread.join()
    return max(0, (after - before) // count)


def _hold(ready, release) -> None:
    ready.set()
    release.wait(10)       # bounded: a worker never outlives a lost parent by long


def _process_memory(count: int = 2) -> int:
    # A process has its own address space: what it adds is its own USS.
    release = multiprocessing.Event()
    readies = [multiprocessing.Event() for _ in range(count)]
    workers = [_worker("process", _hold, ready, release) for ready in readies]
    started = []
    try:
        for worker in workers:
            worker.start()
            started.append(worker)
        for ready in readies:
            if not ready.wait(10):
                raise RuntimeError("a worker process did not start within 10 s")
        total = sum(_uss(worker.pid) for worker in workers)
    finally:
        release.set()
        for worker in started:
            worker.join(10)
    return total // count


def worker_memory(kind: str) -> int:
    """Bytes of unique memory (psutil USS) one extra worker adds.

    For a thread: how much the USS of this process grows per thread started.
    For a process: the USS of the worker process itself.
    """
    _check_kind(kind)
    return _thread_memory() if kind == "thread" else _process_memory()


# -- memory space -----------------------------------------------------------------

_notes: list[str] = []   # a module-level object that workers write to


def _leave_note(note: str) -> None:
    _notes.append(note)


def shares_memory(kind: str) -> bool:
    """Whether a worker's change to a module-level object is seen by the parent."""
    note = f"{kind}-{time.monotonic_ns()}"
    worker = _worker(kind, _leave_note, note)
    worker.start()
    worker.join()
    # A thread appended to our list. A process appended to its own copy of it
    # (fork copies the memory, spawn builds it afresh): ours never changes.
    return note in _notes


# -- fault isolation --------------------------------------------------------------

SURVIVED = "parent survived"

# A separate program whose thread crashes hard. If the crash took this program
# down, the observer (us) has to be outside it to tell.
_THREAD_CRASH_PROGRAM = f"""
import os, resource, threading
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
worker = threading.Thread(target=os.abort)
worker.start()
worker.join()
print({SURVIVED!r}, flush=True)
"""


def _crash() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # no core file, please
    os.abort()


def crash_isolated(kind: str) -> bool:
    """Whether the parent survives a worker that crashes hard (``os.abort()``).

    A process is checked right here: if we get past join(), we survived. A
    thread is checked in a separate program, because a thread that aborts
    takes its whole process with it, and a dead process cannot report.
    """
    _check_kind(kind)
    if kind == "process":
        worker = _worker("process", _crash)
        worker.start()
        worker.join()
        if worker.exitcode is None or worker.exitcode >= 0:
            raise RuntimeError(f"the worker process did not crash (exit code {worker.exitcode})")
        return True
    run = subprocess.run([sys.executable, "-c", _THREAD_CRASH_PROGRAM],
                         capture_output=True, text=True, timeout=30)
    return run.returncode == 0 and SURVIVED in run.stdout


# -- the report -------------------------------------------------------------------


def measure_all() -> dict:
    """Every measurement, keyed by name then kind."""
    names = {
        "shares_memory": shares_memory,
        "crash_isolated": crash_isolated,
        "creation_cost": creation_cost,
        "worker_memory": worker_memory,
        "cpu_bound_speedup": cpu_bound_speedup,
        "io_bound_speedup": io_bound_speedup,
    }
    return {name: {kind: measure(kind) for kind in KINDS} for name, measure in names.items()}


def _seconds(value: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value * 1e9:.3g} ns"


def _bytes(value: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _facts(m: dict, kind: str) -> dict:
    """One kind's measurements, written for people (with units)."""
    return {
        "uss": _bytes(m["worker_memory"][kind]),
        "start": _seconds(m["creation_cost"][kind]),
        "shared": _yes_no(m["shares_memory"][kind]),
        "survived": _yes_no(m["crash_isolated"][kind]),
        "speedups": f"CPU-bound {m['cpu_bound_speedup'][kind]:.2f}x, IO-bound {m['io_bound_speedup'][kind]:.2f}x",
    }


def table_rows(m: dict) -> list[tuple[str, str, str]]:
    """The notes' table as (aspect, threads, processes) rows, each with what was measured."""
    t, p = _facts(m, "thread"), _facts(m, "process")
    return [
        ("Memory space", f"one space shared by all; {t['uss']} USS per thread",
                         f"one space per process; {p['uss']} USS per process"),
        ("Communication", f"plain objects (worker's change seen by parent: {t['shared']})",
                          f"IPC: pipes, queues, shared memory (worker's change seen by parent: {p['shared']})"),
        ("Synchronisation", f"needed around every shared object (memory shared: {t['shared']})",
                            f"only around what is shared through IPC (memory shared: {p['shared']})"),
        ("Fault isolation", f"a crash kills the whole program (parent survived: {t['survived']})",
                            f"a crash kills only that worker (parent survived: {p['survived']})"),
        ("Creation cost", f"{t['start']} to start and join", f"{p['start']} to start and join"),
        ("Use cases", f"waiting (IO); {t['speedups']}", f"computing and isolation; {p['speedups']}"),
    ]


def markdown_table(rows) -> str:
    lines = ["| Aspect | Threads | Processes |", "|---|---|---|"]
    lines += [f"| {aspect} | {threads} | {processes} |" for aspect, threads, processes in rows]
    return "\n".join(lines) + "\n"


def _plot(m: dict, path: Path) -> None:
    # Imported here: plotting is the slow import, and no worker needs it.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["threads", "processes"]
    charts = [
        ("CPU-bound speedup", [m["cpu_bound_speedup"][k] for k in KINDS], "serial / parallel"),
        ("IO-bound speedup", [m["io_bound_speedup"][k] for k in KINDS], "serial / parallel"),
        ("Creation cost", [m["creation_cost"][k] * 1e3 for k in KINDS], "ms per worker"),
        ("Memory per worker", [m["worker_memory"][k] / 2**20 for k in KINDS], "MiB (USS)"),
    ]
    fig, axes = plt.subplots(1, len(charts), figsize=(14, 3.5))
    for ax, (title, values, unit) in zip(axes, charts):
        bars = ax.bar(labels, values, color=["tab:blue", "tab:orange"])
        ax.bar_label(bars, fmt="%.3g")
        if "speedup" in title:
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)   # 1.0 = no faster than serial
        ax.set_title(title)
        ax.set_ylabel(unit)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_report(out_dir) -> Path:
    """Measure everything; write ``report.md`` and ``comparison.png`` in ``out_dir``.

    Returns the path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = measure_all()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    report = out / "report.md"
    report.write_text(
        "# Threads versus processes, measured\n\n"
        f"Python {sys.version.split()[0]} ({'with' if gil else 'without'} the GIL), "
        f"{len(os.sched_getaffinity(0))} CPUs usable, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.\n\n"
        + markdown_table(table_rows(m))
        + "\n![comparison](comparison.png)\n",
        encoding="utf-8",
    )
    _plot(m, out / "comparison.png")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Measure threads against processes.")
    parser.add_argument("--out", required=True, help="folder for report.md and comparison.png")
    args = parser.parse_args(argv)
    report = build_report(args.out)
    text = report.read_text(encoding="utf-8")
    print("".join(line + "\n" for line in text.splitlines() if line.startswith("|")), end="")
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
