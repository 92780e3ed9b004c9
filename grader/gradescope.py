"""A Gradescope autograder for one lab: ``python -m grader gradescope --lab lab3`` -> ``dist/gradescope-lab3.zip``.

Gradescope's format (https://gradescope-autograders.readthedocs.io/en/latest/specs/):
the zip holds ``setup.sh`` and ``run_autograder`` at its root. Gradescope
unzips it into ``/autograder/source``, runs ``setup.sh`` once as root when it
builds the assignment's image (Ubuntu, apt-get and network available), then
for each submission runs ``/autograder/run_autograder`` with the student's
files in ``/autograder/submission`` and reads
``/autograder/results/results.json``.

What the zip holds (nothing else: no reference solution)::

    setup.sh            apt packages, Python >= 3.11, a venv in /opt/ipclab-venv, a student user
    run_autograder      runs ``python -m grader.gradescope run`` from that venv
    requirements.txt    what the tests and the grader import
    kit/                the kit's grader package and start-up hook, the lab's
                        lab.yaml and public tests, hidden.yaml and hidden tests,
                        gradescope.json ({lab, kit_version})

How a submission is scored (the container grader's design, without Docker)
--------------------------------------------------------------------------
``run`` (root) does what ``grader.grade`` does on the host: it collects the
expected tests without the submission, takes the submission's files with
``grader.submission.prepare`` exactly as the container grader does (the lab's
modules at the top or one folder down, with any helper files beside them;
archives checked before unpacking; nothing of it run as root), and computes the score from lab.yaml/hidden.yaml and verified results with
``grader.reports`` (the results.json it writes is ``reports.gradescope``,
the same conversion the container grader uses; hidden tests are
``after_published``).

``supervise`` (a root child process) plays the part of the container's
harness: it starts pytest with the kit's two plugins **as an unprivileged
user** (``ipclab-student``), hands it a random key on a pipe, checks every
signed result line with ``grader.harness.Channel`` and writes the good ones
to its stdout, which only ``run`` reads. The submission cannot signal or
ptrace either root process, cannot write the results (``/autograder`` is
closed to it while it runs), and a wall-clock limit (``grader.sandbox``'s)
ends the run. Afterwards every process of the student user is killed.

What Gradescope's container does not give us, said plainly: no memory or
network limit of our own (Gradescope's container has its limits; the tests
are the OOM killer's first choice), the
process limit is the student user's RLIMIT_NPROC rather than a cgroup, and
the submission can read the test files (as in the container grader).
When the kit cannot grade (collection fails, results lost), no results.json
is written and ``run_autograder`` fails: Gradescope then shows an autograder
error, never a zero.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from grader import labs

SOURCE = Path("/autograder/source")
VENV = Path("/opt/ipclab-venv")
STUDENT_USER = "ipclab-student"
_PR_SET_CHILD_SUBREAPER = 36
KIT, WORK, SUBMISSION_COPY = Path("/kit"), Path("/work"), Path("/work/submission")
REQUIREMENTS = ["pytest>=7.4", "pytest-timeout>=2.2", "PyYAML>=6", "Jinja2>=3.1", "psutil>=5.9",
                "posix_ipc>=1.1", "redis>=5", "matplotlib>=3.7", "numpy", "async-timeout>=4.0.3"]
APT_PACKAGES = ["procps", "redis-tools", "passwd"]
# The grader modules run_autograder needs (the plugin and what it imports, the scoring); the
# batch, cluster and image-building modules stay out of the zip.
KIT_MODULES = {"__init__.py", "labs.py", "plugin.py", "sandbox_plugin.py", "diagnostics.py", "i18n.py",
               "harness.py", "grade.py", "image.py", "sandbox.py", "submission.py", "reports.py", "gradescope.py"}

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in @APT@; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Python 3.11 or newer with venv: Ubuntu 24.04's python3 (3.12) may lack only its -venv package;
# Ubuntu 22.04's python3 is 3.10, so python3.11 comes from apt.
PY=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY=$(command -v "$candidate"); break
  fi
done
if [ -z "$PY" ]; then
  missing+=(python3.11 python3.11-venv)
elif ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=("$(basename "$PY")-venv")
fi
if ((${#missing[@]})); then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
[ -n "$PY" ] || PY=$(command -v python3.11)
"$PY" -m venv @VENV@
# PIP_INDEX_URL / PIP_FIND_LINKS / PIP_NO_INDEX from the environment are honoured (offline tests).
@VENV@/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
id -u @USER@ >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin @USER@
echo "ipclab: autograder set up with $("$PY" --version)"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this, as root, for each submission (see grader/gradescope.py).
set -uo pipefail
export PYTHONPATH=/autograder/source/kit IPCLAB_KIT=/autograder/source/kit PYTHONDONTWRITEBYTECODE=1
# The kit is not pip-installed here: the collection of the expected tests (grader.grade.expected_tests)
# loads its plugins by name, as the container grader's pytest does.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTEST_ADDOPTS="-p grader.plugin -p pytest_timeout"
exec @VENV@/bin/python -m grader.gradescope run
"""


