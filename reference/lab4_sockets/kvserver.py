"""Lab 4, part A: a mini Redis server on TCP and UNIX-domain sockets.

Reference solution. The design is the one the handout recommends: one thread
runs a ``selectors`` event loop over non-blocking sockets. Because only that
thread ever touches the store, the store needs no lock; because no socket call
ever blocks, one slow or silent client cannot hold up the others.

The three ideas to take away:

* TCP delivers a *byte stream*, not messages. One ``recv`` may return half a
  command, or three commands and the start of a fourth. Every connection keeps
  an input buffer, and a command is executed only once the RESP parser finds it
  complete in that buffer (``parse_command``).
* ``send`` on a non-blocking socket may take only part of the reply. What it
  did not take waits in the connection's output buffer until the selector says
  the socket is writable again.
* A client that sends garbage, or vanishes mid-command, is that client's
  problem: answer or drop it, and keep serving everybody else.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import stat
import sys
import threading

RECV_SIZE = 64 * 1024
# Pause executing a client's commands while this much of its output is unsent:
# a client that pipelines requests but never reads replies must not make the
# server buffer replies without limit. (Its requests are still read, so a
# client busy sending a long pipeline before reading cannot deadlock with us.)
OUTBOX_LIMIT = 1024 * 1024
MAX_BULK = 512 * 1024 * 1024      # Redis's own limit on one bulk string
MAX_ARGS = 1024 * 1024
MAX_LINE = 64 * 1024              # a header line longer than this is garbage


class ProtocolError(Exception):
    """The client sent something that is not a RESP array of bulk strings."""


# -- RESP: reading requests -------------------------------------------------------------


def parse_command(buffer: bytes | bytearray) -> tuple[list[bytes], int] | None:
    """Find one complete command at the start of ``buffer``.

    A command is a RESP array of bulk strings::

        *2\\r\\n$3\\r\\nGET\\r\\n$3\\r\\nkey\\r\\n

    Returns ``(arguments, bytes_used)``, or ``None`` when the buffer holds only
    the beginning of a command (more bytes must arrive first). Raises
    ``ProtocolError`` when the bytes cannot be the start of a valid command.
    The lengths in the headers are what make this work on a byte stream: the
    parser never has to guess where a value ends, so values may contain any
    bytes, ``\\r\\n`` included.
    """
    header = _read_line(buffer, 0)
    if header is None:
        return None
    line, pos = header
    if not line.startswith(b"*"):
        raise ProtocolError(f"expected '*', got {line[:1]!r}")
    count = _parse_length(line[1:], "multibulk length", low=1, high=MAX_ARGS)
    arguments = []
    for _ in range(count):
        header = _read_line(buffer, pos)
        if header is None:
            return None
        line, pos = header
        if not line.startswith(b"$"):
            raise ProtocolError(f"expected '$', got {line[:1]!r}")
        size = _parse_length(line[1:], "bulk length", low=0, high=MAX_BULK)
        end = pos + size
        if len(buffer) < end + 2:
            return None
        if buffer[end:end + 2] != b"\r\n":
            raise ProtocolError("bulk string not followed by CRLF")
        arguments.append(bytes(buffer[pos:end]))
        pos = end + 2
    return arguments, pos


def _read_line(buffer, start: int) -> tuple[bytes, int] | None:
    """The line starting at ``start`` (without CRLF) and where the next one starts."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        if len(buffer) - start > MAX_LINE:
            raise ProtocolError("header line too long")
        return None
    return bytes(buffer[start:end]), end + 2


def _parse_length(digits: bytes, what: str, *, low: int, high: int) -> int:
    # isdigit() first: int() would also accept b" 7", b"+7" and b"1_0".
    if not digits.isdigit() or not low <= int(digits) <= high:
        raise ProtocolError(f"invalid {what}")
    return int(digits)


# -- RESP: writing replies ---------------------------------------------------------------


