"""Grade a whole class: ``python -m grader batch --lab lab3 SUBMISSIONS --out reports/lab3``.

``SUBMISSIONS`` is a folder with one entry per student (a folder or an archive
named by the student id) or one ``.zip`` holding such entries, the way LMS
exports deliver them. Every submission is graded exactly as ``grader grade``
grades one (:func:`grader.grade.grade_submission`, in its own container), with
its reports in ``OUT/<student>/``; then the class's ``gradebook.csv``,
``summary.json`` and ``summary.html`` are written (``grader/gradebook.py``).

How a batch survives 1,000 students and an impatient instructor:

* **Resumable.** A result is kept as soon as it is done: its reports are
  graded into a staging folder, moved into ``OUT/<student>/`` in one rename,
  then recorded in ``OUT/.ledger/<student>.json`` under a key made of the
  submission's content hash, the lab's tests hash and the runner image id.
  Running the same command again grades only what changed or never finished
  (``--force`` regrades everything). A grader error (the kit's fault, not the
  student's) is never recorded, so it is retried on the next run.
* **Interruptible.** Ctrl-C (or SIGTERM) stops submitting, stops the running
  containers, waits for their threads and deletes the staging area: nothing
  half-written is left, and nothing finished is lost.
* **Nothing is lost.** Every entry gets exactly one row. A submission that
  crashes, hangs or does not unpack is graded (to 0) by the grader, which
  says why; two entries for one student, an entry that is neither a folder
  nor an archive, or a grader error get a row with the reason and no score.
  The exit status is the number of students who could not be graded (130
  when interrupted).
* **Fair under load.** A test that timed out while other containers were
  running is rerun once with the machine to itself before it costs points;
  the student's report (a note, and ``rerun_alone`` on the test) and the
  class summary say so.

Language: ``--lang ko`` writes every student's reports and the class's
summary.html in Korean (default: IPCLAB_LANG, then the locale; see
``grader/i18n.py``).

Scheduling is the executor's business (``grader/executor.py``): this module
only submits jobs and reads what completes.
"""

from __future__ import annotations

import contextlib
import functools
import dataclasses
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from grader import gradebook, i18n, labs
from grader.executor import Completed, Executor, GradeJob, LocalPool, Resources

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")  # what grader.submission unpacks
# Limits on what a class export may unpack to (a zip bomb is refused, it does not fill the disk).
MAX_EXPORT_BYTES = 8 * 2**30
MAX_EXPORT_FILES = 200_000
CANCEL_WAIT = 120  # seconds to wait for running jobs to stop after Ctrl-C
_IGNORED = ("__MACOSX", "Thumbs.db", "desktop.ini")
# Names the batch uses in OUT/: a student cannot take them.
_RESERVED = {"gradebook.csv", "summary.json", "summary.html", ".work", ".ledger", ".batch.lock"}
_SAFE_ID = re.compile(r"\w[\w.@+-]{0,127}")

EXIT_INTERRUPTED = 130
MAX_EXIT_COUNT = 125


# -- the single-submission grader, as the batch sees it ------------------------------------------


@dataclasses.dataclass
class Backend:
    """What the batch needs from the single-submission grader.

    The real one is :func:`docker_backend`; tests pass a fake to run without
    Docker. ``stop_all`` stops every container this process started (Ctrl-C).
    """

    grade: Callable[..., Any]
    tests_hash: Callable[[labs.Lab], str]
    submission_hash: Callable[[Path], str]
    image_id: Callable[[], str]
    stop_all: Callable[[], None]
    write_reports: Callable[[dict, Path], None]


def docker_backend(lang: str | None = None) -> Backend:
    """The Docker grader of ``grader/grade.py``, writing its reports in ``lang``."""
    from grader import grade, reports

    lang = i18n.language(lang)
    return Backend(grade=functools.partial(grade.grade_submission, lang=lang), tests_hash=grade.tests_hash,
                   submission_hash=grade.submission_hash, image_id=grade.runner_image_id,
                   stop_all=stop_own_containers, write_reports=functools.partial(reports.write_all, lang=lang))


