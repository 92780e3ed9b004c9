"""Lab 1, part B: a log collector over a named pipe (FIFO).

Unrelated processes (``echo hi > path`` from a shell, a Python program, ...)
open the FIFO at any time, write newline-terminated records and close it; the
server collects every record, whole. Read handout.md (한국어: handout.ko.md)
first: it explains FIFOs, end-of-file when the last writer leaves, and
PIPE_BUF atomicity.
"""

from __future__ import annotations

import os


class FifoLogServer:
    """Collects newline-terminated records sent to the FIFO at ``path``.

    Creating the server creates the FIFO with ``os.mkfifo`` (mode 0o600): an
    existing FIFO at ``path`` is reused, anything else there raises
    ``FileExistsError``. Use it as a context manager, or call :meth:`close`,
    which removes the FIFO.
    """

    def __init__(self, path: str | os.PathLike):
        raise NotImplementedError("FifoLogServer: create the FIFO with os.mkfifo and open it")

    def serve(self, max_lines: int | None = None, idle_timeout: float | None = None) -> list[str]:
        """Collect records until ``max_lines`` have arrived or none for ``idle_timeout`` s.

        Records come from any number of writers, which may open and close the
        FIFO at any time; between writers the server waits without using CPU.
        Returns the records in arrival order, each without its newline.
        Records that arrive beyond ``max_lines`` are kept for the next call.
        With neither limit, it serves forever.
        """
        raise NotImplementedError("FifoLogServer.serve")

    def close(self):
        """Stop serving and remove the FIFO (calling it again does nothing)."""
        raise NotImplementedError("FifoLogServer.close")

    def __enter__(self) -> "FifoLogServer":
        return self

    def __exit__(self, *exc_info):
        self.close()


def fifo_send(path: str | os.PathLike, line: str):
    """Send ``line`` as one record to the FIFO at ``path``.

    The record is ``line`` plus a newline (unless it ends with one), encoded
    as UTF-8, written with a single ``write``: at most ``select.PIPE_BUF``
    bytes, it reaches the server whole, never mixed with other writers'
    records. Longer records raise ``ValueError`` (nothing is written).
    Opening the FIFO waits until a server has it open for reading.
    """
    raise NotImplementedError("fifo_send: one os.write of the whole record")