# -- building the zip -------------------------------------------------------------------------


def build_zip(lab: labs.Lab, out_dir: Path) -> Path:
    """Write ``out_dir/gradescope-<lab id>.zip`` and return its path."""
    from grader import grade, image, sandbox

    grade.expected_tests(lab)  # fail here, not on Gradescope, if the tests do not collect
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"gradescope-{lab.id}.zip"
    with tempfile.TemporaryDirectory(prefix="ipclab-gradescope-") as tmp:
        kit = Path(tmp) / "kit"
        output_cap = sandbox.parse_size(sandbox.limits_for(lab.resources, []).output)
        grade.stage_kit(lab, kit, grade.container_pytest_args(lab, None), output_cap)
        for module in (kit / "grader").glob("*.py"):
            if module.name not in KIT_MODULES:
                module.unlink()
        (kit / "gradescope.json").write_text(json.dumps({"lab": lab.name, "kit_version": image.kit_version()}))
        scripts = {"setup.sh": _fill(SETUP_SH), "run_autograder": _fill(RUN_AUTOGRADER),
                   "requirements.txt": "\n".join(REQUIREMENTS) + "\n"}
        partial = target.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, text in scripts.items():
                _add(zf, name, text.encode(), 0o755 if name != "requirements.txt" else 0o644)
            for path in sorted(kit.rglob("*")):
                if path.is_file():
                    _add(zf, str(path.relative_to(tmp)), path.read_bytes(), 0o644)
        os.replace(partial, target)
    return target


def _fill(template: str) -> str:
    return (template.replace("@APT@", " ".join(APT_PACKAGES)).replace("@VENV@", str(VENV))
            .replace("@USER@", STUDENT_USER))


def _add(zf: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


# -- grading one submission on Gradescope ---------------------------------------------------


def run(source: Path = SOURCE, autograder: Path = Path("/autograder")) -> int:
    """Grade ``/autograder/submission`` into ``/autograder/results/results.json`` (root, on Gradescope)."""
    from grader import grade, reports, sandbox, submission as submissions

    started = time.time()
    config = json.loads((source / "kit" / "gradescope.json").read_text())
    if os.geteuid() != 0:
        print("error: run_autograder runs as root inside Gradescope's container only", file=sys.stderr)
        return 2
    lab = labs.load_lab(source / "kit" / "labs" / config["lab"])
    results_file = autograder / "results" / "results.json"
    results_file.unlink(missing_ok=True)
    ctx = reports.Context(lab=lab, submission=autograder / "submission", student_id="submission",
                          kit_version=config["kit_version"], image_tag="gradescope", started_at=started)
    try:
        ctx.submission_sha256 = submissions.submission_hash(ctx.submission)
        ctx.expected = grade.expected_tests(lab)
        limits = sandbox.limits_for(lab.resources, [lab.timeout_for(labs.test_key(e)) for e in ctx.expected])
        ctx.limits = limits.as_dict()
        with tempfile.TemporaryDirectory(prefix="ipclab-") as tmp:
            prepared = submissions.prepare(ctx.submission, lab.modules, Path(tmp) / "in")
            ctx.problems += prepared.problems
            ctx.notes += prepared.notes
            if prepared.runnable:
                t0 = time.monotonic()
                ctx.run = run_tests(source / "kit", prepared.folder, limits, autograder)
                ctx.timings["container_seconds"] = round(time.monotonic() - t0, 3)
            else:
                ctx.not_run_reason = "; ".join(prepared.problems) or "the submission could not be used"
    except grade.GraderError as exc:
        ctx.grader_error(str(exc))
    except Exception as exc:  # the kit's bug must show as an autograder failure, not a zero
        ctx.grader_error(f"internal error: {type(exc).__name__}: {exc}")
    report = reports.build(ctx, finished_at=time.time())
    print(f"{lab.id}: {report['score']:g}/{report['max_score']:g} {report['reason']}")
    for row in report["tests"]:
        print(f"  {row['points']:>6g}/{row['max']:<4g} {row['status']:<9} {row['name']}")
    if report["status"] != "graded":
        print(f"NOT GRADED (the autograder's fault, not the student's): {report['reason']}", file=sys.stderr)
        return 3
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(reports.gradescope(report), indent=2, ensure_ascii=False))
    return 0


