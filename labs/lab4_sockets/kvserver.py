"""Lab 4, part A: a mini Redis server on TCP and UNIX-domain sockets.

Read the handout (handout.md; 한국어: handout.ko.md) first. Implement ``KVServer`` below so that
``redis-cli`` and ``redis.Redis`` can use it, over TCP and over a UNIX-domain
socket, and so that ``python kvserver.py --port P [--unix PATH]`` runs it.

The recommended design is one thread running a ``selectors`` event loop over
non-blocking sockets, with an input and an output buffer per client; a thread
per client is accepted too. Either way, remember that TCP is a byte stream:
one ``recv`` may hold half a command, or several.

Run the public tests with ``make test-lab4`` (add ``V=1`` for details).
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import threading


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
        raise NotImplementedError("KVServer.__init__: remember the addresses; create the store")

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the TCP listener is bound to (after ``start()``)."""
        raise NotImplementedError("KVServer.address")

    def start(self) -> None:
        """Bind and listen on every address, then serve in a background thread.

        Binding happens here, before ``start()`` returns, so a client may
        connect as soon as it has returned.
        """
        raise NotImplementedError("KVServer.start")

    def stop(self) -> None:
        """Stop serving: close listeners and clients, remove the socket file."""
        raise NotImplementedError("KVServer.stop")

    def __enter__(self) -> "KVServer":
        """Start the server and return it."""
        raise NotImplementedError("KVServer.__enter__")

    def __exit__(self, *exc_info) -> None:
        """Stop the server."""
        raise NotImplementedError("KVServer.__exit__")


def main(argv: list[str] | None = None) -> int:
    """``python kvserver.py --port P [--unix PATH]``: serve until SIGINT or SIGTERM.

    Listens on 127.0.0.1 port P (and on the UNIX socket PATH when given) in
    the foreground. On SIGINT or SIGTERM it stops the server as ``stop()``
    does (closing every connection, removing the socket file) and exits.
    """
    raise NotImplementedError("main: parse --port and --unix, start a KVServer, wait for SIGINT/SIGTERM, stop it")


if __name__ == "__main__":
    sys.exit(main())
