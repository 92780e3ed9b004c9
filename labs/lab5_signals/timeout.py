"""Lab 5, part 1: a clone of GNU coreutils ``timeout``.

Read handout.md (한국어: handout.ko.md) first.

    python timeout.py [-s SIGNAL] [-k DURATION] [--preserve-status] DURATION COMMAND [ARG...]

Run COMMAND with its arguments; if it still runs after DURATION, send it
SIGNAL (default SIGTERM). Read ``man timeout``: your program must behave like
``/usr/bin/timeout`` (the tests run both side by side), with these options:

  -s, --signal SIGNAL    the signal sent on time-out: a name (TERM, SIGTERM, INT, KILL...)
                         or a number (9)
  -k, --kill-after D     if the command still runs D after the first signal, send SIGKILL
  --preserve-status      on time-out, exit with the command's status instead of 124

A DURATION is a floating-point number with an optional unit: ``s`` seconds
(the default), ``m`` minutes, ``h`` hours, ``d`` days. ``0`` disables the time limit.

Exit status:
    124        the command timed out (and --preserve-status was not given)
    125        timeout itself failed: bad usage, bad duration, unknown signal
    126        the command was found but could not be run
    127        the command was not found
    128+9      the command had to be killed with SIGKILL (-s KILL, or -k)
    otherwise  the command's own exit status, or 128+N when it died of signal N

SIGTERM, SIGINT and SIGHUP sent to timeout are forwarded to the command (which
then decides how to end); timeout exits as above once the command is gone.

Build it on SIGALRM: ``signal.setitimer(signal.ITIMER_REAL, seconds)`` makes
the kernel send SIGALRM when the time is up, while you simply wait for the
command to exit. No polling loop.
"""

import sys


def parse_duration(text: str) -> float:
    """Seconds meant by a DURATION operand: ``"1.5"`` -> 1.5, ``"2m"`` -> 120.0, ``"0.5h"`` -> 1800.0.

    Raise ``ValueError`` for anything else (``"soon"``, ``"-1"``, ``"5x"``).
    """
    raise NotImplementedError("parse_duration: a float with an optional s/m/h/d suffix")


def parse_signal(name: str) -> int:
    """Signal number of a SIGNAL option: ``"TERM"``, ``"SIGTERM"`` or ``"15"`` -> 15.

    Raise ``ValueError`` for an unknown signal.
    """
    raise NotImplementedError("parse_signal: see signal.Signals")


def main(argv: list[str]) -> int:
    """Run ``timeout`` with the command-line arguments ``argv`` (without the program name).

    Returns the exit status described in the module docstring; never raises for
    bad input (that is status 125, with a message on stderr).
    """
    raise NotImplementedError("main: parse argv, start the command, arm SIGALRM, wait, forward signals")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