def stop_own_containers() -> None:
    """Kill every grading container this process started (they carry its owner label).

    The grading threads then see their container end and return; the sandbox
    removes the containers. Containers of other graders on this engine are
    left alone.
    """
    import socket

    from grader import image, sandbox

    owner = f"{socket.gethostname()}:{os.getpid()}"  # what sandbox.run() labels our containers with
    client = image.docker_client()
    for container in client.containers.list(filters={"label": f"{sandbox.OWNER_LABEL}={owner}"}):
        try:
            container.kill()
        except Exception:  # already stopping: that is what we want
            pass


# -- finding the students ------------------------------------------------------------------------


class UnpackError(Exception):
    """An archive that cannot be unpacked safely."""


@dataclasses.dataclass
class Entry:
    """One student's entry in the export, as delivered."""

    student_id: str
    name: str  # the entry's file name, e.g. "alice.zip"
    source: Path
    problem: str | None = None  # why it cannot be graded, found before grading


def strip_archive_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def student_id_for(name: str) -> str:
    """The student id an entry name gives: the name minus its archive suffix.

    It becomes a folder name under OUT/, so anything that could escape it or
    clash with the batch's own files (``..``, ``/``, a leading dot, spaces,
    ``gradebook.csv``) is replaced, and a short hash of the original name is
    added so that two odd names never merge.
    """
    base = strip_archive_suffix(name)
    if _SAFE_ID.fullmatch(base) and base not in _RESERVED:
        return base
    slug = re.sub(r"[^\w.@+-]+", "_", base).strip("._-+@")[:60] or "student"
    return f"{slug}-{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def discover(submissions: Path, work: Path) -> list[Entry]:
    """One :class:`Entry` per student id, sorted by id; unusable entries carry a problem."""
    root = submissions
    if submissions.is_file():
        if not submissions.name.lower().endswith(".zip"):
            raise UnpackError(f"{submissions} is neither a folder nor a .zip of submissions")
        root = work / "export"
        unpack(submissions, root, max_bytes=MAX_EXPORT_BYTES, max_files=MAX_EXPORT_FILES)
        root = _export_root(root)
    by_id: dict[str, list[Entry]] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or path.name in _IGNORED:
            continue
        entry = Entry(student_id=student_id_for(path.name), name=path.name, source=path)
        if path.is_symlink():
            entry.problem = "the entry is a symbolic link; submissions must be folders or archives"
        elif not path.is_dir() and not (path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)):
            entry.problem = f"not a folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})"
        by_id.setdefault(entry.student_id, []).append(entry)
    entries = []
    for student, found in sorted(by_id.items()):
        if len(found) > 1:
            names = ", ".join(e.name for e in found)
            entries.append(Entry(student, names, root, problem=f"several entries for one student ({names}): keep one"))
        else:
            entries.append(found[0])
    return entries


def _export_root(folder: Path) -> Path:
    """Step into a lone top-level folder of an export (``lab3/alice/``, ``lab3/bob.zip``).

    Not when that folder holds Python files: then it is one student's work.
    """
    children = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _IGNORED]
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        if not any(children[0].glob("*.py")):
            return children[0]
    return folder


def _safe_member_path(dest: Path, name: str) -> Path | None:
    """Where an archive member goes, or None to skip it; raises on an escape attempt."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise UnpackError(f"member {name!r} points outside the archive")
    if not parts or parts[0] in _IGNORED:
        return None
    return dest.joinpath(*parts)


def _copy_limited(source, target: Path, budget: list[int]) -> None:
    with open(target, "wb") as out:
        while chunk := source.read(1 << 16):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise UnpackError("unpacks to more than the size limit")
            out.write(chunk)


def unpack(archive: Path, dest: Path, *, max_bytes: int, max_files: int) -> None:
    """Unpack a class export (.zip): regular files and folders only, refusing links, escapes and bombs.

    Students' own archives inside it are left packed: the grader unpacks them.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _unzip(archive, dest, [max_bytes], max_files)
    except UnpackError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
        raise UnpackError(f"{type(exc).__name__}: {exc}") from exc


