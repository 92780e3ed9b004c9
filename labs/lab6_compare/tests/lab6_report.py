"""Reading lab 6's report.md back: the table, and the numbers in it.

The public and the hidden tests read a report by the same rules, so the rules
live here once. A student may word the cells freely and write the table in
English or in the notes' Korean; only the row names, the two columns and the
numbers with their units are read.
"""

from __future__ import annotations

import re

from grader.i18n import say

# Each aspect as the words that may start its row, in English or in the notes'
# Korean (메모리 공간, 통신 방법, 동기화 필요성, 안정성, 생성/관리 비용, 사용 사례).
ASPECTS = {
    "memory space": ("memory", "메모리"),
    "communication": ("communicat", "통신"),
    "synchronisation": ("synchroni", "동기화"),
    "fault isolation": ("fault", "isolat", "안정성", "격리"),
    "creation cost": ("creat", "생성"),
    "use cases": ("use case", "사용 사례", "용도"),
}
# A column header names threads or processes: 스레드/스레딩, 프로세스/프로세싱 in Korean.
THREAD_WORDS = ("thread", "스레")
PROCESS_WORDS = ("process", "프로세")
_NUMBER = r"(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
TIME = re.compile(_NUMBER + r"\s*(ns|µs|μs|us|ms|s)(?![A-Za-z])")
TIME_UNITS = {"ns": 1e-9, "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
BYTES = re.compile(_NUMBER + r"\s*(bytes|B|kB|KB|KiB|MB|MiB|GB|GiB)(?![A-Za-z])")
BYTE_UNITS = {"bytes": 1, "B": 1, "kB": 1e3, "KB": 1e3, "KiB": 2**10, "MB": 1e6, "MiB": 2**20,
              "GB": 1e9, "GiB": 2**30}
SPEEDUP = re.compile(_NUMBER + r"\s*[x×](?![A-Za-z])")


def parse_report(text: str) -> dict:
    """The report's table as {aspect: (threads cell, processes cell)}."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.strip().startswith("|")]
    rows = [row for row in rows if not all(re.fullmatch(r":?-*:?", cell) for cell in row)]
    for at, header in enumerate(rows):
        lowered = [cell.lower() for cell in header]
        threads = [i for i, cell in enumerate(lowered) if any(word in cell for word in THREAD_WORDS)]
        processes = [i for i, cell in enumerate(lowered) if any(word in cell for word in PROCESS_WORDS)]
        if threads and processes:
            break
    else:
        raise AssertionError(say("no table with a threads column and a processes column in report.md"))
    table = {}
    for row in rows[at + 1:]:
        if len(row) <= max(threads[0], processes[0]):
            continue
        for aspect, words in ASPECTS.items():
            if aspect not in table and any(word in row[0].lower() for word in words):
                table[aspect] = (row[threads[0]], row[processes[0]])
    missing = [aspect for aspect in ASPECTS if aspect not in table]
    assert not missing, say("report.md's table has no row for: {aspects}", aspects=", ".join(missing))
    return table


def report_numbers(text: str) -> dict:
    """The measured numbers in the table, each as {kind: value}, in seconds and bytes."""
    table = parse_report(text)
    numbers = {"creation_cost": {}, "worker_memory": {}, "cpu_bound_speedup": {}, "io_bound_speedup": {}}
    for column, kind in enumerate(("thread", "process")):
        cell = table["creation cost"][column]
        found = TIME.search(cell)
        assert found, say("creation cost row, {kind} column: no time with a unit (like 85 µs or 2.1 ms) in {cell!r}",
                          kind=kind, cell=cell)
        numbers["creation_cost"][kind] = float(found[1]) * TIME_UNITS[found[2]]
        cell = table["memory space"][column]
        found = BYTES.search(cell)
        assert found, say("memory space row, {kind} column: no size with a unit (like 16 KiB or 1.4 MiB) in {cell!r}",
                          kind=kind, cell=cell)
        numbers["worker_memory"][kind] = float(found[1]) * BYTE_UNITS[found[2]]
        cell = table["use cases"][column]
        speedups = SPEEDUP.findall(cell)
        assert len(speedups) >= 2, \
            say("use cases row, {kind} column: expected the CPU-bound then the IO-bound speedup (like 1.02x, 14.9x) in {cell!r}",
                kind=kind, cell=cell)
        numbers["cpu_bound_speedup"][kind] = float(speedups[0])
        numbers["io_bound_speedup"][kind] = float(speedups[1])
    return numbers
