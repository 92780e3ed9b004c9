"""A clone of GNU coreutils ``timeout``: run a command, signal it when time is up.

    python timeout.py [-s SIGNAL] [-k DURATION] [--preserve-status] DURATION COMMAND [ARG...]

Two ideas carry the whole program:

* **SIGALRM as an alarm clock.** ``signal.setitimer(ITIMER_REAL, seconds)``
  asks the kernel to send us SIGALRM once the time is up. We never poll a
  clock: we block in ``waitpid`` until the child exits, and the alarm (or
  any other signal) interrupts that wait just long enough to run a handler.
* **Forwarding.** ``timeout`` stands between the caller and the command. A
  SIGTERM, SIGINT or SIGHUP meant to stop the job reaches *us*; we pass it on
  to the command so it gets the chance to clean up, then report how it ended.

Exit status, as coreutils documents it:
    124        the command timed out (and --preserve-status was not given)
    125        timeout itself failed (bad usage, bad duration, unknown signal)
    126        the command was found but could not be run
    127        the command was not found
    128+9      the command had to be killed with SIGKILL
    otherwise  the command's own status, 128+N when it died of signal N
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys

EXIT_TIMEDOUT = 124
EXIT_CANCELED = 125
EXIT_CANNOT_INVOKE = 126
EXIT_ENOENT = 127

# Signals that mean "please stop the job": sent to us, they go to the command.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([smhd]?)\s*")

USAGE = "usage: timeout.py [-s SIGNAL] [-k DURATION] [--preserve-status] DURATION COMMAND [ARG...]"


class UsageError(ValueError):
    """The command line cannot be understood: exit 125."""


@dataclasses.dataclass
class Options:
    duration: float
    command: list[str]
    signal: int = signal.SIGTERM
    kill_after: float = 0.0
    preserve_status: bool = False


def parse_duration(text: str) -> float:
    """``"1.5"``, ``"2m"``, ``".5h"`` -> seconds. 0 means "no time limit"."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise UsageError(f"invalid time interval {text!r}")
    number, unit = match.groups()
    return float(number) * _UNITS[unit]


def parse_signal(name: str) -> int:
    """``"TERM"``, ``"SIGTERM"``, ``"term"`` or ``"15"`` -> 15."""
    if name.isdigit():
        number = int(name)
        if number in signal.valid_signals():
            return number
    else:
        upper = name.upper()
        upper = upper if upper.startswith("SIG") else "SIG" + upper
        if upper in signal.Signals.__members__:
            return signal.Signals[upper]
    raise UsageError(f"{name}: invalid signal")


def parse_args(argv: list[str]) -> Options:
    """Parse options up to the first operand, as getopt does: the rest is the command."""
    args = list(argv)
    values = {"signal": "TERM", "kill_after": "0", "preserve_status": False}
    while args and args[0].startswith("-") and args[0] != "-":
        arg = args.pop(0)
        if arg == "--":
            break
        if arg == "--preserve-status":
            values["preserve_status"] = True
            continue
        for short, long, key in (("-s", "--signal", "signal"), ("-k", "--kill-after", "kill_after")):
            if arg in (short, long):
                if not args:
                    raise UsageError(f"option {arg} needs a value")
                values[key] = args.pop(0)
                break
            if arg.startswith(long + "="):
                values[key] = arg[len(long) + 1:]
                break
            if arg.startswith(short) and not arg.startswith("--"):
                values[key] = arg[len(short):]
                break
        else:
            raise UsageError(f"unknown option {arg}")
    if len(args) < 2:
        raise UsageError("missing operand")
    return Options(
        duration=parse_duration(args[0]),
        command=args[1:],
        signal=parse_signal(values["signal"]),
        kill_after=parse_duration(values["kill_after"]),
        preserve_status=values["preserve_status"],
    )


class Watchdog:
    """Runs one command and signals it when its time is up or when we are told to stop."""

    def __init__(self, options: Options):
        self.options = options
        self.child: subprocess.Popen | None = None
        self.next_signal = options.signal
        self.kill_after = options.kill_after
        self.timed_out = False
        self.sent_kill = False

    def run(self) -> int:
        for signum in (signal.SIGALRM, *FORWARDED):
            signal.signal(signum, self._on_signal)
        try:
            # Popen puts SIGPIPE back to its default in the child and reports
            # exec failures (not found, not executable) as exceptions here.
            self.child = subprocess.Popen(self.options.command)
        except FileNotFoundError as exc:
            return _fail(EXIT_ENOENT, f"failed to run command {self.options.command[0]!r}: {exc.strerror}")
        except OSError as exc:
            return _fail(EXIT_CANNOT_INVOKE, f"failed to run command {self.options.command[0]!r}: {exc.strerror}")
        if self.options.duration > 0:
            signal.setitimer(signal.ITIMER_REAL, self.options.duration)
        # Blocks in waitpid. A signal interrupts it, runs _on_signal, and
        # Python retries the wait (PEP 475): no polling, no busy loop.
        returncode = self.child.wait()
        signal.setitimer(signal.ITIMER_REAL, 0)
        return self._exit_status(returncode)

    def _on_signal(self, signum, frame):
        # A Python-level handler runs in the main thread between two bytecodes,
        # not inside the kernel's interruption, so calling os.kill here is safe.
        if signum == signal.SIGALRM:
            self.timed_out = True
            signum = self.next_signal
        if self.child is None:
            return
        self._send(signum)
        if signum not in (signal.SIGKILL, signal.SIGCONT):
            # A stopped command could not act on the signal: wake it up.
            self._send(signal.SIGCONT)
        if self.kill_after > 0:
            # It had its chance: the next alarm sends SIGKILL, which cannot be ignored.
            self.next_signal = signal.SIGKILL
            signal.setitimer(signal.ITIMER_REAL, self.kill_after)
            self.kill_after = 0

    def _send(self, signum: int):
        if signum == signal.SIGKILL:
            self.sent_kill = True
        try:
            os.kill(self.child.pid, signum)
        except ProcessLookupError:
            pass

    def _exit_status(self, returncode: int) -> int:
        # Popen reports "died of signal N" as -N; the shell's convention is 128+N.
        if returncode < 0:
            if self.sent_kill and -returncode == signal.SIGKILL:
                return 128 + signal.SIGKILL
            status = 128 - returncode
        else:
            status = returncode
        if self.timed_out and not self.options.preserve_status:
            return EXIT_TIMEDOUT
        return status


def _fail(status: int, message: str) -> int:
    print(f"timeout: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run ``timeout`` with the arguments ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        return _fail(EXIT_CANCELED, f"{exc}\n{USAGE}")
    return Watchdog(options).run()


if __name__ == "__main__":
    sys.exit(main())
