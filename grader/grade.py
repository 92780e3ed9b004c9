"""Grade one submission in a locked-down container and write its reports.

    python -m grader grade --lab lab1 SUBMISSION --out DIR
    make grade LAB=lab1 SUB=path

``grade_submission`` is the API (the batch grader calls it for each student).
It never raises: every run ends in one of two outcomes, kept apart in the
reports and in the exit status of the command:

* ``graded``: the submission was tested (perhaps to 0, with a sentence saying
  why when it could not run at all); exit status 0;
* ``grader_error``: the kit could not grade it (no engine, no image, results
  lost). That is the kit's fault and must never reach a student as a zero:
  only report.json and report.html are written (saying so), no results.json
  and no junit.xml; exit status 3.

How a score is made, and why a submission cannot forge it
----------------------------------------------------------
The submission's code is imported into the pytest process, so it can do
anything that process can. The design therefore trusts that process as
little as it can:

1. The expected tests are collected on the host (``pytest --collect-only``
   on the lab's tests, without the submission: tests import it lazily
   through the ``impl`` fixture). Points come from lab.yaml/hidden.yaml on
   the host. An expected test without a trustworthy result counts as failed;
   a result for an unknown test is ignored; a test reported twice fails.
2. In the container, PID 1 is the kit's harness (``grader/harness.py``),
   which the submission can neither signal nor ptrace. It hands pytest a
   random key on a pipe; the kit's ``grader.sandbox_plugin`` reads it before
   any submission code runs, sends the collected test ids, and signs each
   result as the test ends. The harness checks each line (signature,
   sequence, one result per test in collection order) and is the only writer
   of the container's stdout, which is all the host reads. Files the
   submission writes are never read.
3. A bad line, a result out of order or twice, or a change to pytest's
   machinery seen by the plugin breaks the channel, and then *no* result of
   the run counts, not even earlier ones: a forger's lies arrive before the
   kit notices. An attack can only lose points.
4. Test files are mounted read-only; the score is computed here.

What is *not* guaranteed: the submission runs inside the test process, so
code written against the kit itself (calling the plugin's sender and
silencing the real one, or digging the key out of memory, then undoing every
check) can forge results. No in-process design can prevent that; such code
is plain to read in the submission, which the instructor keeps. The
fixtures in ``tests/fixtures/attacks`` show that the common attacks
(``sys.exit``/``os._exit`` at import, killing the parent, rewriting tests, a
fake results file, forged lines on every fd, patching pytest, calling the
kit's sender without silencing it) gain nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from grader import image as runner_image
from grader import i18n, labs, reports, sandbox, submission as submissions

COLLECT_CACHE = Path(os.environ.get("IPCLAB_CACHE", Path.home() / ".cache" / "ipclab")) / "collect"
KIT_PACKAGE = Path(__file__).resolve().parent
GRADED, GRADER_ERROR = "graded", "grader_error"


@dataclasses.dataclass
class GradeResult:
    status: str          # "graded" or "grader_error"
    score: float
    max_score: float
    reason: str          # why: for grader errors, or a submission that could not run
    report: dict         # exactly what report.json holds
    out_dir: Path


class GraderError(Exception):
    """Something the kit needs is missing or broken; the message says what."""


# -- cache keys -----------------------------------------------------------------------


def tests_hash(lab: labs.Lab) -> str:
    """Hash of the lab's public and hidden tests and its yaml files."""
    digest = hashlib.sha256()
    files = [lab.folder / "lab.yaml", lab.reference_dir / "hidden.yaml"]
    for folder in (lab.public_tests_dir, lab.hidden_tests_dir):
        if folder.is_dir():
            files += sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(lab.folder.parent.parent)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def submission_hash(path: Path) -> str:
    """Content hash of a submission folder or archive."""
    return submissions.submission_hash(path)


def runner_image_id() -> str:
    """Id of the current runner image (raises image.ImageError when not built)."""
    return runner_image.runner_image_id()


# -- expected tests -------------------------------------------------------------------


def normalize(nodeid: str) -> str:
    """``labs/x/tests/test_a.py::test_b[1]`` -> ``test_a.py::test_b[1]`` (same on host and in container)."""
    path, sep, rest = nodeid.partition("::")
    return f"{Path(path).name}{sep}{rest}"


def test_paths(lab: labs.Lab, root: Path) -> list[Path]:
    """Where the lab's public and hidden tests are, under ``root`` laid out like the kit."""
    paths = [root / "labs" / lab.name / "tests"]
    if lab.hidden_tests_dir.is_dir():
        paths.append(root / "reference" / lab.name / "tests")
    return paths


