"""Helpers and fixtures shared by lab 1's tests (public and hidden).

The implementation is always reached through the plugin's ``impl`` fixture;
every wait is bounded, and every process a test starts is killed and reaped
(here, and again by the ipclab plugin after each test).
"""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
import time

import psutil
import pytest

from grader.i18n import say

WAIT = 5.0  # seconds: generous bound for anything that should take milliseconds


@pytest.fixture
def pipeline(impl):
    return impl.load("pipeline")


@pytest.fixture
def fifo_log(impl):
    return impl.load("fifo_log")


def run(pipeline, commands, timeout=WAIT, **kwargs):
    """run_pipeline with a bound: a hang becomes a failure that names the pipeline."""
    try:
        return pipeline.run_pipeline(commands, timeout=timeout, **kwargs)
    except TimeoutError:
        shown = " | ".join(" ".join(c) for c in commands)
        pytest.fail(say("`{shown}` did not finish within {timeout} s (a stage waiting for end-of-file?)",
                        shown=shown, timeout=timeout),
                    pytrace=False)


def children() -> dict[int, psutil.Process]:
    """Our child processes, zombies included."""
    return {p.pid: p for p in psutil.Process().children()}


def describe(procs) -> str:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {p.name()} ({p.status()})")
        except psutil.Error:
            out.append(say("{pid} (gone)", pid=p.pid))
    return ", ".join(out)


def pipe_fds() -> dict[int, str]:
    """Our open descriptors that are pipe ends (a FIFO shows up as a path, not here)."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the descriptor listdir itself used
        if target.startswith("pipe:"):
            found[int(name)] = target
    return found


@pytest.fixture
def no_inherited_fds():
    """Make every descriptor >= 3 of the test process close-on-exec for the test.

    Test runners inherit odd descriptors from whoever started them; so that a
    child's descriptors depend only on the code under test, none of those leak.
    """
    changed = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd >= 3 and os.get_inheritable(fd):
                os.set_inheritable(fd, False)
                changed.append(fd)
        except OSError:
            pass
    yield
    for fd in changed:
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass


# -- FIFO helpers ------------------------------------------------------------------------

SERVER_PROGRAM = r"""
import json, sys
from fifo_log import FifoLogServer
path, calls = sys.argv[1], json.loads(sys.argv[2])
with FifoLogServer(path) as server:
    print("ready", flush=True)
    for max_lines, idle_timeout in calls:
        records = server.serve(max_lines=max_lines, idle_timeout=idle_timeout)
        print(json.dumps(records), flush=True)
print("closed", flush=True)
"""


class ServerProcess:
    """A FifoLogServer in a program of its own, reporting each serve() call as a JSON line."""

    def __init__(self, impl, path, calls):
        self.path = str(path)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_PROGRAM, self.path, json.dumps(calls)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=impl.env())
        self._buffer = b""
        self.calls_left = len(calls)

    def wait_ready(self):
        line = self.readline()
        if line != "ready":
            pytest.fail(say("the server did not start: {line} {error}", line=line, error=self.error()), pytrace=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return say("<no answer>")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return say("<exited>")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def records(self, timeout: float = WAIT) -> list[str]:
        """The next serve() call's records (any trailing newline dropped)."""
        line = self.readline(timeout)
        self.calls_left -= 1
        if not line.startswith("["):
            pytest.fail(say("serve() did not return within {timeout} s: {line} {error}",
                            timeout=timeout, line=line, error=self.error()), pytrace=False)
        return [record.removesuffix("\n") for record in json.loads(line)]

    def error(self) -> str:
        """The last line the server printed on stderr, once it has exited."""
        try:
            self.proc.wait(1)
        except subprocess.TimeoutExpired:
            return ""  # still running: it has nothing to say yet
        lines = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def stop(self):
        """Let a server that is done close by itself; kill one that is not."""
        if self.calls_left > 0 and self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(WAIT)
        self.proc.stdout.close()
        self.proc.stderr.close()
        if self.proc.returncode != 0 and is_fifo(self.path):
            os.unlink(self.path)  # a killed server could not remove its FIFO


@pytest.fixture
def start_server(impl, tmp_path):
    """start_server(calls) -> ServerProcess serving tmp_path/log.fifo; killed after the test."""
    servers = []

    def start(calls, path=None):
        server = ServerProcess(impl, path or tmp_path / "log.fifo", calls)
        servers.append(server)  # before waiting: stopped after the test even if it never starts
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


def open_writer(path, timeout: float = WAIT) -> int:
    """Open the FIFO for writing once a reader has it open (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet; ENOENT: no FIFO yet
            if time.monotonic() > deadline:
                pytest.fail(say("nobody opened {path} for reading within {timeout} s", path=path, timeout=timeout),
                            pytrace=False)
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


def is_fifo(path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def wait_all(procs, timeout: float = 8.0):  # under the default 10 s test timeout
    """Wait for writer programs; fail if one hangs or fails."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(say("a writer ({args}...) did not finish within {timeout} s",
                            args=proc.args[:3], timeout=timeout),
                        pytrace=False)
        if proc.returncode != 0:
            pytest.fail(say("a writer failed with status {status}: {tail}",
                            status=proc.returncode, tail=err.decode(errors="replace")[-300:]),
                        pytrace=False)
