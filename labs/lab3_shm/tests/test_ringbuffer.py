"""RingBuffer: order, size limits, blocking, timeouts, wraparound, clean-up.

The ring is used from this test process and from separate programs that open
it by name (``python -c``, importing your ringbuffer.py), as the handout's
"unrelated processes" do.
"""

import os
import random
import time

import psutil
import pytest
from conftest import DEV_SHM, finish, read_line
from grader.i18n import say

# A separate program: open the ring by name and run one role.
PROGRAM = r"""
import sys
from ringbuffer import RingBuffer

role, name = sys.argv[1], sys.argv[2]
ring = RingBuffer(name)
if role == "produce":          # put record(i) for i < count, in order
    count = int(sys.argv[3])
    for i in range(count):
        size = i * 7919 % (ring.slot_size + 1)
        ring.put(bytes((i + k) % 251 for k in range(size)), timeout=30)
elif role == "get-one":        # say "ready", block in get(), print what came
    print("ready", flush=True)
    print(ring.get().decode(), flush=True)
elif role == "echo":           # get one record, answer it, then wait to be told to exit
    data = ring.get(timeout=30)
    ring.put(b"echo:" + data, timeout=30)
    print("done", flush=True)
    sys.stdin.readline()
ring.close()
"""


def record(i: int, slot_size: int) -> bytes:
    """What PROGRAM's producer puts as its i-th record (lengths 0..slot_size)."""
    size = i * 7919 % (slot_size + 1)
    return bytes((i + k) % 251 for k in range(size))


@pytest.fixture
def make_ring(ringbuffer, ring_name):
    """make_ring(**geometry) creates the test's ring; it is closed and unlinked in teardown."""
    rings = []

    def make(**geometry):
        ring = ringbuffer.RingBuffer(ring_name, create=True, **geometry)
        rings.append(ring)
        return ring

    yield make
    for ring in rings:
        for step in (ring.close, ring.unlink):
            try:
                step()
            except Exception:
                pass


def test_one_producer_one_consumer_keeps_order(make_ring, ring_name, programs):
    ring = make_ring(slots=8, slot_size=512)
    count = 1500
    producer = programs.start(PROGRAM, "produce", ring_name, count)
    for i in range(count):
        try:
            data = ring.get(timeout=20)
        except TimeoutError:
            pytest.fail(say("record {i} never arrived: {output!r}", i=i,
                            output=finish(producer, 5, say("the producer"))))
        assert data == record(i, 512), say("record {i} came out wrong (order or content)", i=i)
    finish(producer, 20, say("the producer"))
    with pytest.raises(TimeoutError):
        ring.get(timeout=0.2)


def test_slot_size_boundary(make_ring, ringbuffer, ring_name):
    ring = make_ring(slots=4, slot_size=100)
    assert (ring.slots, ring.slot_size) == (4, 100)
    for size in (100, 0, 1, 99):
        payload = bytes(range(size))
        ring.put(payload, timeout=1)
        assert ring.get(timeout=1) == payload, say("a {size}-byte record did not come back intact", size=size)
    with pytest.raises(ValueError):
        ring.put(b"x" * 101, timeout=1)
    # A refused record must take no slot: the ring still holds 4 records.
    for i in range(4):
        ring.put(bytes([i]) * 100, timeout=1)
    assert [ring.get(timeout=1) for _ in range(4)] == [bytes([i]) * 100 for i in range(4)]


def test_get_times_out_when_empty(make_ring):
    ring = make_ring(slots=2, slot_size=16)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        ring.get(timeout=0.3)
    waited = time.monotonic() - started
    assert waited >= 0.25, say("get(timeout=0.3) gave up after {waited:.2f} s", waited=waited)
    assert waited < 5, say("get(timeout=0.3) took {waited:.2f} s to time out", waited=waited)
    ring.put(b"late", timeout=1)
    assert ring.get(timeout=1) == b"late", say("the ring stopped working after a timeout")


