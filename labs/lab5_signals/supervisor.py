"""Lab 5, part 2: a process supervisor driven by signals.

Read handout.md (한국어: handout.ko.md) first.

    python supervisor.py [--max-restarts N] [--grace S] [--status-file F] -- CMD [ARG...] [--- CMD [ARG...]]...

Everything after ``--`` is the list of commands, separated by ``---``. Each
command is started directly as a child process of the supervisor (exec'd,
not wrapped in a shell). Options: ``--max-restarts`` (default 3), ``--grace``
seconds (default 2.0), ``--status-file`` path (default: none). Bad usage (no
command, an empty command, a bad number) prints an error on stderr and exits
with status 2.

What the supervisor does, and on which signal:

SIGCHLD   a child exited: reap it (``os.waitpid``), so that no child ever stays a
          zombie, even when many exit at once and their SIGCHLDs merge into one.
          A child that exited abnormally (non-zero status, or killed by a signal)
          is started again, at once, at most ``max_restarts`` times per command;
          after that it stays down. A child that exited with status 0 is done.
SIGTERM,  stop: send SIGTERM to every child, wait up to ``grace`` seconds for
SIGINT    them to exit, SIGKILL those still running, reap them all, and exit
          with status 0 (``run()`` returns 0). Return as soon as all are gone:
          do not wait out the grace period for nothing.
SIGHUP    restart: stop every child as above, then start every command afresh
          (restart counts back to 0).
SIGUSR1   write the status report to the status file (if there is one), as JSON::

              {"uptime": 12.5,           # seconds since the supervisor started
               "children": [             # one entry per command, in order
                 {"command": ["sleep", "60"],   # the command's argv
                  "pid": 4242,                  # its process, null when not running
                  "restarts": 0,                # restarts so far
                  "state": "running"}]}         # running, exited (status 0, done)
                                                #  or failed (gave up restarting)

          The file is replaced atomically: a reader at any moment sees a whole
          report, the previous one or the new one, never a half-written file.

Otherwise the supervisor keeps running, even when no child is left (a SIGHUP
would start them again), and uses no CPU while it waits. Its signal handlers
are installed before the first child starts.

Signal handlers only record what happened (a flag, or the byte that
``signal.set_wakeup_fd`` writes to a pipe); the main loop does the work,
blocking until a signal arrives. See the handout for why.
"""

import sys


class Supervisor:
    """Start ``commands`` as children and keep them running, until told to stop."""

    def __init__(self, commands: list[list[str]], *, max_restarts: int = 3, grace: float = 2.0,
                 status_path=None):
        """Prepare to supervise ``commands`` (each an argv list, e.g. ``["sleep", "60"]``).

        Nothing starts yet. ``max_restarts``: restarts allowed per command after
        abnormal exits; ``grace``: seconds between SIGTERM and SIGKILL when
        stopping; ``status_path``: where SIGUSR1 writes the JSON status (None:
        nowhere). Raise ``ValueError`` when there is no command or one is empty.
        """
        raise NotImplementedError("Supervisor.__init__")

    def run(self) -> int:
        """Install the signal handlers, start every command, and supervise until SIGTERM or SIGINT.

        Must be called from the main thread (only it can set signal handlers).
        Returns 0 once every child has been stopped and reaped.
        """
        raise NotImplementedError("Supervisor.run: handlers that only record, a main loop that blocks")


def main(argv: list[str]) -> int:
    """The command line: parse ``argv`` (without the program name), supervise, return the exit status."""
    raise NotImplementedError("main: parse options and commands, then Supervisor(...).run()")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