def simple(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


def error(text: str) -> bytes:
    return b"-" + text.encode() + b"\r\n"


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(value: bytes | None) -> bytes:
    if value is None:
        return b"$-1\r\n"          # the "null bulk string": no such key
    return b"$%d\r\n%s\r\n" % (len(value), value)


def array(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


# -- the commands ------------------------------------------------------------------------

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def _cmd_ping(store, args):
    return bulk(args[0]) if args else simple("PONG")


def _cmd_echo(store, args):
    return bulk(args[0])


def _cmd_set(store, args):
    store[args[0]] = args[1]
    return simple("OK")


def _cmd_get(store, args):
    return bulk(store.get(args[0]))


def _cmd_del(store, args):
    # DEL k k deletes k once: count what was actually removed.
    return integer(sum(store.pop(key, None) is not None for key in args))


def _cmd_exists(store, args):
    # EXISTS k k counts k twice, as Redis does.
    return integer(sum(key in store for key in args))


def _cmd_incr(store, args):
    key = args[0]
    current = store.get(key, b"0")
    if not _is_int64(current):
        return error("ERR value is not an integer or out of range")
    value = int(current) + 1
    if value > INT64_MAX:
        return error("ERR increment or decrement would overflow")
    store[key] = str(value).encode()
    return integer(value)


def _is_int64(text: bytes) -> bool:
    digits = text[1:] if text.startswith(b"-") else text
    return digits.isdigit() and INT64_MIN <= int(text) <= INT64_MAX


def _cmd_command(store, args):
    # redis-cli and some libraries probe COMMAND for command docs; "no docs" is fine.
    return array([])


ANY = None
# name -> (handler, fewest arguments, most arguments), not counting the name.
COMMANDS = {
    b"PING": (_cmd_ping, 0, 1),
    b"ECHO": (_cmd_echo, 1, 1),
    b"SET": (_cmd_set, 2, 2),
    b"GET": (_cmd_get, 1, 1),
    b"DEL": (_cmd_del, 1, ANY),
    b"EXISTS": (_cmd_exists, 1, ANY),
    b"INCR": (_cmd_incr, 1, 1),
    b"COMMAND": (_cmd_command, 0, ANY),
}


def execute(store: dict, command: list[bytes]) -> bytes:
    """Run one command against ``store`` and return its encoded reply."""
    name, args = command[0], command[1:]
    entry = COMMANDS.get(name.upper())
    if entry is None:
        return error(f"ERR unknown command '{name.decode(errors='replace')}'")
    handler, fewest, most = entry
    if len(args) < fewest or (most is not ANY and len(args) > most):
        return error(f"ERR wrong number of arguments for '{name.decode(errors='replace').lower()}' command")
    return handler(store, args)


# -- connections and the event loop ------------------------------------------------------


class Connection:
    """One client: its socket and the bytes in flight each way."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.inbox = bytearray()     # received, not yet parsed into commands
        self.outbox = bytearray()    # replies not yet accepted by send()
        self.closing = False         # protocol error: flush the error, then close
        self.peer_done = False       # the client sent EOF: answer what it sent, then close


class KVServer:
    """A key-value server that speaks the Redis protocol (RESP2).

    ``KVServer(*, tcp=("127.0.0.1", 0), unix_path=None)``

    * ``tcp`` is the ``(host, port)`` to listen on; port 0 lets the kernel pick
      a free one (read it back from ``address``).
    * ``unix_path``, when given, is the path of a UNIX-domain socket to listen
      on as well. A stale file already at that path (left by a server that
      died) is removed before binding. TCP and UNIX clients share one store.

    ``start()`` binds and listens, then serves in the background (it returns
    at once). ``stop()`` closes the listeners and every client connection,
    removes the socket file and returns when the server has stopped. The
    server is a context manager: ``with KVServer() as server:`` starts it and
    stops it on exit.

    Requests are RESP arrays of bulk strings (what redis-cli and redis-py
    send); inline commands are not supported. Command names are
    case-insensitive. Supported commands and their replies:

    ==================  ==================================================
    PING [message]      +PONG, or the message as a bulk string
    ECHO message        the message as a bulk string
    SET key value       +OK (exactly two arguments; no options)
    GET key             the value, or the null bulk string $-1 if none
    DEL key [key ...]   integer: how many of the keys were removed
    EXISTS key [...]    integer: how many of the keys exist (a key named
                        twice counts twice)
    INCR key            integer: the new value. A missing key counts as 0.
    COMMAND [...]       an array; an empty one (*0) is enough
    ==================  ==================================================

    Keys and values are arbitrary bytes (any length up to 512 MiB, any
    content, ``\\r\\n`` included). Errors are Redis's; the tests check the
    start of the line, shown here, and leave the rest free:

    * unknown command: ``-ERR unknown command ...``
    * wrong number of arguments: ``-ERR wrong number of arguments ...``
    * INCR of a value that is not a base-10 signed 64-bit integer:
      ``-ERR value is not an integer or out of range``
    * INCR past 2**63 - 1: ``-ERR increment or decrement would overflow``

    After any of these errors the connection stays open. Input that is not a
    RESP array of bulk strings (a first byte other than ``*``, an element
    other than ``$``, a count or length that is not a decimal number in range
    (count >= 1, 0 <= length <= 512 MiB), a bulk string not followed by
    ``\\r\\n``) is a protocol error: the server replies with one line starting
    ``-ERR`` (Redis says ``-ERR Protocol error: ...``) and closes that
    connection.

    Nothing a client sends or fails to send may stop the server from serving
    the others. In particular it copes with: 100 clients connected at once;
    pipelined commands (many sent before any reply is read); commands that
    arrive split at any byte, down to one byte at a time; 1 MiB values; a
    client that connects and sends nothing, or half a command, or does not
    read its replies (another client is still served within 1 s); a client
    that disconnects in the middle of a command (which is never executed).
    """

    def __init__(self, *, tcp: tuple[str, int] = ("127.0.0.1", 0), unix_path: str | os.PathLike | None = None):
        self._tcp_address = tcp
        self._unix_path = os.fspath(unix_path) if unix_path is not None else None
        self._store: dict[bytes, bytes] = {}
        self._selector: selectors.BaseSelector | None = None
        self._listeners: list[socket.socket] = []
        self._bound_to: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the TCP listener is bound to (after ``start()``)."""
        return self._bound_to

    def start(self) -> None:
        """Bind and listen on every address, then serve in a background thread."""
        self._selector = selectors.DefaultSelector()
        self._listeners.append(self._listen_tcp())
        self._bound_to = self._listeners[0].getsockname()[:2]
        if self._unix_path is not None:
            self._listeners.append(self._listen_unix())
        for listener in self._listeners:
            self._selector.register(listener, selectors.EVENT_READ, "accept")
        # stop() writes a byte into this pair to wake the loop out of select().
        self._wakeup = socket.socketpair()
        self._selector.register(self._wakeup[0], selectors.EVENT_READ, "wakeup")
        self._thread = threading.Thread(target=self._run, name="kvserver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: close listeners and clients, remove the socket file."""
        if self._thread is None:
            return
        self._wakeup[1].send(b"x")
        self._thread.join()
        self._thread = None
        for sock in self._wakeup:
            sock.close()

    def __enter__(self) -> "KVServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- setting up ------------------------------------------------------------------

    def _listen_tcp(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Lets a restarted server bind the port while old connections linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self._tcp_address)
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _listen_unix(self) -> socket.socket:
        # bind() fails with "Address already in use" if the path exists, even
        # when nobody listens there any more: remove a stale socket file first.
        # (Only a socket: a regular file at that path is a mistake to report.)
        if os.path.exists(self._unix_path) and stat.S_ISSOCK(os.stat(self._unix_path).st_mode):
            os.unlink(self._unix_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self._unix_path)
        sock.listen(128)
        sock.setblocking(False)
        return sock

    # -- the event loop ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._serve_ready_sockets():
                pass
        finally:
            self._shut_down()

    def _serve_ready_sockets(self) -> bool:
        """Wait for ready sockets and serve each one; False once stop() was called."""
        for key, events in self._selector.select():
            if key.data == "wakeup":
                return False
            if key.data == "accept":
                self._accept(key.fileobj)
            else:
                self._serve(key.data, events)
        return True

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return  # the client gave up before we got to it
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, Connection(sock))

    def _serve(self, conn: Connection, events: int) -> None:
        try:
            if events & selectors.EVENT_READ:
                self._receive(conn)
            if events & selectors.EVENT_WRITE:
                self._flush(conn)
            self._run_commands(conn)
        except (ConnectionError, TimeoutError):
            self._close(conn)        # reset by the peer, broken pipe: drop this client only
            return
        self._update_interest(conn)

    def _receive(self, conn: Connection) -> None:
        data = conn.sock.recv(RECV_SIZE)
        if not data:
            conn.peer_done = True
        conn.inbox += data

    def _run_commands(self, conn: Connection) -> None:
        """Execute every complete command in the inbox, as far as backpressure allows."""
        while not conn.closing:
            if len(conn.outbox) >= OUTBOX_LIMIT:
                self._flush(conn)
                if len(conn.outbox) >= OUTBOX_LIMIT:
                    break         # the client is not reading: resume when it is writable
            try:
                parsed = parse_command(conn.inbox)
            except ProtocolError as exc:
                conn.outbox += error(f"ERR Protocol error: {exc}")
                conn.closing = True
                break
            if parsed is None:
                break             # only part of a command so far: wait for more bytes
            command, used = parsed
            del conn.inbox[:used]
            conn.outbox += execute(self._store, command)
        self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        """Send what the kernel will take now; keep the rest for later."""
        if conn.outbox:
            try:
                sent = conn.sock.send(conn.outbox)
            except BlockingIOError:
                sent = 0
            del conn.outbox[:sent]

    def _update_interest(self, conn: Connection) -> None:
        if (conn.closing or conn.peer_done) and not conn.outbox:
            self._close(conn)
            return
        events = selectors.EVENT_WRITE if conn.outbox else 0
        if not (conn.closing or conn.peer_done):
            events |= selectors.EVENT_READ
        self._selector.modify(conn.sock, events, conn)

    def _close(self, conn: Connection) -> None:
        self._selector.unregister(conn.sock)
        conn.sock.close()

    def _shut_down(self) -> None:
        for key in list(self._selector.get_map().values()):
            if key.data not in ("accept", "wakeup"):
                key.fileobj.close()
        self._selector.close()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if self._unix_path is not None and os.path.exists(self._unix_path):
            os.unlink(self._unix_path)


# -- running it as a program -------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python kvserver.py --port P [--unix PATH]``: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="A mini Redis server.")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--unix", help="also listen on this UNIX-domain socket path")
    args = parser.parse_args(argv)

    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    with KVServer(tcp=("127.0.0.1", args.port), unix_path=args.unix) as server:
        host, port = server.address
        print(f"kvserver listening on {host}:{port}" + (f" and {args.unix}" if args.unix else ""), flush=True)
        stop_requested.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