def _unzip(archive: Path, dest: Path, budget: list[int], max_files: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > max_files:
            raise UnpackError(f"holds {len(members)} files, more than {max_files}")
        for info in members:
            target = _safe_member_path(dest, info.filename)
            if target is None:
                continue
            mode = info.external_attr >> 16
            if (mode & 0o170000) == 0o120000:
                raise UnpackError(f"member {info.filename!r} is a symbolic link")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source:
                _copy_limited(source, target, budget)
            # Keep the archive's time: a late policy may be told to use file times.
            stamp = time.mktime((*info.date_time, 0, 0, -1))
            os.utime(target, (stamp, stamp))


# -- the ledger: what is already graded -------------------------------------------------------------


class Ledger:
    """``OUT/.ledger/<student>.json``: the key a student's reports were graded under, and their row."""

    def __init__(self, out: Path):
        self.folder = out / ".ledger"
        self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, student: str) -> dict | None:
        try:
            return json.loads((self.folder / f"{student}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, student: str, key: dict, row: dict) -> None:
        gradebook.write_atomically(self.folder / f"{student}.json",
                                   json.dumps({"key": key, "row": row}, indent=1, ensure_ascii=False))


def entry_time(path: Path) -> dt.datetime:
    """When an entry was last changed: an archive's time, or a folder's newest file's."""
    stamps = [path.stat().st_mtime]
    if path.is_dir():
        stamps = [p.stat().st_mtime for p in path.rglob("*") if p.is_file() and not p.is_symlink()] or stamps
    return dt.datetime.fromtimestamp(max(stamps), dt.timezone.utc)


# -- rows -------------------------------------------------------------------------------------------------


def error_row(entry: Entry, reason: str, status: str = "error") -> dict:
    return {"student_id": entry.student_id, "entry": entry.name, "status": status, "reason": reason,
            "score": None, "max": None, "tests": {}, "duration": None}


def report_tests(report: dict) -> dict[str, dict]:
    """Per-test outcomes from a report.json: {key: {points, max, status}}."""
    tests = report.get("tests") or []
    if isinstance(tests, dict):
        tests = [dict(value, key=key) for key, value in tests.items()]
    found = {}
    for test in tests:
        key = test.get("key") or test.get("name")
        found[key] = {"points": float(test.get("points") or 0), "max": float(test.get("max") or 0),
                      "status": test.get("status")}
    return found


def graded_row(entry: Entry, report: dict, duration: float) -> dict:
    return {"student_id": entry.student_id, "entry": entry.name, "status": "graded",
            "reason": report.get("reason") or "", "score": float(report["score"]), "max": float(report["max_score"]),
            "tests": report_tests(report), "duration": round(duration, 2)}


def merge_rerun(first: dict, rerun: dict, lang: str | None = None) -> dict:
    """``first``'s report with the tests rerun alone replaced by the rerun's outcome.

    Each replaced test carries ``rerun_alone: true`` and a note says what
    happened, so the student's report shows why a timeout did not count.
    """
    again = {test["name"]: test for test in rerun.get("tests", [])}
    tests = [dict(again[t["name"]], rerun_alone=True, first_status=t["status"]) if t["name"] in again else t
             for t in first.get("tests", [])]
    _ = i18n.translator(i18n.language(lang or first.get("lang") or None))
    note = _("Timed out while other submissions were being graded, so rerun once with the machine to itself "
             "(the rerun counts): {tests}.").format(tests=", ".join(f"{name} ({again[name]['status']})" for name in again))
    merged = dict(first, tests=tests, notes=[*first.get("notes", []), note])
    merged["score"] = round(sum(t["points"] for t in tests), 2)
    return merged


def timed_out(row: dict) -> list[str]:
    return [key for key, test in row["tests"].items() if test.get("status") == "timeout"]


# -- progress ------------------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar on a terminal; otherwise one line per finished submission."""

    def __init__(self, total: int, reused: int, stream=None):
        self.stream = stream or sys.stderr
        self.counts = {"full": 0, "partial": 0, "errors": 0}
        self.total, self.done = total, reused
        self.timed = 0  # submissions that went through the grader in this run: the rate counts these
        self.started = time.monotonic()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=reused, unit="sub", file=self.stream, dynamic_ncols=True,
                            desc="grading")
        elif reused:
            print(f"{reused} of {total} already graded (unchanged since the last run)", file=self.stream, flush=True)

    def add(self, row: dict, timed: bool = True) -> None:
        self.timed += timed
        if row["status"] != "graded":
            self.counts["errors"] += 1
        elif row["score"] >= row["max"]:
            self.counts["full"] += 1
        else:
            self.counts["partial"] += 1
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)
            return
        score = f"{row['score']:g}/{row['max']:g}" if row["score"] is not None else row["status"]
        why = f" ({row['reason']})" if row["status"] != "graded" and row.get("reason") else ""
        rate = f"  {self._rate()}" if timed else ""
        print(f"[{self.done}/{self.total}] {row['student_id']}: {score}{why}{rate}", file=self.stream, flush=True)

    def _rate(self) -> str:
        elapsed = time.monotonic() - self.started
        if not self.timed or elapsed <= 0:
            return ""
        per_minute = self.timed / elapsed * 60
        eta = (self.total - self.done) / (self.timed / elapsed)
        return f"{per_minute:.1f}/min, ETA {eta:.0f} s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- Ctrl-C -------------------------------------------------------------------------------------------------


