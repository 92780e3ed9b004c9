"""A log collector over a named pipe (FIFO).

An anonymous pipe joins only related processes: the children inherit its
ends from the parent that made it. A *FIFO* is a pipe with a name in the file
system, so any process that can open the path can write to it: unrelated
programs, started by anyone at any time, in any language (``echo hi > path``).

Two facts about pipes shape this server:

* Writes of at most ``PIPE_BUF`` bytes (4096 on Linux) are *atomic*: the
  kernel never mixes them with other writers' bytes. So a record written in
  one ``write`` call arrives whole, however many writers there are.
* A reader sees end-of-file when the *last* writer closes. For a server that
  outlives its writers, that moment is not the end: it must wait for the next
  writer without spinning on end-of-file. Here the server opens the FIFO for
  writing too; while it holds that write end, reads never return
  end-of-file, and waiting for data simply blocks in ``select``.
"""

from __future__ import annotations

import os
import select
import stat

CHUNK = 64 * 1024


class FifoLogServer:
    """Collects newline-terminated records sent to the FIFO at ``path``.

    Creating the server creates the FIFO with ``os.mkfifo`` (mode 0o600): an
    existing FIFO at ``path`` is reused, anything else there raises
    ``FileExistsError``. Use it as a context manager, or call :meth:`close`,
    which removes the FIFO.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        _make_fifo(self.path)
        # Non-blocking, or open() would wait for the first writer.
        self._read_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # Our own write end, never written to: while it is open, the last
        # writer leaving is not end-of-file, and select() sleeps until data.
        self._keep_open_fd = os.open(self.path, os.O_WRONLY)
        self._partial = b""      # the start of a record whose end has not arrived
        self._pending: list[str] = []  # records read but not yet returned

    def serve(self, max_lines: int | None = None, idle_timeout: float | None = None) -> list[str]:
        """Collect records until ``max_lines`` have arrived or none for ``idle_timeout`` s.

        Records come from any number of writers, which may open and close the
        FIFO at any time; between writers the server waits without using CPU.
        Returns the records in arrival order, each without its newline.
        Records that arrive beyond ``max_lines`` are kept for the next call.
        With neither limit, it serves forever.
        """
        while max_lines is None or len(self._pending) < max_lines:
            ready, _, _ = select.select([self._read_fd], [], [], idle_timeout)
            if not ready:
                break  # idle for idle_timeout seconds
            self._receive(os.read(self._read_fd, CHUNK))
        count = len(self._pending) if max_lines is None else max_lines
        records, self._pending = self._pending[:count], self._pending[count:]
        return records

    def _receive(self, data: bytes):
        *complete, self._partial = (self._partial + data).split(b"\n")
        self._pending.extend(line.decode("utf-8", errors="replace") for line in complete)

    def close(self):
        """Stop serving and remove the FIFO (calling it again does nothing)."""
        if self._read_fd < 0:
            return
        os.close(self._read_fd)
        os.close(self._keep_open_fd)
        self._read_fd = self._keep_open_fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "FifoLogServer":
        return self

    def __exit__(self, *exc_info):
        self.close()


def _make_fifo(path: str):
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a FIFO") from None


def fifo_send(path: str | os.PathLike, line: str):
    """Send ``line`` as one record to the FIFO at ``path``.

    The record is ``line`` plus a newline (unless it ends with one), encoded
    as UTF-8, written with a single ``write``: at most ``select.PIPE_BUF``
    bytes, it reaches the server whole, never mixed with other writers'
    records. Longer records raise ``ValueError`` (nothing is written).
    Opening the FIFO waits until a server has it open for reading.
    """
    record = line if line.endswith("\n") else line + "\n"
    data = record.encode("utf-8")
    if len(data) > select.PIPE_BUF:
        raise ValueError(f"a record holds at most {select.PIPE_BUF} bytes, this one has {len(data)}")
    fd = os.open(path, os.O_WRONLY)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):  # cannot happen for a blocking write of <= PIPE_BUF bytes
        raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
