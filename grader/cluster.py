"""Grade on several machines with Dask distributed, and ``python -m grader worker``.

A batch of 6,000 container runs is a day on one 2-core machine. Rather than
a home-made job server, this module plugs an existing distributed engine,
`Dask distributed <https://distributed.dask.org>`_, behind the batch's
:class:`~grader.executor.Executor` interface. The same code then runs on a
laptop, on machines reached over SSH, on Kubernetes and on HPC schedulers
(Slurm, PBS, HTCondor through dask-jobqueue): only how the workers are
started changes.

The pieces, and why each is where it is:

* **Resources.** Every worker advertises what it can lend as Dask worker
  resources: ``CPU`` (whole cores) and ``MEMORY`` (bytes). Each job asks for
  its lab's ``resources`` (lab.yaml), so the scheduler never runs more jobs
  on a worker than its cores and memory allow: a lab 6 job (2 CPUs) on a
  2-core worker has the worker to itself. Counting is the scheduler's job;
  *which* cores is the worker's: it pins each container to concrete cores of
  its own (:class:`CoreSlots`), so two containers never share one.
* **Submissions travel inside the task.** The client packs each submission
  (an archive as delivered, or a folder as a tar) into the task itself; the
  worker unpacks it into a temporary folder, grades it with its own Docker
  engine and runner image, and sends back the grade result and the report
  files as a tar. Nothing needs a shared file system.
* **The client writes.** Reports are unpacked into the job's ``out_dir`` on
  the machine running the batch, so the batch keeps its files, gradebook,
  ledger and resumability exactly as with the local pool.
* **Lost workers.** When a worker dies, the scheduler reruns its jobs
  elsewhere (Dask's ``distributed.scheduler.allowed-failures``, 3 by
  default; after that the job comes back as an error, a grader_error row
  that the next run retries). A job's result reaches the batch once: a
  future completes once, however many times its task was started.
* **The same tests everywhere.** A worker grades with its own kit's copy of
  the lab's tests; it refuses a job whose tests hash differs from the
  batch's, and :meth:`DaskExecutor.image_id` refuses workers whose runner
  images differ, so a result is never recorded under the wrong key.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from grader.executor import HOST_RESERVE_FRACTION, Completed, Executor, GradeJob, format_cpuset, parse_memory

CPU, MEMORY = "CPU", "MEMORY"  # the Dask resource names every ipclab worker advertises
DEFAULT_GRADE = "grader.grade:grade_submission"
WORKER_WAIT = 60  # seconds to wait for a first worker, and for any worker while none is left
CORE_WAIT = 600  # seconds a job waits for cores the scheduler said were free (a mis-advertised worker)
MAX_REPORTS_BYTES = 64 * 2**20


# -- packing: what travels in a task ----------------------------------------------------------------


def pack_submission(path: Path) -> dict:
    """A submission as bytes: an archive as delivered, a folder as a tar (links kept as links).

    The worker's grader then sees what the local grader would have seen,
    including what it must reject (a symbolic link in a folder).
    """
    path = Path(path)
    if path.is_file():
        return {"name": path.name, "folder": False, "data": path.read_bytes()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname=path.name, recursive=True)  # dereference=False: a link stays a link
    return {"name": path.name, "folder": True, "data": buffer.getvalue()}


def unpack_submission(packed: dict, dest: Path) -> Path:
    """Rebuild a packed submission under ``dest``; returns its path (same name as on the client)."""
    dest.mkdir(parents=True, exist_ok=True)
    if not packed["folder"]:
        target = dest / Path(packed["name"]).name
        target.write_bytes(packed["data"])
        return target
    with tarfile.open(fileobj=io.BytesIO(packed["data"]), mode="r:gz") as tar:
        tar.extractall(dest, filter="tar")  # refuses names escaping dest; the grader judges the rest
    return dest / Path(packed["name"]).name


def pack_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if folder.is_dir():
            for child in sorted(folder.iterdir()):
                tar.add(child, arcname=child.name)
    return buffer.getvalue()


def unpack_reports(data: bytes, dest: Path) -> None:
    """Unpack the report files a worker sent back: plain files only, inside ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            total += member.size
            if total > MAX_REPORTS_BYTES:
                raise ValueError("the worker sent back more report data than the limit")
            if member.isdir() or member.isfile():
                tar.extract(member, dest, filter="data")


