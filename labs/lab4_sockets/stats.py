"""Lab 4, part B: a StatsD collector on UDP.

Read the handout (handout.md; 한국어: handout.ko.md) first. Applications send metrics to the
collector as UDP datagrams; implement ``StatsCollector`` below. Unlike TCP in
part A, UDP keeps message boundaries: one ``recvfrom`` returns one whole
datagram, provided you ask for enough bytes.

Run the public tests with ``make test-lab4`` (add ``V=1`` for details).
"""

from __future__ import annotations

import socket
import threading


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
        raise NotImplementedError("StatsCollector.__init__")

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the socket is bound to (after ``start()``)."""
        raise NotImplementedError("StatsCollector.address")

    def start(self) -> None:
        """Bind the UDP socket and start receiving in a background thread."""
        raise NotImplementedError("StatsCollector.start")

    def stop(self) -> None:
        """Stop receiving and close the socket."""
        raise NotImplementedError("StatsCollector.stop")

    def __enter__(self) -> "StatsCollector":
        """Start the collector and return it."""
        raise NotImplementedError("StatsCollector.__enter__")

    def __exit__(self, *exc_info) -> None:
        """Stop the collector."""
        raise NotImplementedError("StatsCollector.__exit__")

    def snapshot(self) -> dict:
        """``{"counters": {name: total}, "gauges": {name: last}, "bad_lines": n}``, a copy."""
        raise NotImplementedError("StatsCollector.snapshot")
