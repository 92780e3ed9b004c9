"""In-container harness: the runner image's entry point (PID 1 of the container).

It runs as ``python3 -I /kit/grader/harness.py`` and uses the standard library
only. What it does, in order:

1. makes itself non-dumpable, so the submission (same uid, no capabilities)
   can neither ptrace it nor open ``/proc/1/fd`` or ``/proc/1/environ``;
   being PID 1 of the container's PID namespace, it cannot be killed by
   any process inside the container either;
2. copies the submission from the read-only ``/submission`` into the tmpfs
   work folder, so a student's code may write next to itself;
3. starts pytest with the kit's two plugins and gives it, on inherited pipes,
   a fresh random key and a channel for results; the kit's
   ``grader.sandbox_plugin`` reads the key before any submission code is
   imported and signs each test's result as soon as the test ends;
4. checks every signed line and re-emits the good ones on its own stdout as
   JSON lines; stdout belongs to this process alone (pytest's output goes
   through a pipe), so the host can trust every line it reads there. A bad
   signature, a sequence gap or garbage on the channel ends the trust: the
   harness says so and ignores the rest of the channel;
5. keeps the first ``output_cap`` bytes of pytest's output and counts the rest;
6. when pytest ends, kills whatever is still running in the container, reads
   the container's cgroup (CPU time, peak memory, peak processes) and emits
   the final ``end`` line.

Lines on stdout (``"t"`` is the type): ``start``, ``note``, ``result``,
``broken``, ``tamper``, ``done`` (pytest's session finished normally),
``out`` (captured output, capped), ``end``.
"""

import ctypes
import hmac
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time

RUN_CONFIG = "/kit/run.json"
SUBMISSION_RO = "/submission"
WORK = "/work/submission"
MAX_FRAME = 1 << 20
_PR_SET_DUMPABLE = 4


def emit(kind, **fields):
    fields["t"] = kind
    line = json.dumps(fields, ensure_ascii=True) + "\n"
    os.write(1, line.encode())


def make_undumpable():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        emit("note", text="could not make the harness non-dumpable")


def copy_submission():
    try:
        shutil.copytree(SUBMISSION_RO, WORK, symlinks=True)
    except (OSError, shutil.Error) as exc:
        emit("note", text=f"copying the submission into the work folder failed: {exc}")
        os.makedirs(WORK, exist_ok=True)


class Channel:
    """Reads signed result lines from the pytest process and checks them."""

    def __init__(self, key: bytes):
        self.key = key
        self.buffer = b""
        self.seq = 0
        self.trusted = True
        self.order: dict[str, int] = {}   # nodeid -> position, from the collection
        self.last = -1

    def feed(self, data: bytes):
        if not self.trusted:
            return
        self.buffer += data
        while self.trusted and b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            self._line(line)
        if len(self.buffer) > MAX_FRAME:
            self._break("an over-long line on the result channel")

    def _line(self, line: bytes):
        mac, _, body = line.partition(b" ")
        expected = hmac.new(self.key, body, "sha256").hexdigest().encode()
        if not hmac.compare_digest(mac, expected):
            return self._break("a line on the result channel with a wrong signature")
        try:
            frame = json.loads(body)
        except ValueError:
            return self._break("an unreadable line on the result channel")
        if frame.get("seq") != self.seq:
            return self._break("result lines out of sequence")
        self.seq += 1
        kind = frame.pop("kind", None)
        frame.pop("seq", None)
        if kind == "tamper":
            emit("tamper", **frame)
            self.trusted = False
        elif kind == "collected":
            if self.order:
                return self._break("a second collection on the result channel")
            self.order = {nodeid: i for i, nodeid in enumerate(frame.get("nodeids") or [])}
            emit(kind, count=len(self.order))
        elif kind == "result":
            # Tests report once each, in the order they were collected (before any
            # submission code ran): anything else is a forgery or a replay.
            position = self.order.get(frame.get("nodeid"), -1)
            if position <= self.last:
                return self._break(f"a result out of order or for an unknown test: {str(frame.get('nodeid'))[:100]}")
            self.last = position
            emit(kind, **frame)
        elif kind == "done":
            emit(kind, **frame)
        else:
            self._break(f"an unknown line kind {kind!r}")

    def _break(self, why):
        self.trusted = False
        emit("broken", why=why)


class Output:
    """pytest's own output: the first ``cap`` bytes are kept, the rest counted."""

    def __init__(self, cap: int):
        self.cap = cap
        self.kept = 0
        self.dropped = 0

    def feed(self, data: bytes):
        room = max(0, self.cap - self.kept)
        if room:
            part = data[:room]
            emit("out", data=part.decode("utf-8", "replace"))
            self.kept += len(part)
        self.dropped += max(0, len(data) - room)


