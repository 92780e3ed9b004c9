"""Lab 2 public tests: run_workers.

The test feeds the request queue and drains the reply queue from two threads
while ``run_workers`` runs: both queues hold at most 10 messages (the
kernel's default limit), so 200 jobs can only pass if all three sides make
progress at once. The feeding and draining use posix_ipc and json directly,
as any other program speaking the spec's message format would.
"""

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import posix_ipc
import psutil
import pytest

from grader.i18n import say

sys.path.insert(0, str(Path(__file__).parent))  # workers started with spawn import the handlers by name
import lab2_handlers  # noqa: E402

DEADLINE = 40  # seconds for a whole run_workers session; it needs a few at most
# Python's own helper processes, which may legitimately outlive run_workers.
RUNTIME_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def priority_of(n: int) -> int:
    return (n % 5) * 7  # 0, 7, 14, 21, 28


class Session:
    """One run_workers call with a feeder and a drainer thread around it."""

    POLL = 0.2  # seconds; how often the helper threads check whether to give up

    def __init__(self, jq, request_name, reply_name, n_jobs, n_workers):
        self.jq, self.n_jobs, self.n_workers = jq, n_jobs, n_workers
        self.request_name, self.reply_name = request_name, reply_name
        self.requests = posix_ipc.MessageQueue(request_name, posix_ipc.O_CREX, max_messages=10, max_message_size=1024)
        self.replies = posix_ipc.MessageQueue(reply_name, posix_ipc.O_CREX, max_messages=10, max_message_size=1024)
        self.deadline = time.monotonic() + DEADLINE
        self.finished = threading.Event()  # run_workers returned or raised
        self.received: list[tuple[dict, int]] = []
        self.feed_error = None
        self.returned = None
        self.run_error = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def feed(self):
        jobs = [({"id": n, "n": n}, priority_of(n)) for n in range(self.n_jobs)]
        # Priority 0 and sent last: every job is taken before any stop.
        stops = [({"stop": True}, 0)] * self.n_workers
        for message, priority in jobs + stops:
            data = json.dumps(message).encode()
            while True:
                try:
                    self.requests.send(data, self.POLL, priority)
                    break
                except posix_ipc.BusyError:
                    if self.finished.is_set() or not self.remaining():
                        self.feed_error = say("the request queue stayed full: are the workers receiving?")
                        return

    def drain(self):
        while len(self.received) < self.n_jobs:
            # Once run_workers is back, every reply is in the queue: take what is there.
            timeout = 0 if self.finished.is_set() else min(self.POLL, self.remaining())
            try:
                data, priority = self.replies.receive(timeout)
            except posix_ipc.BusyError:
                if self.finished.is_set() or not self.remaining():
                    return
                continue
            self.received.append((json.loads(data.decode("utf-8")), priority))

    def call(self):
        try:
            self.returned = self.jq.run_workers(self.request_name, self.reply_name, self.n_workers,
                                                lab2_handlers.square_or_fail)
        except BaseException as exc:  # reported by run()
            self.run_error = exc
        finally:
            self.finished.set()

    def run(self):
        feeder, drainer, caller = (threading.Thread(target=fn, daemon=True) for fn in (self.feed, self.drain, self.call))
        for thread in (feeder, drainer, caller):
            thread.start()
        caller.join(self.remaining())
        hung = caller.is_alive()
        self.finished.set()  # even if it hangs: the helper threads stop within POLL seconds
        feeder.join(DEADLINE)
        drainer.join(DEADLINE)
        assert not hung, (
            say("run_workers did not return within {seconds} s; replies received: {received}/{jobs}",
                seconds=DEADLINE, received=len(self.received), jobs=self.n_jobs))
        if self.run_error is not None:
            raise self.run_error
        assert self.feed_error is None, self.feed_error

    def close(self):
        for mq in (self.requests, self.replies):
            mq.close()


@pytest.fixture
def session(jq, new_queue_name):
    made = []

    def start(n_jobs, n_workers):
        made.append(Session(jq, new_queue_name(), new_queue_name(), n_jobs, n_workers))
        return made[-1]

    yield start
    for s in made:
        s.close()


def test_200_jobs_over_4_workers(session):
    s = session(n_jobs=200, n_workers=4)
    s.run()
    ids = Counter(reply.get("id") for reply, _ in s.received)
    missing = sorted(set(range(200)) - set(ids))
    twice = sorted(i for i, count in ids.items() if count > 1)
    assert not missing and not twice, say("replies missing for ids {missing}, more than once for {twice}",
                                          missing=missing[:10], twice=twice[:10])
    assert s.replies.current_messages == 0, say("more replies than jobs")
    assert s.returned == 200, say("run_workers returned {returned!r}, but 200 jobs were handled", returned=s.returned)
    worker_pids = set()
    for reply, priority in s.received:
        n = reply["id"]
        assert priority == priority_of(n), say("reply {n} sent at priority {priority}, its job had {job_priority}",
                                               n=n, priority=priority, job_priority=priority_of(n))
        if n % 7 == 0:
            assert isinstance(reply.get("error"), str) and reply["error"], (
                say("job {n}'s handler raised: {reply}", n=n, reply=reply))
        else:
            result = reply.get("result")
            assert isinstance(result, dict) and result.get("square") == n * n, (
                say("reply to job {n}: {reply}", n=n, reply=reply))
            worker_pids.add(reply["result"]["pid"])
    assert os.getpid() not in worker_pids, say("the handler ran in the test's own process, not in a worker")
    assert len(worker_pids) <= 4, say("jobs were handled by {count} processes, more than n_workers=4",
                                      count=len(worker_pids))


def _is_runtime_helper(proc: psutil.Process) -> bool:
    try:
        return any(helper in " ".join(proc.cmdline()) for helper in RUNTIME_HELPERS)
    except psutil.Error:
        return False


def test_no_worker_left_alive_or_zombie(session):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    s = session(n_jobs=40, n_workers=4)
    s.run()
    assert s.returned == 40
    left = []
    for proc in me.children(recursive=True):
        if proc.pid in before or _is_runtime_helper(proc):
            continue
        try:
            left.append(f"pid {proc.pid} ({proc.status()})")
        except psutil.NoSuchProcess:
            pass  # it was reaped while we looked: fine
    assert not left, say("after run_workers returned, these processes were left behind: {processes}",
                         processes=", ".join(left))
