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


# The report speaks the student's language: Korean when IPCLAB_LANG=ko or the
# locale is Korean (the kit's own rule), English otherwise. The Korean rows are
# the course notes' own words for the table.
WORDS = {
    "en": {
        "yes": "yes", "no": "no",
        "title": "Threads versus processes, measured",
        "python": "Python {version} ({gil}), {cpus} CPUs usable, load average {load}.",
        "with_gil": "with the GIL", "without_gil": "without the GIL",
        "header": ("Aspect", "Threads", "Processes"),
        "rows": [
            ("Memory space", "one space shared by all; {t_uss} USS per thread",
                             "one space per process; {p_uss} USS per process"),
            ("Communication", "plain objects (worker's change seen by parent: {t_shared})",
                              "IPC: pipes, queues, shared memory (worker's change seen by parent: {p_shared})"),
            ("Synchronisation", "needed around every shared object (memory shared: {t_shared})",
                                "only around what is shared through IPC (memory shared: {p_shared})"),
            ("Fault isolation", "a crash kills the whole program (parent survived: {t_survived})",
                                "a crash kills only that worker (parent survived: {p_survived})"),
            ("Creation cost", "{t_start} to start and join", "{p_start} to start and join"),
            ("Use cases", "CPU-bound {t_cpu}x ({t_cpu_verdict}), IO-bound {t_io}x: suits waiting work",
                          "CPU-bound {p_cpu}x ({p_cpu_verdict}), IO-bound {p_io}x: suits computing and isolation"),
        ],
        "faster": "faster than serial", "not_faster": "no faster than serial",
        "gil_note": " on CPython with the GIL",
        "charts": ("CPU-bound speedup", "IO-bound speedup", "Creation cost", "Memory per worker"),
        "units": ("serial / parallel", "ms per worker", "MiB (USS)"),
        "kinds": ("threads", "processes"),
    },
    "ko": {
        "yes": "예", "no": "아니요",
        "title": "스레드와 프로세스, 직접 측정한 비교",
        "python": "Python {version} ({gil}), 사용 가능한 CPU {cpus}개, 부하 평균 {load}.",
        "with_gil": "GIL 있음", "without_gil": "GIL 없음",
        "header": ("항목", "멀티스레딩 (스레드)", "멀티프로세싱 (프로세스)"),
        "rows": [
            ("메모리 공간", "모든 스레드가 한 공간을 공유; 스레드당 USS {t_uss}",
                           "프로세스마다 독립된 공간; 프로세스당 USS {p_uss}"),
            ("통신 방법", "일반 객체를 그대로 공유 (워커의 변경이 부모에게 보임: {t_shared})",
                         "IPC: 파이프, 메시지 큐, 공유 메모리 (워커의 변경이 부모에게 보임: {p_shared})"),
            ("동기화 필요성", "공유 객체마다 필요 (메모리 공유: {t_shared})",
                             "IPC로 공유하는 것에만 필요 (메모리 공유: {p_shared})"),
            ("안정성", "한 스레드의 크래시가 프로그램 전체를 죽임 (부모 생존: {t_survived})",
                      "크래시는 그 워커만 죽임 (부모 생존: {p_survived})"),
            ("생성/관리 비용", "시작과 join에 {t_start}", "시작과 join에 {p_start}"),
            ("사용 사례", "CPU 작업 {t_cpu}x ({t_cpu_verdict}), IO 작업 {t_io}x: 대기 작업에 적합",
                         "CPU 작업 {p_cpu}x ({p_cpu_verdict}), IO 작업 {p_io}x: 계산 작업과 격리에 적합"),
        ],
        "faster": "순차 실행보다 빠름", "not_faster": "순차 실행보다 빠르지 않음",
        "gil_note": ", GIL이 있는 CPython에서 측정",
        "charts": ("CPU 작업 속도 향상", "IO 작업 속도 향상", "생성 비용", "워커당 메모리"),
        "units": ("순차 / 병렬", "워커당 ms", "MiB (USS)"),
        "kinds": ("스레드", "프로세스"),
    },
}


def report_language() -> str:
    """``"ko"`` when IPCLAB_LANG, or else the locale, says Korean; ``"en"`` otherwise."""
    choice = os.environ.get("IPCLAB_LANG")
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        choice = choice or os.environ.get(var)
    return "ko" if (choice or "").lower().startswith("ko") else "en"


def _gil_enabled() -> bool:
    return getattr(sys, "_is_gil_enabled", lambda: True)()


def _verdict(speedup: float, words: dict, kind: str) -> str:
    # Where the notes say threads suit compute-heavy work, say what was
    # measured instead: on CPython with the GIL, two threads are no faster.
    verdict = words["faster"] if speedup >= 1.3 else words["not_faster"]
    return verdict + (words["gil_note"] if kind == "thread" and _gil_enabled() else "")


