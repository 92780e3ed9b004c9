"""Lab 2 hidden tests: waiting without a timeout, limits of an opened queue,
unlink after close, and a single worker that must survive handler errors."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import posix_ipc
import psutil
import pytest

from grader.i18n import say

sys.path.insert(0, str(Path(__file__).parent))  # workers started with spawn import the handler by name
import lab2_hidden_handlers  # noqa: E402

WAIT = 15  # seconds; bounds every wait in these tests
RUNTIME_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")

BLOCKING_CONSUMER = """
import json, sys
import jobqueue
with jobqueue.JobQueue(sys.argv[1]) as q:
    print(json.dumps(q.receive()))
"""

BLOCKING_PRODUCER = """
import sys
import jobqueue
with jobqueue.JobQueue(sys.argv[1]) as q:
    q.send({"id": 2}, priority=3)
"""


def start_program(impl, code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=impl.env(), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> str:
    try:
        out, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(say("the program was still blocked after {seconds} s", seconds=WAIT))
    last = (err.strip().splitlines() or [""])[-1]
    assert proc.returncode == 0, (
        say("program failed (exit {code}): {last}", code=proc.returncode, last=last) + "\n" + err[-2000:])
    return out


def test_none_timeout_waits_for_the_other_side(impl, queue_name, plant_queue):
    mq = plant_queue(queue_name, max_messages=1)
    # receive() with no timeout on an empty queue waits until a job comes,
    # however late (whether the consumer is already asleep or not).
    consumer = start_program(impl, BLOCKING_CONSUMER, queue_name)
    mq.send(json.dumps({"id": 1}).encode(), WAIT, 4)
    assert json.loads(finish(consumer).strip().splitlines()[-1]) == [{"id": 1}, 4]
    # send() with no timeout on a full queue waits until there is room.
    mq.send(json.dumps({"id": 0}).encode(), 0, 0)
    producer = start_program(impl, BLOCKING_PRODUCER, queue_name)
    assert json.loads(mq.receive(WAIT)[0]) == {"id": 0}
    data, priority = mq.receive(WAIT)
    assert (json.loads(data), priority) == ({"id": 2}, 3)
    finish(producer)


def test_opened_queue_keeps_its_own_limits(jq, queue_name, plant_queue):
    plant_queue(queue_name, max_messages=3, max_message_size=128)
    with jq.JobQueue(queue_name) as q:  # the default sizes (10, 1024) do not apply to an existing queue
        with pytest.raises(jq.MessageTooLarge):
            q.send({"data": "x" * 300})
        for i in range(3):
            q.send({"id": i}, timeout=0)
        with pytest.raises(jq.QueueFull):
            q.send({"id": 3}, timeout=0)
        assert len(q) == 3


def test_unlink_after_close_frees_the_name(jq, queue_name):
    q = jq.JobQueue(queue_name, create=True)
    q.send({"id": 1})
    q.close()
    q.unlink()
    with pytest.raises(FileNotFoundError):
        jq.JobQueue(queue_name)
    # The name is free again: a fresh, empty queue can take it.
    with jq.JobQueue(queue_name, create=True) as fresh:
        assert len(fresh) == 0
        fresh.unlink()


def test_one_worker_keeps_going_after_errors(jq, new_queue_name, plant_queue):
    request_name, reply_name = new_queue_name(), new_queue_name()
    requests, replies = plant_queue(request_name), plant_queue(reply_name)
    jobs = {n: (n * 3) % 11 for n in range(8)}  # id -> priority; 8 jobs and 1 stop fit in 10 slots
    for n, priority in jobs.items():
        requests.send(json.dumps({"id": n, "n": n}).encode(), 0, priority)
    requests.send(json.dumps({"stop": True}).encode(), 0, 0)

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    outcome = {}

    def call():
        outcome["returned"] = jq.run_workers(request_name, reply_name, 1, lab2_hidden_handlers.tenfold_unless_even)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(WAIT)
    assert not caller.is_alive(), say("run_workers did not return within {seconds} s", seconds=WAIT)
    assert outcome.get("returned") == 8, say("run_workers returned {returned!r} for 8 jobs",
                                             returned=outcome.get("returned"))
    assert replies.current_messages == 8, say("{count} replies for 8 jobs", count=replies.current_messages)
    for _ in jobs:
        data, priority = replies.receive(0)
        reply = json.loads(data.decode("utf-8"))
        n = reply["id"]
        assert priority == jobs[n], say("reply {n} came at priority {priority}, its job had {job_priority}",
                                        n=n, priority=priority, job_priority=jobs[n])
        if n % 2 == 0:
            assert isinstance(reply.get("error"), str) and reply["error"], (
                say("job {n}'s handler raised: {reply}", n=n, reply=reply))
        else:
            assert reply.get("result") == n * 10, say("reply to job {n}: {reply}", n=n, reply=reply)
    left = left_behind(me, before)
    assert not left, say("after run_workers returned, these processes were left behind: {processes}",
                         processes=", ".join(left))


def left_behind(me: psutil.Process, before: set[int]) -> list[str]:
    """New children of ours, alive or zombie, except Python's own helper processes."""
    left = []
    for proc in me.children(recursive=True):
        if proc.pid in before:
            continue
        try:
            if any(helper in " ".join(proc.cmdline()) for helper in RUNTIME_HELPERS):
                continue
            left.append(f"pid {proc.pid} ({proc.status()})")
        except psutil.ZombieProcess:
            left.append(f"pid {proc.pid} (zombie)")
        except psutil.NoSuchProcess:
            pass  # reaped while we looked: fine
    return left