def cgroup_stats(peak_pids_seen):
    """CPU seconds, peak memory and peak processes of the container (cgroup v1 or v2)."""
    def read(*paths):
        for path in paths:
            try:
                with open(path) as f:
                    return f.read().strip()
            except OSError:
                continue
        return None

    stats = {}
    cpu_ns = read("/sys/fs/cgroup/cpuacct/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage")
    if cpu_ns is not None:
        stats["cpu_seconds"] = round(int(cpu_ns) / 1e9, 3)
    else:
        text = read("/sys/fs/cgroup/cpu.stat") or ""
        for row in text.splitlines():
            if row.startswith("usage_usec"):
                stats["cpu_seconds"] = round(int(row.split()[1]) / 1e6, 3)
    memory = read("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak")
    if memory is not None:
        stats["peak_memory_bytes"] = int(memory)
    pids = read("/sys/fs/cgroup/pids/pids.peak", "/sys/fs/cgroup/pids.peak")
    stats["peak_processes"] = max(int(pids) if pids and pids.isdigit() else 0, peak_pids_seen)
    return stats


def current_pids():
    value = None
    for path in ("/sys/fs/cgroup/pids/pids.current", "/sys/fs/cgroup/pids.current"):
        try:
            with open(path) as f:
                value = int(f.read())
                break
        except (OSError, ValueError):
            continue
    return value or 0


def other_processes():
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                continue
            if cmd:  # zombies have no command line; they are reaped below
                found.append({"pid": int(name), "cmd": cmd[:200]})
    return found


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def result_channel():
    """The key pytest signs its results with, and the pipes that carry the key in and the results out.

    Returns ``(key, result_r, result_w, key_r)``: pass ``result_w`` and
    ``key_r`` to pytest (see :func:`child_env`), close them here once it runs.
    """
    key = os.urandom(32)
    result_r, result_w = os.pipe()
    key_r, key_w = os.pipe()
    os.write(key_w, key)
    os.close(key_w)
    return key, result_r, result_w, key_r


def child_env(path, kit, result_w, key_r, **extra):
    """The whole environment of the test process: nothing of ours leaks into it."""
    return {
        "PATH": path, "HOME": "/tmp", "LANG": "C.UTF-8",
        "PYTHONPATH": kit, "IPCLAB_KIT": kit, "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/mpl",
        "IPCLAB_RESULT_FD": str(result_w), "IPCLAB_KEY_FD": str(key_r), **extra,
    }


def pump(proc, result_r, channel, output, count_pids):
    """Feed pytest's output and signed results to their readers until both pipes close.

    Stops one second after pytest exits even if they stay open (a background
    process may hold them). Returns the peak of ``count_pids()`` seen meanwhile.
    """
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, output)
    selector.register(result_r, selectors.EVENT_READ, channel)
    peak_pids = 0
    exit_deadline = None
    while selector.get_map():
        peak_pids = max(peak_pids, count_pids())
        if exit_deadline is None and proc.poll() is not None:
            exit_deadline = time.monotonic() + 1.0
        if exit_deadline is not None and time.monotonic() > exit_deadline:
            break
        for sel_key, _ in selector.select(timeout=0.2):
            data = os.read(sel_key.fd, 1 << 16)
            if not data:
                selector.unregister(sel_key.fileobj)
                continue
            sel_key.data.feed(data)
    return peak_pids


def main():
    make_undumpable()
    with open(RUN_CONFIG) as f:
        config = json.load(f)
    emit("start", pid=os.getpid(), time=time.time())
    copy_submission()

    key, result_r, result_w, key_r = result_channel()
    env = child_env(os.environ.get("PATH", "/usr/bin:/bin"), "/kit", result_w, key_r)
    cmd = [sys.executable, "-m", "pytest", *config["pytest_args"]]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            pass_fds=(result_w, key_r), cwd="/work", env=env, start_new_session=True)
    os.close(result_w)
    os.close(key_r)

    channel, output = Channel(key), Output(int(config["output_cap"]))
    peak_pids = pump(proc, result_r, channel, output, current_pids)
    status = proc.wait()
    leftovers = other_processes()
    if leftovers:
        os.kill(-1, signal.SIGKILL)  # from PID 1: every other process of the container
        time.sleep(0.1)
    reap()
    emit("end", exit=status, dropped_output=output.dropped, kept_output=output.kept,
         leftovers=leftovers, stats=cgroup_stats(peak_pids), time=time.time())


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # the host turns a missing "end" into a grader error
        emit("harness_error", error=f"{type(exc).__name__}: {exc}")
        sys.exit(3)
