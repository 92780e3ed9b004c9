"""Lab 1, part A: run a shell-style pipeline, ``cmd1 | cmd2 | ... | cmdN``.

Build it from system calls only: ``os.pipe``, ``os.fork`` (or
``os.posix_spawn``), ``os.dup2``, ``os.execvp`` and ``os.waitpid``. No
``subprocess``, no ``os.system``, no shell. Read handout.md (한국어: handout.ko.md)
first: it explains pipes, end-of-file and SIGPIPE, and lists the classic
mistakes.
"""

from __future__ import annotations

import dataclasses


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
    raise NotImplementedError("run_pipeline: build the pipeline from os.pipe, os.fork, os.dup2, os.execvp, os.waitpid")
