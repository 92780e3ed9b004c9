"""Public tests for part B: FifoLogServer and fifo_send (fifo_log.py).

The server runs in a program of its own (see conftest.ServerProcess), so that
a server that hangs or spins cannot take the test run with it, and so that its
CPU time can be measured.
"""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
import time

import psutil
import pytest

from grader.i18n import say
from lab1_helpers import WAIT, is_fifo, open_writer, wait_all

WRITERS = 8
RECORDS_PER_WRITER = 500

# A writer that is not fifo_send: a shell loop, as any program could write.
SH_WRITER = 'i=0; while [ $i -lt "$2" ]; do printf "%s\\n" "$3-$i-$4"; i=$((i+1)); done > "$1"'
PY_WRITER = r"""
import sys
from fifo_log import fifo_send
path, count, name, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for i in range(count):
    fifo_send(path, f"{name}-{i}-{payload}")
"""


def start_writer(impl, path, kind, name, count, payload):
    if kind == "sh":
        args = ["sh", "-c", SH_WRITER, "sh", str(path), str(count), name, payload]
    else:
        args = [sys.executable, "-c", PY_WRITER, str(path), str(count), name, payload]
    return subprocess.Popen(args, env=impl.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def expected_records(name, count, payload):
    return [f"{name}-{i}-{payload}" for i in range(count)]


def check_records(got, expected):
    """Every expected record exactly once, nothing else."""
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not extra, say("{count} corrupted or unexpected records, e.g. {example!r}",
                          count=len(extra), example=extra[0][:120])
    assert not missing, say("{lost} of {total} records lost, e.g. {example!r}",
                            lost=len(missing), total=len(expected), example=missing[0][:80])
    assert len(got) == len(expected), say("{count} records arrived twice", count=len(got) - len(expected))


def test_creates_fifo_0600(fifo_log, tmp_path):
    path = tmp_path / "log.fifo"
    old_umask = os.umask(0o022)
    try:
        server = fifo_log.FifoLogServer(path)
    finally:
        os.umask(old_umask)
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISFIFO(mode), say("the path is not a FIFO")
        assert stat.S_IMODE(mode) == 0o600, say("mode is {mode}, not 0o600", mode=oct(stat.S_IMODE(mode)))
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["file", "directory", "fifo"])
def test_refuses_existing_non_fifo(fifo_log, tmp_path, kind):
    path = tmp_path / "log.fifo"
    if kind == "file":
        path.write_text("precious")
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path, 0o600)
    if kind == "fifo":
        try:
            with fifo_log.FifoLogServer(path):  # an existing FIFO is reused
                assert is_fifo(path)
        finally:
            if is_fifo(path):
                os.unlink(path)
        return
    with pytest.raises(FileExistsError):
        fifo_log.FifoLogServer(path)
    if kind == "file":
        assert path.read_text() == "precious", say("the existing file was changed")
    else:
        assert path.is_dir(), say("the existing directory was removed")


def test_close_removes_fifo(fifo_log, tmp_path, start_server):
    path = tmp_path / "a.fifo"
    server = fifo_log.FifoLogServer(path)
    assert is_fifo(path)
    server.close()
    assert not os.path.lexists(path), say("close() left the FIFO behind")

    path = tmp_path / "b.fifo"
    with fifo_log.FifoLogServer(path):
        assert is_fifo(path)
    assert not os.path.lexists(path), say("leaving the with block left the FIFO behind")

    # And after serving records, in a program of its own.
    path = tmp_path / "c.fifo"
    server = start_server([[2, WAIT]], path=path)
    fd = open_writer(path)
    os.write(fd, b"one\ntwo\n")
    os.close(fd)
    assert server.records() == ["one", "two"]
    assert server.readline() == "closed"
    assert not os.path.lexists(path), say("the server left its FIFO behind after close()")


def test_concurrent_writers(impl, tmp_path, start_server):
    """8 writer programs (4 shell loops, 4 Python programs using fifo_send) at once."""
    path = tmp_path / "log.fifo"
    server = start_server([[WRITERS * RECORDS_PER_WRITER, WAIT]], path=path)
    expected, writers = [], []
    for w in range(WRITERS):
        kind = "sh" if w % 2 else "py"
        name, payload = f"{kind}{w}", f"{w}" * (50 + 40 * w)
        writers.append(start_writer(impl, path, kind, name, RECORDS_PER_WRITER, payload))
        expected += expected_records(name, RECORDS_PER_WRITER, payload)
    wait_all(writers)
    check_records(server.records(), expected)


def test_writers_come_and_go(impl, tmp_path, start_server):
    """Waves of short-lived writers; between waves every writer has closed the FIFO."""
    path = tmp_path / "log.fifo"
    waves, per_wave, count = 5, 3, 4
    server = start_server([[waves * per_wave * count, WAIT]], path=path)
    expected = []
    for wave in range(waves):
        writers = []
        for w in range(per_wave):
            kind = "sh" if (wave + w) % 2 else "py"
            name = f"wave{wave}-{kind}{w}"
            writers.append(start_writer(impl, path, kind, name, count, "x"))
            expected += expected_records(name, count, "x")
        wait_all(writers)
    check_records(server.records(), expected)


IDLE_WINDOW = 1.5  # seconds of measuring an idle server


def test_idle_server_uses_no_cpu(impl, tmp_path, start_server):
    """Once its writers have closed, a waiting server uses (almost) no CPU time."""
    path = tmp_path / "log.fifo"
    server = start_server([[3, 10 * IDLE_WINDOW], [1, 10 * IDLE_WINDOW]], path=path)
    fd = open_writer(path)
    os.write(fd, b"a\nb\nc\n")
    os.close(fd)  # the last writer is gone: readers now see end-of-file
    assert server.records() == ["a", "b", "c"]
    # The server is now in its second serve() call, with no writer.
    process = psutil.Process(server.pid)
    before = sum(process.cpu_times()[:2])
    time.sleep(IDLE_WINDOW)  # the measuring window
    used = sum(process.cpu_times()[:2]) - before
    assert used < 0.1, \
        say("the idle server used {used:.2f} s of CPU in {window} s: busy loop on end-of-file?",
            used=used, window=IDLE_WINDOW)
    fd = open_writer(path)  # and it still serves a new writer
    os.write(fd, b"d\n")
    os.close(fd)
    assert server.records() == ["d"]


def test_rejects_long_record(fifo_log, tmp_path, start_server):
    path = tmp_path / "log.fifo"
    server = start_server([[2, WAIT]], path=path)
    with pytest.raises(ValueError):
        fifo_log.fifo_send(path, "x" * (select.PIPE_BUF + 100))
    near_limit = "y" * (select.PIPE_BUF - 100)
    fifo_log.fifo_send(path, near_limit)
    fifo_log.fifo_send(path, "ok")
    assert server.records() == [near_limit, "ok"], say("a rejected record must write nothing")
