"""Is shared memory really the fastest IPC? Ring buffer against a pipe.

The course notes say shared memory is the fastest IPC because nothing is
copied through the kernel. This program puts that claim to the test: one
producer process sends fixed-size messages to one consumer (this process),
once through your RingBuffer and once through an ``os.pipe``, and prints both
throughputs and their ratio. The two transports run alternately, several
times, and the medians are compared, so that both see the same machine load.

    python labs/lab3_shm/bench.py                            # your ringbuffer.py
    python labs/lab3_shm/bench.py --impl reference/lab3_shm  # another folder

Both sides do comparable work per message: the producer hands over one
``bytes`` object, the consumer ends up with one new ``bytes`` object.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
SIZES = (4 * KiB, 64 * KiB)


def _load_ringbuffer(folder: Path):
    sys.path.insert(0, str(folder.resolve()))
    import ringbuffer  # noqa: E402 (the folder is chosen at run time)
    return ringbuffer


# -- one timed transfer per transport ------------------------------------------------------


def _ring_producer(name: str, size: int, count: int) -> None:
    import ringbuffer
    ring = ringbuffer.RingBuffer(name)
    message = b"r" * size
    for _ in range(count):
        ring.put(message)
    ring.close()


def ring_transfer(ringbuffer, size: int, count: int, slots: int) -> float:
    """Seconds to move ``count`` messages of ``size`` bytes through a ring."""
    name = f"ipclab_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    ring = ringbuffer.RingBuffer(name, create=True, slots=slots, slot_size=size)
    try:
        producer = multiprocessing.Process(target=_ring_producer, args=(name, size, count))
        started = time.perf_counter()
        producer.start()
        for _ in range(count):
            data = ring.get(timeout=60)
        elapsed = time.perf_counter() - started
        producer.join()
        assert len(data) == size
        return elapsed
    finally:
        ring.close()
        ring.unlink()


def _pipe_producer(write_fd: int, size: int, count: int) -> None:
    message = memoryview(b"p" * size)
    for _ in range(count):
        sent = 0
        while sent < size:  # a pipe may take a big write in pieces
            sent += os.write(write_fd, message[sent:])
    os.close(write_fd)


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError("the producer closed the pipe early")
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def pipe_transfer(size: int, count: int) -> float:
    """Seconds to move ``count`` messages of ``size`` bytes through a pipe."""
    read_fd, write_fd = os.pipe()
    producer = multiprocessing.Process(target=_pipe_producer, args=(write_fd, size, count))
    started = time.perf_counter()
    producer.start()
    os.close(write_fd)
    try:
        for _ in range(count):
            data = _read_exactly(read_fd, size)
        elapsed = time.perf_counter() - started
    finally:
        os.close(read_fd)
        producer.join()
    assert len(data) == size
    return elapsed


# -- the report ------------------------------------------------------------------------------------


def measure(ringbuffer, size: int, total: int, rounds: int, slots: int) -> dict:
    count = max(1, total // size)
    ring_times, pipe_times = [], []
    for _ in range(rounds):  # alternate, so both transports see the same load
        ring_times.append(ring_transfer(ringbuffer, size, count, slots))
        pipe_times.append(pipe_transfer(size, count))
    mib = count * size / MiB
    ring_rate = mib / statistics.median(ring_times)
    pipe_rate = mib / statistics.median(pipe_times)
    return {"size": size, "count": count, "ring": ring_rate, "pipe": pipe_rate, "ratio": ring_rate / pipe_rate}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", type=Path, default=Path(__file__).parent,
                        help="folder holding ringbuffer.py (default: this lab folder)")
    parser.add_argument("--total-mib", type=int, default=512, help="MiB sent per transfer (default 512)")
    parser.add_argument("--rounds", type=int, default=5, help="transfers per transport and size; medians are compared")
    parser.add_argument("--slots", type=int, default=16, help="ring slots (default 16)")
    args = parser.parse_args(argv)
    if not (args.impl / "ringbuffer.py").is_file():
        parser.error(f"no ringbuffer.py in {args.impl}")
    multiprocessing.set_start_method("fork")  # children inherit the imported module
    ringbuffer = _load_ringbuffer(args.impl)

    print(f"ring buffer from {args.impl / 'ringbuffer.py'}, {args.slots} slots; "
          f"{args.total_mib} MiB per transfer, median of {args.rounds} alternating rounds; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'message':>9} {'messages':>9} {'ring MiB/s':>11} {'pipe MiB/s':>11} {'ring/pipe':>10}")
    for size in SIZES:
        try:
            row = measure(ringbuffer, size, args.total_mib * MiB, args.rounds, args.slots)
        except NotImplementedError as exc:
            print(f"ringbuffer.py is not implemented yet ({exc}): finish it, or pass --impl", file=sys.stderr)
            return 2
        print(f"{size // KiB:>6} KiB {row['count']:>9} {row['ring']:>11.0f} {row['pipe']:>11.0f} {row['ratio']:>9.2f}x",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
