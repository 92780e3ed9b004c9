"""Lab 4, part A with real clients: redis-py, redis-cli, and kvserver.py as a program.

Real clients are the proof that the server speaks RESP: they were written
against Redis, not against this lab.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid

import pytest
import redis

from grader.i18n import say
from lab4_helpers import RespClient, wait_for


# redis-py 8 speaks RESP3 by default (it opens with HELLO 3); this lab's
# server speaks RESP2. On connect redis-py also sends CLIENT SETINFO and ignores an
# "unknown command" error in reply, so the server needs nothing more.
def redis_py(**where) -> redis.Redis:
    return redis.Redis(protocol=2, socket_timeout=10, socket_connect_timeout=10, **where)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_redis_py_client(unix_server, transport):
    if transport == "tcp":
        host, port = unix_server.address
        r = redis_py(host=host, port=port)
    else:
        r = redis_py(unix_socket_path=unix_server.test_unix_path)
    try:
        assert r.ping() is True
        assert r.set("greeting", "hello") is True
        assert r.get("greeting") == b"hello"
        assert r.get("nothing") is None
        assert r.echo(b"echo\r\n") == b"echo\r\n"
        value = os.urandom(1 << 20)
        assert r.set(b"bin\r\nkey", value) is True
        assert r.get(b"bin\r\nkey") == value
        # r.incr() sends INCRBY, which is not in the lab's subset: send INCR itself.
        assert r.execute_command("INCR", "hits") == 1
        assert r.execute_command("INCR", "hits") == 2
        assert r.exists("greeting", "hits", "nothing") == 2
        assert r.delete("greeting", "hits") == 2
        with pytest.raises(redis.ResponseError, match="unknown command"):
            r.execute_command("NOSUCHCOMMAND")
        pipe = r.pipeline(transaction=False)
        for i in range(200):
            pipe.set(f"p{i}", i)
            pipe.get(f"p{i}")
        assert pipe.execute() == [x for i in range(200) for x in (True, str(i).encode())]
    finally:
        r.close()


def redis_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    cli = shutil.which("redis-cli")
    assert cli, say("redis-cli is not installed (Debian package redis-tools): this test needs it")
    return subprocess.run([cli, *args], input=stdin, capture_output=True, timeout=15)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_redis_cli(unix_server, transport):
    if transport == "tcp":
        host, port = unix_server.address
        where = ["-h", host, "-p", str(port)]
    else:
        where = ["-s", unix_server.test_unix_path]

    def run(*args, stdin=b""):
        result = redis_cli(*where, *args, stdin=stdin)
        assert result.returncode == 0, say("redis-cli {args} failed: {stderr}",
                                           args=" ".join(args), stderr=result.stderr.decode(errors="replace"))
        return result.stdout

    assert run("PING") == b"PONG\n"
    assert run("SET", "city", "Seoul") == b"OK\n"
    assert run("GET", "city") == b"Seoul\n"
    assert run("INCR", "n") == b"1\n"
    assert run("EXISTS", "city", "n", "none") == b"2\n"
    assert run("FROBNICATE").startswith(b"ERR unknown command")
    # -x: the last argument comes from stdin, byte for byte.
    assert run("-x", "SET", "raw", stdin=b"two\r\nlines\x00") == b"OK\n"
    assert run("--no-raw", "GET", "raw") == b'"two\\r\\nlines\\x00"\n'
    assert run("DEL", "city", "raw") == b"2\n"


# -- kvserver.py as a program --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_program(impl, unix_path: str) -> tuple[subprocess.Popen, int]:
    """Start ``kvserver.py --port P --unix PATH`` on a free port; wait until it serves.

    The port is free when chosen but another program could take it before the
    server binds it, so a server that exits at once is retried on a new port.
    """
    for _ in range(3):
        port = free_port()
        with sigint_not_ignored():
            proc = subprocess.Popen([sys.executable, str(impl.path("kvserver.py")), "--port", str(port), "--unix", unix_path],
                                    env=impl.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait_for(lambda: proc.poll() is not None or _accepts(unix_path), timeout=15) and proc.poll() is None:
            return proc, port
        proc.kill()
        _, err = proc.communicate(timeout=10)
        if b"in use" not in err:
            break
    last_words = (err.decode(errors="replace").strip().splitlines() or [say("(nothing on stderr)")])[-1]
    raise AssertionError(say("kvserver.py did not start serving on {path}: {last_words}",
                             path=unix_path, last_words=last_words))


@contextlib.contextmanager
def sigint_not_ignored():
    """Start children with SIGINT at its default, whoever started the tests.

    An ignored signal stays ignored across exec, and shells start background
    jobs with SIGINT ignored; Python then installs no KeyboardInterrupt
    handler in the child, and a correct program would not stop on SIGINT.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _accepts(path: str) -> bool:
    try:
        RespClient.unix(path, timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_program_stops_on_signal(impl, socket_dir, signum):
    path = os.path.join(socket_dir, "kv.sock")
    proc, port = start_program(impl, path)
    try:
        token = uuid.uuid4().hex
        unix = RespClient.unix(path)
        tcp = RespClient.tcp(("127.0.0.1", port))
        # The token proves that the TCP port belongs to this very server.
        assert unix.call("SET", "token", token) == "OK"
        assert tcp.call("GET", "token") == token.encode()
        proc.send_signal(signum)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(say("kvserver.py still runs 10 s after {signal}", signal=signum.name)) from None
        assert not os.path.exists(path), say("the socket file is still there after {signal}", signal=signum.name)
        assert unix.read_until_closed() == b"" and tcp.read_until_closed() == b""
        unix.close()
        tcp.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
