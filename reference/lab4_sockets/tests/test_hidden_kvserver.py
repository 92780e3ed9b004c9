"""Lab 4 hidden tests, part A: slow readers, atomic INCR, INCR's range, the socket file."""

import os
import socket

import pytest

from grader.i18n import say
from lab4_helpers import RespClient, encode


# A server that blocks on the client that does not read never answers the
# others at all, so a long wait catches it just as surely as a short one, and
# spares a correct server a stall of a few seconds on a busy machine.
PATIENCE = 12.0   # seconds; the test's own limit is 20


def test_client_not_reading_replies_does_not_block_others(server, clients):
    value = os.urandom(256 * 1024)
    assert clients.tcp(server.address, PATIENCE).call("SET", "blob", value) == "OK"
    greedy = clients.tcp(server.address, PATIENCE)
    greedy.send(encode("GET", "blob") * 64)        # 16 MiB of replies, far beyond socket buffers
    for i in range(3):
        other = clients.tcp(server.address, PATIENCE)
        assert other.call("SET", f"k{i}", "v") == "OK", say("a client that does not read must not stall the others")
        assert other.call("GET", f"k{i}") == b"v"
    assert [greedy.reply() for _ in range(64)] == [value] * 64


def test_concurrent_incr_is_atomic(server, clients):
    conns = [clients.tcp(server.address) for _ in range(10)]
    for c in conns:
        c.send(encode("INCR", "shared") * 500)
    replies = [c.reply() for c in conns for _ in range(500)]
    assert sorted(replies) == list(range(1, 5001)), say("every INCR must see the previous ones: no lost updates")
    assert conns[0].call("GET", "shared") == b"5000"


def test_incr_out_of_range(server, clients):
    c = clients.tcp(server.address)
    assert c.call("SET", "n", "9223372036854775807") == "OK"
    assert c.call("INCR", "n").startswith("ERR increment or decrement would overflow")
    assert c.call("GET", "n") == b"9223372036854775807"
    assert c.call("SET", "n", "99999999999999999999") == "OK"
    assert c.call("INCR", "n") == "ERR value is not an integer or out of range"
    assert c.call("SET", "n", "-9223372036854775808") == "OK"
    assert c.call("INCR", "n") == -9223372036854775807


def test_stale_socket_file_is_replaced(kvserver, socket_dir, clients):
    path = os.path.join(socket_dir, "kv.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)                     # a server that died without removing its file
    dead.close()
    assert os.path.exists(path)
    server = kvserver.KVServer(tcp=("127.0.0.1", 0), unix_path=path)
    server.start()
    try:
        assert clients.unix(path).call("PING") == "PONG"
    finally:
        server.stop()
    assert not os.path.exists(path)


def test_context_manager_starts_and_stops(kvserver, socket_dir, clients):
    path = os.path.join(socket_dir, "kv.sock")
    with kvserver.KVServer(tcp=("127.0.0.1", 0), unix_path=path) as server:
        address = tuple(server.address)
        assert clients.tcp(address).call("SET", "a", "1") == "OK"
        assert clients.unix(path).call("GET", "a") == b"1"
        idle = clients.tcp(address)
    assert not os.path.exists(path), say("leaving the with block must remove the socket file")
    assert idle.read_until_closed() == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
