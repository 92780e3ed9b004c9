"""Where grading jobs run: one small interface, and a local pool behind it.

Batch grading (``grader/batch.py``) only ever talks to an :class:`Executor`:
it *submits* :class:`GradeJob` s, each carrying its resource needs, and
*receives* :class:`Completed` jobs in the order they finish. Nothing else in
the batch knows where or how a job ran, so a distributed executor (one that
sends jobs to other machines) can replace :class:`LocalPool` without touching
the rest.

:class:`LocalPool` runs jobs on this machine. Each job runs the grade function
in a worker thread; the real work happens in a container, so threads are
enough. The pool *reserves* what a job needs before starting it:

* CPUs as concrete core ids, handed to the container as a cpuset, so two
  containers never share a core (lab 6 measures speed-ups and needs its cores
  to itself);
* memory, so the sum of the containers' limits never exceeds what the pool was
  given.

A job that does not fit waits; jobs start in submission order, so a job that
needs the whole machine (``alone=True``) starts as soon as everything before
it has finished, and nothing starts beside it.

Writing another executor (e.g. one on a Dask cluster): honour the job's
``resources`` on whichever machine runs it (and pass a cpuset there), give
an ``alone`` job a whole machine, report ``concurrent`` honestly (it decides
whether a timeout is rerun), and never drop a job silently: an exception
from the grade function goes into :attr:`Completed.error`. The batch writes
every file on its own side, so the grade function's ``out_dir`` must be
reachable from both (a shared file system), or the executor copies it back
before yielding the job.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

# Memory the pool leaves to the host (the engine, the batch itself, the page cache).
HOST_RESERVE_FRACTION = 0.2
DEFAULT_MEMORY = 512 * 2**20
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory(value: Any) -> int:
    """``512m``, ``1g``, ``1Gi``, ``2048`` (bytes) -> bytes, the way Docker reads sizes."""
    if value is None:
        return DEFAULT_MEMORY
    if isinstance(value, (int, float)):
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(value).lower())
    if not match:
        raise ValueError(f"cannot read memory size {value!r} (expected e.g. 512m or 1g)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one grading run needs: whole cores and bytes of memory."""

    cpus: int = 1
    memory: int = DEFAULT_MEMORY

    @classmethod
    def of_lab(cls, lab) -> "Resources":
        """Read ``resources: {cpus, memory}`` from a lab's lab.yaml."""
        raw = lab.resources or {}
        # A container pinned to half a core still occupies that core: round up.
        cpus = max(1, math.ceil(float(raw.get("cpus", 1))))
        return cls(cpus=cpus, memory=parse_memory(raw.get("memory")))


@dataclasses.dataclass(eq=False)
class GradeJob:
    """One submission to grade, and what grading it needs.

    ``only_tests`` limits the run to those tests; ``alone`` asks for the whole
    machine (used to rerun a test that timed out under parallel load).
    ``tag`` is free for the submitter (the batch keeps its bookkeeping there).
    """

    lab: Any  # grader.labs.Lab
    submission: Path
    out_dir: Path
    student_id: str
    resources: Resources = Resources()
    only_tests: list[str] | None = None
    alone: bool = False
    image: str | None = None
    tag: Any = None


@dataclasses.dataclass
class Completed:
    """A finished job: the grade function's result, or the exception it raised.

    ``concurrent`` says whether any other job ran on this executor while this
    one did: a timeout under load may not be the submission's fault.
    """

    job: GradeJob
    result: Any = None  # grader.grade.GradeResult
    error: BaseException | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    cpuset: str | None = None
    concurrent: bool = False

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at


class Executor(abc.ABC):
    """Runs grading jobs. Use as a context manager; it is closed on exit."""

    @abc.abstractmethod
    def submit(self, job: GradeJob) -> None:
        """Queue a job; it runs once its resources are free."""

    @abc.abstractmethod
    def results(self) -> Iterator[Completed]:
        """Yield every submitted job once, as it completes.

        Ends when every job submitted so far (including those submitted while
        iterating) has been yielded, or dropped by :meth:`cancel`.
        """

    @abc.abstractmethod
    def cancel(self) -> None:
        """Drop queued jobs and stop the running ones as fast as possible."""

    @abc.abstractmethod
    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is running; False if some still are after ``timeout``."""

    def close(self) -> None:
        """Release what the executor holds."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


GradeFunction = Callable[..., Any]


