"""Lab 4, part B: the StatsD collector on UDP.

UDP gives no delivery receipt, so the tests poll ``snapshot()`` until the
expected numbers show up, within a bounded time. Loopback UDP loses nothing as
long as the receiver's buffer does not overflow, so the tests send in small
batches and wait for each batch to be counted.
"""

from lab4_helpers import expect_snapshot


def snapshot(counters=None, gauges=None, bad_lines=0) -> dict:
    return {"counters": counters or {}, "gauges": gauges or {}, "bad_lines": bad_lines}


def test_counters_add_up_and_gauges_keep_the_last_value(collector, udp_sender):
    for _ in range(10):
        udp_sender.sendto(b"hits:1|c", collector.address)
    udp_sender.sendto(b"hits:5|c", collector.address)
    udp_sender.sendto(b"load:0.5|c", collector.address)
    udp_sender.sendto(b"temp:20|g", collector.address)
    expected = snapshot({"hits": 15, "load": 0.5}, {"temp": 20})
    expect_snapshot(collector, expected)
    # Wait for each gauge before sending the next: "last" must mean last sent.
    udp_sender.sendto(b"temp:-3.5|g", collector.address)
    udp_sender.sendto(b"hits:-2|c", collector.address)
    expected = snapshot({"hits": 13, "load": 0.5}, {"temp": -3.5})
    expect_snapshot(collector, expected)
    udp_sender.sendto(b"temp:7|g", collector.address)
    expected = snapshot({"hits": 13, "load": 0.5}, {"temp": 7})
    expect_snapshot(collector, expected)


def test_several_metrics_per_datagram(collector, udp_sender):
    udp_sender.sendto(b"a:1|c\nb:2|c\nq:10|g\na:3|c", collector.address)
    expected = snapshot({"a": 4, "b": 2}, {"q": 10})
    expect_snapshot(collector, expected)
    udp_sender.sendto(b"a:1|c\nq:11|g\nq:12|g\n", collector.address)      # a trailing newline is fine
    expected = snapshot({"a": 5, "b": 2}, {"q": 12})
    expect_snapshot(collector, expected)


def test_malformed_lines_are_counted_and_ignored(collector, udp_sender):
    bad = [b"no_colon|c", b"x:abc|c", b"x:1|ms", b":1|c", b"y:1", b"y:1|c|@0.5", b"z:|g", b"\xff\xfe\xfd", b"w:1|"]
    udp_sender.sendto(b"\n".join([b"ok:1|c", *bad, b"ok:2|c"]), collector.address)
    udp_sender.sendto(b"just garbage", collector.address)
    udp_sender.sendto(b"ok:4|c\ng:1|g", collector.address)
    expected = snapshot({"ok": 7}, {"g": 1}, bad_lines=len(bad) + 1)
    expect_snapshot(collector, expected)


def test_each_datagram_is_one_message(collector, udp_sender):
    # No newline at the end of any datagram: the datagram itself is the frame.
    gauges = {}
    for batch in range(4):
        for i in range(25):
            udp_sender.sendto(b"events:1|c", collector.address)
            udp_sender.sendto(b"level%d:%d|g" % (i, batch), collector.address)
            gauges[f"level{i}"] = batch
        expected = snapshot({"events": 25 * (batch + 1)}, gauges)
        expect_snapshot(collector, expected)


def test_large_datagram_is_read_whole(collector, udp_sender):
    lines = [b"bulk:1|c"] * 7000 + [b"last:1|g"]
    datagram = b"\n".join(lines)
    assert len(datagram) > 60000
    udp_sender.sendto(datagram, collector.address)
    expected = snapshot({"bulk": 7000}, {"last": 1})
    expect_snapshot(collector, expected)