# -- the worker side ------------------------------------------------------------------------------------


class CoreSlots:
    """The concrete cores of this worker process, lent to one job at a time.

    The scheduler only counts CPUs; two containers pinned to "some core"
    could still land on the same one. Each job takes distinct core ids from
    the worker's own affinity (set by ``grader worker --cores`` or
    ``taskset``), and gives them back when it ends.
    """

    def __init__(self, cores: list[int]):
        self.cores = sorted(cores)
        self._free = list(self.cores)
        self._lock = threading.Condition()
        self.running = 0
        self.started = 0

    def take(self, count: int, timeout: float = CORE_WAIT) -> list[int]:
        count = max(1, min(count, len(self.cores)))
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._free) >= count, timeout):
                raise RuntimeError(f"no {count} free cores on this worker after {timeout} s: "
                                   f"it advertises more {CPU} than its cores {format_cpuset(self.cores)}")
            taken, self._free = self._free[:count], self._free[count:]
            self.running += 1
            self.started += 1
            return taken

    def give_back(self, cores: list[int]) -> None:
        with self._lock:
            self._free = sorted(self._free + cores)
            self.running -= 1
            self._lock.notify_all()


_slots: CoreSlots | None = None
_slots_lock = threading.Lock()


def worker_slots() -> CoreSlots:
    """This process's :class:`CoreSlots`, made on first use from its CPU affinity."""
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = CoreSlots(sorted(os.sched_getaffinity(0)))
        return _slots


def running_here() -> int:
    """Jobs grading in this worker process now (the client polls it to wait for idleness)."""
    return worker_slots().running


