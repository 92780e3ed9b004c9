"""A bounded buffer in POSIX shared memory, guarded by three named semaphores.

Shared memory is a piece of RAM that several processes map into their own
address space: once it is mapped, a write by one process is a plain store
that every other process sees, with no system call and no kernel copy. That
is the whole appeal, and also the whole danger: the kernel no longer orders
anything for you. This module adds the order back with the classic
producer/consumer recipe (Dijkstra's bounded buffer):

* ``free``   counts empty slots: a producer waits on it, so it never writes
  over a slot nobody has read yet;
* ``filled`` counts slots holding a record: a consumer waits on it, so it
  never reads a slot nobody has written yet;
* ``mutex``  (a semaphore used as a lock) makes "read the index, use the
  slot, advance the index" one step, so two producers never claim the same
  slot and two consumers never read the same record.

Layout of the segment (all integers little-endian, unsigned 64-bit)::

    header:  magic | slots | slot_size | head | tail
    slot i:  length (u32) | slot_size bytes of payload

``head`` counts records ever written and ``tail`` records ever read; the slot
a record lives in is ``counter % slots``. Counters that only grow make
"full" and "empty" impossible to confuse.

On Python 3.11 ``multiprocessing.shared_memory`` has a trap: every process
that creates *or attaches* a segment registers it with its resource tracker,
which unlinks the segment when that process exits. A consumer that attaches,
works and exits would delete the ring under everybody else's feet. Python
3.13 added ``SharedMemory(track=False)``; before that we unregister by hand
(see ``_map_segment``) and unlink the name ourselves.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import secrets
import struct
import sys
import time
from multiprocessing import resource_tracker, shared_memory

import posix_ipc

_MAGIC = 0x31474E4952435049  # "IPCRING1", so we notice a segment that is not a ring
_HEADER = struct.Struct("<QQQQQ")  # magic, slots, slot_size, head, tail
_HEAD_OFFSET = 3 * 8  # head and tail are updated alone, in place
_TAIL_OFFSET = 4 * 8
_COUNTER = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")


def _map_segment(name: str, *, create: bool, size: int = 0) -> shared_memory.SharedMemory:
    """Create or attach a segment that lives until someone calls unlink().

    Without this, Python 3.11's resource tracker unlinks the segment when the
    process that attached it exits (and prints a "leaked shared_memory"
    warning), even though other processes still use it.
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, create=create, size=size, track=False)
    segment = shared_memory.SharedMemory(name, create=create, size=size)
    resource_tracker.unregister(segment._name, "shared_memory")
    return segment


def _unlink_segment(name: str) -> None:
    # Not SharedMemory.unlink(): on 3.11 it tells the resource tracker to
    # forget a name we already made it forget, and the tracker complains.
    posix_ipc.unlink_shared_memory("/" + name)


