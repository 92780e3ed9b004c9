"""Perturbation: small random delays at the points where IPC races hide.

A race that the machine's timing hides on every run is still a bug. Like the
fork wrappers of CMU's shell-lab driver, this widens the windows: a random
pause after ``fork`` (in parent and child), around lock and semaphore
operations, and before ``os.write`` and socket sends, plus a very short thread
switch interval. Delays come from a seeded generator, so a failing run can be
replayed with the same seed (``IPCLAB_PERTURB=<seed>``).
"""

import os
import random
import socket
import sys
import threading
import time

MAX_DELAY = 0.002  # seconds: enough to reorder processes
CHANCE = 0.1       # of pausing at each point: stress tests make thousands of such calls
_rng = random.Random()
_seed = 0
_enabled = True


_NORMAL_SWITCH_INTERVAL = sys.getswitchinterval()


def enable(on: bool) -> None:
    """Switch the delays on or off (the kit perturbs only stress tests in the grader)."""
    global _enabled
    _enabled = on
    sys.setswitchinterval(1e-5 if on else _NORMAL_SWITCH_INTERVAL)


def _pause():
    if _enabled and _rng.random() < CHANCE:
        time.sleep(_rng.random() * MAX_DELAY)


def _reseed():
    _rng.seed(_seed * 1_000_003 + os.getpid())


def _wrap(func):
    def perturbed(*args, **kwargs):
        _pause()
        return func(*args, **kwargs)
    perturbed.__wrapped__ = func
    perturbed.__name__ = getattr(func, "__name__", "perturbed")
    return perturbed


class _PerturbedLock:
    """A threading lock whose acquire and release pause first."""

    def __init__(self, factory):
        self._lock = factory()

    def acquire(self, *args, **kwargs):
        _pause()
        return self._lock.acquire(*args, **kwargs)

    def release(self):
        _pause()
        return self._lock.release()

    def locked(self):
        return self._lock.locked()

    def __getattr__(self, name):
        # RLock's private protocol (_is_owned, _release_save, ...) used by Condition
        return getattr(self._lock, name)

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()


def _perturb_posix_ipc():
    try:
        import posix_ipc
    except ImportError:
        return

    class Semaphore(posix_ipc.Semaphore):
        def acquire(self, *args, **kwargs):
            _pause()
            return super().acquire(*args, **kwargs)

        def release(self, *args, **kwargs):
            _pause()
            return super().release(*args, **kwargs)

    posix_ipc.Semaphore = Semaphore


def _perturb_multiprocessing():
    try:
        from multiprocessing import synchronize
    except ImportError:
        return
    original = synchronize.SemLock._make_methods

    def _make_methods(self):
        original(self)
        self.acquire = _wrap(self._semlock.acquire)
        self.release = _wrap(self._semlock.release)

    synchronize.SemLock._make_methods = _make_methods


def install(seed: int, enabled: bool = True) -> None:
    """Turn perturbation on in this process and the children it forks."""
    global _seed
    _seed = seed
    _reseed()
    enable(enabled)
    os.register_at_fork(after_in_child=lambda: (_reseed(), _pause()), after_in_parent=_pause)
    os.write = _wrap(os.write)
    socket.socket.send = _wrap(socket.socket.send)
    socket.socket.sendall = _wrap(socket.socket.sendall)
    real_lock, real_rlock = threading.Lock, threading.RLock
    threading.Lock = lambda: _PerturbedLock(real_lock)
    threading.RLock = lambda: _PerturbedLock(real_rlock)
    _perturb_posix_ipc()
    _perturb_multiprocessing()
