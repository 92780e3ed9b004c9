"""Lab 4, part B: a StatsD collector on UDP.

Reference solution. Applications fire metrics at a collector as UDP
datagrams: no connection, no acknowledgement, and a lost datagram costs one
sample, never the application's time. The contrast with part A is the point:

* A UDP socket delivers *datagrams*, whole or not at all. One ``recvfrom``
  returns exactly one datagram, so there is no framing to do: the datagram is
  the message. (Over TCP, part A had to find command boundaries itself.)
* But ``recvfrom(n)`` with ``n`` smaller than the datagram silently throws the
  rest away. Ask for the largest possible datagram (65535 bytes).
* A datagram may carry several metrics, one per line; a metric never spans
  two datagrams.
"""

from __future__ import annotations

import re
import socket
import threading

MAX_DATAGRAM = 65535
# name:value|type with a plain decimal value (no exponent, nan or inf).
LINE = re.compile(rb"([^:|\s]+):([+-]?(?:\d+(?:\.\d*)?|\.\d+))\|([cg])")


def parse_line(line: bytes) -> tuple[str, int | float, str] | None:
    """``b"hits:3|c"`` -> ``("hits", 3, "c")``; ``None`` if the line is malformed."""
    match = LINE.fullmatch(line) if line.isascii() else None
    if match is None:
        return None
    name, text, kind = match.groups()
    value = float(text) if b"." in text else int(text)
    return name.decode("ascii", errors="replace"), value, kind.decode()


class StatsCollector:
    """Collects StatsD counters and gauges sent as UDP datagrams.

    ``StatsCollector(host="127.0.0.1", port=0)``; port 0 lets the kernel pick
    a free port (read it back from ``address``).

    A datagram holds lines separated by ``\\n`` (a trailing ``\\n`` is
    allowed; empty lines, and empty datagrams, carry nothing). A well-formed
    line is ``name:value|c`` (a counter) or ``name:value|g`` (a gauge), where

    * ``name`` is one or more ASCII characters other than ``:``, ``|`` and
      whitespace;
    * ``value`` is a decimal number, optionally signed, with an optional
      fraction: ``3``, ``-2``, ``0.5``. No exponent, ``nan`` or ``inf``.

    Counters add up every value received for the name; a gauge keeps the last
    value received (a signed gauge value is a new value, not a delta). Any
    other non-empty line (a missing part, another type such as ``|ms``, a
    sample rate ``|@0.1``, bytes that are not ASCII) is malformed: it is
    counted in ``bad_lines`` and otherwise ignored; the other lines of the
    same datagram still count. A metric never spans two datagrams.

    ``snapshot()`` returns a new dict (changing it changes nothing in the
    collector)::

        {"counters": {"hits": 15, "load": 0.75}, "gauges": {"temp": -3.5}, "bad_lines": 2}

    Numbers may be ints or floats (the tests compare with ``==``, so 3 and
    3.0 are both fine).

    ``start()`` binds the UDP socket and receives in the background (it
    returns at once); ``stop()`` stops receiving, closes the socket and
    returns. It is a context manager: ``with StatsCollector() as stats:``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._bind_to = (host, port)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # The receiving thread writes these while snapshot() reads them.
        self._lock = threading.Lock()
        self._counters: dict[str, int | float] = {}
        self._gauges: dict[str, int | float] = {}
        self._bad_lines = 0

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the socket is bound to (after ``start()``)."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    def start(self) -> None:
        """Bind the UDP socket and start receiving in a background thread."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(self._bind_to)
        self._thread = threading.Thread(target=self._receive_loop, name="stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving and close the socket."""
        if self._thread is None:
            return
        # shutdown() wakes the thread blocked in recvfrom(). (close() alone
        # would not: the blocked call keeps the socket alive.)
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join()
        self._thread = None
        self._sock.close()

    def __enter__(self) -> "StatsCollector":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def snapshot(self) -> dict:
        """``{"counters": {name: total}, "gauges": {name: last}, "bad_lines": n}``, a copy."""
        with self._lock:
            return {"counters": dict(self._counters), "gauges": dict(self._gauges),
                    "bad_lines": self._bad_lines}

    def _receive_loop(self) -> None:
        while True:
            datagram, _ = self._sock.recvfrom(MAX_DATAGRAM)
            # b"" is not "end of stream" as on TCP: UDP allows empty datagrams.
            if self._stopping.is_set():
                return
            self._record(datagram)

    def _record(self, datagram: bytes) -> None:
        with self._lock:
            for line in datagram.split(b"\n"):
                if line:
                    self._record_line(line)

    def _record_line(self, line: bytes) -> None:
        metric = parse_line(line)
        if metric is None:
            self._bad_lines += 1
            return
        name, value, kind = metric
        if kind == "c":
            self._counters[name] = self._counters.get(name, 0) + value
        else:
            self._gauges[name] = value