def student_ids() -> tuple[int, int]:
    """uid and gid of the unprivileged user the tests run as (created by setup.sh, or here)."""
    try:
        entry = pwd.getpwnam(STUDENT_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", STUDENT_USER],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(STUDENT_USER)
    return entry.pw_uid, entry.pw_gid


def run_tests(kit_source: Path, submission: Path, limits, autograder: Path):
    """Run the lab's tests as the student user under ``supervise``; a ``sandbox.RunResult``."""
    from grader import sandbox

    uid, gid = student_ids()
    kill_user(uid)  # nothing of an earlier run may linger
    # The container's layout: the kit read-only (root's) at /kit, the submission's copy in /work.
    shutil.rmtree(KIT, ignore_errors=True)
    shutil.copytree(kit_source, KIT)
    shutil.rmtree(SUBMISSION_COPY, ignore_errors=True)
    WORK.mkdir(exist_ok=True)
    shutil.copytree(submission, SUBMISSION_COPY)
    shutil.rmtree(WORK / "tmp", ignore_errors=True)
    (WORK / "tmp").mkdir()  # the tests' TMPDIR: /tmp holds root's files from the collection
    for path in [WORK, WORK / "tmp", *SUBMISSION_COPY.rglob("*"), SUBMISSION_COPY]:
        os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(WORK, 0o700)
    autograder_mode = autograder.stat().st_mode
    os.chmod(autograder, 0o700)  # results, submission and source: closed to the tests
    config = json.dumps({"uid": uid, "gid": gid, "pids": limits.pids, "nofile": limits.nofile})
    cmd = [sys.executable, "-m", "grader.gradescope", "supervise", config]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(KIT), "IPCLAB_KIT": str(KIT),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    started = time.monotonic()
    errors = tempfile.TemporaryFile()  # a file, not a pipe: a long traceback must not block the supervisor
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                            env=env, cwd="/")
    lines, unparsed, killed = [], 0, False
    try:
        stdout, killed = _read_until(proc, started + limits.wall_clock)
        if killed:  # the lines read so far still count, as when the container grader kills a container
            kill_user(uid)  # the tests first: the supervisor then reaps them, says "end" and exits
            rest, late = _read_until(proc, time.monotonic() + 10)
            stdout += rest
            if late:
                proc.kill()
                stdout += proc.stdout.read()
        for raw in stdout.splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                unparsed += 1
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
        errors.close()
        kill_user(uid)
        remove_ipc_of(uid)
        os.chmod(autograder, stat.S_IMODE(autograder_mode))
    return sandbox.RunResult(lines=lines, exit_code=proc.returncode, wall_clock_killed=killed, oom_killed=False,
                             seconds=round(time.monotonic() - started, 3), host_stats={},
                             stderr_tail=stderr[-2000:], unparsed_lines=unparsed)


def _read_until(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bool]:
    """What the supervisor wrote to stdout by its end or the deadline, and whether the deadline came first."""
    chunks = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), True
        if not selector.select(timeout=min(left, 1.0)):
            continue
        data = os.read(proc.stdout.fileno(), 1 << 16)
        if not data:
            return b"".join(chunks), False
        chunks.append(data)


