"""Lab 3 hidden tests: geometry from the header, blocking producers, contention
with large records, and parallel_histogram's edges and clean-up.

Self-contained (no conftest): this folder is not shipped to students.
"""

import collections
import json
import os
import select
import subprocess
import sys
import uuid

import psutil
import pytest

from grader.i18n import say

DEV_SHM = "/dev/shm"
MiB = 1 << 20


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def ringbuffer(impl):
    return impl.load("ringbuffer")


@pytest.fixture
def names():
    """names() -> a fresh ring name; /dev/shm entries carrying it are removed in teardown."""
    made = []

    def fresh():
        made.append(f"ipclab_{os.getpid()}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield fresh
    for entry in os.listdir(DEV_SHM):
        if any(name in entry for name in made):
            try:
                os.unlink(os.path.join(DEV_SHM, entry))
            except FileNotFoundError:
                pass


@pytest.fixture
def start(impl):
    """start(script, *args) -> a running ``python -c script``; killed and reaped in teardown."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    started = []

    def run(script, *args):
        proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=impl.env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            pass
    # Resource trackers of exited programs are re-parented to us: reap them.
    from multiprocessing import resource_tracker
    ours = getattr(resource_tracker._resource_tracker, "_pid", None)
    orphans = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.pid != ours]
    _, alive = psutil.wait_procs(orphans, timeout=5)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=5)


def read_line(proc, timeout):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().rstrip("\n") if ready else None


def finish(proc, timeout, what):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(say("{what} did not finish within {timeout} s: {stderr}",
                        what=what, timeout=timeout, stderr=err.strip()[-500:]))
    if proc.returncode != 0:
        pytest.fail(say("{what} failed (exit {code}): {stderr}", what=what, code=proc.returncode,
                        stderr=err.strip()[-800:]))
    return out


@pytest.fixture
def make_ring(ringbuffer, names):
    """make_ring(**geometry) -> (ring, name); closed and unlinked in teardown."""
    rings = []

    def make(**geometry):
        name = names()
        rings.append(ringbuffer.RingBuffer(name, create=True, **geometry))
        return rings[-1], name

    yield make
    for ring in rings:
        for step in (ring.close, ring.unlink):
            try:
                step()
            except Exception:
                pass


# -- the ring ---------------------------------------------------------------------------------

GEOMETRY_PROBE = r"""
import sys
from ringbuffer import RingBuffer

ring = RingBuffer(sys.argv[1])           # default slots/slot_size: the header must win
ring.put(b"a" * 100, timeout=5)          # slot_size is 100, not 4096...
try:
    ring.put(b"b" * 101, timeout=5)
    print("a 101-byte record was accepted")
except ValueError:
    pass
ring.put(b"c", timeout=5)
ring.put(b"d", timeout=5)
try:
    ring.put(b"e", timeout=0.3)          # ...and slots is 3, not 16: the ring is full
    print("a 4th record fitted in a 3-slot ring")
except TimeoutError:
    pass
ring.close()
print("done")
"""


def test_open_takes_geometry_from_header(make_ring, start):
    ring, name = make_ring(slots=3, slot_size=100)
    out = finish(start(GEOMETRY_PROBE, name), 20, say("the program that opened the ring"))
    assert out.strip().splitlines() == ["done"], say("opening an existing ring ignored its header: {output}",
                                                     output=out.strip())
    assert [ring.get(timeout=1) for _ in range(3)] == [b"a" * 100, b"c", b"d"]


PRODUCER_BLOCKS = r"""
import sys
from ringbuffer import RingBuffer

ring = RingBuffer(sys.argv[1])
print("ready", flush=True)
ring.put(b"third")
print("put done", flush=True)
ring.close()
"""


def test_put_blocks_while_full_until_a_get(make_ring, start):
    ring, name = make_ring(slots=2, slot_size=16)
    ring.put(b"first", timeout=1)
    ring.put(b"second", timeout=1)
    producer = start(PRODUCER_BLOCKS, name)
    assert read_line(producer, 20) == "ready", finish(producer, 5, say("the producer"))
    assert read_line(producer, 0.5) is None, say("put() on a full ring returned instead of blocking")
    assert ring.get(timeout=1) == b"first", say("the oldest record was overwritten")
    assert read_line(producer, 10) == "put done", (
        say("the blocked put() did not resume after a get() freed a slot"))
    finish(producer, 10, say("the producer"))
    assert [ring.get(timeout=1), ring.get(timeout=1)] == [b"second", b"third"]


# Large records take long to copy, which widens any window a missing lock leaves.
CONTENTION = r"""
import hashlib, json, sys
from ringbuffer import RingBuffer

role, name = sys.argv[1], sys.argv[2]
ring = RingBuffer(name)
if role == "produce":
    producer, count = int(sys.argv[3]), int(sys.argv[4])
    print("ready", flush=True)
    sys.stdin.readline()       # all producers start together
    for seq in range(count):
        body = (b"%d:%d:" % (producer, seq)) * (20 + seq % 100)
        ring.put(hashlib.sha1(body).digest() + body, timeout=20)
else:
    got, bad = [], 0
    try:
        while True:
            data = ring.get(timeout=5)
            if data == b"STOP":
                break
            digest, body = data[:20], data[20:]
            if hashlib.sha1(body).digest() != digest:
                bad += 1
            else:
                got.append(body.split(b":")[:2])
    except TimeoutError:
        pass
    print(json.dumps({"got": [[int(p), int(s)] for p, s in got], "bad": bad}))
ring.close()
"""


def test_large_records_under_contention(ringbuffer, names, start):
    producers, consumers, per_producer = 4, 3, 1000
    expected = sorted([p, s] for p in range(producers) for s in range(per_producer))
    for round_no in range(1, 7):
        name = names()
        # A roomy ring (producers run unhindered, so they get preempted mid-put
        # even on one CPU) alternates with a small one (constant blocking).
        slots = 1024 if round_no % 2 else 16
        ring = ringbuffer.RingBuffer(name, create=True, slots=slots, slot_size=1200)
        try:
            readers = [start(CONTENTION, "consume", name) for _ in range(consumers)]
            writers = [start(CONTENTION, "produce", name, p, per_producer) for p in range(producers)]
            for p, writer in enumerate(writers):
                assert read_line(writer, 20) == "ready", finish(writer, 5, say("producer {p}", p=p))
            for writer in writers:
                writer.stdin.write("go\n")
                writer.stdin.flush()
            for p, writer in enumerate(writers):
                finish(writer, 30, say("producer {p}", p=p))
            for _ in readers:
                ring.put(b"STOP", timeout=10)
            reports = [json.loads(finish(r, 30, say("a consumer"))) for r in readers]
        finally:
            ring.close()
            ring.unlink()
        received = sorted(item for report in reports for item in report["got"])
        corrupt = sum(report["bad"] for report in reports)
        assert corrupt == 0 and received == expected, (
            say("round {round_no}: {intact} intact records of {total} ({lost} lost, {corrupt} corrupt)",
                round_no=round_no, intact=len(received), total=len(expected),
                lost=len(expected) - len({tuple(i) for i in received}), corrupt=corrupt))


# -- parallel_histogram -------------------------------------------------------------------------


def expected_counts(data):
    counts = collections.Counter(data)
    return [counts[value] for value in range(256)]


def test_histogram_small_inputs(ringbuffer):
    assert ringbuffer.parallel_histogram(b"", 3) == [0] * 256, say("empty data: 256 zeros")
    for data, n_procs in [(b"\x01\x02\x03", 5), (b"\xff", 1), (bytes(range(256)), 256 // 64)]:
        assert ringbuffer.parallel_histogram(data, n_procs) == expected_counts(data), \
            say("wrong counts for {size} bytes with n_procs={n_procs}", size=len(data), n_procs=n_procs)


# Collects the inodes of every /dev/shm file mapped by the test process or any
# process it starts, until told to stop.
SHM_WATCHER = r"""
import json, select, sys
import psutil

test = psutil.Process(int(sys.argv[1]))
inodes = set()
print("watching", flush=True)
while not select.select([sys.stdin], [], [], 0.005)[0]:
    for proc in [test, *test.children(recursive=True)]:
        try:
            with open(f"/proc/{proc.pid}/maps") as maps:
                for line in maps:
                    fields = line.split(maxsplit=5)
                    if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                        inodes.add(int(fields[4]))
        except OSError:
            pass
print(json.dumps(sorted(inodes)), flush=True)
"""


def _shm_inodes_mapped_here():
    with open("/proc/self/maps") as maps:
        return {int(f[4]) for f in (line.split(maxsplit=5) for line in maps)
                if len(f) == 6 and f[5].startswith("/dev/shm/")}


def test_histogram_unlinks_its_segments(ringbuffer, start):
    data = os.urandom(16 * MiB)
    already_mapped = _shm_inodes_mapped_here()
    watcher = start(SHM_WATCHER, os.getpid())
    assert read_line(watcher, 20) == "watching", finish(watcher, 5, say("the watcher"))
    try:
        counts = ringbuffer.parallel_histogram(data, 2)
    finally:
        watcher.stdin.write("stop\n")
        watcher.stdin.flush()
    inodes = set(json.loads(finish(watcher, 20, say("the watcher")))) - already_mapped
    assert sum(counts) == len(data)
    left = sorted(entry.name for entry in os.scandir(DEV_SHM) if entry.inode() in inodes)
    for entry in left:  # do not leave them to the next test
        os.unlink(os.path.join(DEV_SHM, entry))
    assert not left, say("parallel_histogram left these in /dev/shm: {left}", left=left)
