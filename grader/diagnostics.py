"""Concurrency diagnostics: what a test left behind, and where a hung test was stuck.

A failing IPC test says "timeout" or, worse, nothing. This module turns that
into findings a student can act on:

* **Leaks.** :class:`LeakCheck` takes a snapshot before a test and compares
  after its teardown: processes still running or left as zombies, POSIX
  shared-memory segments and named semaphores (``/dev/shm``), POSIX message
  queues (``/dev/mqueue``, where it is mounted), FIFOs and socket files left
  in the test's temporary folder, and file descriptors the test process holds
  that it did not hold before. Each leftover becomes a :class:`Finding` and is
  cleaned up so the next test starts clean. What the test created itself it
  removes in its own teardown, which runs before the check, so only what the
  code under test left is blamed.

* **Stacks of a hung test.** Every Python process of the run registers
  :mod:`faulthandler` on :data:`DUMP_SIGNAL` (the test process here, forked
  children through :func:`os.register_at_fork`, and every other Python program
  through the ``sitecustomize`` in ``grader/startup/``). On a timeout,
  :func:`capture_stacks` asks each of them for its stack before anything is
  killed; a process that is not Python (``cat``, ``sleep``) is described by
  the kernel function it sleeps in.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import stat
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from pathlib import Path

import psutil

# A real-time signal: nothing in the labs uses it, and a process that has no
# handler for it is never sent it (see _catches). Same as startup/ipclab_dump.py.
DUMP_SIGNAL = signal.SIGRTMIN + 5
DIAG_DIR_ENV = "IPCLAB_DIAG_DIR"
STARTUP_DIR = Path(__file__).with_name("startup")
SHM_DIR = Path("/dev/shm")
MQUEUE_DIR = Path("/dev/mqueue")
RUNTIME_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def N_(message: str) -> str:
    """Marks a message for the catalog (grader/i18n.py); translated when shown."""
    return message


@dataclasses.dataclass
class Finding:
    """Something a test left behind, with what to do about it."""

    kind: str  # process, zombie, shm, semaphore, mqueue, fifo, socket, fd
    what: str  # a message template, filled from ``details``
    advice: str
    details: dict = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.text()

    def text(self, _=lambda message: message) -> str:
        """``what: advice`` in the student's language (``_`` is a gettext function)."""
        return f"{_(self.what).format(**self.details)}: {_(self.advice)}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- processes ---------------------------------------------------------------------


def descendants() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


def is_runtime_helper(proc: psutil.Process) -> bool:
    """Python's own long-lived helpers (resource tracker, forkserver)."""
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(helper in cmdline for helper in RUNTIME_HELPERS)


def describe(proc: psutil.Process) -> str:
    try:
        cmdline = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        try:
            cmdline = proc.name()  # a zombie has no command line any more
        except psutil.Error:
            cmdline = "?"
    if len(cmdline) > 80:
        cmdline = cmdline[:77] + "..."
    return f"pid {proc.pid} ({cmdline})"


def kill_and_reap(procs) -> None:
    """SIGKILL each process, then reap every child of ours that has exited."""
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(list(procs), timeout=5)
    reap_children()


def reap_children() -> None:
    """Collect the exit status of every exited child (zombies included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# -- leaks -----------------------------------------------------------------------------


def _listdir(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in _listdir(Path("/proc/self/fd")):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return fds


# multiprocessing's shared arena for Value/Array/Lock: open for the life of the process, by design.
_RUNTIME_FILES = ("/dev/shm/pym-",)


def _runtime_helper_fds() -> set[int]:
    """Pipes to Python's resource tracker or forkserver: opened once, kept on purpose."""
    fds = set()
    try:
        from multiprocessing import resource_tracker
        fds.add(resource_tracker._resource_tracker._fd)
    except (ImportError, AttributeError):
        pass
    try:
        from multiprocessing import forkserver
        fds.add(forkserver._forkserver._forkserver_alive_fd)
    except (ImportError, AttributeError):
        pass
    fds.discard(None)
    return fds


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _held_anywhere(paths: set[str]) -> set[str]:
    """Which of these /dev/shm files some live process still maps or holds open.

    Compared by inode, because glibc maps a named semaphore under a temporary
    name before linking it to its real one. On a shared machine another
    program's live segments appear in /dev/shm too; a leak is what nobody holds.
    """
    by_inode = {ino: path for path in paths if (ino := _inode(path)) is not None}
    held = set()
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    fields = line.split(maxsplit=5)
                    if len(fields) == 6 and "/dev/shm/" in fields[5] and int(fields[4]) in by_inode:
                        held.add(by_inode[int(fields[4])])
            for fd in os.listdir(f"/proc/{pid}/fd"):
                ino = _inode(f"/proc/{pid}/fd/{fd}")
                if ino in by_inode:
                    held.add(by_inode[ino])
        except (OSError, ValueError):
            continue
        if len(held) == len(by_inode):
            break
    return held