class LocalPool(Executor):
    """Runs jobs in threads on this machine, within a budget of cores and memory.

    ``grade`` is called as ``grade(lab, submission, out_dir, image=, cpuset=,
    only_tests=, student_id=)`` (the signature of
    :func:`grader.grade.grade_submission`). ``on_cancel`` is called once by
    :meth:`cancel` to stop running work (e.g. kill the batch's containers).
    """

    def __init__(self, grade: GradeFunction, *, cores: list[int] | None = None,
                 memory: int | None = None, max_jobs: int | None = None,
                 on_cancel: Callable[[], None] | None = None):
        self._grade = grade
        self._cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
        if not self._cores:
            raise ValueError("a pool needs at least one core")
        self._memory = memory if memory is not None else int(psutil.virtual_memory().total * (1 - HOST_RESERVE_FRACTION))
        self._max_jobs = max_jobs if max_jobs and max_jobs > 0 else len(self._cores)
        self._on_cancel = on_cancel

        self._lock = threading.Condition()
        self._free_cores = list(self._cores)
        self._free_memory = self._memory
        self._pending: collections.deque[GradeJob] = collections.deque()
        self._running: dict[GradeJob, dict] = {}  # job -> {"concurrent": bool}
        self._done: queue.Queue[Completed] = queue.Queue()
        self._outstanding = 0  # submitted, not yet yielded nor dropped
        self._cancelled = False

    @property
    def cores(self) -> list[int]:
        return list(self._cores)

    def slots_for(self, resources: Resources) -> int:
        """How many jobs needing ``resources`` can run side by side."""
        need = self._fit(resources)
        return max(1, min(self._max_jobs, len(self._cores) // need.cpus, self._memory // max(1, need.memory)))

    def _fit(self, resources: Resources) -> Resources:
        # A job bigger than the whole pool would never start: give it the whole pool.
        return Resources(cpus=min(resources.cpus, len(self._cores)), memory=min(resources.memory, self._memory))

    def _needs(self, job: GradeJob) -> Resources:
        return Resources(len(self._cores), self._memory) if job.alone else self._fit(job.resources)

    # -- submitting and dispatching ---------------------------------------------------

    def submit(self, job: GradeJob) -> None:
        with self._lock:
            if self._cancelled:
                raise RuntimeError("this executor was cancelled")
            self._pending.append(job)
            self._outstanding += 1
            self._dispatch()

    def _dispatch(self) -> None:
        """Start queued jobs, in order, while the head of the queue fits. Lock held."""
        while self._pending and not self._cancelled:
            job = self._pending[0]
            need = self._needs(job)
            if (len(self._running) >= self._max_jobs or len(self._free_cores) < need.cpus
                    or self._free_memory < need.memory):
                return
            self._pending.popleft()
            cores = [self._free_cores.pop(0) for _ in range(need.cpus)]
            self._free_memory -= need.memory
            state = {"concurrent": bool(self._running)}
            for other in self._running.values():
                other["concurrent"] = True
            self._running[job] = state
            thread = threading.Thread(target=self._work, args=(job, cores, need, state),
                                      name=f"grade-{job.student_id}", daemon=True)
            thread.start()

    def _work(self, job: GradeJob, cores: list[int], need: Resources, state: dict) -> None:
        cpuset = format_cpuset(cores)
        done = Completed(job=job, cpuset=cpuset, started_at=time.time())
        try:
            done.result = self._grade(job.lab, job.submission, job.out_dir, image=job.image, cpuset=cpuset,
                                      only_tests=job.only_tests, student_id=job.student_id)
        except BaseException as exc:  # the batch turns it into a row; never lose a job
            done.error = exc
        done.finished_at = time.time()
        with self._lock:
            del self._running[job]
            done.concurrent = state["concurrent"]
            self._free_cores = sorted(self._free_cores + cores)
            self._free_memory += need.memory
            self._dispatch()
            self._lock.notify_all()
        self._done.put(done)

    # -- receiving ------------------------------------------------------------------------

    def results(self) -> Iterator[Completed]:
        while True:
            with self._lock:
                if self._outstanding == 0:
                    return
            try:
                # A short timeout keeps the main thread responsive to Ctrl-C.
                done = self._done.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._lock:
                self._outstanding -= 1
            yield done

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            self._outstanding -= len(self._pending)
            self._pending.clear()
        if self._on_cancel is not None:
            self._on_cancel()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self) -> None:
        if self._running or self._pending:
            self.cancel()
            self.wait_idle(60)


def format_cpuset(cores: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5", the form Docker's --cpuset-cpus takes."""
    parts, cores = [], sorted(cores)
    i = 0
    while i < len(cores):
        j = i
        while j + 1 < len(cores) and cores[j + 1] == cores[j] + 1:
            j += 1
        parts.append(str(cores[i]) if i == j else f"{cores[i]}-{cores[j]}")
        i = j + 1
    return ",".join(parts)