def resolve(dotted: str):
    """``"package.module:function"`` -> the function, imported on the worker."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def lab_here(lab, tests_hash: str | None):
    """This machine's copy of ``lab``, checked against the batch's tests hash.

    The client's Lab object names folders on the client's machine; a worker
    sharing that checkout uses it, others find the lab in their own kit.
    """
    from grader import labs

    local = lab if Path(lab.folder).is_dir() else labs.find_lab(lab.id)
    if tests_hash is not None:
        from grader import grade

        mine = grade.tests_hash(local)
        if mine != tests_hash:
            raise RuntimeError(f"the worker on {socket.gethostname()} has other tests for {lab.id} than the batch "
                               f"(tests hash {mine[:12]} != {tests_hash[:12]}): install the same kit version there")
    return local


def grade_remotely(task: dict) -> dict:
    """Run on a worker: unpack, grade with the local engine, pack the reports.

    Never raises for a grading failure: an exception comes back in
    ``error`` (see :func:`portable`).
    Only the death of the worker makes Dask run the task again.
    """
    slots = worker_slots()
    answer: dict[str, Any] = {"host": socket.gethostname(), "started_at": time.time()}
    cores: list[int] = []
    try:
        grade = resolve(task["grade"])
        lab = lab_here(task["lab"], task["tests_hash"])
        cores = slots.take(len(slots.cores) if task["alone"] else task["cpus"])
        first_start = slots.started
        answer["started_at"] = time.time()
        answer["concurrent"] = slots.running > 1
        answer["cpuset"] = format_cpuset(cores)
        with tempfile.TemporaryDirectory(prefix="ipclab-cluster-") as tmp:
            submission = unpack_submission(task["submission"], Path(tmp) / "in")
            out_dir = Path(tmp) / "out"
            language = {"lang": task["lang"]} if task.get("lang") else {}  # the batch's --lang
            result = grade(lab, submission, out_dir, image=task["image"], cpuset=answer["cpuset"],
                           only_tests=task["only_tests"], student_id=task["student_id"], **language)
            answer["reports"] = pack_folder(out_dir)
        answer["result"] = result
        # Another job started on this worker while ours ran: a timeout may be the load's fault.
        answer["concurrent"] = answer["concurrent"] or slots.started > first_start
    except Exception as exc:
        answer["error"] = portable(exc, answer["host"])
    finally:
        if cores:
            slots.give_back(cores)
        answer["finished_at"] = time.time()
    return answer


def portable(exc: Exception, host: str) -> Exception:
    """``exc`` if the client can rebuild it (a builtin or grader exception), else a RuntimeError saying it.

    The batch's row then reads exactly as with the local pool; the worker's
    name is kept in a note.
    """
    module = type(exc).__module__
    if module == "builtins" or module.startswith("grader."):
        try:
            pickle.loads(pickle.dumps(exc))
            exc.__traceback__ = None
            exc.add_note(f"(on worker {host})")
            return exc
        except Exception:
            pass
    return RuntimeError(f"{type(exc).__name__}: {exc} (on worker {host})")


def stop_containers_here() -> int:
    """Kill the grading containers of this worker process (the batch was interrupted)."""
    from grader import batch

    try:
        batch.stop_own_containers()
    except Exception:  # no engine (a fake grader): nothing to stop
        return 0
    return 1


def image_id_here(tag: str | None) -> str:
    from grader import image

    return image.runner_image_id(tag)


# -- the client side: the executor ------------------------------------------------------------------


class ClusterError(RuntimeError):
    """The cluster cannot run the batch (no scheduler, no worker, workers that disagree)."""


class DaskExecutor(Executor):
    """Runs grading jobs on the workers of a Dask cluster; see the module docstring.

    ``address`` is the scheduler (``tcp://HOST:8786``) or an existing
    ``distributed.Client``. ``grade`` names the grade function the workers
    import (``module:function``, same signature as
    :func:`grader.grade.grade_submission`); ``check_tests`` makes workers
    refuse jobs when their copy of the lab's tests differs from this
    machine's (off for fake graders in tests).
    """

    def __init__(self, address, *, grade: str = DEFAULT_GRADE, check_tests: bool | None = None,
                 connect_timeout: float = 30, worker_wait: float = WORKER_WAIT, lang: str | None = None):
        from distributed import Client

        self._grade = grade
        self._lang = lang  # the language the workers write each student's reports in
        self._check_tests = (grade == DEFAULT_GRADE) if check_tests is None else check_tests
        self._worker_wait = worker_wait
        self._lock = threading.Lock()
        self._jobs: dict[str, GradeJob] = {}  # future key -> job, until yielded
        self._futures: dict[str, Any] = {}
        self._done: queue.Queue = queue.Queue()
        self._tests_hashes: dict[str, str] = {}
        self._cancelled = False
        self._offers: tuple[float, dict] = (0.0, {})
        if isinstance(address, Client):
            self.client, self._own_client = address, False
        else:
            try:
                self.client = Client(address, timeout=connect_timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"no Dask scheduler answers at {address}: {exc}") from exc
            self._own_client = True
        try:
            self.client.wait_for_workers(1, timeout=worker_wait)
        except TimeoutError as exc:
            self.close()
            raise ClusterError(f"no worker joined the scheduler at {address} within {worker_wait} s: "
                               "start some with `python -m grader worker --scheduler ...`") from exc

    # -- what the workers offer -------------------------------------------------------------------------

    def workers(self) -> dict[str, dict]:
        """{worker address: {"CPU": n, "MEMORY": bytes}} as the scheduler knows them now."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        return {address: dict(w.get("resources") or {}) for address, w in info.items()}

    def image_id(self, tag: str | None = None) -> str:
        """The runner image id every worker grades with; ClusterError when they differ or lack it."""
        try:
            ids = self.client.run(image_id_here, tag)
        except Exception as exc:
            raise ClusterError(f"a worker has no runner image or no engine: {exc}") from exc
        if len(set(ids.values())) != 1:
            found = ", ".join(f"{w}: {i[:19]}" for w, i in sorted(ids.items()))
            raise ClusterError(f"the workers grade with different runner images ({found}): rebuild them alike")
        return next(iter(ids.values()))

    def _resources(self, job: GradeJob) -> dict[str, float]:
        """What to ask the scheduler for; raises ClusterError when no worker could ever give it."""
        fetched, offers = self._offers
        if time.monotonic() - fetched > 5 or not offers:  # one question per batch of submits, not per job
            offers = self.workers()
            self._offers = (time.monotonic(), offers)
        if job.alone:  # the largest worker, whole
            best = max(offers.values(), key=lambda r: (r.get(CPU, 0), r.get(MEMORY, 0)), default={})
            need = {CPU: best.get(CPU, 0), MEMORY: best.get(MEMORY, 0)}
        else:
            need = {CPU: job.resources.cpus, MEMORY: job.resources.memory}
        if not any(r.get(CPU, 0) >= need[CPU] > 0 and r.get(MEMORY, 0) >= need[MEMORY] for r in offers.values()):
            have = "; ".join(f"{w}: {r}" for w, r in sorted(offers.items())) or "no worker"
            raise ClusterError(f"{job.lab.id} needs {need[CPU]} {CPU} and {need[MEMORY]} bytes of {MEMORY} per job "
                               f"and no worker offers that ({have}): start workers with more cores or memory")
        return need

    # -- Executor -------------------------------------------------------------------------------------------

    def submit(self, job: GradeJob) -> None:
        if self._cancelled:
            raise RuntimeError("this executor was cancelled")
        key = f"ipclab-grade-{job.student_id}-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._jobs[key] = job
        try:
            resources = self._resources(job)
            task = {"grade": self._grade, "lab": job.lab, "tests_hash": self._tests_hash(job.lab),
                    "submission": pack_submission(job.submission), "image": job.image,
                    "only_tests": job.only_tests, "student_id": job.student_id,
                    "cpus": int(resources[CPU]), "alone": job.alone, "lang": self._lang}
            future = self.client.submit(grade_remotely, task, key=key, pure=False, resources=resources, retries=0)
        except Exception as exc:  # never lose a job: it completes as an error row
            self._done.put(Completed(job=job, error=exc, started_at=time.time(), finished_at=time.time()))
            return
        with self._lock:
            self._futures[key] = future
        future.add_done_callback(lambda f: self._done.put(f))

    def _tests_hash(self, lab) -> str | None:
        if not self._check_tests:
            return None
        if lab.id not in self._tests_hashes:
            from grader import grade

            self._tests_hashes[lab.id] = grade.tests_hash(lab)
        return self._tests_hashes[lab.id]

    def results(self) -> Iterator[Completed]:
        no_worker_since, checked = None, time.monotonic()
        while True:
            with self._lock:
                if not self._jobs:
                    return
            try:
                item = self._done.get(timeout=0.2)  # short: keeps Ctrl-C responsive
            except queue.Empty:
                if time.monotonic() - checked > 2:  # ask the scheduler now and then, not 5 times a second
                    no_worker_since, checked = self._check_workers(no_worker_since), time.monotonic()
                continue
            done = item if isinstance(item, Completed) else self._collect(item)
            if done is None:
                continue
            with self._lock:
                self._jobs = {k: j for k, j in self._jobs.items() if j is not done.job}
            yield done

    def _check_workers(self, since: float | None) -> float | None:
        """Bound the wait when every worker is gone: fail what is left after ``worker_wait``."""
        if self.client.scheduler_info(n_workers=-1)["workers"]:
            return None
        now = time.monotonic()
        if since is None:
            return now
        if now - since > self._worker_wait:
            with self._lock:
                left = list(self._jobs.items())
            for key, job in left:
                future = self._futures.pop(key, None)
                if future is None:
                    continue  # its answer is already queued
                future.cancel()
                self._done.put(Completed(job=job, error=ClusterError(
                    f"no worker left in the cluster for {self._worker_wait:.0f} s"), started_at=time.time(),
                    finished_at=time.time()))
            return None
        return since

    def _collect(self, future) -> Completed | None:
        """A finished future -> Completed, with its reports unpacked into the job's out_dir."""
        with self._lock:
            job = self._jobs.get(future.key)
            if self._futures.pop(future.key, None) is None:
                return None  # already failed by _check_workers: a job completes once
        now = time.time()
        if future.cancelled():
            return Completed(job=job, error=RuntimeError("cancelled"), started_at=now, finished_at=now)
        try:
            answer = future.result(timeout=60)
        except Exception as exc:  # e.g. KilledWorker: the job's workers kept dying
            return Completed(job=job, error=exc, started_at=now, finished_at=now)
        finally:
            future.release()
        done = Completed(job=job, started_at=answer["started_at"], finished_at=answer["finished_at"],
                         cpuset=answer.get("cpuset"), concurrent=bool(answer.get("concurrent")))
        if "error" in answer:
            done.error = answer["error"]
            return done
        try:
            unpack_reports(answer["reports"], Path(job.out_dir))
        except (OSError, ValueError, tarfile.TarError) as exc:
            done.error = RuntimeError(f"cannot write the reports sent back by {answer['host']}: {exc}")
            return done
        result = answer["result"]
        if hasattr(result, "out_dir"):  # it named the worker's temporary folder
            result.out_dir = Path(job.out_dir)
        done.result = result
        return done

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            futures = list(self._futures.values())
        self.client.cancel(futures, force=True)
        self.stop_all()

    def stop_all(self) -> None:
        """Kill the running grading containers on every worker."""
        try:
            self.client.run(stop_containers_here)
        except Exception:
            pass

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                busy = sum(self.client.run(running_here).values())
            except Exception:
                busy = 0  # no worker answers: nothing of ours can be running there
            if busy == 0:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def close(self) -> None:
        with self._lock:
            pending = bool(self._futures)
        if pending and not self._cancelled:
            self.cancel()
        if self._own_client:
            self.client.close(timeout=10)


# -- python -m grader worker --------------------------------------------------------------------------


def parse_cores(text: str) -> list[int]:
    """``"0-2,5"`` -> [0, 1, 2, 5]."""
    cores: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"cannot read cores {text!r} (expected e.g. 0-3 or 0,2)")
        cores.update(range(int(low), int(high or low) + 1))
    return sorted(cores)


