"""Helpers shared by lab 5's tests: start programs, watch them, signal them, clean up.

Every wait here is bounded: a broken submission fails a test with a message
that says what did not happen, it never hangs the suite.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from grader.i18n import say

PYTHON = sys.executable
COREUTILS_TIMEOUT = "/usr/bin/timeout"
POLL = 0.02

# A command that records every signal it receives, one name per line, in the
# file named by argv[1]. It announces itself with "ready <pid>" (on stdout and
# as the file's first line) once its handlers are installed, so a test never
# signals it too early. argv[2] says what it does after recording a signal:
#   die     die of that signal (default action), as most programs do
#   ignore  carry on (a command that ignores SIGTERM)
#   exit3   exit with status 3 (a command that cleans up and exits)
# SIGCONT is recorded but never ends it. It gives up after 30 s.
RECORDER = r"""
import os, signal, sys, time
out, mode = sys.argv[1], sys.argv[2]
fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
WATCHED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGALRM, signal.SIGCONT)
def on_signal(signum, frame):
    os.write(fd, (signal.Signals(signum).name + "\n").encode())
    if signum == signal.SIGCONT or mode == "ignore":
        return
    if mode == "exit3":
        os._exit(3)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
for watched in WATCHED:
    signal.signal(watched, on_signal)
os.write(fd, b"ready %d\n" % os.getpid())
print("ready", os.getpid(), flush=True)
time.sleep(30)
os._exit(99)
"""


def recorder(path: Path, mode: str = "die") -> list[str]:
    """argv of a command that records the signals it gets in ``path``."""
    return [PYTHON, "-c", RECORDER, str(path), mode]


def seen_signals(path: Path) -> set[str]:
    """Signals the recorder at ``path`` received. SIGCONT is left out: sending it is optional."""
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return set()
    return {line for line in lines if line.startswith("SIG") and line != "SIGCONT"}


def recorder_pid(path: Path) -> int | None:
    try:
        first = path.read_text().splitlines()[0]
    except (FileNotFoundError, IndexError):
        return None
    parts = first.split()
    return int(parts[1]) if len(parts) == 2 and parts[0] == "ready" and parts[1].isdigit() else None


def shell_status(returncode: int) -> int:
    """Exit status as a shell reports it: 128+N for a process that died of signal N.

    coreutils' timeout re-raises the signal its command died of (and kills
    itself with SIGKILL after -k), so Popen sees -N; a clone may exit(128+N)
    instead. Both mean the same to a caller.
    """
    return returncode if returncode >= 0 else 128 - returncode


def wait_until(condition, timeout: float, what, interval: float = POLL):
    """Poll ``condition()`` until it is truthy (returned) or ``timeout`` passes (test fails).

    ``what`` says what was awaited: a string, or a function that says it when
    the wait fails (so that the message describes the state at the end).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(say("{what} (waited {timeout:g} s)", what=_say(what), timeout=timeout), pytrace=False)
        time.sleep(interval)


def _say(what) -> str:
    return what() if callable(what) else what


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1][:200] if lines else ""


