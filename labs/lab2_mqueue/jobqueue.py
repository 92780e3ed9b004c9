"""Lab 2: a job queue on POSIX message queues.

Read handout.md (한국어: handout.ko.md) first. Use ``posix_ipc.MessageQueue`` for the queue itself;
every function below says what it must do. Replace each
``raise NotImplementedError`` with your code.
"""

from __future__ import annotations

import json  # noqa: F401  (you will need these)
import multiprocessing  # noqa: F401

import posix_ipc  # noqa: F401


class QueueFull(Exception):
    """``send`` gave up: the queue stayed full for the whole timeout."""


class QueueEmpty(Exception):
    """``receive`` gave up: the queue stayed empty for the whole timeout."""


class MessageTooLarge(ValueError):
    """The job, once encoded, does not fit in one message of this queue."""


class JobQueue:
    """A named POSIX message queue that carries jobs: dicts sent as JSON text (UTF-8)."""

    def __init__(self, name: str, *, create: bool = False, max_messages: int = 10, max_message_size: int = 1024):
        """Open the message queue called ``name``, or create it.

        ``name`` must be ``"/"`` followed by at least one character and no
        other ``"/"`` (``"/jobs"``); anything else raises ``ValueError``.

        ``create=True`` creates a new queue that holds at most
        ``max_messages`` messages of at most ``max_message_size`` bytes each,
        and only if no queue of that name exists: if one does (say, left over
        from a crashed run), raise ``FileExistsError`` whose message names the
        queue, and leave that queue alone.

        ``create=False`` opens a queue that already exists (its sizes were
        fixed when it was created; the size arguments are then ignored), and
        raises ``FileNotFoundError`` when there is none.

        Mind the kernel's limits (handout.md): without privileges
        ``max_messages`` can be at most 10 and ``max_message_size`` at most
        8192 on a default Linux system.
        """
        raise NotImplementedError("JobQueue.__init__: open or create the queue with posix_ipc.MessageQueue")

    def send(self, job: dict, priority: int = 0, timeout: float | None = None) -> None:
        """Put ``job`` in the queue with ``priority``.

        The job is encoded as JSON text in UTF-8, one message per job. Raise
        ``MessageTooLarge`` (a ``ValueError``) when the encoding is longer than
        this queue's message size, and ``ValueError`` when ``priority`` is
        not an int in 0..31; in both cases nothing is sent.

        When the queue is full: ``timeout=None`` waits as long as it takes,
        ``timeout=0`` does not wait, and any other ``timeout`` waits at most
        that many seconds; then raise ``QueueFull``. Waiting must not use CPU.
        """
        raise NotImplementedError("JobQueue.send")

    def receive(self, timeout: float | None = None) -> tuple[dict, int]:
        """Take the next job out of the queue and return ``(job, priority)``.

        The next job is the oldest one of the highest priority present
        (higher numbers first; first in, first out within a priority).

        When the queue is empty: ``timeout=None`` waits as long as it takes,
        ``timeout=0`` does not wait, and any other ``timeout`` waits at most
        that many seconds; then raise ``QueueEmpty``. Waiting must not use CPU:
        let the kernel put the process to sleep instead of polling.
        """
        raise NotImplementedError("JobQueue.receive")

    def __len__(self) -> int:
        """The number of messages in the queue now."""
        raise NotImplementedError("JobQueue.__len__")

    def close(self) -> None:
        """Close this handle. The queue and the messages in it stay in the system."""
        raise NotImplementedError("JobQueue.close")

    def unlink(self) -> None:
        """Remove the queue from the system.

        Its name is gone at once: opening it afterwards raises
        ``FileNotFoundError`` (and a new queue of that name may be created).
        Handles that are still open keep working until they are closed.
        ``unlink()`` works whether this handle has been closed or not.
        """
        raise NotImplementedError("JobQueue.unlink")

    def __enter__(self) -> "JobQueue":
        """``with JobQueue(...) as q:`` gives the queue itself."""
        raise NotImplementedError("JobQueue.__enter__")

    def __exit__(self, *exc_info) -> None:
        """Leaving the ``with`` block closes the handle; it does not unlink the queue."""
        raise NotImplementedError("JobQueue.__exit__")


def run_workers(request_queue: str, reply_queue: str, n_workers: int, handler) -> int:
    """Serve the jobs of ``request_queue`` with ``n_workers`` worker processes.

    Both queues exist already (open them, do not create them). Each worker
    repeats: receive a job from ``request_queue``, then

    * if the job is ``{"stop": True}``, exit (each worker stops on one such
      message; whoever feeds the queue sends one per worker);
    * otherwise call ``handler(job)`` and send the reply
      ``{"id": job["id"], "result": <what handler returned>}`` to
      ``reply_queue`` at the priority the job was received with. If the
      handler raises an exception, send ``{"id": job["id"], "error": "<a
      non-empty description of the exception>"}`` instead and carry on with
      the next job.

    ``handler`` is a module-level function taking a dict and returning a
    JSON-encodable value (so it also reaches workers started with *spawn*).

    Return the number of jobs handled (replies sent, errors included; stop
    messages do not count) once every worker has exited and been reaped:
    no worker may be left running or as a zombie.
    """
    raise NotImplementedError("run_workers: start the workers, wait for (and reap) every one")