def worker_command(scheduler: str, cores: list[int], memory: int, *, host: str | None = None,
                   name: str | None = None) -> list[str]:
    """The ``dask worker`` command line an ipclab worker runs (one thread per core, no memory killer).

    Its memory limit is off because the grading memory is the containers',
    not the worker process's: MEMORY is what the scheduler budgets instead.
    """
    command = ["dask", "worker", scheduler, "--nworkers", "1", "--nthreads", str(len(cores)),
               "--resources", f"{CPU}={len(cores)},{MEMORY}={memory}", "--memory-limit", "0", "--no-dashboard"]
    if host:
        command += ["--host", host]
    if name:
        command += ["--name", name]
    return command


def add_arguments(parser) -> None:
    parser.add_argument("--scheduler", required=True, help="the Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--cores", help="cores this worker may use, e.g. 0-7 (default: all this process may run on)")
    parser.add_argument("--memory", help="memory to lend to containers, e.g. 16g (default: 80%% of the machine)")
    parser.add_argument("--image", help="runner image to check (default: ipclab-runner:<kit version>)")
    parser.add_argument("--host", help="address to listen on (default: chosen by Dask)")
    parser.add_argument("--name", help="worker name (default: chosen by Dask)")
    parser.add_argument("--check-only", action="store_true", help="check the engine and the image, print the "
                        "equivalent `dask worker` command, and exit")


