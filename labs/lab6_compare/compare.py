"""Threads versus processes, measured.

The course notes end with a table comparing multithreading with
multiprocessing plus IPC: memory space, communication, synchronisation,
fault isolation, creation cost and use cases. In this lab you measure every
row on the machine in front of you. Read handout.md (한국어: handout.ko.md) first.

Every function takes ``kind``: ``"thread"`` (a ``threading.Thread``) or
``"process"`` (a ``multiprocessing.Process``, or a process pool). Any other
kind raises ``ValueError``. Start method (fork or spawn) is your choice.

Run ``python compare.py --out DIR`` to print the table and write the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cpu_bound_speedup(kind: str, workers: int = 2) -> float:
    """Serial time over parallel time for ``workers`` units of pure-Python CPU work.

    One unit is a fixed pure-Python loop (e.g. counting down from a few
    million; about 0.1-0.2 s, long enough that starting a worker is small
    beside it). Serially, the units run one after another in the caller;
    in parallel, each unit runs in its own worker of the given ``kind``, all
    started before any is joined. Each of the two times is the median of
    repeated runs (3 is enough). Returns serial / parallel.
    """
    raise NotImplementedError("cpu_bound_speedup: time the CPU task serially and in parallel")


def io_bound_speedup(kind: str, workers: int = 16) -> float:
    """Serial time over parallel time for ``workers`` units of waiting work.

    One unit is a fixed wait (``time.sleep``): 0.1 s is enough with fork,
    but starting 16 spawned processes costs about a second, so with
    spawn wait 0.25 s or more. Same rules as :func:`cpu_bound_speedup`: serial
    in the caller, then one worker per unit, medians of repeated runs.
    Returns serial / parallel.
    """
    raise NotImplementedError("io_bound_speedup: time the waiting task serially and in parallel")


def creation_cost(kind: str, n: int = 50) -> float:
    """Seconds to start and join one worker that does nothing, averaged over ``n`` workers."""
    raise NotImplementedError("creation_cost: time start() + join() of n idle workers")


def worker_memory(kind: str) -> int:
    """Bytes of unique memory (psutil USS) one extra worker adds.

    For a thread: how much this process's USS grows per thread started (start
    a few that wait, measure, release them). For a process: the USS of the
    worker process itself, measured while it is alive and waiting.
    USS, not RSS: RSS also counts pages a worker shares with other processes.
    """
    raise NotImplementedError("worker_memory: measure psutil USS with workers alive")


def shares_memory(kind: str) -> bool:
    """Whether a worker's change to a module-level object is seen by the parent."""
    raise NotImplementedError("shares_memory: let a worker change a module-level object, then look")


def crash_isolated(kind: str) -> bool:
    """Whether the parent survives a worker that crashes hard (``os.abort()`` or a fatal signal).

    For ``"thread"`` the crash must be observed from a separate program
    (``subprocess``): a thread that aborts takes its whole process down, and
    a dead process cannot return False. Calling this function must never
    crash the program that calls it.
    """
    raise NotImplementedError("crash_isolated: crash a worker and see who survives")


def build_report(out_dir, lang: str | None = None) -> Path:
    """Measure everything and write ``report.md`` and ``comparison.png`` in ``out_dir``.

    ``out_dir`` is created if missing. Returns the path of ``report.md``.
    ``lang`` is ``"en"`` or ``"ko"``; ``None`` follows the student's language
    (``IPCLAB_LANG``, then the locale: ``ko...`` means Korean). A Korean
    report uses the notes' rows: 메모리 공간, 통신 방법, 동기화 필요성, 안정성,
    생성/관리 비용, 사용 사례; the grader reads either language.

    ``report.md`` holds the notes' table as a Markdown table: a header row
    with a threads column and a processes column (e.g.
    ``| Aspect | Threads | Processes |``), then one row per aspect, whose
    first cell names it: memory space, communication, synchronisation, fault
    isolation, creation cost, use cases. Besides the notes' words, every row
    holds what you measured, and the grader reads these numbers back:

    * memory space: the worker's USS with a unit (``16 KiB``, ``1.4 MiB``, ``9000 bytes``);
    * creation cost: the time with a unit (``85 µs``, ``2.1 ms``, ``0.05 s``);
    * use cases: the CPU-bound speedup, then the IO-bound one (``1.02x``, ``14.9x``).

    The numbers must be the ones measured by this call. ``comparison.png``
    shows them as matplotlib bar charts (speedups, creation cost, memory).
    """
    raise NotImplementedError("build_report: measure, then write report.md and comparison.png")


def main(argv=None) -> int:
    """``python compare.py --out DIR``: print the table and write the report."""
    parser = argparse.ArgumentParser(description="Measure threads against processes.")
    parser.add_argument("--out", required=True, help="folder for report.md and comparison.png")
    args = parser.parse_args(argv)
    raise NotImplementedError("main: call build_report(args.out) and print the table")


if __name__ == "__main__":
    sys.exit(main())