def kill_user(uid: int, rounds: int = 20) -> None:
    """SIGKILL every process of ``uid``: kill(-1) sent *as that user* reaches exactly its processes."""
    for _ in range(rounds):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setuid(uid)  # as root: real, effective and saved uid all become the student's
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            os._exit(0)
        os.waitpid(pid, 0)
        if not _processes_of(uid):
            return
        time.sleep(0.05)


def _processes_of(uid: int) -> list[int]:
    """Live processes of ``uid`` (zombies are dead already: only their parent can reap them)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid != uid:
                    continue
                with open(f"/proc/{name}/stat", "rb") as f:
                    state = f.read().rpartition(b")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state != b"Z":
                found.append(int(name))
    return found


def remove_ipc_of(uid: int) -> None:
    """POSIX shared memory and semaphores the tests left in /dev/shm."""
    shm = Path("/dev/shm")
    for path in shm.iterdir() if shm.is_dir() else []:
        try:
            if path.lstat().st_uid == uid:
                path.unlink()
        except OSError:
            continue


def supervise(config: dict) -> int:
    """The harness's job, as root outside a container: pytest as the student, lines on stdout.

    Emits the same lines as ``grader/harness.py`` (``start``, ``collected``,
    ``result``, ``broken``, ``tamper``, ``done``, ``out``, ``end``), so
    ``grader.reports`` reads them unchanged.
    """
    from grader import harness

    # Orphans of the tests (daemons, a fork bomb's children) become ours, so they are reaped, not zombies.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    run_config = json.loads((KIT / "run.json").read_text())
    harness.emit("start", pid=os.getpid(), time=time.time())
    key, result_r, result_w, key_r = harness.result_channel()
    env = harness.child_env(f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", str(KIT),
                           result_w, key_r, TMPDIR=str(WORK / "tmp"))

    def limit_student():
        resource.setrlimit(resource.RLIMIT_NPROC, (config["pids"], config["pids"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (config["nofile"], config["nofile"]))

    # No memory cgroup of our own here: if the tests exhaust Gradescope's container, the kernel's
    # OOM killer must take them, not the grader. pytest inherits the score set around its start.
    _oom_score_adj(1000)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *run_config["pytest_args"]],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            pass_fds=(result_w, key_r), cwd=str(WORK), env=env, start_new_session=True,
                            user=config["uid"], group=config["gid"], extra_groups=[], preexec_fn=limit_student)
    _oom_score_adj(0)
    os.close(result_w)
    os.close(key_r)
    channel, output = harness.Channel(key), harness.Output(int(run_config["output_cap"]))
    peak = harness.pump(proc, result_r, channel, output, lambda: len(_processes_of(config["uid"])))
    status = proc.wait()
    leftovers = [{"pid": pid, "cmd": _cmdline(pid)} for pid in _processes_of(config["uid"])]
    kill_user(config["uid"])
    harness.reap()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats = {"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
             "peak_memory_bytes": usage.ru_maxrss * 1024, "peak_processes": peak}
    harness.emit("end", exit=status, dropped_output=output.dropped, kept_output=output.kept,
                 leftovers=[p for p in leftovers if p["cmd"]], stats=stats, time=time.time())
    return 0


def _oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:  # not fatal: only the choice of the OOM killer's victim
        pass


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:200]
    except OSError:
        return ""


# -- command line ---------------------------------------------------------------------------


def add_arguments(parser):
    parser.add_argument("--lab", required=True, help="lab id (lab3), folder name or path")
    parser.add_argument("--out", type=Path, default=Path("dist"), help="folder for gradescope-<lab>.zip (default: dist)")


def main(args) -> int:
    try:
        lab = labs.find_lab(args.lab)
    except labs.LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = build_zip(lab, args.out)
    print(f"{lab.id}: Gradescope autograder written to {path} (upload it as the assignment's autograder zip)")
    return 0


if __name__ == "__main__":  # inside Gradescope's container: run_autograder and its supervisor
    if sys.argv[1:2] == ["run"]:
        sys.exit(run())
    if sys.argv[1:2] == ["supervise"]:
        sys.exit(supervise(json.loads(sys.argv[2])))
    sys.exit("usage: python -m grader.gradescope run | supervise CONFIG   (or: python -m grader gradescope --lab LAB)")