def main(args) -> int:
    import psutil

    from grader import image

    try:
        cores = parse_cores(args.cores) if args.cores else sorted(os.sched_getaffinity(0))
        memory = parse_memory(args.memory) if args.memory else int(psutil.virtual_memory().total
                                                                  * (1 - HOST_RESERVE_FRACTION))
        tag = args.image or image.image_tag()
        image_id = image.runner_image_id(tag)  # checks the engine too
    except (ValueError, image.ImageError) as exc:
        print(f"error: this machine cannot be a grading worker: {exc}", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, cores)  # the worker (and CoreSlots) inherit exactly these cores
    command = worker_command(args.scheduler, cores, memory, host=args.host, name=args.name)
    print(f"grading worker: cores {format_cpuset(cores)}, {memory / 2**30:.1f} GiB for containers, "
          f"image {tag} ({image_id[:19]})", file=sys.stderr)
    print("equivalent: taskset -c " + format_cpuset(cores) + " " + " ".join(command), file=sys.stderr, flush=True)
    if args.check_only:
        return 0
    env = dict(os.environ, IPCLAB_IMAGE=tag)  # jobs without --image grade with the image checked here
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", *command[2:]]
    proc = subprocess.Popen(argv, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


# -- make bench-grade: the cluster case -----------------------------------------------------------------


@contextlib.contextmanager
def loopback_cluster(work: Path, workers: list[list[int]], wait: float = WORKER_WAIT):
    """A scheduler and ``grader worker`` processes on 127.0.0.1, one per core list; killed on exit."""
    procs: list[subprocess.Popen] = []

    def start(name: str, argv: list[str]) -> None:
        with open(work / f"{name}.log", "w") as log:
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, cwd=work))

    try:
        info = work / "scheduler.json"
        start("scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                            "--port", "0", "--no-dashboard", "--scheduler-file", str(info)])
        deadline = time.monotonic() + wait
        while not (info.exists() and info.read_text().strip()):
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise ClusterError("the scheduler did not start: " + (work / "scheduler.log").read_text()[-1000:])
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        for i, cores in enumerate(workers):
            start(f"worker{i}", [sys.executable, "-m", "grader", "worker", "--scheduler", address, "--host",
                                 "127.0.0.1", "--name", f"worker{i}", "--cores", format_cpuset(cores)])
        yield address
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def shipping_only(lab, submission, out_dir, **kw) -> None:
    """A grade function that grades nothing (for :func:`bench`): what is left is the executor's own cost."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "report.json").write_text("{}")


def executor_overhead(lab, entries: list[Path], address: str, work: Path) -> tuple[float, float]:
    """Seconds per job through the local pool and through the cluster, grading nothing."""
    from grader.executor import LocalPool, Resources

    def run(executor) -> float:
        started = time.monotonic()
        for entry in entries:
            executor.submit(GradeJob(lab=lab, submission=entry, out_dir=work / "noop" / uuid.uuid4().hex,
                                     student_id=entry.name, resources=Resources.of_lab(lab)))
        done = list(executor.results())
        if any(d.error for d in done):
            raise ClusterError(f"shipping-only run failed: {next(d.error for d in done if d.error)}")
        return (time.monotonic() - started) / len(entries)

    with LocalPool(shipping_only, max_jobs=1) as pool:
        local = run(pool)
    with DaskExecutor(address, grade="grader.cluster:shipping_only", check_tests=True) as executor:
        remote = run(executor)
    return local, remote


def bench(lab, size: int, work: Path, stream=sys.stdout) -> dict:
    """Throughput on a loopback cluster with one and two workers, against the local pool, in one run.

    The same generated class is graded by the local pool with one job, by a
    cluster of one 1-core worker (overhead per submission = the difference,
    divided by the class size: packing, shipping, scheduling) and by two
    1-core workers (throughput). Scores must agree.
    """
    from grader import batch

    subs = work / "class"
    kinds = {k: v for k, v in batch.submission_kinds(lab).items() if not k.startswith("attack:")}
    batch.generate_class(lab, subs, size, kinds=kinds)
    cores = sorted(os.sched_getaffinity(0))
    timings, scores, errors = {}, {}, []

    def timed(name: str, **kw) -> None:
        started = time.monotonic()
        outcome = batch.run_batch(lab, subs, work / f"out-{name}", force=True, stream=io.StringIO(), **kw)
        timings[name] = time.monotonic() - started
        scores[name] = {row["student_id"]: (row["status"], row.get("score")) for row in outcome.rows}
        errors.extend(f"{name} {row['student_id']}: {row['reason']}" for row in outcome.rows if row["status"] != "graded")

    from grader import grade

    grade.expected_tests(lab)  # collect once (cached on disk): the first run timed must not pay for it
    timed("local-1", jobs=1)
    for n_workers in (1, min(2, len(cores))):
        folder = work / f"cluster-{n_workers}"
        folder.mkdir()
        with loopback_cluster(folder, [[c] for c in cores[:n_workers]]) as address:
            executor = DaskExecutor(address)
            try:
                executor.client.wait_for_workers(n_workers, timeout=WORKER_WAIT)
                timed(f"cluster-{n_workers}", executor=executor)
            finally:
                executor.close()
            if n_workers == 1:
                local_job, cluster_job = executor_overhead(lab, sorted(subs.iterdir()), address, work)
    two = f"cluster-{min(2, len(cores))}"
    result = {
        "lab": lab.id, "submissions": size,
        "local_one_job_seconds": round(timings["local-1"], 1),
        "cluster_one_worker_seconds": round(timings["cluster-1"], 1),
        "cluster_two_workers_seconds": round(timings[two], 1),
        "one_worker_per_minute": round(size / timings["cluster-1"] * 60, 1),
        "two_workers_per_minute": round(size / timings[two] * 60, 1),
        "overhead_seconds_per_submission": round((timings["cluster-1"] - timings["local-1"]) / size, 2),
        "shipping_ms_per_job_local": round(local_job * 1000, 1),
        "shipping_ms_per_job_cluster": round(cluster_job * 1000, 1),
        "same_scores": scores["local-1"] == scores["cluster-1"] == scores[two],
    }
    print(f"{lab.id}: {size} submissions, cluster on loopback (1-core workers)", file=stream)
    print(f"  local pool, 1 job:   {result['local_one_job_seconds']} s", file=stream)
    print(f"  cluster, 1 worker:   {result['cluster_one_worker_seconds']} s "
          f"({result['one_worker_per_minute']} submissions/min)", file=stream)
    print(f"  cluster, 2 workers:  {result['cluster_two_workers_seconds']} s "
          f"({result['two_workers_per_minute']} submissions/min)", file=stream)
    print(f"  cluster overhead:    {result['overhead_seconds_per_submission']} s per submission "
          "(1 worker against the local pool with 1 job)", file=stream)
    print(f"  executor alone:      {result['shipping_ms_per_job_cluster']} ms per job on the cluster, "
          f"{result['shipping_ms_per_job_local']} ms in the local pool (a grade function that grades nothing: "
          "packing, scheduling, shipping and writing the reports)", file=stream)
    if not result["same_scores"]:
        differ = {sid: [scores[name][sid] for name in scores] for sid in scores["local-1"]
                  if len({scores[name][sid] for name in scores}) > 1}
        print(f"  WARNING: outcomes differ (local 1 job, 1 worker, 2 workers): {differ}", file=stream)
    for error in errors:
        print(f"  not graded: {error}", file=stream)
    return result


if __name__ == "__main__":  # python -m grader.cluster bench --lab lab2 [--size 12]  (make bench-grade)
    import argparse

    from grader import cluster, labs  # the module by its name: workers must import, not unpickle, its functions

    parser = argparse.ArgumentParser(prog="python -m grader.cluster")
    parser.add_argument("what", choices=["bench"])
    parser.add_argument("--lab", default="lab2")
    parser.add_argument("--size", type=int, default=12, help="submissions in the generated class")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ipclab-bench-cluster-") as tmp:
        outcome = cluster.bench(labs.find_lab(options.lab), options.size, Path(tmp))
    sys.exit(0 if outcome["same_scores"] else 1)
