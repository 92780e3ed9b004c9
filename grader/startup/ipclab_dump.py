"""Stack dumps on request: the hook behind "child 4711 blocked in os.read at pipeline.py:42".

:func:`install` makes this process, and every child it forks, write the
Python stack of all its threads into ``<folder>/<pid>.stack`` when it receives
:data:`DUMP_SIGNAL`. :mod:`faulthandler` does the writing from a C-level
signal handler, so even a process stuck in a system call answers.
"""

import faulthandler
import fcntl
import os
import signal

# A real-time signal that nothing in the labs uses (grader/diagnostics.py sends it).
DUMP_SIGNAL = signal.SIGRTMIN + 5
_fd = None


def _out_of_the_way(fd: int) -> int:
    """Move ``fd`` above the numbers programs use, so a student listing the
    descriptors of a child sees only their own (it is close-on-exec too)."""
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 900)
    except OSError:
        return fd
    os.close(fd)
    return high


def _register(folder: str) -> None:
    global _fd
    if _fd is not None:  # a forked child: its parent's file is not its own
        os.close(_fd)
        _fd = None
    path = os.path.join(folder, f"{os.getpid()}.stack")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    _fd = _out_of_the_way(fd)
    faulthandler.register(DUMP_SIGNAL, file=_fd, all_threads=True, chain=False)


def install(folder: str) -> None:
    _register(folder)
    os.register_at_fork(after_in_child=lambda: _register(folder))