def expected_tests(lab: labs.Lab) -> list[str]:
    """Normalized ids of every test case of the lab, collected without any submission."""
    cache = COLLECT_CACHE / f"{tests_hash(lab)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    with tempfile.TemporaryDirectory(prefix="ipclab-collect-") as tmp:
        (Path(tmp) / "pytest.ini").write_text("[pytest]\n")
        (Path(tmp) / "empty").mkdir()
        cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
               "-c", str(Path(tmp) / "pytest.ini"), "--rootdir", str(lab.folder.parent.parent),
               "--lab", str(lab.folder), "--impl", str(Path(tmp) / "empty"),
               *map(str, test_paths(lab, lab.folder.parent.parent))]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, stdin=subprocess.DEVNULL, timeout=300)
    ids = [normalize(line.strip()) for line in proc.stdout.splitlines()
           if "::" in line and line.strip().split("::")[0].endswith(".py") and " " not in line.strip()]
    if proc.returncode != 0 or not ids:
        raise GraderError(f"collecting {lab.id}'s tests failed (exit {proc.returncode}): "
                          f"{(proc.stdout + proc.stderr)[-1500:]}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cache.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # the batch grades in threads
    tmp_file.write_text(json.dumps(ids))
    os.replace(tmp_file, cache)
    return ids


# -- staging what the container sees --------------------------------------------------


def stage_kit(lab: labs.Lab, dest: Path, pytest_args: list[str], output_cap: int) -> None:
    """The read-only /kit: the kit's in-container modules, the lab's tests and yaml. No reference code."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    # The whole package: the plugin imports its siblings and reads their data
    # (start-up hooks, translations); the rest is never imported in there.
    shutil.copytree(KIT_PACKAGE, dest / "grader", ignore=ignore)
    lab_dest = dest / "labs" / lab.name
    lab_dest.mkdir(parents=True)
    shutil.copy(lab.folder / "lab.yaml", lab_dest / "lab.yaml")
    shutil.copytree(lab.public_tests_dir, lab_dest / "tests", ignore=ignore)
    if lab.has_hidden:
        ref_dest = dest / "reference" / lab.name
        ref_dest.mkdir(parents=True)
        shutil.copy(lab.reference_dir / "hidden.yaml", ref_dest / "hidden.yaml")
        if lab.hidden_tests_dir.is_dir():
            shutil.copytree(lab.hidden_tests_dir, ref_dest / "tests", ignore=ignore)
    (dest / "pytest.ini").write_text("[pytest]\n")
    (dest / "run.json").write_text(json.dumps({"pytest_args": pytest_args, "output_cap": output_cap}))
    _open_up(dest)


def _open_up(root: Path) -> None:
    """The container runs as uid 1000: everything staged must be readable by it."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for filename in filenames:
            os.chmod(Path(dirpath) / filename, 0o644)


# Stress tests run with random delays around fork, locks and writes (the seed
# is in the report). Anything that compares with grading runs tests with these.
GRADING_ARGS = ["--perturb-stress=random"]


def container_pytest_args(lab: labs.Lab, only_tests: list[str] | None) -> list[str]:
    args = ["-q", "-rN", "--tb=short", "-p", "grader.plugin", "-p", "grader.sandbox_plugin",
            "-p", "pytest_timeout", "-p", "no:cacheprovider", "-c", "/kit/pytest.ini", "--rootdir", "/kit",
            "--lab", f"/kit/labs/{lab.name}", "--impl", "/work/submission",
            *GRADING_ARGS]
    paths = [str(p) for p in test_paths(lab, Path("/kit"))]
    if not only_tests:
        return args + paths
    targets = []
    for key in only_tests:
        filename, _, name = key.partition("::")
        folder = next((p for p in test_paths(lab, lab.folder.parent.parent) if (p / filename).is_file()), None)
        if folder is not None:
            targets.append(f"/kit/{folder.relative_to(lab.folder.parent.parent)}/{filename}::{name}")
    return args + targets


# -- the run --------------------------------------------------------------------------


def grade_submission(lab: labs.Lab, submission: Path, out_dir: Path, *, image: str | None = None,
                     cpuset: str | None = None, only_tests: list[str] | None = None,
                     student_id: str | None = None, lang: str | None = None) -> GradeResult:
    """Grade ``submission`` against ``lab`` and write the reports into ``out_dir``.

    ``only_tests`` (points keys such as ``"test_x.py::test_y"``) runs just
    those tests; ``cpuset`` pins the container (``"0"`` or ``"0-1"``);
    ``lang`` (``en``, ``ko``) is the reports' language (default: IPCLAB_LANG, then the locale).
    Never raises for a bad submission or a grader error: see the module doc.
    """
    started = time.time()
    submission, out_dir = Path(submission), Path(out_dir)
    ctx = reports.Context(lab=lab, submission=submission, student_id=student_id or _student_id(submission),
                          kit_version=runner_image.kit_version(), image_tag=image or runner_image.image_tag(),
                          started_at=started, only_tests=only_tests, lang=i18n.language(lang))
    try:
        ctx.submission_sha256 = submission_hash(submission)
    except OSError as exc:
        ctx.problems.append(i18n.gettext("the submission cannot be read: {error}", ctx.lang).format(error=exc))
    try:
        with tempfile.TemporaryDirectory(prefix="ipclab-grade-") as tmp:
            _grade_in(ctx, Path(tmp), image, cpuset)
    except KeyboardInterrupt:
        raise
    except (GraderError, runner_image.ImageError, sandbox.SandboxError) as exc:
        ctx.grader_error(str(exc))
    except Exception as exc:  # a bug in the kit must not look like the student's zero
        ctx.grader_error(f"internal error: {type(exc).__name__}: {exc}")
    report = reports.build(ctx, finished_at=time.time())
    reports.write_all(report, out_dir)
    return GradeResult(status=report["status"], score=report["score"], max_score=report["max_score"],
                       reason=report["reason"], report=report, out_dir=out_dir)


def _student_id(submission: Path) -> str:
    name = submission.name
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _grade_in(ctx: reports.Context, tmp: Path, image: str | None, cpuset: str | None) -> None:
    lab = ctx.lab
    t0 = time.monotonic()
    expected = expected_tests(lab)
    if ctx.only_tests:
        unknown = sorted(set(ctx.only_tests) - set(lab.tests))
        if unknown:
            raise GraderError(f"{lab.id} has no tests called {', '.join(unknown[:5])}")
        expected = [e for e in expected if labs.test_key(e) in ctx.only_tests]
    ctx.expected = expected
    declared = [key for key in lab.tests if not ctx.only_tests or key in ctx.only_tests]
    uncollected = sorted(set(declared) - {labs.test_key(e) for e in expected})
    if uncollected:
        raise GraderError(f"{lab.id}'s yaml declares tests its test files do not have: {', '.join(uncollected[:5])}")
    ctx.timings["collect_seconds"] = round(time.monotonic() - t0, 3)
    timeouts = [lab.timeout_for(labs.test_key(e)) for e in expected]
    limits = sandbox.limits_for(lab.resources, timeouts)
    ctx.limits = limits.as_dict()

    prepared = submissions.prepare(ctx.submission, lab.modules, tmp / "in", lang=ctx.lang or None)
    ctx.problems += prepared.problems
    ctx.notes += prepared.notes
    if not prepared.runnable:
        ctx.not_run_reason = "; ".join(prepared.problems) or i18n.gettext("the submission could not be used", ctx.lang)
        return

    client = runner_image.docker_client()
    tag = image or runner_image.image_tag()
    ctx.image_id = runner_image.runner_image_id(tag)
    kit_dir = tmp / "kit"
    stage_kit(lab, kit_dir, container_pytest_args(lab, ctx.only_tests), sandbox.parse_size(limits.output))
    t1 = time.monotonic()
    ctx.run = sandbox.run(client, tag, kit_dir, prepared.folder, limits, cpuset=cpuset, name_hint=ctx.student_id)
    ctx.timings["container_seconds"] = round(time.monotonic() - t1, 3)


# -- command line ---------------------------------------------------------------------


def add_arguments(parser):
    parser.add_argument("submission", type=Path, help="folder, .zip or .tar.gz with the lab's module files")
    parser.add_argument("--lab", required=True, help="lab id (lab1), folder name or path")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json, results.json, junit.xml, report.html")
    parser.add_argument("--image", help="runner image (default: ipclab-runner:<kit version>)")
    parser.add_argument("--cpuset", help="pin the container to these CPUs, e.g. 0 or 0-1")
    parser.add_argument("--only", action="append", metavar="TEST", help="only this test key (repeatable)")
    parser.add_argument("--student", help="student id written in the reports (default: the submission's name)")
    parser.add_argument("--lang", choices=i18n.LANGUAGES, default=None,
                        help="language of the reports' hints and feedback (default: IPCLAB_LANG, then the locale)")


def main(args) -> int:
    try:
        lab = labs.find_lab(args.lab)
    except labs.LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not os.path.lexists(args.submission):  # a typo on the command line, not a student's empty hand-in
        print(f"error: {args.submission} does not exist", file=sys.stderr)
        return 2
    # SIGTERM cleans up like Ctrl-C: the container is removed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = grade_submission(lab, args.submission, args.out, image=args.image, cpuset=args.cpuset,
                                  only_tests=args.only, student_id=args.student, lang=getattr(args, "lang", None))
    except KeyboardInterrupt:
        print("interrupted: nothing was graded, the container was removed", file=sys.stderr)
        return 130
    if result.status == GRADED:
        print(f"{lab.id} {result.report['submission']['id']}: {result.score:g}/{result.max_score:g}"
              f"{'  (' + result.reason + ')' if result.reason else ''}  -> {result.out_dir}")
        return 0
    print(f"{lab.id} {result.report['submission']['id']}: NOT GRADED (grader error, not the student's fault): "
          f"{result.reason}  -> {result.out_dir}", file=sys.stderr)
    return 3
