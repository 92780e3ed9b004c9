"""Lab 2 public tests: the JobQueue class.

Every queue a test makes has a unique name and is unlinked after the test,
pass or fail (see conftest.py). Programs that must run apart from the test
(producer, consumer) are separate Python processes that import the module
under test through ``impl.env()``.
"""

import json
import subprocess
import sys
import time

import posix_ipc
import psutil
import pytest

from grader.i18n import say

PROGRAM_TIMEOUT = 20  # seconds; bounds every separate program a test runs


def run_program(impl, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -c code args...`` against the implementation; fail clearly if it fails."""
    proc = subprocess.run([sys.executable, "-c", code, *args], env=impl.env(), text=True,
                          capture_output=True, timeout=PROGRAM_TIMEOUT, stdin=subprocess.DEVNULL)
    # The last line of a traceback says what went wrong; the score table shows one line.
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    assert proc.returncode == 0, (
        say("program failed (exit {code}): {last}", code=proc.returncode, last=last) + "\n" + proc.stderr[-2000:])
    return proc


# -- order ------------------------------------------------------------------------------


def test_priority_order_and_fifo_within_a_priority(jq, queue_name):
    priorities = [3, 0, 3, 31, 0, 7, 3, 31, 7]  # at most 10 messages: the kernel's default limit
    with jq.JobQueue(queue_name, create=True) as q:
        for seq, priority in enumerate(priorities):
            q.send({"seq": seq}, priority=priority)
        got = []
        for _ in priorities:
            job, priority = q.receive(timeout=2)
            got.append((job["seq"], priority))
    # Highest priority first; among equal priorities, the order they were sent in.
    expected = sorted(enumerate(priorities), key=lambda sp: (-sp[1], sp[0]))
    assert got == expected, say("received (seq, priority) {got}, expected {expected}", got=got, expected=expected)


# -- opening, creating, validating ----------------------------------------------------


@pytest.mark.parametrize("bad_name", ["jobs", "", "/a/b"])
def test_bad_names_are_rejected(jq, bad_name):
    with pytest.raises(ValueError):
        jq.JobQueue(bad_name, create=True)


def test_open_an_existing_queue_or_fail(jq, queue_name, new_queue_name):
    with jq.JobQueue(queue_name, create=True) as creator:
        creator.send({"id": 1})
        with jq.JobQueue(queue_name) as opener:  # create=False: the same queue
            assert opener.receive(timeout=2) == ({"id": 1}, 0)
    with pytest.raises(FileNotFoundError):
        jq.JobQueue(new_queue_name())


def test_leftover_queue_is_detected(jq, queue_name, plant_queue):
    # A crashed earlier run left a queue (with a stale job) under our name.
    plant_queue(queue_name).send(b'{"stale": true}')
    with pytest.raises(FileExistsError) as caught:
        jq.JobQueue(queue_name, create=True)
    assert queue_name in str(caught.value), say("the error should name the queue: {error!s}", error=caught.value)
    # Detecting it must not destroy it: someone may want to inspect it.
    leftover = posix_ipc.MessageQueue(queue_name)
    try:
        assert leftover.current_messages == 1, say("create=True emptied or replaced the existing queue")
    finally:
        leftover.close()


def test_message_size_is_enforced(jq, queue_name):
    assert issubclass(jq.MessageTooLarge, ValueError)
    with jq.JobQueue(queue_name, create=True, max_messages=4, max_message_size=256) as q:
        with pytest.raises(jq.MessageTooLarge):
            q.send({"data": "x" * 400})  # well over 256 bytes in any JSON spelling
        assert len(q) == 0, say("an oversized job must not be sent (not even cut short)")
        q.send({"data": "x" * 150})  # well under 256 bytes in any JSON spelling
        assert q.receive(timeout=2) == ({"data": "x" * 150}, 0)


@pytest.mark.parametrize("priority", [-1, 32, 1000])
def test_priority_out_of_range_is_rejected(jq, queue_name, priority):
    with jq.JobQueue(queue_name, create=True) as q:
        with pytest.raises(ValueError):
            q.send({"id": 1}, priority=priority)
        assert len(q) == 0
        q.send({"id": 2}, priority=0)
        q.send({"id": 3}, priority=31)
        assert len(q) == 2


# -- timeouts ---------------------------------------------------------------------------


def test_timeout_zero_never_blocks(jq, queue_name):
    with jq.JobQueue(queue_name, create=True, max_messages=2) as q:
        q.send({"id": 1}, timeout=0)
        q.send({"id": 2}, timeout=0)
        start = time.monotonic()
        with pytest.raises(jq.QueueFull):
            q.send({"id": 3}, timeout=0)
        took = time.monotonic() - start
        assert took < 1.0, say("send(timeout=0) on a full queue took {took:.2f} s", took=took)
        assert len(q) == 2
    start = time.monotonic()
    with jq.JobQueue(queue_name) as q:
        q.receive(timeout=0)
        q.receive(timeout=0)
        with pytest.raises(jq.QueueEmpty):
            q.receive(timeout=0)
    took = time.monotonic() - start
    assert took < 1.0, say("receive(timeout=0) took {took:.2f} s in all", took=took)


@pytest.mark.parametrize("side", ["receive", "send"])
def test_short_timeout_waits_then_gives_up(jq, queue_name, side):
    timeout = 0.4
    with jq.JobQueue(queue_name, create=True, max_messages=1) as q:
        if side == "receive":
            attempt, error = (lambda: q.receive(timeout=timeout)), jq.QueueEmpty
        else:
            q.send({"id": 1})
            attempt, error = (lambda: q.send({"id": 2}, timeout=timeout)), jq.QueueFull
        start = time.monotonic()
        with pytest.raises(error):
            attempt()
        took = time.monotonic() - start
    assert took >= timeout - 0.05, say("{side}(timeout={timeout}) gave up after only {took:.2f} s",
                                       side=side, timeout=timeout, took=took)
    assert took <= timeout + 2.0, say("{side}(timeout={timeout}) took {took:.2f} s",
                                      side=side, timeout=timeout, took=took)


BLOCKED_RECEIVE = """
import json, sys, time
import jobqueue
q = jobqueue.JobQueue(sys.argv[1])
cpu, wall = time.process_time(), time.monotonic()
try:
    q.receive(timeout=float(sys.argv[2]))
    outcome = "received"
except jobqueue.QueueEmpty:
    outcome = "empty"
print(json.dumps({"outcome": outcome, "cpu": time.process_time() - cpu, "wall": time.monotonic() - wall}))
"""


def test_blocked_receive_does_not_burn_cpu(impl, queue_name, plant_queue):
    window = 2.5
    plant_queue(queue_name)
    proc = run_program(impl, BLOCKED_RECEIVE, queue_name, str(window))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "empty", say("receive on an empty queue returned something")
    assert result["wall"] >= window - 0.05, say("receive(timeout={window}) returned after {wall:.2f} s",
                                                window=window, wall=result["wall"])
    # A process asleep in mq_timedreceive uses a few milliseconds of CPU at
    # most; a polling loop uses most of the window on an idle machine, and
    # still well over this bound on a loaded one.
    assert result["cpu"] < 0.15, (
        say("receive used {cpu:.2f} s of CPU while waiting {wall:.2f} s: it polls",
            cpu=result["cpu"], wall=result["wall"]))


# -- asynchrony and lifetime ----------------------------------------------------------------


PRODUCER = """
import sys
import jobqueue
q = jobqueue.JobQueue(sys.argv[1], create=True)
q.send({"id": 1, "text": "low"}, priority=1)
q.send({"id": 2, "text": "high"}, priority=9)
q.send({"id": 3, "text": "low, later"}, priority=1)
q.close()
"""

CONSUMER = """
import json, sys
import jobqueue
with jobqueue.JobQueue(sys.argv[1]) as q:
    got = [q.receive(timeout=5) for _ in range(3)]
    try:
        q.receive(timeout=0)
        got.append("a fourth message")
    except jobqueue.QueueEmpty:
        pass
print(json.dumps(got))
"""


def test_producer_and_consumer_need_not_coexist(impl, queue_name):
    # The producer runs to its end and exits before the consumer starts: the
    # kernel holds the messages in between, which a pipe could not do.
    run_program(impl, PRODUCER, queue_name)
    consumer = run_program(impl, CONSUMER, queue_name)
    got = json.loads(consumer.stdout.strip().splitlines()[-1])
    assert got == [[{"id": 2, "text": "high"}, 9],
                   [{"id": 1, "text": "low"}, 1],
                   [{"id": 3, "text": "low, later"}, 1]], say("the consumer received {got}", got=got)


def test_queue_persists_until_unlinked(jq, queue_name):
    q = jq.JobQueue(queue_name, create=True)
    q.send({"id": 1})
    q.close()
    # Closing is not removing: the queue and its job are still there.
    with jq.JobQueue(queue_name) as q:
        assert len(q) == 1
        assert q.receive(timeout=2) == ({"id": 1}, 0)
        q.unlink()
    with pytest.raises(FileNotFoundError):
        jq.JobQueue(queue_name)
    try:
        posix_ipc.MessageQueue(queue_name).close()
    except posix_ipc.ExistentialError:
        pass  # gone, as it should be
    else:
        pytest.fail(say("{name} still exists after unlink()", name=queue_name))


PAYLOADS = [
    {"id": 1, "text": "nul\x00inside\x00"},
    {"id": 2, "text": "Grüße, 世界, Привет, 🚀"},
    {"id": 3, "nested": {"list": [1, 2.5, None, True, "\x00é"], "empty": {}}, "ünïcode-kéy": ""},
]


def test_payloads_round_trip(jq, queue_name):
    with jq.JobQueue(queue_name, create=True) as q:
        for job in PAYLOADS:
            q.send(job, priority=5)
        got = [q.receive(timeout=2) for _ in PAYLOADS]
        assert got == [(job, 5) for job in PAYLOADS]
        # Jobs are JSON text in UTF-8: another program can read and write them.
        raw = posix_ipc.MessageQueue(queue_name)
        try:
            for job in PAYLOADS:
                raw.send(json.dumps(job, ensure_ascii=False).encode("utf-8"), priority=2)
        finally:
            raw.close()
        got = [q.receive(timeout=2) for _ in PAYLOADS]
        assert got == [(job, 2) for job in PAYLOADS]


def test_len_and_context_manager(jq, queue_name):
    me = psutil.Process()
    fds_before = me.num_fds()
    with jq.JobQueue(queue_name, create=True) as q:
        assert isinstance(q, jq.JobQueue), say("with JobQueue(...) as q: q should be the queue")
        assert len(q) == 0
        for i in range(3):
            q.send({"id": i})
        assert len(q) == 3
        q.receive(timeout=2)
        assert len(q) == 2
    assert me.num_fds() == fds_before, say("leaving the with block did not close the queue's descriptor")
    # ...and did not unlink it.
    left = posix_ipc.MessageQueue(queue_name)
    try:
        assert left.current_messages == 2
    finally:
        left.close()
