"""parallel_histogram: right counts, and one shared copy of the data.

How much memory a worker holds of its own is its USS (unique set size:
pages no other process shares). A worker that reads the shared segment in
place has a USS of a few MiB, whatever the input size; a worker that was
sent its slice (pickled through a pipe, as Pool.map or Process args with
spawn do) holds a private copy of it. A watcher program samples the USS of
every process this test starts while parallel_histogram runs.
"""

import collections
import json
import os
import random

import pytest
from conftest import finish, read_line
from grader.i18n import say

MiB = 1 << 20

# Samples the USS of every new descendant of the test process until told to
# stop, then prints the peak per process.
WATCHER = r"""
import json, select, sys, time
import psutil

test = psutil.Process(int(sys.argv[1]))
me = psutil.Process()
helpers = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
known = {p.pid for p in test.children(recursive=True)}
peak = {}
print("watching", flush=True)
while not select.select([sys.stdin], [], [], 0.005)[0]:
    for proc in test.children(recursive=True):
        if proc.pid in known or proc.pid == me.pid:
            continue
        try:
            if any(h in " ".join(proc.cmdline()) for h in helpers):
                known.add(proc.pid)
                continue
            uss = proc.memory_full_info().uss
        except psutil.Error:
            continue
        peak[proc.pid] = max(peak.get(proc.pid, 0), uss)
print(json.dumps(peak), flush=True)
"""


@pytest.fixture
def histogram(impl):
    return impl.load("ringbuffer").parallel_histogram


def expected_counts(data: bytes) -> list[int]:
    counts = collections.Counter(data)
    return [counts[value] for value in range(256)]


def test_histogram_equals_counter(histogram):
    rng = random.Random(11)
    data = rng.randbytes(MiB + 12345) + bytes(range(256)) * 3 + b"\x00" * 1000
    for n_procs in (1, 2, 3, 7):
        counts = histogram(data, n_procs)
        assert isinstance(counts, list) and len(counts) == 256, say("return a list of 256 counts")
        assert counts == expected_counts(data), say("wrong counts with n_procs={n_procs}", n_procs=n_procs)
    skewed = bytes([7]) * 100_000 + bytes([200]) * 3
    assert histogram(skewed, 3) == expected_counts(skewed), say("wrong counts on skewed data")


def test_histogram_workers_share_one_copy_of_the_data(histogram, programs):
    data = os.urandom(64 * MiB)
    watcher = programs.start(WATCHER, os.getpid())
    assert read_line(watcher, 20) == "watching", finish(watcher, 5, say("the watcher"))
    try:
        counts = histogram(data, 2)
    finally:
        watcher.stdin.write("stop\n")
        watcher.stdin.flush()
    peak = {int(pid): uss for pid, uss in json.loads(finish(watcher, 20, say("the watcher"))).items()}
    assert sum(counts) == len(data), say("the counts do not add up to the size of the data")
    assert peak, say("saw no worker process while parallel_histogram ran")
    worst = max(peak.values())
    assert worst < 20 * MiB, (
        say("a worker held {held:.0f} MiB of its own (USS) for a 64 MiB input: "
            "it got a private copy of the data instead of attaching the shared segment", held=worst / MiB))
