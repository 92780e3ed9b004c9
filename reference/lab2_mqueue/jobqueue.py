"""A job queue on POSIX message queues (reference solution of lab 2).

A POSIX message queue is a mailbox the kernel keeps under a name such as
``/jobs``. It is not tied to any process: a program can put a message in it
and exit, and another program that starts later still finds the message
there. That makes a message queue *asynchronous* where a pipe is not: a pipe
vanishes with the last process that holds it, a queue lives until someone
calls ``unlink()`` (or the machine reboots).

Two more things set message queues apart from a byte stream:

* messages keep their boundaries: one ``send`` is one ``receive``, so there is
  no framing to do, but a message can never be larger than the size the queue
  was created with;
* every message carries a priority, and ``receive`` always hands out the
  oldest message of the highest priority present.

The kernel does the waiting for us: ``mq_receive`` on an empty queue puts the
process to sleep until a message arrives (or the timeout passes), so no CPU
is spent while waiting. ``posix_ipc`` wraps those system calls.
"""

from __future__ import annotations

import errno
import json
import multiprocessing

import posix_ipc

MAX_PRIORITY = 31  # POSIX guarantees at least 32 priorities: 0 (lowest) .. 31


class QueueFull(Exception):
    """``send`` gave up: the queue stayed full for the whole timeout."""


class QueueEmpty(Exception):
    """``receive`` gave up: the queue stayed empty for the whole timeout."""


class MessageTooLarge(ValueError):
    """The job, once encoded, does not fit in one message of this queue."""


def _check_name(name: str) -> None:
    # The kernel wants "/" followed by a name without slashes; say so clearly
    # instead of letting mq_open fail with a bare EINVAL or EACCES.
    if not isinstance(name, str) or not name.startswith("/") or len(name) < 2 or "/" in name[1:]:
        raise ValueError(f"bad queue name {name!r}: it must be '/' followed by a name without '/'")


class JobQueue:
    """A named POSIX message queue that carries JSON-encoded jobs (dicts)."""

    def __init__(self, name: str, *, create: bool = False, max_messages: int = 10, max_message_size: int = 1024):
        """Open the queue ``name``, or create it when ``create`` is true.

        See the stub's docstring for the full contract.
        """
        _check_name(name)
        self.name = name
        flags = posix_ipc.O_CREX if create else 0
        try:
            self._mq = posix_ipc.MessageQueue(name, flags, mode=0o600,
                                              max_messages=max_messages,
                                              max_message_size=max_message_size)
        except posix_ipc.ExistentialError:
            if create:
                # O_CREX never reuses a queue: a leftover from a crashed run
                # could hold stale jobs or have the wrong sizes.
                raise FileExistsError(errno.EEXIST, "message queue already exists (left over from an "
                                      "earlier run? unlink it first)", name) from None
            raise FileNotFoundError(errno.ENOENT, "no such message queue", name) from None

    @property
    def max_message_size(self) -> int:
        """Largest message, in bytes, this queue accepts (fixed when it was created)."""
        return self._mq.max_message_size

    def send(self, job: dict, priority: int = 0, timeout: float | None = None) -> None:
        """Put ``job`` in the queue; see the stub's docstring for the contract."""
        if not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be an int in 0..{MAX_PRIORITY}, not {priority!r}")
        data = json.dumps(job).encode("utf-8")
        if len(data) > self.max_message_size:
            raise MessageTooLarge(f"job is {len(data)} bytes encoded, the queue takes at most "
                                  f"{self.max_message_size}")
        try:
            self._mq.send(data, timeout, priority)
        except posix_ipc.BusyError:
            raise QueueFull(f"{self.name} stayed full for {timeout} s") from None

    def receive(self, timeout: float | None = None) -> tuple[dict, int]:
        """Take the next job out of the queue; see the stub's docstring for the contract."""
        try:
            # The kernel sleeps here until a message comes or the timeout
            # passes: a blocked receive costs no CPU.
            data, priority = self._mq.receive(timeout)
        except posix_ipc.BusyError:
            raise QueueEmpty(f"{self.name} stayed empty for {timeout} s") from None
        return json.loads(data.decode("utf-8")), priority

    def __len__(self) -> int:
        """Number of messages in the queue right now (other processes may change it at once)."""
        return self._mq.current_messages

    def close(self) -> None:
        """Close this process's descriptor; the queue and its messages stay."""
        self._mq.close()

    def unlink(self) -> None:
        """Remove the queue's name; see the stub's docstring for the contract."""
        # By name, so that it works whether or not this handle is still open.
        posix_ipc.unlink_message_queue(self.name)

    def __enter__(self) -> "JobQueue":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _is_stop(job: dict) -> bool:
    return job.get("stop") is True


def _worker(request_queue: str, reply_queue: str, handler, handled) -> None:
    """Body of one worker process: answer jobs until a stop message comes."""
    with JobQueue(request_queue) as requests, JobQueue(reply_queue) as replies:
        while True:
            job, priority = requests.receive()
            if _is_stop(job):
                return
            try:
                reply = {"id": job.get("id"), "result": handler(job)}
            except Exception as exc:  # a bad job must not kill the worker
                reply = {"id": job.get("id"), "error": f"{type(exc).__name__}: {exc}"}
            replies.send(reply, priority)
            with handled.get_lock():
                handled.value += 1


def run_workers(request_queue: str, reply_queue: str, n_workers: int, handler) -> int:
    """Serve jobs with ``n_workers`` processes; see the stub's docstring for the contract."""
    # A shared counter: each worker adds the jobs it answered.
    handled = multiprocessing.Value("i", 0)
    workers = [multiprocessing.Process(target=_worker, args=(request_queue, reply_queue, handler, handled))
               for _ in range(n_workers)]
    for worker in workers:
        worker.start()
    # join() waits for the worker *and* reaps it: without it, an exited
    # worker stays in the process table as a zombie.
    for worker in workers:
        worker.join()
    return handled.value
