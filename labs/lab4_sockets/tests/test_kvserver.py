"""Lab 4, part A: the mini Redis server, driven with raw sockets.

Raw sockets let the tests choose exactly how bytes arrive: all commands in one
packet, one byte at a time, half a command and then silence.
"""

import os
import socket
import time

import pytest

from grader.i18n import say
from lab4_helpers import ErrorReply, RespClient, encode, wait_until_server_has_read

# -- the commands --------------------------------------------------------------------------


def test_ping_and_echo(server, clients):
    c = clients.tcp(server.address)
    assert c.call("PING") == "PONG"
    assert c.call("ping", "hello") == b"hello"
    assert c.call("ECHO", "hi there") == b"hi there"


def test_set_get_del_exists(server, clients):
    c = clients.tcp(server.address)
    assert c.call("GET", "fruit") is None, say("GET of a missing key must be the null bulk string $-1")
    assert c.call("SET", "fruit", "apple") == "OK"
    assert c.call("GET", "fruit") == b"apple"
    assert c.call("set", "fruit", "pear") == "OK"
    assert c.call("get", "fruit") == b"pear"
    assert c.call("SET", "veg", "leek") == "OK"
    assert c.call("EXISTS", "fruit", "veg", "nut") == 2
    assert c.call("EXISTS", "fruit", "fruit") == 2, say("EXISTS counts a key named twice twice")
    assert c.call("DEL", "fruit", "nut") == 1
    assert c.call("DEL", "veg", "veg") == 1, say("DEL counts the keys it removed")
    assert c.call("EXISTS", "fruit", "veg") == 0
    assert c.call("GET", "fruit") is None


def test_incr(server, clients):
    c = clients.tcp(server.address)
    assert c.call("INCR", "visits") == 1, say("INCR of a missing key starts from 0")
    assert c.call("INCR", "visits") == 2
    assert c.call("GET", "visits") == b"2", say("INCR stores the new value as a decimal string")
    assert c.call("SET", "temp", "-5") == "OK"
    assert c.call("INCR", "temp") == -4
    assert c.call("SET", "big", "9000000000") == "OK"
    assert c.call("INCR", "big") == 9000000001


def test_error_replies_keep_the_connection_open(server, clients):
    c = clients.tcp(server.address)
    reply = c.call("FLY", "away")
    assert isinstance(reply, ErrorReply) and reply.startswith("ERR unknown command"), reply
    for command in [("GET",), ("GET", "a", "b"), ("SET", "a"), ("ECHO",), ("INCR",), ("DEL",), ("EXISTS",)]:
        reply = c.call(*command)
        assert isinstance(reply, ErrorReply) and reply.startswith("ERR wrong number of arguments"), (command, reply)
    for value in ["abc", "1.5", ""]:
        assert c.call("SET", "n", value) == "OK"
        reply = c.call("INCR", "n")
        assert reply == "ERR value is not an integer or out of range", (value, reply)
        assert c.call("GET", "n") == value.encode(), say("a failed INCR must not change the value")
    assert c.call("PING") == "PONG", say("the connection must stay usable after error replies")


def test_command_probe_gets_an_array(server, clients):
    c = clients.tcp(server.address)
    assert isinstance(c.call("COMMAND"), list)
    assert isinstance(c.call("COMMAND", "DOCS"), list)
    assert c.call("PING") == "PONG"


# -- TCP is a byte stream: framing ---------------------------------------------------------


def test_pipelined_commands(server, clients):
    c = clients.tcp(server.address)
    commands, expected = [], []
    for i in range(300):
        commands.append(encode("SET", f"key:{i}", f"value {i}"))
        expected.append("OK")
        commands.append(encode("GET", f"key:{i // 2}"))
        expected.append(f"value {i // 2}".encode())
    commands.append(encode("INCR", "pipelined"))
    expected.append(1)
    c.send(b"".join(commands))                     # ~12 KB in one go
    replies = [c.reply() for _ in expected]
    assert replies == expected


def test_commands_split_at_every_byte(server, clients):
    c = clients.tcp(server.address)
    stream = b"".join([
        encode("SET", "split key", "a value\r\nwith a CRLF"),
        encode("GET", "split key"),
        encode("INCR", "counter"),
        encode("ECHO", ""),
    ])
    for i in range(len(stream)):
        try:
            c.send(stream[i:i + 1])
        except OSError:
            raise AssertionError(say("the server closed the connection after {sent} of {total} bytes, "
                                     "in the middle of a command", sent=i, total=len(stream))) from None
        wait_until_server_has_read(c.sock)   # the server gets every prefix on its own
    assert [c.reply() for _ in range(4)] == ["OK", b"a value\r\nwith a CRLF", 1, b""]


def test_binary_safe_keys_and_values(unix_server, clients):
    every_byte = bytes(range(256))
    tricky = [b"\r\n", b"*1\r\n$4\r\nPING\r\n", b"\x00", b"$-1\r\n", every_byte, b"line\nbreak", b"\r"]
    tcp = clients.tcp(unix_server.address)
    unix = clients.unix(unix_server.test_unix_path)
    for i, data in enumerate(tricky):
        key = b"key" + data + bytes([i])
        assert tcp.call("SET", key, data + b"!") == "OK"
        assert unix.call("GET", key) == data + b"!"
        assert unix.call("ECHO", data) == data
        assert tcp.call("EXISTS", key) == 1
    assert tcp.call("SET", b"", b"") == "OK", say("the empty string is a valid key and value")
    assert unix.call("GET", b"") == b""


