"""Lab 4 hidden tests, part B: empty datagrams, many senders, releasing the port."""

import socket

from lab4_helpers import expect_snapshot


def test_empty_datagram_does_not_stop_the_collector(collector, udp_sender):
    udp_sender.sendto(b"before:1|c", collector.address)
    expected = {"counters": {"before": 1}, "gauges": {}, "bad_lines": 0}
    expect_snapshot(collector, expected)
    udp_sender.sendto(b"", collector.address)       # legal in UDP; it is not "end of stream"
    udp_sender.sendto(b"after:1|c", collector.address)
    expected = {"counters": {"before": 1, "after": 1}, "gauges": {}, "bad_lines": 0}
    expect_snapshot(collector, expected)


def test_many_senders_and_snapshots(collector):
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        for batch in range(1, 6):
            for i, sender in enumerate(senders):
                for _ in range(10):
                    sender.sendto(b"total:1|c\nsender%d:2|c" % i, collector.address)
            middle = collector.snapshot()
            assert 0 <= middle["counters"].get("total", 0) <= 40 * batch
            middle["counters"]["total"] = -1               # a copy: must not touch the collector
            expected = {"counters": {"total": 40 * batch, **{f"sender{i}": 20 * batch for i in range(4)}},
                        "gauges": {}, "bad_lines": 0}
            expect_snapshot(collector, expected)
    finally:
        for sender in senders:
            sender.close()


def test_stop_releases_the_port(stats):
    collector = stats.StatsCollector("127.0.0.1", 0)
    collector.start()
    host, port = collector.address
    collector.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((host, port))        # fails with "Address already in use" if stop() kept the socket