def _acquire(semaphore: posix_ipc.Semaphore, timeout: float | None = None) -> None:
    """Wait on ``semaphore``; ``TimeoutError`` if ``timeout`` seconds pass first.

    A signal that arrives while we sleep makes posix_ipc raise SignalError
    (Python's own blocking calls retry by themselves, PEP 475; posix_ipc's do
    not), so we wait again for whatever time is left.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            semaphore.acquire(left)
            return
        except posix_ipc.SignalError:
            continue
        except posix_ipc.BusyError:
            raise TimeoutError(f"timed out after {timeout} s waiting on {semaphore.name}") from None


class RingBuffer:
    """A bounded FIFO of byte strings that unrelated processes share by name.

    ``RingBuffer(name, create=True, slots=16, slot_size=4096)`` creates the
    ring; ``RingBuffer(name)`` opens an existing one and reads its geometry
    (``slots`` and ``slot_size`` arguments are then ignored). ``name`` is a
    short identifier (letters, digits, ``_``); the segment and the three
    semaphores are named after it.
    """

    def __init__(self, name: str, *, create: bool = False, slots: int = 16, slot_size: int = 4096):
        self.name = name.lstrip("/")
        if create:
            if slots < 1 or slot_size < 1:
                raise ValueError("slots and slot_size must be positive")
            self._create(slots, slot_size)
        else:
            self._open()

    # -- names -------------------------------------------------------------------

    def _semaphore_names(self) -> dict[str, str]:
        return {role: f"/{self.name}_{role}" for role in ("free", "filled", "mutex")}

    # -- life cycle --------------------------------------------------------------

    def _create(self, slots: int, slot_size: int) -> None:
        size = _HEADER.size + slots * (_LENGTH.size + slot_size)
        self._segment = _map_segment(self.name, create=True, size=size)
        _HEADER.pack_into(self._segment.buf, 0, _MAGIC, slots, slot_size, 0, 0)
        self.slots, self.slot_size = slots, slot_size
        initial = {"free": slots, "filled": 0, "mutex": 1}
        self._semaphores = {}
        try:
            for role, sem_name in self._semaphore_names().items():
                self._semaphores[role] = posix_ipc.Semaphore(
                    sem_name, posix_ipc.O_CREX, initial_value=initial[role])
        except BaseException:
            # Half a ring is worse than none: remove what we made (only that:
            # a semaphore that already existed belongs to somebody else).
            for semaphore in self._semaphores.values():
                semaphore.unlink()
            self.close()
            _unlink_segment(self.name)
            raise

    def _open(self) -> None:
        self._segment = _map_segment(self.name, create=False)
        magic, self.slots, self.slot_size, _, _ = _HEADER.unpack_from(self._segment.buf, 0)
        if magic != _MAGIC:
            self._segment.close()
            raise ValueError(f"shared memory {self.name!r} does not hold a ring buffer")
        self._semaphores = {role: posix_ipc.Semaphore(sem_name)
                            for role, sem_name in self._semaphore_names().items()}

    def close(self) -> None:
        """Detach this process from the ring; the ring itself lives on."""
        for semaphore in getattr(self, "_semaphores", {}).values():
            semaphore.close()
        self._semaphores = {}
        self._segment.close()

    def unlink(self) -> None:
        """Remove the segment and the three semaphores from the system.

        Processes that still have the ring open keep working; nobody can open
        it by name any more. Call it once, usually after ``close()``.
        """
        for sem_name in self._semaphore_names().values():
            try:
                posix_ipc.unlink_semaphore(sem_name)
            except posix_ipc.ExistentialError:
                pass
        try:
            _unlink_segment(self.name)
        except posix_ipc.ExistentialError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the bounded buffer ----------------------------------------------------------

    def _slot_offset(self, counter: int) -> int:
        return _HEADER.size + (counter % self.slots) * (_LENGTH.size + self.slot_size)

    def put(self, data: bytes, timeout: float | None = None) -> None:
        """Append ``data``; block while the ring is full.

        ``ValueError`` if ``len(data) > slot_size`` (checked before waiting, so a
        refused record takes no slot); ``TimeoutError`` if no slot frees up
        within ``timeout`` seconds.
        """
        data = bytes(data)
        if len(data) > self.slot_size:
            raise ValueError(f"record of {len(data)} bytes does not fit a {self.slot_size}-byte slot")
        _acquire(self._semaphores["free"], timeout)  # a slot is ours to fill...
        _acquire(self._semaphores["mutex"])          # ...but which one? ask under the lock
        try:
            buf = self._segment.buf
            (head,) = _COUNTER.unpack_from(buf, _HEAD_OFFSET)
            offset = self._slot_offset(head)
            _LENGTH.pack_into(buf, offset, len(data))
            buf[offset + _LENGTH.size:offset + _LENGTH.size + len(data)] = data
            _COUNTER.pack_into(buf, _HEAD_OFFSET, head + 1)
        finally:
            self._semaphores["mutex"].release()
        self._semaphores["filled"].release()         # wake one consumer

    def get(self, timeout: float | None = None) -> bytes:
        """Remove and return the oldest record; block while the ring is empty.

        ``TimeoutError`` if nothing arrives within ``timeout`` seconds.
        """
        _acquire(self._semaphores["filled"], timeout)
        _acquire(self._semaphores["mutex"])
        try:
            buf = self._segment.buf
            (tail,) = _COUNTER.unpack_from(buf, _TAIL_OFFSET)
            offset = self._slot_offset(tail)
            (length,) = _LENGTH.unpack_from(buf, offset)
            # bytes(...) copies the record out before the slot can be reused.
            data = bytes(buf[offset + _LENGTH.size:offset + _LENGTH.size + length])
            _COUNTER.pack_into(buf, _TAIL_OFFSET, tail + 1)
        finally:
            self._semaphores["mutex"].release()
        self._semaphores["free"].release()           # wake one producer
        return data


# -- parallel histogram ----------------------------------------------------------------


def _count_slice(data_name: str, counts_name: str, worker: int, start: int, stop: int) -> None:
    """Worker: count byte values in data[start:stop], write them to row ``worker``."""
    data = _map_segment(data_name, create=False)
    counts = _map_segment(counts_name, create=False)
    try:
        # Iterating a memoryview reads the shared pages in place: no private copy.
        with data.buf[start:stop] as view:
            histogram = collections.Counter(view)
        row = counts.buf[worker * 256 * 8:(worker + 1) * 256 * 8].cast("Q")
        for value in range(256):
            row[value] = histogram[value]  # each worker owns its row: no lock needed
        row.release()
    finally:
        data.close()
        counts.close()


def parallel_histogram(data: bytes, n_procs: int) -> list[int]:
    """Count each byte value of ``data`` with ``n_procs`` worker processes.

    ``data`` is copied once into a shared segment; each worker attaches it by
    name and counts its own slice, then writes 256 counts into its own row of
    a second shared segment; the parent adds the rows up. Both segments are
    unlinked before returning, even on error.
    """
    if n_procs < 1:
        raise ValueError("n_procs must be at least 1")
    prefix = f"ipclab_hist_{os.getpid()}_{secrets.token_hex(4)}"
    data_segment = _map_segment(f"{prefix}_data", create=True, size=max(len(data), 1))
    counts_segment = _map_segment(f"{prefix}_counts", create=True, size=n_procs * 256 * 8)
    try:
        data_segment.buf[:len(data)] = data
        bounds = [len(data) * i // n_procs for i in range(n_procs + 1)]
        workers = [multiprocessing.Process(target=_count_slice, args=(
            f"{prefix}_data", f"{prefix}_counts", i, bounds[i], bounds[i + 1]))
            for i in range(n_procs)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if any(worker.exitcode != 0 for worker in workers):
            raise RuntimeError(f"a worker failed: exit codes {[w.exitcode for w in workers]}")
        with counts_segment.buf.cast("Q") as rows:
            return [sum(rows[i * 256 + value] for i in range(n_procs)) for value in range(256)]
    finally:
        for segment in (data_segment, counts_segment):
            name = segment.name
            segment.close()
            _unlink_segment(name)
