"""A process supervisor: keep a few commands running, driven entirely by signals.

    python supervisor.py [--max-restarts N] [--grace S] [--status-file F] -- CMD [ARG...] [--- CMD [ARG...]]...

Signals are how UNIX tells a process that something happened:

    SIGCHLD          a child exited: reap it (and restart it if it failed)
    SIGTERM, SIGINT  stop: SIGTERM every child, SIGKILL whoever is left after
                     ``grace`` seconds, reap them all, return 0
    SIGHUP           restart every child
    SIGUSR1          write a JSON status report to ``status_path``

A signal can arrive at any moment, even in the middle of writing a file, so
the handlers do nothing at all. ``signal.set_wakeup_fd`` makes Python's C-level
handler write the signal's number, one byte, into a pipe; the main loop sleeps
in ``select`` on that pipe and handles each event in turn, in plain code where
nothing can interrupt it half-way. No flag polling, no busy loop: an idle
supervisor uses no CPU.

Two facts about SIGCHLD shape the reaping code:

* Standard signals do not queue. If fifty children exit before we run, we may
  see one SIGCHLD. So each SIGCHLD means "some children exited": call
  ``waitpid(-1, WNOHANG)`` until it says there are no more.
* A child that exited stays a zombie (an entry in the process table holding
  its exit status) until its parent waits for it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time

EVENTS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
# Python ignores these at start-up; a child must get the default behaviour back.
_RESET_IN_CHILD = (signal.SIGPIPE, signal.SIGXFSZ)


class Child:
    """One supervised command and the process currently running it."""

    def __init__(self, command: list[str]):
        self.command = command
        self.pid: int | None = None
        self.restarts = 0
        self.state = "stopped"  # running, exited (status 0) or failed (gave up)

    def start(self) -> bool:
        """Start the command; False when it cannot be started at all."""
        try:
            # posix_spawnp is fork + exec in one call, and tells us here, in the
            # parent, when the program cannot be run.
            self.pid = os.posix_spawnp(self.command[0], self.command, os.environ,
                                       setsigdef=_RESET_IN_CHILD, setsigmask=())
        except OSError as exc:
            print(f"supervisor: cannot start {self.command[0]!r}: {exc.strerror}", file=sys.stderr)
            self.pid = None
            return False
        self.state = "running"
        return True

    def status(self) -> dict:
        return {"command": self.command, "pid": self.pid, "restarts": self.restarts, "state": self.state}


class Supervisor:
    """Start ``commands`` as children and keep them running, until told to stop."""

    def __init__(self, commands: list[list[str]], *, max_restarts: int = 3, grace: float = 2.0,
                 status_path: str | os.PathLike | None = None):
        """Supervise ``commands`` (each an argv list).

        A child that exits abnormally (non-zero status, or killed by a signal)
        is restarted, at most ``max_restarts`` times; on stop, children get
        ``grace`` seconds between SIGTERM and SIGKILL; SIGUSR1 writes a JSON
        status report to ``status_path`` (when given).
        """
        if not commands or not all(commands):
            raise ValueError("nothing to supervise: every command needs at least a program name")
        self.children = [Child(list(command)) for command in commands]
        self.max_restarts = max_restarts
        self.grace = grace
        self.status_path = os.fspath(status_path) if status_path is not None else None
        self.started_at = time.monotonic()
        self._stop_requested = False
        self._wakeup_r = self._wakeup_w = -1
        self._old_handlers: dict[int, object] = {}

    # -- the main loop ----------------------------------------------------------------

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT; return 0 once every child is gone."""
        self._install_handlers()
        try:
            for child in self.children:
                self._start(child)
            while not self._stop_requested:
                for signum in self._wait_for_signals(timeout=None):
                    self._handle(signum)
            self._stop_all()
            return 0
        finally:
            self._restore_handlers()

    def _handle(self, signum: int):
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop_requested = True
        elif signum == signal.SIGCHLD:
            self._reap(restart=not self._stop_requested)
        elif self._stop_requested:
            pass  # stopping anyway: a restart would be undone at once
        elif signum == signal.SIGHUP:
            self._stop_all()
            if self._stop_requested:
                return
            for child in self.children:
                child.restarts = 0
                self._start(child)
        elif signum == signal.SIGUSR1:
            self.write_status()

    def _wait_for_signals(self, timeout: float | None) -> list[int]:
        """Sleep until a signal arrives (or ``timeout`` passes); the signals, oldest first."""
        ready, _, _ = select.select([self._wakeup_r], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self._wakeup_r, 4096)
        except BlockingIOError:
            return []
        # Several SIGUSR1 in a row need only one report; keep the first of each.
        return list(dict.fromkeys(data))

    # -- children ---------------------------------------------------------------------

    def _start(self, child: Child):
        """Start ``child``; a command that cannot start counts as a failed run."""
        while not child.start():
            if child.restarts >= self.max_restarts:
                child.state = "failed"
                return
            child.restarts += 1

    def _reap(self, restart: bool):
        """Collect every child that has exited: one SIGCHLD may stand for many."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return  # no children at all
            if pid == 0:
                return  # children left, none exited
            child = self._child_by_pid(pid)
            if child is not None:
                self._exited(child, os.waitstatus_to_exitcode(status), restart)

    def _exited(self, child: Child, code: int, restart: bool):
        child.pid = None
        if code == 0:
            child.state = "exited"
        elif restart and child.restarts < self.max_restarts:
            child.restarts += 1
            self._start(child)
        else:
            child.state = "failed"

    def _child_by_pid(self, pid: int) -> Child | None:
        return next((c for c in self.children if c.pid == pid), None)

    def _running(self) -> list[Child]:
        return [c for c in self.children if c.pid is not None]

    def _stop_all(self):
        """SIGTERM every child, give them ``grace`` seconds, SIGKILL the rest, reap all."""
        self._reap(restart=False)  # some may have exited already
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self._running() and time.monotonic() < deadline:
            for signum in self._wait_for_signals(timeout=max(0.0, deadline - time.monotonic())):
                if signum == signal.SIGCHLD:
                    self._reap(restart=False)
                elif signum in (signal.SIGTERM, signal.SIGINT):
                    self._stop_requested = True  # during a SIGHUP restart: stop for good after it
                elif signum == signal.SIGUSR1:
                    self.write_status()
        self._signal_all(signal.SIGKILL)
        for child in self._running():
            # SIGKILL cannot be caught: this wait is short.
            os.waitpid(child.pid, 0)
            child.pid, child.state = None, "failed"
        self._reap(restart=False)

    def _signal_all(self, signum: int):
        for child in self._running():
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass  # already exited; the next reap collects it

    # -- the status report ------------------------------------------------------------

    def status(self) -> dict:
        """What ``write_status`` writes: every child and the supervisor's uptime."""
        return {"uptime": time.monotonic() - self.started_at,
                "children": [child.status() for child in self.children]}

    def write_status(self):
        """Write the status atomically: readers see the old report or the new one, never half."""
        if self.status_path is None:
            return
        tmp = f"{self.status_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.status(), f)
        # rename() replaces the directory entry in one step; a reader that has
        # the old file open keeps reading the old, complete file.
        os.replace(tmp, self.status_path)

    # -- signal plumbing --------------------------------------------------------------

    def _install_handlers(self):
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in EVENTS:
            # The handler does nothing: the byte in the wakeup pipe is the event.
            self._old_handlers[signum] = signal.signal(signum, _ignore_here)

    def _restore_handlers(self):
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(-1)
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)


