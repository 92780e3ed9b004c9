"""Helpers shared by lab 4's tests: a raw RESP client and server fixtures.

The tests talk to the server with plain sockets so that they control every
byte: how commands are split, when a client goes silent, when it vanishes.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path

import pytest

from grader.i18n import say

REPLY_TIMEOUT = 5.0      # the spec promises 1 s; the margin absorbs a loaded machine


class ErrorReply(str):
    """A RESP error reply (``-ERR ...``), kept apart from simple strings."""


def encode(*args: bytes | str | int) -> bytes:
    """A command as a RESP array of bulk strings, the way clients send it."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespClient:
    """A client on a raw socket that reads RESP2 replies.

    ``reply()`` returns ``str`` for +simple, ``ErrorReply`` for -errors, ``int``
    for :integers, ``bytes`` or ``None`` for $bulk strings and ``list`` for arrays.
    """

    def __init__(self, sock: socket.socket, timeout: float = REPLY_TIMEOUT):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buffer = bytearray()

    @classmethod
    def tcp(cls, address, timeout: float = REPLY_TIMEOUT) -> "RespClient":
        sock = socket.create_connection(tuple(address), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout)

    @classmethod
    def unix(cls, path, timeout: float = REPLY_TIMEOUT) -> "RespClient":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        return cls(sock, timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, *args):
        """Send one command and return its reply."""
        self.send(encode(*args))
        return self.reply()

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return ErrorReply(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exactly(size + 2)[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise AssertionError(say("not a RESP reply: {line!r}", line=line[:80]))

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection.

        A reset counts as closed (a server that closes with unread input makes
        the kernel send RST). Fails if the connection stays open.
        """
        data = bytes(self.buffer)
        self.buffer.clear()
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            except socket.timeout:
                raise AssertionError(say("the server did not close the connection within {seconds} s "
                                         "(received so far: {data!r})",
                                         seconds=self.sock.gettimeout(), data=data[:80])) from None
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Vanish abruptly: close with SO_LINGER 0, so the kernel sends RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError(say("no reply within {seconds} s", seconds=self.sock.gettimeout())) from None
        if not chunk:
            raise AssertionError(say("the server closed the connection instead of replying"))
        self.buffer += chunk

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 2]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def wait_until_server_has_read(client: socket.socket, timeout: float = 2.0) -> None:
    """Wait until the server's side of a TCP connection has no unread bytes.

    This is how the tests make sure the server really receives a command in
    pieces: after sending a piece, wait until the server process has taken it
    out of its socket (the rx_queue column of /proc/net/tcp is 0) before
    sending the next. A server that does not read in time is not waited for
    any longer; its replies are checked all the same.
    """
    try:
        ours = _proc_net_address(client.getsockname())
        theirs = _proc_net_address(client.getpeername())
    except OSError:
        return      # already closed by the server: the caller will find out
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _unread_bytes(local=theirs, remote=ours) == 0:
            return
        time.sleep(0.001)


def _proc_net_address(address) -> str:
    host, port = address[:2]
    packed = socket.inet_aton(host)
    return "%08X:%04X" % (struct.unpack("<I", packed)[0], port)


def _unread_bytes(*, local: str, remote: str) -> int | None:
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[1], 16)
    return None


def short_socket_dir() -> str:
    """A fresh directory under /tmp: UNIX socket paths must stay under 108 bytes."""
    return tempfile.mkdtemp(dir="/tmp", prefix="ipc4")


def wait_for(predicate, timeout: float, interval: float = 0.01):
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def kvserver(impl):
    """The student's kvserver module."""
    return impl.load("kvserver")


@pytest.fixture
def socket_dir():
    path = short_socket_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stop_quietly(server) -> None:
    # stop() has tests of its own; a broken stop() must not fail every test.
    try:
        server.stop()
    except Exception:
        pass


@pytest.fixture
def server(kvserver):
    """A KVServer on TCP only, started in this process."""
    srv = kvserver.KVServer(tcp=("127.0.0.1", 0))
    srv.start()
    try:
        yield srv
    finally:
        _stop_quietly(srv)


@pytest.fixture
def unix_server(kvserver, socket_dir):
    """A KVServer on TCP and on a UNIX socket (``unix_server.test_unix_path``)."""
    path = os.path.join(socket_dir, "kv.sock")
    srv = kvserver.KVServer(tcp=("127.0.0.1", 0), unix_path=path)
    srv.start()
    srv.test_unix_path = path
    try:
        yield srv
    finally:
        _stop_quietly(srv)


@pytest.fixture
def clients():
    """Open RespClients through ``clients.tcp(addr)`` / ``clients.unix(path)``; all closed at the end."""
    opened: list[RespClient] = []

    class Opener:
        def tcp(self, address, timeout: float = REPLY_TIMEOUT) -> RespClient:
            opened.append(RespClient.tcp(address, timeout))
            return opened[-1]

        def unix(self, path, timeout: float = REPLY_TIMEOUT) -> RespClient:
            opened.append(RespClient.unix(path, timeout))
            return opened[-1]

    try:
        yield Opener()
    finally:
        for client in opened:
            client.close()


@pytest.fixture
def stats(impl):
    """The student's stats module."""
    return impl.load("stats")


@pytest.fixture
def collector(stats):
    """A started StatsCollector, stopped at the end."""
    col = stats.StatsCollector("127.0.0.1", 0)
    col.start()
    try:
        yield col
    finally:
        try:
            col.stop()
        except Exception:
            pass


@pytest.fixture
def udp_sender():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        yield sock
    finally:
        sock.close()


def expect_snapshot(collector, expected: dict, timeout: float = 5.0) -> None:
    """Poll ``snapshot()`` until it equals ``expected`` (UDP gives no delivery receipt)."""
    if wait_for(lambda: collector.snapshot() == expected, timeout):
        return
    raise AssertionError(say("snapshot() is {got!r} after {seconds:g} s; expected {expected!r}",
                             got=collector.snapshot(), seconds=timeout, expected=expected))
