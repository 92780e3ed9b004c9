"""Helpers shared by lab 3's public tests.

Every ring gets a name of its own (``ipclab_<pid>_<random>``), so tests never
meet each other's rings, and whatever a test leaves in /dev/shm under that
name is removed in teardown, pass or fail (by the kit's leak check, which
also reports it, or here when that check is off). Programs a test starts are killed
and reaped in teardown too.
"""

import os
import select
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from grader.i18n import say

DEV_SHM = "/dev/shm"


def unique_name() -> str:
    return f"ipclab_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def remove_leftovers(token: str) -> None:
    """Delete /dev/shm entries whose name contains ``token`` (ours only).

    When the kit's leak check runs (it sets IPCLAB_DIAG_DIR), leave them to it:
    it reports each one to the student ("left /dev/shm/sem...: call unlink()")
    and then removes it.
    """
    if os.environ.get("IPCLAB_DIAG_DIR"):
        return
    for entry in os.listdir(DEV_SHM):
        if token in entry:
            try:
                os.unlink(os.path.join(DEV_SHM, entry))
            except FileNotFoundError:
                pass


@pytest.fixture
def ring_name():
    name = unique_name()
    yield name
    remove_leftovers(name)


@pytest.fixture
def ringbuffer(impl):
    return impl.load("ringbuffer")


class Programs:
    """Separate Python programs that import the implementation under test."""

    def __init__(self, impl):
        self.impl = impl
        self.started: list[subprocess.Popen] = []
        self.before = {p.pid for p in psutil.Process().children(recursive=True)}

    def start(self, script: str, *args) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)], env=self.impl.env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.started.append(proc)
        return proc

    def kill_all(self):
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.started:
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                pass
        # A program that used SharedMemory started a resource tracker; when the
        # program exits, the tracker is handed to us (the test process is a
        # subreaper). Let it finish its clean-up, then collect its exit status.
        ours = _own_resource_tracker()
        orphans = [p for p in psutil.Process().children(recursive=True)
                   if p.pid not in self.before and p.pid != ours]
        _, alive = psutil.wait_procs(orphans, timeout=5)
        for proc in alive:
            proc.kill()
        psutil.wait_procs(alive, timeout=5)


def _own_resource_tracker() -> int | None:
    """The pid of this process's resource tracker, which must live on."""
    from multiprocessing import resource_tracker
    return getattr(resource_tracker._resource_tracker, "_pid", None)


@pytest.fixture
def programs(impl):
    started = Programs(impl)
    yield started
    started.kill_all()


def read_line(proc: subprocess.Popen, timeout: float) -> str | None:
    """The next line ``proc`` prints, or None if none comes within ``timeout`` s."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    return proc.stdout.readline().rstrip("\n")


def finish(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """Wait for ``proc`` to exit 0 and return its output; fail clearly otherwise."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(say("{what} did not finish within {timeout} s (blocked for ever?): {stderr}",
                        what=what, timeout=timeout, stderr=err.strip()[-500:]))
    if proc.returncode != 0:
        pytest.fail(say("{what} failed (exit {code}): {stderr}", what=what, code=proc.returncode,
                        stderr=err.strip()[-800:]))
    return out


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
