"""Run a shell-style pipeline, ``cmd1 | cmd2 | ... | cmdN``, with nothing but system calls.

Every command runs in its own process: a forked copy of us that replaces itself
with the command (``execvp``). Processes share no memory, so the only way data
gets from one command to the next is a *pipe*: a one-way byte stream in the
kernel with a write end and a read end, each a file descriptor. A child
inherits our descriptors across ``fork``; ``dup2`` then moves the right pipe
ends onto its standard input (fd 0) and output (fd 1).

Two rules make or break a pipeline:

* A reader sees end-of-file only when *every* write end of its pipe is closed,
  in every process. So every process closes every pipe end it does not use,
  the parent included, or some stage waits for input forever.
* A writer whose readers are all gone is killed by SIGPIPE. That is how
  ``yes | head -n 1`` ends: ``head`` exits and ``yes`` dies on its next write.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import signal
import time

CHUNK = 64 * 1024
# A forked child that cannot exec reports like a shell does.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


@dataclasses.dataclass
class PipelineResult:
    """What a pipeline produced."""

    stdout: bytes
    """Everything the last command wrote to its standard output."""
    returncodes: list[int]
    """One per command: its exit status, or ``-N`` if signal N killed it."""


def run_pipeline(commands: list[list[str]], input: bytes | None = None,
                 timeout: float | None = None) -> PipelineResult:
    """Run ``commands`` as ``cmd1 | cmd2 | ... | cmdN`` and wait for all of them.

    ``commands`` holds one argument list per command, e.g.
    ``[["ls", "-l"], ["wc", "-l"]]``; each is looked up on ``PATH`` like a
    shell does (``os.execvp``). No shell is involved, and no ``subprocess``.

    The first command reads ``input`` on its standard input (empty input when
    ``None``), the last command's standard output is returned, and every
    command's standard error goes wherever ours goes. Each command gets only
    file descriptors 0, 1 and 2. All commands run at the same time.

    Returns a :class:`PipelineResult`: the last command's output and one
    return code per command: its exit status, ``-N`` when signal N killed it
    (as ``subprocess`` reports it), 127 when the command was not found (after
    a message on standard error), 126 when it is not executable.

    When ``timeout`` seconds pass before every command has exited, every
    command is killed and reaped and ``TimeoutError`` is raised. Either way no
    command is left running or as a zombie, and no pipe end is left open.

    Raises ``ValueError`` for an empty list of commands or an empty command.
    """
    if not commands or any(not command for command in commands):
        raise ValueError("a pipeline needs at least one command, and every command needs a name")
    deadline = None if timeout is None else time.monotonic() + timeout

    # One pipe feeds the first command, one joins each pair, one drains the last.
    pipes = [os.pipe() for _ in range(len(commands) + 1)]
    feed, drain = pipes[0][1], pipes[-1][0]
    ours = {fd for pipe in pipes for fd in pipe}  # pipe ends this process still holds
    pids: list[int] = []
    codes: dict[int, int] = {}  # pid -> return code, once reaped
    try:
        for i, argv in enumerate(commands):
            pids.append(_spawn(argv, stdin_fd=pipes[i][0], stdout_fd=pipes[i + 1][1]))
        # The children hold their own copies now. Ours must go, except the two
        # ends we use: else readers downstream never see end-of-file.
        _close(ours, ours - {feed, drain})
        stdout = _exchange(feed, drain, input or b"", deadline, ours)
        _wait_all(pids, codes, deadline)
        return PipelineResult(stdout, [codes[pid] for pid in pids])
    finally:
        _close(ours, set(ours))
        _kill_and_reap([pid for pid in pids if pid not in codes])


def _spawn(argv: list[str], stdin_fd: int, stdout_fd: int) -> int:
    """Fork a child that runs ``argv`` reading ``stdin_fd`` and writing ``stdout_fd``."""
    pid = os.fork()
    if pid:
        return pid
    # In the child. Whatever happens, it must never return into the caller's code.
    try:
        os.dup2(stdin_fd, 0)
        os.dup2(stdout_fd, 1)
        # Every other descriptor goes: a stray write end would keep a reader
        # waiting for end-of-file forever. (Python creates pipes close-on-exec,
        # but descriptors inherited from elsewhere may not be.)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        # Python ignores SIGPIPE, and ignored signals stay ignored across exec:
        # restore the default, or `yes` never learns that `head` has gone.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        _die(f"{argv[0]}: command not found\n", EXIT_NOT_FOUND)
    except PermissionError:
        _die(f"{argv[0]}: permission denied\n", EXIT_NOT_EXECUTABLE)
    except BaseException as exc:
        _die(f"{argv[0]}: {exc}\n", EXIT_NOT_EXECUTABLE)
    _die("exec returned\n", EXIT_NOT_EXECUTABLE)  # not reached: execvp replaces this process or raises


def _die(message: str, status: int):
    try:
        os.write(2, message.encode(errors="replace"))
    finally:
        os._exit(status)  # not sys.exit: no cleanup handlers of the parent's copy


def _exchange(feed: int, drain: int, data: bytes, deadline: float | None, ours: set[int]) -> bytes:
    """Write ``data`` to ``feed`` while reading ``drain`` until end-of-file.

    Both at once, never one after the other: a pipe holds only 64 KiB, so a
    parent that first writes everything blocks as soon as the pipeline's
    output pipe is full and nobody reads it.
    """
    os.set_blocking(feed, False)
    chunks = []
    offset = 0
    with selectors.DefaultSelector() as selector:
        selector.register(drain, selectors.EVENT_READ)
        if data:
            selector.register(feed, selectors.EVENT_WRITE)
        else:
            _close(ours, {feed})  # empty input: the first command sees end-of-file at once
        while selector.get_map():
            for key, _ in selector.select(_remaining(deadline)):
                if key.fd == drain:
                    chunk = os.read(drain, CHUNK)
                    if chunk:
                        chunks.append(chunk)
                    else:
                        selector.unregister(drain)
                    continue
                try:
                    offset += os.write(feed, data[offset:offset + CHUNK])
                except BrokenPipeError:
                    offset = len(data)  # the first command stopped reading; a shell ignores that too
                if offset == len(data):
                    selector.unregister(feed)
                    _close(ours, {feed})  # end-of-file for the first command
    return b"".join(chunks)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the pipeline did not finish in time")
    return left


def _wait_all(pids: list[int], codes: dict[int, int], deadline: float | None):
    """Reap every child into ``codes``, as ``subprocess``-style return codes."""
    flags = 0 if deadline is None else os.WNOHANG  # with a deadline, poll: waitpid has no timeout
    while True:
        for pid in pids:
            if pid not in codes:
                reaped, status = os.waitpid(pid, flags)
                if reaped:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        if len(codes) == len(pids):
            return
        _remaining(deadline)  # raises once time is up
        time.sleep(0.005)


def _kill_and_reap(pids: list[int]):
    """SIGKILL children we have not reaped yet, then reap them: no orphans, no zombies."""
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # safe: an unreaped child's pid cannot be reused
    for pid in pids:
        os.waitpid(pid, 0)


def _close(ours: set[int], fds: set[int]):
    """Close ``fds`` and forget them, so that no descriptor is closed twice."""
    for fd in fds:
        ours.discard(fd)
        os.close(fd)