# Other kit test runs on the same machine register here, so that one run never
# blames (or removes) what another run's tests created in /dev/shm or /dev/mqueue.
SESSIONS_DIR = Path(tempfile.gettempdir()) / "ipclab-sessions"


def register_session() -> None:
    SESSIONS_DIR.mkdir(exist_ok=True)
    (SESSIONS_DIR / str(os.getpid())).touch()


def unregister_session() -> None:
    _remove(SESSIONS_DIR / str(os.getpid()))


def other_sessions_running() -> bool:
    for entry in _listdir(SESSIONS_DIR):
        if entry.isdigit() and int(entry) != os.getpid() and psutil.pid_exists(int(entry)):
            return True
    return False


def sessions_stamp() -> int:
    """Changes whenever a session starts or ends (the registry folder's mtime)."""
    try:
        return SESSIONS_DIR.stat().st_mtime_ns
    except OSError:
        return 0


def _special_files(folder: Path | None) -> dict[str, str]:
    """FIFOs and socket files under ``folder``: path -> kind."""
    found = {}
    if folder is None or not folder.is_dir():
        return found
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISFIFO(mode):
                found[path] = "fifo"
            elif stat.S_ISSOCK(mode):
                found[path] = "socket"
    return found


class LeakCheck:
    """Snapshot before a test; :meth:`findings` after its teardown, cleaning as it goes."""

    def __init__(self, tmp_folder: Path | None = None):
        self.procs = set(descendants())
        self.shm = _listdir(SHM_DIR)
        self.mqueue = _listdir(MQUEUE_DIR)
        self.fds = _open_fds()
        self.specials = _special_files(tmp_folder)
        self.tmp_folder = tmp_folder
        self.sessions = sessions_stamp()

    def findings(self, tmp_folder: Path | None = None) -> list[Finding]:
        found = self._processes()
        # /dev/shm and /dev/mqueue are shared by the whole machine: when another
        # kit run was alive, or started or ended, during this test, new names
        # there may be its own, so they are neither blamed nor removed.
        if not other_sessions_running() and sessions_stamp() == self.sessions:
            found += self._shm()
            found += self._mqueues()
        found += self._special_files(tmp_folder or self.tmp_folder)
        found += self._fds()
        return found

    def _processes(self) -> list[Finding]:
        new = [p for pid, p in descendants().items() if pid not in self.procs and not is_runtime_helper(p)]
        found = []
        for proc in new:
            try:
                zombie = proc.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                continue
            if zombie:
                found.append(Finding("zombie", N_("zombie {process}"),
                                     N_("it exited but its parent never waited for it (os.waitpid / join)"),
                                     {"process": describe(proc)}))
            else:
                found.append(Finding("process", N_("left running {process}"),
                                     N_("stop and wait for every process you start before returning"),
                                     {"process": describe(proc)}))
        kill_and_reap(new)
        return found

    def _shm(self) -> list[Finding]:
        new = {f"/dev/shm/{name}" for name in _listdir(SHM_DIR) - self.shm}
        if not new:
            return []
        leaked = new - _held_anywhere(new)
        found = []
        for path in sorted(leaked):
            if Path(path).name.startswith("sem."):
                found.append(Finding("semaphore", N_("left {path}"), N_("call unlink() on the named semaphore when done"), {"path": path}))
            else:
                found.append(Finding("shm", N_("left {path}"), N_("call unlink() on the shared memory segment when done"), {"path": path}))
            _remove(path)
        return found

    def _mqueues(self) -> list[Finding]:
        found = []
        for name in sorted(_listdir(MQUEUE_DIR) - self.mqueue):
            found.append(Finding("mqueue", N_("left message queue {name}"), N_("call unlink() on the queue when done"), {"name": f"/{name}"}))
            _remove(MQUEUE_DIR / name)
        return found

    def _special_files(self, tmp_folder: Path | None) -> list[Finding]:
        found = []
        for path, kind in sorted(_special_files(tmp_folder).items()):
            if path in self.specials:
                continue
            advice = N_("remove the FIFO (os.unlink) when the server closes") if kind == "fifo" else \
                N_("remove the socket file (os.unlink) when the server stops")
            what = N_("left FIFO {path}") if kind == "fifo" else N_("left socket file {path}")
            found.append(Finding(kind, what, advice, {"path": path}))
            _remove(path)
        return found

    def _fds(self) -> list[Finding]:
        ours = _runtime_helper_fds()
        found = []
        for fd, target in sorted(_open_fds().items()):
            # 0-2 are pytest's output capture, swapped for every test
            if fd <= 2 or fd in ours or self.fds.get(fd) == target or target.startswith(_RUNTIME_FILES):
                continue
            found.append(Finding("fd", N_("file descriptor {fd} ({target}) still open in the test process"),
                                 N_("close every file, pipe end and socket you open"), {"fd": fd, "target": target}))
        return found


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- stacks ------------------------------------------------------------------------------


