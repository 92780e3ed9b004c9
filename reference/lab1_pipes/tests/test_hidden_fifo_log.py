"""Hidden tests for part B: FifoLogServer and fifo_send (fifo_log.py)."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import time

from grader.i18n import say
from lab1_helpers import WAIT, open_writer, wait_all

ATOMIC_WRITERS = 8
ATOMIC_RECORDS = 250
# Each writer repeats its own letter: a record made of two writers' pieces shows.
ATOMIC_WRITER = r"""
import sys
from fifo_log import fifo_send
path, letter, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(count):
    head = f"{letter}{i:05d}:"
    fifo_send(path, head + letter * (size - len(head)))
"""


def test_records_are_atomic_under_contention(impl, tmp_path, start_server):
    """Records of nearly PIPE_BUF bytes from 8 writers at once must arrive whole and unmixed."""
    path = tmp_path / "log.fifo"
    size = select.PIPE_BUF - 16
    server = start_server([[ATOMIC_WRITERS * ATOMIC_RECORDS, WAIT]], path=path)
    # Shrink the FIFO's buffer to one page: writers then queue for room at
    # every record, and a record written in pieces gets other records between
    # its pieces nearly every time. A single write of <= PIPE_BUF bytes still
    # goes in whole.
    fd = open_writer(path)
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, select.PIPE_BUF)
    finally:
        os.close(fd)
    letters = "abcdefghijklmnop"[:ATOMIC_WRITERS]
    writers = [subprocess.Popen([sys.executable, "-c", ATOMIC_WRITER, str(path), letter, str(ATOMIC_RECORDS), str(size)],
                                env=impl.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE) for letter in letters]
    wait_all(writers)
    records = server.records()
    heads = [(letter, f"{letter}{i:05d}:") for letter in letters for i in range(ATOMIC_RECORDS)]
    expected = {head + letter * (size - len(head)) for letter, head in heads}
    mixed = [r for r in records if r not in expected]
    assert not mixed, say("{count} records arrived mixed with other writers' bytes or cut, e.g. {example!r}...",
                          count=len(mixed), example=mixed[0][:60])
    assert len(records) == len(expected) and set(records) == expected, \
        say("{count} records lost", count=len(expected - set(records)))


def test_leftover_records_kept_for_next_serve(tmp_path, start_server):
    path = tmp_path / "log.fifo"
    server = start_server([[2, WAIT], [3, WAIT]], path=path)
    fd = open_writer(path)
    os.write(fd, b"r0\nr1\nr2\nr3\nr4\n")  # one write: the server may well read all five at once
    os.close(fd)
    assert server.records() == ["r0", "r1"], say("serve(max_lines=2) must return exactly 2 records")
    assert server.records() == ["r2", "r3", "r4"], say("records read beyond max_lines were not kept")


def test_idle_timeout_returns(tmp_path, start_server):
    path = tmp_path / "log.fifo"
    server = start_server([[None, 0.5], [None, 0.5]], path=path)
    fd = open_writer(path)
    os.write(fd, b"a\nb\n")
    os.close(fd)
    started = time.monotonic()
    assert server.records() == ["a", "b"]
    assert server.records() == [], say("with no writers, serve(idle_timeout=0.5) returns an empty list")
    assert time.monotonic() - started < WAIT


def test_late_writers_after_idle_are_served(tmp_path, start_server):
    path = tmp_path / "log.fifo"
    server = start_server([[1, WAIT], [1, WAIT]], path=path)
    subprocess.run(["sh", "-c", 'echo first > "$0"', str(path)], timeout=WAIT, check=True)
    assert server.records() == ["first"]
    # Every writer has gone; the server waits in serve() facing end-of-file.
    time.sleep(0.3)
    subprocess.run(["sh", "-c", 'echo second > "$0"', str(path)], timeout=WAIT, check=True)
    assert server.records() == ["second"], say("a writer that came after all others had left was not served")


def test_many_writer_cycles(tmp_path, start_server):
    """200 writers in a row, each opening, writing one record and closing."""
    path = tmp_path / "log.fifo"
    cycles = 200
    server = start_server([[cycles, WAIT]], path=path)
    for i in range(cycles):
        fd = open_writer(path)
        os.write(fd, f"cycle-{i}\n".encode())
        os.close(fd)
    records = server.records()
    assert sorted(records) == sorted(f"cycle-{i}" for i in range(cycles)), \
        say("{lost} of {total} records lost between writers", lost=cycles - len(set(records)), total=cycles)