def _facts(m: dict, words: dict) -> dict:
    """Every measurement, written for people (with units), keyed t_* and p_*."""
    facts = {}
    for prefix, kind in (("t", "thread"), ("p", "process")):
        cpu = m["cpu_bound_speedup"][kind]
        facts |= {
            f"{prefix}_uss": _bytes(m["worker_memory"][kind]),
            f"{prefix}_start": _seconds(m["creation_cost"][kind]),
            f"{prefix}_shared": words["yes" if m["shares_memory"][kind] else "no"],
            f"{prefix}_survived": words["yes" if m["crash_isolated"][kind] else "no"],
            f"{prefix}_cpu": f"{cpu:.2f}",
            f"{prefix}_cpu_verdict": _verdict(cpu, words, kind),
            f"{prefix}_io": f"{m['io_bound_speedup'][kind]:.2f}",
        }
    return facts


def table_rows(m: dict, lang: str = "en") -> list[tuple[str, str, str]]:
    """The notes' table as (aspect, threads, processes) rows, each with what was measured."""
    words = WORDS[lang]
    facts = _facts(m, words)
    return [(aspect, threads.format(**facts), processes.format(**facts))
            for aspect, threads, processes in words["rows"]]


def markdown_table(rows, lang: str = "en") -> str:
    aspect, threads, processes = WORDS[lang]["header"]
    lines = [f"| {aspect} | {threads} | {processes} |", "|---|---|---|"]
    lines += [f"| {aspect} | {threads} | {processes} |" for aspect, threads, processes in rows]
    return "\n".join(lines) + "\n"


# Hangul needs a CJK font: DejaVu Sans, matplotlib's default, has no Hangul
# glyph and would draw empty boxes. Debian's fonts-noto-cjk provides these.
KOREAN_FONTS = ("Noto Sans CJK KR", "Noto Sans CJK JP", "Noto Sans CJK SC", "NanumGothic")


def _use_korean_font() -> None:
    from matplotlib import font_manager, rcParams

    def installed():
        names = {font.name for font in font_manager.fontManager.ttflist}
        return [name for name in KOREAN_FONTS if name in names]

    if not installed():
        # A font installed after matplotlib built its font cache is not in it yet.
        for path in font_manager.findSystemFonts():
            if "CJK" in path or "Nanum" in path:
                font_manager.fontManager.addfont(path)
    # Naming only installed fonts: matplotlib logs a complaint for each missing one.
    rcParams["font.family"] = [*installed(), "DejaVu Sans"]


def plot(m: dict, path: Path, lang: str = "en") -> None:
    """Draw the measured numbers as bar charts into ``path`` (a PNG)."""
    # Imported here: plotting is the slow import, and no worker needs it.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    words = WORDS[lang]
    if lang == "ko":
        _use_korean_font()
    speedup, per_worker, uss = words["units"]
    charts = zip(words["charts"], (
        ([m["cpu_bound_speedup"][k] for k in KINDS], speedup),
        ([m["io_bound_speedup"][k] for k in KINDS], speedup),
        ([m["creation_cost"][k] * 1e3 for k in KINDS], per_worker),
        ([m["worker_memory"][k] / 2**20 for k in KINDS], uss),
    ))
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
    for ax, (title, (values, unit)) in zip(axes, charts):
        bars = ax.bar(words["kinds"], values, color=["tab:blue", "tab:orange"])
        ax.bar_label(bars, fmt="%.3g")
        if unit == speedup:
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)   # 1.0 = no faster than serial
        ax.set_title(title)
        ax.set_ylabel(unit)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(m: dict, out_dir, lang: str = "en") -> Path:
    """Write measurements ``m`` (as from :func:`measure_all`) as report.md and comparison.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    words = WORDS[lang]
    intro = words["python"].format(
        version=sys.version.split()[0],
        gil=words["with_gil" if _gil_enabled() else "without_gil"],
        cpus=len(os.sched_getaffinity(0)),
        load=", ".join(f"{x:.2f}" for x in os.getloadavg()))
    report = out / "report.md"
    report.write_text(f"# {words['title']}\n\n{intro}\n\n"
                      + markdown_table(table_rows(m, lang), lang)
                      + "\n![comparison](comparison.png)\n", encoding="utf-8")
    plot(m, out / "comparison.png", lang)
    return report


def build_report(out_dir, lang: str | None = None) -> Path:
    """Measure everything; write ``report.md`` and ``comparison.png`` in ``out_dir``.

    ``lang`` is ``"en"`` or ``"ko"``; by default :func:`report_language` picks.
    Returns the path of ``report.md``.
    """
    return write_report(measure_all(), out_dir, lang or report_language())


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