def _dump_file(folder: Path, pid: int) -> Path:
    return folder / f"{pid}.stack"


def register_dump_handler(folder: Path) -> None:
    """Make this process (and its forked children) dump its stack on DUMP_SIGNAL."""
    folder.mkdir(parents=True, exist_ok=True)
    if str(STARTUP_DIR) not in sys.path:
        sys.path.insert(0, str(STARTUP_DIR))
    import ipclab_dump  # the same hook every child program runs at start-up

    ipclab_dump.install(str(folder))


def _catches(proc: psutil.Process, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return False
    match = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M)
    return bool(match) and bool(int(match.group(1), 16) >> (int(signum) - 1) & 1)


def _kernel_wait(proc: psutil.Process) -> str:
    try:
        wchan = Path(f"/proc/{proc.pid}/wchan").read_text().strip() or "?"
        state = proc.status()
    except (OSError, psutil.Error):
        return "gone"
    return f"{state}, waiting in kernel function {wchan}" if wchan not in ("0", "?") else state


def _this_process_stack(frame) -> str:
    lines = []
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, thread_frame in sys._current_frames().items():
        top = frame if ident == threading.main_thread().ident and frame is not None else thread_frame
        entries = [e for e in traceback.extract_stack(top) if not _is_plumbing(e.filename)]
        lines.append(f"Thread {names.get(ident, ident)} (most recent call first):")
        lines += [f'  File "{e.filename}", line {e.lineno} in {e.name}' for e in reversed(entries)]
    return "\n".join(lines)


_PLUMBING = (str(Path(__file__).resolve().parent) + os.sep, "/_pytest/", "/pluggy/", "pytest_timeout")


def _is_plumbing(filename: str) -> bool:
    """Frames of the kit and of pytest, which say nothing about the student's code."""
    return any(part in filename for part in _PLUMBING)


_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep


def _innermost_user_frame(stack_text: str) -> str | None:
    """Where the code under test is stuck: its innermost frame, and the library call it is in.

    E.g. ``_exchange at pipeline.py:141 (inside select)``: the kit's and
    pytest's frames are skipped, and a standard-library frame is named only
    as the call the student's code is waiting in.
    """
    inside = None
    for match in re.finditer(r'File "([^"]+)", line (\d+) in (\S+)', stack_text):
        filename, line, func = match.groups()
        if _is_plumbing(filename):
            continue
        if filename.startswith(_STDLIB) or filename.startswith("<frozen"):
            inside = inside or func
            continue
        where = f"{func} at {Path(filename).name}:{line}"
        return f"{where} (inside {inside})" if inside else where
    return inside


def capture_stacks(frame, folder: Path, wait: float = 1.0) -> str:
    """Stacks of this process and of every process it started, before any is killed."""
    sections = []
    own = _this_process_stack(frame)
    sections.append((f"test process {os.getpid()}", own))
    asked = {}
    for proc in descendants().values():
        if is_runtime_helper(proc):
            continue
        if _catches(proc, DUMP_SIGNAL):
            path = _dump_file(folder, proc.pid)
            before = path.stat().st_size if path.exists() else 0
            try:
                proc.send_signal(DUMP_SIGNAL)
                asked[proc] = (path, before)
            except psutil.Error:
                pass
        else:
            sections.append((f"child {describe(proc)}", f"not a Python program: {_kernel_wait(proc)}"))
    deadline = time.monotonic() + wait
    for proc, (path, before) in asked.items():
        text = ""
        while time.monotonic() < deadline:
            text = path.read_text(errors="replace")[before:] if path.exists() else ""
            if text.strip():
                time.sleep(0.02)  # let faulthandler finish writing
                text = path.read_text(errors="replace")[before:]
                break
            time.sleep(0.01)
        sections.append((f"child {describe(proc)}", text.strip() or f"no stack: {_kernel_wait(proc)}"))
    summary = []
    for title, text in sections:
        where = _innermost_user_frame(text)
        summary.append(f"{title} blocked in {where}" if where else f"{title}: {text.splitlines()[0] if text else '?'}")
    details = "\n\n".join(f"--- {title}\n{text}" for title, text in sections)
    return "\n".join(summary) + "\n\n" + details