def test_put_times_out_when_full(make_ring):
    ring = make_ring(slots=3, slot_size=16)
    for i in range(3):
        ring.put(b"record %d" % i, timeout=1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        ring.put(b"one too many", timeout=0.3)
    waited = time.monotonic() - started
    assert 0.25 <= waited < 5, say("put(timeout=0.3) on a full ring returned after {waited:.2f} s",
                                   waited=waited)
    assert [ring.get(timeout=1) for _ in range(3)] == [b"record %d" % i for i in range(3)], \
        say("the unread records were changed by the put that timed out")
    with pytest.raises(TimeoutError):
        ring.get(timeout=0.1)


def test_get_blocks_until_a_put(make_ring, ring_name, programs):
    ring = make_ring(slots=2, slot_size=64)
    consumer = programs.start(PROGRAM, "get-one", ring_name)
    assert read_line(consumer, 20) == "ready", finish(consumer, 5, say("the consumer"))
    assert read_line(consumer, 0.5) is None, say("get() on an empty ring returned instead of blocking")
    assert consumer.poll() is None, say("the consumer exited: {output}",
                                        output=finish(consumer, 5, say("the consumer")))
    ring.put(b"wake up", timeout=1)
    assert read_line(consumer, 10) == "wake up", say("the blocked get() did not return the record")
    finish(consumer, 10, say("the consumer"))


def test_idle_blocked_consumer_uses_almost_no_cpu(make_ring, ring_name, programs):
    ring = make_ring(slots=2, slot_size=64)
    consumer = programs.start(PROGRAM, "get-one", ring_name)
    assert read_line(consumer, 20) == "ready", finish(consumer, 5, say("the consumer"))
    process = psutil.Process(consumer.pid)
    before = process.cpu_times()
    window = 2.0
    assert read_line(consumer, window) is None, say("get() on an empty ring returned instead of blocking")
    after = process.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    assert used < 0.1, say("a consumer blocked on an empty ring used {used:.2f} s of CPU in {window:g} s: it spins",
                           used=used, window=window)
    ring.put(b"done waiting", timeout=1)
    assert read_line(consumer, 10) == "done waiting"
    finish(consumer, 10, say("the consumer"))


def test_records_wrap_around_the_ring_50_times(make_ring):
    slots, slot_size = 5, 64
    ring = make_ring(slots=slots, slot_size=slot_size)
    rng = random.Random(3)
    total = 50 * slots + 3
    put = got = 0
    while got < total:
        # Keep a varying number of records in flight, so that reads and
        # writes cross the end of the ring at every fill level.
        in_flight = rng.randint(1, slots)
        while put < total and put - got < in_flight:
            ring.put(record(put, slot_size), timeout=1)
            put += 1
        while got < put and (put - got >= in_flight or put == total):
            assert ring.get(timeout=1) == record(got, slot_size), (
                say("record {i} (slot {slot}) came out wrong", i=got, slot=got % slots))
            got += 1
    with pytest.raises(TimeoutError):
        ring.get(timeout=0.1)


def test_ring_survives_an_unrelated_program_that_attaches_and_exits(make_ring, ringbuffer, ring_name, programs):
    ring = make_ring(slots=4, slot_size=64)
    for visitor in ("first", "second"):
        ring.put(visitor.encode(), timeout=1)
        program = programs.start(PROGRAM, "echo", ring_name)
        what = say("the first program") if visitor == "first" else say("the second program")
        assert read_line(program, 20) == "done", finish(program, 5, what)
        # Whatever the program started (Python's resource tracker, say) must
        # finish its own clean-up too before we look at the ring again.
        helpers = psutil.Process(program.pid).children(recursive=True)
        program.stdin.write("exit\n")
        program.stdin.flush()
        finish(program, 10, what)
        psutil.wait_procs(helpers, timeout=10)
        assert ring.get(timeout=5) == b"echo:" + visitor.encode(), say("the ring lost the program's answer")
    # The second program could open the ring after the first left; after
    # both left it can still be opened by name.
    ringbuffer.RingBuffer(ring_name).close()


def _shm_inodes_mapped() -> set[int]:
    """Inodes of the /dev/shm files this process has mapped (segments and semaphores)."""
    inodes = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith(DEV_SHM + "/"):
                inodes.add(int(fields[4]))
    return inodes


def _dev_shm_entries_with(inodes: set[int]) -> list[str]:
    found = []
    for entry in os.scandir(DEV_SHM):
        try:
            if entry.inode() in inodes:
                found.append(entry.name)
        except OSError:
            pass
    return sorted(found)


def test_unlink_leaves_nothing_in_dev_shm(ringbuffer, ring_name):
    # The ring's objects are the /dev/shm files that creating it mapped into
    # this process, whatever they are called; we know them by inode.
    mapped_before = _shm_inodes_mapped()
    ring = ringbuffer.RingBuffer(ring_name, create=True, slots=4, slot_size=32)
    ring.put(b"left over", timeout=1)
    ring_inodes = _shm_inodes_mapped() - mapped_before
    assert _dev_shm_entries_with(ring_inodes), say("the ring put nothing in /dev/shm: is it in POSIX shared memory?")
    ring.close()
    ring.unlink()
    left = _dev_shm_entries_with(ring_inodes)
    assert not left, say("after close() and unlink() these are still in /dev/shm: {left}", left=left)
    # The name is free again, and a ring made under it starts empty.
    again = ringbuffer.RingBuffer(ring_name, create=True, slots=4, slot_size=32)
    try:
        with pytest.raises(TimeoutError):
            again.get(timeout=0.2)
        again.put(b"fresh", timeout=1)
        assert again.get(timeout=1) == b"fresh"
    finally:
        again.close()
        again.unlink()
