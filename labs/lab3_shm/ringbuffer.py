"""Lab 3: a bounded buffer in POSIX shared memory, guarded by named semaphores.

Read handout.md (한국어: handout.ko.md) first. You implement:

* ``RingBuffer``: a FIFO of byte strings in one shared memory segment, that
  unrelated processes open by name and use as producers and consumers;
* ``parallel_histogram``: byte-value counts computed by worker processes that
  all read one shared copy of the data.

Use ``multiprocessing.shared_memory.SharedMemory`` for segments (or
``posix_ipc.SharedMemory`` with ``mmap``) and ``posix_ipc.Semaphore`` for the
named semaphores. Mind the resource tracker (handout.md, "The first thing that
bites"): a segment must survive the exit of any process but through unlink().
"""

from __future__ import annotations


class RingBuffer:
    """A bounded FIFO of byte strings that unrelated processes share by name.

    One shared memory segment holds a header (at least: the number of slots,
    the slot size and the read/write indices) followed by ``slots``
    length-prefixed slots of ``slot_size`` bytes. Three named POSIX
    semaphores derived from ``name`` synchronise it: free slots, filled
    slots, and a mutex.
    """

    def __init__(self, name: str, *, create: bool = False, slots: int = 16, slot_size: int = 4096):
        """Create (``create=True``) or open the ring called ``name``.

        ``name`` is a short identifier (letters, digits and ``_``, no slash);
        derive the segment's and the semaphores' names from it as you like.
        With ``create=True`` the ring is new and empty, with room for
        ``slots`` records of up to ``slot_size`` bytes each. With
        ``create=False`` the ring must exist (``FileNotFoundError``
        otherwise) and its geometry is read from the header: the ``slots``
        and ``slot_size`` arguments are ignored. ``self.slots`` and
        ``self.slot_size`` hold the geometry in both cases.
        """
        raise NotImplementedError("RingBuffer.__init__: create or attach the segment and the three semaphores")

    def put(self, data: bytes, timeout: float | None = None) -> None:
        """Append ``data`` at the end of the ring; block while the ring is full.

        Raises ``ValueError`` if ``len(data) > slot_size`` (a refused record
        takes no slot), and ``TimeoutError`` if no slot frees up within
        ``timeout`` seconds (``None``: wait for ever). Records of any length
        from 0 to ``slot_size`` come back from ``get()`` unchanged.
        """
        raise NotImplementedError("RingBuffer.put")

    def get(self, timeout: float | None = None) -> bytes:
        """Remove and return the oldest record; block while the ring is empty.

        Raises ``TimeoutError`` if nothing arrives within ``timeout`` seconds
        (``None``: wait for ever). A blocked ``get`` sleeps: it must not spin.
        """
        raise NotImplementedError("RingBuffer.get")

    def close(self) -> None:
        """Detach this process from the ring. The ring lives on for the others,
        also after this process exits."""
        raise NotImplementedError("RingBuffer.close")

    def unlink(self) -> None:
        """Remove the segment and all three semaphores from the system.

        Called once, by one process, usually right after its ``close()``:
        afterwards nothing of the ring is left in ``/dev/shm`` and a new ring
        may be created under the same name.
        """
        raise NotImplementedError("RingBuffer.unlink")


def parallel_histogram(data: bytes, n_procs: int) -> list[int]:
    """Return the 256 counts of byte values in ``data`` (index = byte value).

    ``n_procs`` worker processes each count their own slice of ONE shared
    copy of ``data``: put the data in a shared memory segment and let the
    workers attach it by name; never pass the data (or slices of it) to them
    as arguments, which would pickle a private copy into every worker. A
    worker reads its slice in place (through a memoryview of the segment, or
    in small chunks), so that its own memory stays far below the size of
    ``data``. The workers leave their counts in shared memory, where the
    parent combines them. Every segment is unlinked before returning. ``data`` may be empty
    and ``n_procs`` may exceed ``len(data)``.
    """
    raise NotImplementedError("parallel_histogram")