def _ignore_here(signum, frame):
    """Installed so the signal is caught (and lands in the wakeup pipe) instead of killing us."""


def parse_command_line(argv: list[str]) -> tuple[argparse.Namespace, list[list[str]]]:
    """Options before ``--``, then commands separated by ``---``."""
    parser = argparse.ArgumentParser(
        prog="supervisor.py",
        usage="%(prog)s [--max-restarts N] [--grace S] [--status-file F] -- CMD [ARG...] [--- CMD [ARG...]]...")
    parser.add_argument("--max-restarts", type=int, default=3)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--status-file", default=None)
    if "--" not in argv:
        parser.error("missing '--' before the commands")
    split = argv.index("--")
    options = parser.parse_args(argv[:split])
    commands: list[list[str]] = [[]]
    for arg in argv[split + 1:]:
        if arg == "---":
            commands.append([])
        else:
            commands[-1].append(arg)
    if not all(commands):
        parser.error("every command needs at least a program name")
    if options.max_restarts < 0 or options.grace < 0:
        parser.error("--max-restarts and --grace cannot be negative")
    return options, commands


def main(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv`` (default ``sys.argv[1:]``), supervise, return the exit status."""
    options, commands = parse_command_line(sys.argv[1:] if argv is None else argv)
    supervisor = Supervisor(commands, max_restarts=options.max_restarts, grace=options.grace,
                            status_path=options.status_file)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