class Program:
    """A program under test, started with its stdout on a pipe and stderr in a file."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict | None = None):
        self.name = name
        self.stderr_path = workdir / f"{name}.{os.getpid()}.{time.monotonic_ns()}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, env=env)
        self.started = time.monotonic()
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe_exit(self) -> str:
        code = self.proc.poll()
        if code is None:
            return say("{name} is still running", name=self.name)
        why = last_line(self.stderr_path)
        return say("{name} exited {status}", name=self.name, status=shell_status(code)) + (f": {why}" if why else "")

    def read_line(self, timeout: float) -> str | None:
        """One line of stdout, or None at end of file or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def wait_ready(self, timeout: float = 10.0) -> int:
        """Wait for the recorder under this program to say "ready <pid>"; its pid."""
        line = self.read_line(timeout)
        if line is None or not line.startswith("ready "):
            try:
                self.proc.wait(2)  # at end of file it is exiting: let describe_exit say how
            except subprocess.TimeoutExpired:
                pass
            pytest.fail(say("the command under {name} never started: {exit}", name=self.name, exit=self.describe_exit()),
                        pytrace=False)
        return int(line.split()[1])

    def finish(self, timeout: float) -> int:
        """Wait for the program to exit; its shell-style status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(say("{name} did not exit within {timeout:g} s", name=self.name, timeout=timeout), pytrace=False)
        self.elapsed = time.monotonic() - self.started
        return shell_status(code)

    def kill_tree(self):
        """SIGKILL the program and everything under it, and reap the program."""
        try:
            family = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            family = []
        for proc in [self.proc, *family]:
            try:
                proc.kill()
            except (psutil.Error, ProcessLookupError):
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        psutil.wait_procs(family, timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


def kill_pids(pids, started: dict[int, float] | None = None):
    """SIGKILL stray processes by pid (e.g. a command its timeout abandoned).

    With ``started`` (pid -> start time), a pid now used by another process is left alone.
    """
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if started is not None and proc.create_time() != started.get(pid):
                continue
            proc.kill()
            procs.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


# -- the supervisor ------------------------------------------------------------------


def supervisor_argv(impl, options: list[str], commands: list[list[str]]) -> list[str]:
    argv = [PYTHON, str(impl.path("supervisor.py")), *options, "--"]
    for i, command in enumerate(commands):
        argv += (["---"] if i else []) + command
    return argv


class Supervised(Program):
    """A running supervisor, inspected from outside with psutil."""

    def __init__(self, argv: list[str], workdir: Path, env: dict | None = None):
        super().__init__("supervisor.py", argv, workdir, env)
        self.ps = psutil.Process(self.pid)
        self.seen_children: dict[int, float] = {}  # pid -> start time, to tell pid reuse apart

    def children(self) -> list[psutil.Process]:
        try:
            kids = self.ps.children()
        except psutil.Error:
            return []
        for kid in kids:
            try:
                self.seen_children.setdefault(kid.pid, kid.create_time())
            except psutil.Error:
                pass
        return kids

    def running(self, command: list[str] | None = None) -> list[psutil.Process]:
        """Live (non-zombie) children, optionally only those running ``command``."""
        found = []
        for kid in self.children():
            try:
                if kid.status() == psutil.STATUS_ZOMBIE:
                    continue
                if command is None or kid.cmdline() == command:
                    found.append(kid)
            except psutil.Error:
                pass
        return found

    def zombies(self) -> list[int]:
        found = []
        for kid in self.children():
            try:
                if kid.status() == psutil.STATUS_ZOMBIE:
                    found.append(kid.pid)
            except psutil.Error:
                pass
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, condition, timeout: float, what):
        """Like wait_until, but fails at once (and says why) if the supervisor exits."""
        def check():
            if not self.alive():
                pytest.fail(f"{_say(what)}: {self.describe_exit()}", pytrace=False)
            return condition()
        return wait_until(check, timeout, what)

    def wait_running(self, command: list[str], count: int = 1, timeout: float = 15.0) -> list[psutil.Process]:
        return self.wait_for(lambda: (found := self.running(command)) and len(found) >= count and found,
                             timeout, say("expected {count} running child(ren) {command!r}",
                                          count=count, command=" ".join(command)))

    def send(self, signum: int):
        os.kill(self.pid, signum)

    def request_status(self, path: Path, timeout: float = 10.0) -> dict:
        """Remove the status file, send SIGUSR1, wait for a fresh report; the parsed report."""
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        self.send(signal.SIGUSR1)

        def report():
            try:
                return json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                return None
        return self.wait_for(report, timeout, say("no valid JSON status in {file} after SIGUSR1", file=path.name))

    def leftovers(self) -> list[str]:
        """After the supervisor exited: children it left running or unreaped."""
        problems = []
        for pid, started in sorted(self.seen_children.items()):
            try:
                proc = psutil.Process(pid)
                if proc.create_time() != started:
                    continue  # the pid was reused by an unrelated process
                if proc.status() != psutil.STATUS_ZOMBIE:
                    problems.append(say("child {pid} ({command}) is still running", pid=pid, command=" ".join(proc.cmdline())))
                elif proc.ppid() == os.getpid():
                    problems.append(say("child {pid} exited but the supervisor never reaped it", pid=pid))
            except psutil.Error:
                pass
        return problems

    def stop(self, timeout: float) -> int:
        """SIGTERM, wait for exit; its exit status."""
        self.send(signal.SIGTERM)
        return self.finish(timeout)


def reap_orphans():
    """Reap zombies re-parented to the test process.

    The test process is a child subreaper: a command orphaned by its parent
    (coreutils' timeout kills itself along with its command) comes back to us.
    """
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


@pytest.fixture
def programs():
    """Programs a test starts; all killed and reaped at teardown, whatever happened."""
    started: list[Program] = []
    yield started
    for program in started:
        program.kill_tree()
        if isinstance(program, Supervised):
            kill_pids(program.seen_children, program.seen_children)
    reap_orphans()


def kill_recorder(path: Path):
    """Kill the recorder that writes to ``path`` if it still runs (its timeout abandoned it)."""
    pid = recorder_pid(path)
    if pid is None:
        return
    try:
        proc = psutil.Process(pid)
        if RECORDER in proc.cmdline():
            proc.kill()
            proc.wait(5)
    except (psutil.Error, psutil.TimeoutExpired):
        pass


# -- timeout.py and coreutils side by side ---------------------------------------------


class Outcome:
    """How one timeout program ended: status, seconds it took, signals its command saw."""

    def __init__(self, program: Program, status: int, record: Path):
        self.status = status
        self.elapsed = program.elapsed
        self.signals = seen_signals(record)
        self.exit = program.describe_exit()


def run_both(impl, workdir: Path, programs: list, make_args, *, ready: bool = False,
             send: int | None = None, limit: float = 10.0) -> tuple[Outcome, Outcome]:
    """Run timeout.py and coreutils' timeout on the same case, in parallel.

    ``make_args(record)`` gives the arguments after the program name; ``record``
    is where a recorder command writes the signals it sees. With ``ready``, wait
    for the command to say it is ready; with ``send``, then send that signal to
    each timeout program. Each must exit within ``limit`` seconds.
    """
    sides = {}
    for name, prefix in (("timeout.py", [PYTHON, str(impl.path("timeout.py"))]),
                         ("coreutils timeout", [COREUTILS_TIMEOUT])):
        record = workdir / f"{name.split()[0]}.signals"
        program = Program(name, prefix + make_args(record), workdir)
        programs.append(program)
        sides[name] = (program, record)
    try:
        if ready or send:
            for program, _ in sides.values():
                program.wait_ready()
        if send:
            for program, _ in sides.values():
                os.kill(program.pid, send)
        outcomes = [Outcome(program, program.finish(limit), record) for program, record in sides.values()]
    finally:
        for _, record in sides.values():
            kill_recorder(record)
    reap_orphans()
    return outcomes[0], outcomes[1]