class Interrupts:
    """SIGINT/SIGTERM raise KeyboardInterrupt, but never inside a critical section.

    Moving a student's reports into place and recording them in the ledger
    must happen together or not at all; a signal arriving in between is held
    until the section ends.
    """

    def __init__(self):
        self.requested = False
        self._critical = False
        self._saved = {}

    def _handler(self, signum, frame):
        self.requested = True
        if not self._critical:
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def ignore(self):
        """From now on, signals only mark the request (the clean-up must finish)."""
        self._critical = True

    @contextlib.contextmanager
    def critical(self):
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
        if self.requested:
            raise KeyboardInterrupt


# -- the batch ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BatchOutcome:
    rows: list[dict]
    graded: list[str]  # students graded by this run
    reused: list[str]  # students whose earlier result was kept
    interrupted: bool = False
    summary: dict | None = None

    @property
    def not_graded(self) -> int:
        return sum(1 for row in self.rows if row["status"] != "graded")

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return min(self.not_graded, MAX_EXIT_COUNT)


@contextlib.contextmanager
def _exclusive(out: Path):
    """Two batches writing one OUT would corrupt each other's staging: refuse the second."""
    with open(out / ".batch.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another batch is writing {out}") from None
        yield


def run_batch(lab: labs.Lab, submissions: Path, out: Path, *, jobs: int | None = None, force: bool = False,
              policy: gradebook.LatePolicy | None = None, manifest: dict | None = None,
              image: str | None = None, backend: Backend | None = None,
              executor: Executor | None = None, stream=None, lang: str | None = None) -> BatchOutcome:
    """Grade every submission under ``submissions`` into ``out``; see the module docstring.

    ``lang`` is the language of summary.html and of the notes the batch adds
    to a report; the students' reports are in the backend's (the default
    backend's is ``lang`` too).
    """
    lang = i18n.language(lang)
    backend = backend or docker_backend(lang)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out), Interrupts() as interrupts:
        work = out / ".work"
        shutil.rmtree(work, ignore_errors=True)  # a batch killed with SIGKILL left it
        work.mkdir()
        try:
            batch = _Batch(lab, out, work, backend, force=force, image=image, stream=stream, lang=lang)
            return batch.run(Path(submissions), jobs, executor, interrupts, policy, manifest)
        finally:
            interrupts.ignore()
            shutil.rmtree(work, ignore_errors=True)