def test_one_mib_values(server, clients):
    value = os.urandom(1 << 20)
    writer, reader = clients.tcp(server.address), clients.tcp(server.address)
    assert writer.call("SET", "blob", value) == "OK"
    assert reader.call("GET", "blob") == value
    reader.send(encode("GET", "blob") * 3)            # 3 MiB of replies in flight
    assert [reader.reply() for _ in range(3)] == [value] * 3
    assert writer.call("SET", value, "big key") == "OK"
    assert reader.call("GET", value) == b"big key"


# -- many clients, slow clients, bad clients -------------------------------------------------


def test_hundred_concurrent_clients(server, clients):
    conns = [clients.tcp(server.address) for _ in range(100)]
    # Every client sends the first half of its command before any sends the
    # rest, so the server has to keep 100 half-read commands apart.
    requests = [encode("SET", f"client:{i}", f"I am {i}") for i in range(100)]
    for c, request in zip(conns, requests):
        c.send(request[:len(request) // 2])
    for c, request in zip(conns, requests):
        c.send(request[len(request) // 2:])
    assert [c.reply() for c in conns] == ["OK"] * 100
    for i, c in enumerate(conns):
        c.send(encode("GET", f"client:{(i + 1) % 100}"))
    assert [c.reply() for c in conns] == [f"I am {(i + 1) % 100}".encode() for i in range(100)]


def _served_promptly(address):
    start = time.monotonic()
    other = RespClient.tcp(address)
    try:
        assert other.call("SET", "other", "served") == "OK"
        assert other.call("GET", "other") == b"served"
    finally:
        other.close()
    return time.monotonic() - start


def test_silent_client_does_not_block_others(server, clients):
    silent = clients.tcp(server.address)       # connects, never sends a byte
    for _ in range(3):
        _served_promptly(server.address)
    assert silent.call("PING") == "PONG", say("the silent client must still be served once it speaks")


def test_half_sent_command_does_not_block_others(server, clients):
    slow = clients.tcp(server.address)
    request = encode("SET", "slow", "finally")
    slow.send(request[:9])                       # "*3\r\n$3\r\nS", then nothing for a while
    wait_until_server_has_read(slow.sock)
    for _ in range(3):
        _served_promptly(server.address)
    slow.send(request[9:])
    assert slow.reply() == "OK"
    assert slow.call("GET", "slow") == b"finally"


MALFORMED = {
    "count_not_a_number": b"*x\r\n",
    "count_not_ascii": b"*\xff\xfe\r\n",
    "length_not_a_number": b"*1\r\n$abc\r\n",
    "negative_length": b"*1\r\n$-5\r\n",
    "integer_instead_of_bulk": b"*1\r\n:5\r\n",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_gets_an_error_and_is_closed(server, clients, data):
    bystander = clients.tcp(server.address)
    assert bystander.call("SET", "safe", "still here") == "OK"
    bad = clients.tcp(server.address)
    bad.send(data)
    answer = bad.read_until_closed()
    assert answer.startswith(b"-ERR") and answer.endswith(b"\r\n"), say("expected an -ERR line, got {answer!r}",
                                                                        answer=answer[:80])
    assert bystander.call("GET", "safe") == b"still here", say("other clients must be unaffected")
    assert clients.tcp(server.address).call("PING") == "PONG", say("the server must keep accepting clients")


def test_client_vanishing_mid_command_harms_nobody(server, clients):
    value = os.urandom(256 * 1024)
    bystander = clients.tcp(server.address)
    assert bystander.call("SET", "blob", value) == "OK"
    for _ in range(5):
        half = RespClient.tcp(server.address)
        half.send(encode("SET", "blob", "overwritten?")[:15])
        half.close()                                   # FIN in the middle of a command
        rude = RespClient.tcp(server.address)
        rude.send(encode("SET", "x", "y")[:10])
        rude.reset()                                   # RST in the middle of a command
        greedy = RespClient.tcp(server.address)
        greedy.send(encode("GET", "blob") * 20)        # 5 MiB of replies nobody will read
        greedy.reset()
        assert bystander.call("PING") == "PONG"
    assert bystander.call("GET", "blob") == value, say("a half-sent command must never be executed")
    assert clients.tcp(server.address).call("GET", "blob") == value


# -- TCP and UNIX-domain sockets, stopping -----------------------------------------------------


def test_unix_and_tcp_share_one_store(unix_server, clients):
    tcp = clients.tcp(unix_server.address)
    unix = clients.unix(unix_server.test_unix_path)
    assert tcp.call("SET", "where", "tcp") == "OK"
    assert unix.call("GET", "where") == b"tcp"
    assert unix.call("INCR", "n") == 1
    assert tcp.call("INCR", "n") == 2


def test_stop_closes_everything_and_removes_the_socket_file(kvserver, socket_dir, clients):
    path = os.path.join(socket_dir, "kv.sock")
    server = kvserver.KVServer(tcp=("127.0.0.1", 0), unix_path=path)
    server.start()
    try:
        address = tuple(server.address)
        assert os.path.exists(path), say("start() must create the UNIX socket file")
        idle_tcp, idle_unix = clients.tcp(address), clients.unix(path)
        assert idle_tcp.call("PING") == "PONG" and idle_unix.call("PING") == "PONG"
        halfway = clients.tcp(address)
        halfway.send(encode("SET", "k", "v")[:7])
    finally:
        server.stop()
    assert not os.path.exists(path), say("stop() must remove the socket file")
    for client in (idle_tcp, idle_unix, halfway):
        assert client.read_until_closed() == b"", say("stop() must close every client connection")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