class _Batch:
    def __init__(self, lab, out, work, backend, *, force, image, stream, lang="en"):
        self.lab, self.out, self.work, self.backend, self.lang = lab, out, work, backend, lang
        self.force, self.image, self.stream = force, image, stream or sys.stderr
        self.ledger = Ledger(out)
        self.rows: dict[str, dict] = {}
        self.graded: list[str] = []
        self.reused: list[str] = []

    def log(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run(self, submissions, jobs, executor, interrupts, policy, manifest) -> BatchOutcome:
        entries = discover(submissions, self.work)
        try:
            tests_hash, image_id = self.backend.tests_hash(self.lab), self.backend.image_id()
        except Exception as exc:  # no engine, no image: nothing can be graded, say so once
            raise RuntimeError(f"cannot grade: {exc}") from exc
        todo = [job for entry in entries if (job := self._plan(entry, tests_hash, image_id))]
        pool = executor or LocalPool(self.backend.grade, max_jobs=jobs, on_cancel=self.backend.stop_all)
        progress = Progress(total=len(entries), reused=len(self.reused), stream=self.stream)
        for row in self.rows.values():
            if row["status"] != "graded":  # found before grading: say so now, with the others
                progress.add(row, timed=False)
        interrupted = False
        try:
            for job in todo:
                pool.submit(job)
            for done in pool.results():
                row = self._complete(done, pool, interrupts)
                if row is not None:
                    progress.add(row)
        except KeyboardInterrupt:
            interrupted = True
            interrupts.ignore()
            progress.close()
            self.log("interrupted: stopping the running containers...")
            pool.cancel()
            deadline = time.monotonic() + CANCEL_WAIT
            # A job past its first kill may still be starting its container: kill again until all are done.
            while not pool.wait_idle(1.0):
                if time.monotonic() > deadline:
                    self.log(f"some grading jobs did not stop within {CANCEL_WAIT} s")
                    break
                self.backend.stop_all()
        finally:
            progress.close()
            if executor is None:
                pool.close()
        rows = [self.rows[e.student_id] for e in entries if e.student_id in self.rows]
        outcome = BatchOutcome(rows=rows, graded=self.graded, reused=self.reused, interrupted=interrupted)
        if interrupted:
            self.log(f"interrupted: {len(self.graded)} graded by this run are saved; "
                     "run the same command again to grade the rest")
            return outcome
        file_times = {e.student_id: entry_time(e.source) for e in entries if e.source.exists() and not e.problem}
        gradebook.apply_late_policy(rows, policy, manifest, file_times)
        with interrupts.critical():  # the three class files are written together
            outcome.summary = gradebook.write_all(self.out, self.lab, rows, meta={
                "tests_hash": tests_hash, "image_id": image_id,
                "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}, lang=self.lang)
        return outcome

    def _plan(self, entry: Entry, tests_hash: str, image_id: str) -> GradeJob | None:
        """A job to grade ``entry``, or None when it has a row already (an error, or a kept result)."""
        if entry.problem:
            self.rows[entry.student_id] = error_row(entry, entry.problem)
            return None
        try:
            # The entry goes to the grader as delivered (folder or archive), exactly as
            # `grader grade` would get it: unpacking a student's archive is its job.
            digest = self.backend.submission_hash(entry.source)
        except Exception as exc:  # hashing a hostile folder; never stop the batch for one student
            self.rows[entry.student_id] = error_row(entry, f"cannot read {entry.name}: {type(exc).__name__}: {exc}")
            return None
        key = {"submission": digest, "tests": tests_hash, "image": image_id}
        kept = self.ledger.get(entry.student_id)
        if not self.force and kept and kept.get("key") == key and (self.out / entry.student_id).is_dir():
            self.rows[entry.student_id] = kept["row"]
            self.reused.append(entry.student_id)
            return None
        return GradeJob(lab=self.lab, submission=entry.source, out_dir=self.work / "staging" / entry.student_id,
                        student_id=entry.student_id, resources=Resources.of_lab(self.lab), image=self.image,
                        tag={"entry": entry, "key": key, "first": None})

    def _complete(self, done: Completed, pool: Executor, interrupts: Interrupts) -> dict | None:
        """Turn a finished job into the student's row; None when a rerun was queued instead."""
        job, tag = done.job, done.job.tag
        entry, first = tag["entry"], tag["first"]
        if done.error is not None or done.result is None:
            error = done.error or RuntimeError("no result")
            row = error_row(entry, f"the grader crashed: {type(error).__name__}: {error}", "grader_error")
        elif done.result.status != "graded":
            row = error_row(entry, done.result.reason or "grader error", "grader_error")
        elif not (job.out_dir / "report.json").is_file():
            row = error_row(entry, f"the grader wrote no report.json in {job.out_dir}", "grader_error")
        else:
            row = graded_row(entry, done.result.report, done.duration)
        if first is not None:  # this was the rerun alone of the tests that timed out
            first_job, first_result = tag["first_job"], tag["first_result"]
            if row["status"] == "graded":
                report = merge_rerun(first_result.report, done.result.report, self.lang)
            else:
                note = i18n.gettext("Rerunning the timed-out tests alone failed ({reason}); the first run counts.",
                                    first_result.report.get("lang") or self.lang).format(reason=row["reason"])
                report = dict(first_result.report, notes=[*first_result.report.get("notes", []), note])
            self.backend.write_reports(report, first_job.out_dir)
            duration = (done.finished_at - tag["first_started"])
            row = dict(graded_row(entry, report, duration), rerun_alone=tag["rerun"])
            job = first_job
        elif row["status"] == "graded" and done.concurrent and timed_out(row):
            # Parallel load must never cost points: rerun those tests with the machine to itself.
            rerun = timed_out(row)
            pool.submit(dataclasses.replace(
                job, alone=True, only_tests=rerun, out_dir=job.out_dir.with_name(job.student_id + ".alone"),
                tag=dict(tag, first=row, first_job=job, first_result=done.result, first_started=done.started_at,
                         rerun=rerun)))
            return None
        if row["status"] == "graded":
            with interrupts.critical():
                self._keep(job, row, tag["key"], done)
            self.graded.append(entry.student_id)
        self.rows[entry.student_id] = row
        return row

    def _keep(self, job: GradeJob, row: dict, key: dict, done: Completed) -> None:
        """Move the staged reports to OUT/<student>/ and record them in the ledger."""
        note = {"key": key, "cpuset": done.cpuset, "duration": row["duration"], "concurrent": done.concurrent,
                "rerun_alone": row.get("rerun_alone", []), "notes": row.get("notes", [])}
        gradebook.write_atomically(job.out_dir / "batch.json", json.dumps(note, indent=1))
        target = self.out / job.student_id
        trash = self.work / "trash" / job.student_id
        if target.exists():
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(target, trash)
        os.rename(job.out_dir, target)
        self.ledger.put(job.student_id, key, row)
        shutil.rmtree(trash, ignore_errors=True)


# -- a generated class, and make bench-grade ------------------------------------------------------------


def submission_kinds(lab: labs.Lab, root: Path = labs.KIT_ROOT) -> dict[str, dict[str, Path]]:
    """Every kind of submission the kit can make for ``lab``: {kind: {module file name: source}}.

    The reference, the stub, each broken fixture of the lab (the reference with
    its bug overlaid), each attack of ``tests/fixtures/attacks`` and some of
    ``tests/fixtures/hostile`` (their code in place of the lab's first module,
    so it runs at import).
    """
    reference = {m: lab.reference_dir / m for m in lab.modules}
    kinds = {"reference": reference, "stub": {m: lab.folder / m for m in lab.modules}}
    fixtures = root / "tests" / "fixtures"
    for spec in sorted(fixtures.glob(f"{lab.id}/*/fixture.yaml")):
        kinds[f"bug:{spec.parent.name}"] = {**reference, **{p.name: p for p in spec.parent.glob("*.py")}}
    for spec in sorted(fixtures.glob("attacks/*/fixture.yaml")):
        attack = next(spec.parent.glob("*.py"), None)
        if attack is not None:
            kinds[f"attack:{spec.parent.name}"] = {**kinds["stub"], lab.modules[0]: attack}
    for name in HOSTILE_AT_IMPORT:
        source = fixtures / "hostile" / name / "demo.py"
        if source.is_file():
            kinds[f"hostile:{name}"] = {**kinds["stub"], lab.modules[0]: _hostile_module(source, root)}
    return kinds


# Hostile fixtures (written for the demo lab's add()) that misbehave quickly when
# add() is called at import: a flood of output, writes to the read-only root.
# The others (endless loops, sleeps, daemons) would only cost minutes per student.
HOSTILE_AT_IMPORT = ("big_output", "write_rootfs")


def _hostile_module(source: Path, root: Path) -> Path:
    """The fixture's code with a call to its add() at import, cached beside the kit's other caches."""
    text = source.read_text() + "\n\nadd(1, 2)  # misbehave as soon as the grader imports this module\n"
    cache = root / ".cache" / "hostile" / hashlib.sha256(text.encode()).hexdigest()[:16] / source.name
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        gradebook.write_atomically(cache, text)
    return cache


def generate_class(lab: labs.Lab, dest: Path, size: int, *, kinds: dict | None = None) -> dict[str, str]:
    """``size`` student entries under ``dest`` cycling through the kinds; every third is a .zip.

    Returns {student id: kind}.
    """
    kinds = kinds or submission_kinds(lab)
    names = sorted(kinds)
    dest.mkdir(parents=True, exist_ok=True)
    students = {}
    for i in range(size):
        student, kind = f"student{i:03d}", names[i % len(names)]
        if i % 3 == 2:
            with zipfile.ZipFile(dest / f"{student}.zip", "w") as zf:
                for name, source in kinds[kind].items():
                    zf.write(source, name)
        else:
            (dest / student).mkdir()
            for name, source in kinds[kind].items():
                shutil.copy(source, dest / student / name)
        students[student] = kind
    return students


def bench(lab: labs.Lab, size: int, work: Path, rounds: int = 2, stream=sys.stdout) -> dict:
    """Throughput, container overhead and parallel efficiency of batch grading, measured in one run.

    The same generated class is graded three ways: its tests run directly on
    the host (pytest, no container, one at a time); batch with one job; batch
    with as many jobs as the cores allow (the two batch settings alternate for
    ``rounds`` rounds; the best round of each counts). Overhead = (one-job
    batch - host) per submission; efficiency = throughput(N) / (N * throughput(1)).
    """
    from grader import grade, selfcheck

    subs = work / "class"
    # Only what is safe to run on the host without a sandbox: no attacks, no hostile code.
    kinds = {k: v for k, v in submission_kinds(lab).items() if k in ("reference", "stub") or k.startswith("bug:")}
    students = generate_class(lab, subs, size, kinds=kinds)
    host_started = time.monotonic()
    for student in students:
        entry = subs / student if (subs / student).is_dir() else subs / f"{student}.zip"
        folder = entry
        if entry.is_file():
            folder = work / "host" / student
            unpack(entry, folder, max_bytes=MAX_EXPORT_BYTES, max_files=MAX_EXPORT_FILES)
        # The same pytest options as in the container, so that only the container differs.
        selfcheck.run_lab_tests(lab, folder, work / "host" / f"{student}.json", extra_args=grade.GRADING_ARGS)
    host = time.monotonic() - host_started

    pool = LocalPool(docker_backend().grade)
    n_jobs = pool.slots_for(Resources.of_lab(lab))
    timings, scores = {1: [], n_jobs: []}, {}
    # Alternate the two settings and keep each one's best round: the machine is shared and noisy.
    for _ in range(rounds):
        for jobs in (1, n_jobs):
            started = time.monotonic()
            outcome = run_batch(lab, subs, work / f"out-{jobs}", jobs=jobs, force=True, stream=io.StringIO())
            timings[jobs].append(time.monotonic() - started)
            scores[jobs] = {row["student_id"]: row.get("score") for row in outcome.rows}
    timings = {jobs: min(rounds_seconds) for jobs, rounds_seconds in timings.items()}
    result = {
        "lab": lab.id, "submissions": size, "jobs": n_jobs,
        "host_seconds": round(host, 1), "one_job_seconds": round(timings[1], 1),
        "n_jobs_seconds": round(timings[n_jobs], 1),
        "submissions_per_minute": round(size / timings[n_jobs] * 60, 1),
        "container_overhead_seconds": round((timings[1] - host) / size, 2),
        "parallel_efficiency": round(timings[1] / (n_jobs * timings[n_jobs]), 2),
        "same_scores": scores[1] == scores[n_jobs],
    }
    print(f"{lab.id}: {size} submissions ({', '.join(sorted(set(students.values())))})", file=stream)
    print(f"  host, no container, 1 at a time: {result['host_seconds']} s", file=stream)
    print(f"  batch --jobs 1:                  {result['one_job_seconds']} s (best of {rounds})", file=stream)
    print(f"  batch --jobs {n_jobs}:                  {result['n_jobs_seconds']} s (best of {rounds})", file=stream)
    print(f"  throughput:          {result['submissions_per_minute']} submissions/min with {n_jobs} jobs", file=stream)
    print(f"  container overhead:  {result['container_overhead_seconds']} s per submission", file=stream)
    print(f"  parallel efficiency: {result['parallel_efficiency']} (throughput with {n_jobs} jobs over "
          f"{n_jobs} x throughput with 1)", file=stream)
    if not result["same_scores"]:
        diff = {k: (scores[1][k], scores[n_jobs][k]) for k in scores[1] if scores[1][k] != scores[n_jobs].get(k)}
        print(f"  WARNING: scores differ between 1 and {n_jobs} jobs: {diff}", file=stream)
    return result


# -- command line -------------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("submissions", type=Path, help="folder of student entries (folders or archives), or a .zip of them")
    parser.add_argument("--lab", required=True, help="lab id (lab3), folder name or path")
    parser.add_argument("--out", type=Path, required=True, help="output folder: OUT/<student>/, gradebook.csv, summary.*")
    parser.add_argument("--jobs", type=int, default=None, help="at most N submissions at once (default: as many as the cores allow)")
    parser.add_argument("--force", action="store_true", help="regrade every submission, even unchanged ones")
    parser.add_argument("--manifest", type=Path, help="CSV with student_id and submitted_at columns")
    parser.add_argument("--policy", type=Path, help="late policy (YAML); see grader/gradebook.py")
    parser.add_argument("--image", help="runner image (default: the grader's)")
    parser.add_argument("--cluster", metavar="tcp://HOST:8786",
                        help="grade on the workers of this Dask scheduler (see `python -m grader worker`)")
    parser.add_argument("--lang", choices=i18n.LANGUAGES, default=None,
                        help="language of the students' reports and of summary.html (default: IPCLAB_LANG, then the locale)")


def _cluster(args):
    """The Dask executor and the backend that asks the workers (not this machine) for image and Ctrl-C."""
    from grader import cluster

    lang = i18n.language(args.lang)  # the workers write each student's reports in it
    executor = cluster.DaskExecutor(args.cluster, lang=lang)
    backend = dataclasses.replace(docker_backend(lang), image_id=lambda: executor.image_id(args.image),
                                  stop_all=executor.stop_all)
    return executor, backend


def main(args) -> int:
    try:
        lab = labs.find_lab(args.lab)
        if not args.submissions.exists():
            raise FileNotFoundError(f"no such folder or file: {args.submissions}")
        policy = gradebook.LatePolicy.load(args.policy) if args.policy else None
        manifest = gradebook.load_manifest(args.manifest, policy.tz if policy else dt.timezone.utc) if args.manifest else None
    except (labs.LabError, gradebook.PolicyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    executor = backend = None
    try:
        if args.cluster:
            executor, backend = _cluster(args)
        outcome = run_batch(lab, args.submissions, args.out, jobs=args.jobs, force=args.force,
                            policy=policy, manifest=manifest, image=args.image,
                            backend=backend, executor=executor, lang=getattr(args, "lang", None))
    except (RuntimeError, UnpackError) as exc:  # cluster.ClusterError is a RuntimeError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before grading started: nothing to clean up
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if executor is not None:
            executor.close()
    if not outcome.interrupted:
        counts = outcome.summary["counts"]
        print(f"{lab.id}: {counts['graded']}/{counts['students']} graded ({len(outcome.graded)} now, "
              f"{len(outcome.reused)} kept), {counts['full']} full marks, {outcome.not_graded} not graded; "
              f"see {args.out / 'summary.html'}")
    return outcome.exit_code


if __name__ == "__main__":  # python -m grader.batch bench --lab lab2 [--size 12]  (make bench-grade)
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m grader.batch")
    parser.add_argument("what", choices=["bench"])
    parser.add_argument("--lab", default="lab2")
    parser.add_argument("--size", type=int, default=12, help="submissions in the generated class")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of --jobs 1 and --jobs N")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ipclab-bench-grade-") as tmp:
        result = bench(labs.find_lab(options.lab), options.size, Path(tmp), rounds=options.rounds)
    sys.exit(0 if result["same_scores"] else 1)
