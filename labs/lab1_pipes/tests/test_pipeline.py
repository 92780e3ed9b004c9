"""Public tests for part A: run_pipeline (pipeline.py)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from grader.i18n import say
from lab1_helpers import WAIT, children, describe, pipe_fds, run

NOT_A_COMMAND = "ipclab-no-such-command"


def test_single_command(pipeline):
    result = run(pipeline, [["echo", "hello"]])
    assert result.stdout == b"hello\n"
    assert result.returncodes == [0]


def test_input_feeds_first_command(pipeline):
    assert run(pipeline, [["cat"]], input=b"abc\x00\xff").stdout == b"abc\x00\xff"
    assert run(pipeline, [["tr", "a-z", "A-Z"], ["cat"]], input=b"pipes\n").stdout == b"PIPES\n"
    assert run(pipeline, [["wc", "-c"]]).stdout.strip() == b"0"


def test_no_input_means_empty_input(pipeline):
    """With input=None the first command must see end-of-file, not our own stdin.

    Our stdin is replaced, for the test, by a pipe that never ends: a first
    command that inherited it would wait forever.
    """
    never_ending_r, never_ending_w = os.pipe()
    saved_stdin = os.dup(0)
    os.dup2(never_ending_r, 0)
    try:
        result = run(pipeline, [["cat"], ["wc", "-c"]])
    finally:
        os.dup2(saved_stdin, 0)
        for fd in (saved_stdin, never_ending_r, never_ending_w):
            os.close(fd)
    assert result.stdout.strip() == b"0"


SHELL_CASES = {
    "echo": ([["echo", "hello world"]], None),
    "sort": ([["printf", "b\\na\\nc\\n"], ["sort"]], None),
    "three-stages": ([["seq", "1", "2000"], ["grep", "7"], ["wc", "-l"]], None),
    "input": ([["cat"], ["rev"], ["sort", "-r"], ["uniq", "-c"]], b"ab\ncd\nab\nef\n"),
    "head-stops-early": ([["seq", "100000"], ["head", "-n", "5"]], None),
    "stderr-passes": ([["sh", "-c", "echo to-stderr >&2; echo out"], ["cat"]], None),
    "last-fails": ([["echo", "abc"], ["grep", "zzz"]], None),
}


@pytest.mark.parametrize("case", SHELL_CASES)
def test_matches_shell(pipeline, case):
    commands, data = SHELL_CASES[case]
    line = " | ".join(shlex.join(c) for c in commands)
    shell = subprocess.run(["/bin/sh", "-c", line], input=data or b"", capture_output=True, timeout=WAIT)
    result = run(pipeline, commands, input=data)
    assert result.stdout == shell.stdout, say("`{line}` printed something else than /bin/sh does", line=line)
    assert result.returncodes[-1] == shell.returncode, say("`{line}`: last status differs from /bin/sh's", line=line)
    assert len(result.returncodes) == len(commands)


def test_exit_statuses(pipeline):
    assert run(pipeline, [["true"], ["false"]]).returncodes == [0, 1]
    codes = run(pipeline, [["sh", "-c", "exit 3"], ["sh", "-c", "cat >/dev/null; exit 42"]]).returncodes
    assert codes == [3, 42]


def test_command_not_found(pipeline, capfd):
    capfd.readouterr()
    result = run(pipeline, [[NOT_A_COMMAND, "arg"]])
    assert result.returncodes == [127]
    assert capfd.readouterr().err.strip(), say("no message on stderr for a command that was not found")
    codes = run(pipeline, [["echo", "x"], [NOT_A_COMMAND], ["cat"]]).returncodes
    assert codes[1:] == [127, 0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1])
def test_killed_by_signal(pipeline, sig):
    result = run(pipeline, [["sh", "-c", f"kill -{sig.name[3:]} $$"], ["cat"]])
    assert result.returncodes == [-sig, 0], say("a stage killed by {signal} must be reported as {code}",
                                                signal=sig.name, code=-sig)


def test_yes_head_sigpipe(pipeline):
    result = run(pipeline, [["yes"], ["head", "-n", "1"]])
    assert result.stdout == b"y\n"
    assert result.returncodes == [-signal.SIGPIPE, 0], say("`yes` must die of SIGPIPE once `head` has gone")


# Each stage passes its input on and adds the listing of its own descriptors.
# (ls, not Python: a Python program may open descriptors of its own at startup.)
FD_PROBE = ["sh", "-c", "cat; ls -l /proc/self/fd"]


def open_fds_per_stage(listing: str) -> list[list[int]]:
    """Parse the `ls -l` listings: one list of fds per stage, without the fd ls used to list."""
    stages = []
    for line in listing.splitlines():
        if line.startswith("total"):
            stages.append([])
        elif " -> " in line and stages:
            name, target = line.split(" -> ", 1)
            if not re.fullmatch(r"/proc/\d+/fd", target):
                stages[-1].append(int(name.split()[-1]))
    return stages


def test_children_have_only_std_fds(pipeline, no_inherited_fds):
    result = run(pipeline, [FD_PROBE, FD_PROBE, FD_PROBE], input=b"")
    assert result.returncodes == [0, 0, 0]
    stages = open_fds_per_stage(result.stdout.decode())
    assert len(stages) == 3, say("expected a listing from each of 3 stages, got {output!r}",
                                 output=result.stdout[:300])
    for i, fds in enumerate(stages, 1):
        assert fds == [0, 1, 2], say("stage {stage} has fds {fds} open, not just 0, 1 and 2", stage=i, fds=fds)


def test_parent_closes_pipe_ends(pipeline, capfd):
    before = pipe_fds()
    run(pipeline, [["echo", "a"], ["cat"], ["cat"]])
    run(pipeline, [["seq", "1000"], ["cat"]], input=b"ignored")
    run(pipeline, [[NOT_A_COMMAND], ["cat"]])
    with pytest.raises(TimeoutError):
        pipeline.run_pipeline([["sleep", "10"], ["cat"]], timeout=0.3)
    leaked = set(pipe_fds()) - set(before)
    assert not leaked, say("the parent still holds pipe ends after run_pipeline returned: fds {fds}",
                           fds=sorted(leaked))


def test_no_zombies(pipeline):
    before = set(children())
    run(pipeline, [["true"], ["true"], ["true"]])
    run(pipeline, [["yes"], ["head", "-n", "1"]])
    run(pipeline, [["sh", "-c", "exit 3"], ["sleep", "0.2"], ["cat"]])
    left = [p for pid, p in children().items() if pid not in before]
    assert not left, say("children left running or as zombies (not reaped with waitpid): {processes}",
                         processes=describe(left))


# The pipeline runs in a program of its own: a deadlocked parent is then killed
# by this test's timeout instead of hanging the test run.
LARGE_DATA = r"""
import os, sys
from pipeline import run_pipeline
data = os.urandom(16 * 1024 * 1024)
result = run_pipeline([["cat"], ["cat"]], input=data)
print("same" if result.stdout == data else "got %d bytes back of %d" % (len(result.stdout), len(data)))
print(result.returncodes)
"""


def test_large_data_no_deadlock(impl):
    try:
        proc = subprocess.run([sys.executable, "-c", LARGE_DATA], env=impl.env(), capture_output=True,
                              timeout=8, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(say("16 MiB through `cat | cat` did not finish in 8 s: deadlock? "
                        "(write input while reading output)"),
                    pytrace=False)
    if proc.returncode != 0:
        error = proc.stderr.decode(errors="replace").strip().splitlines() or [say("(no message)")]
        pytest.fail(say("run_pipeline failed on 16 MiB: {error}", error=error[-1]), pytrace=False)
    assert proc.stdout.decode().splitlines() == ["same", "[0, 0]"]


def test_stages_run_concurrently(pipeline, tmp_path):
    """Each stage waits until the other one has started: run one after the other, they never finish."""
    a = ["sh", "-c", 'touch "$1/a"; until [ -e "$1/b" ]; do sleep 0.01; done; echo A', "sh", str(tmp_path)]
    b = ["sh", "-c", 'touch "$1/b"; until [ -e "$1/a" ]; do sleep 0.01; done; cat; echo B', "sh", str(tmp_path)]
    try:
        result = pipeline.run_pipeline([a, b], timeout=WAIT)
    except TimeoutError:
        pytest.fail(say("the two stages did not run at the same time"), pytrace=False)
    assert result.stdout == b"A\nB\n"


@pytest.mark.parametrize("commands", [[], [[]], [["echo", "x"], []]], ids=["no-commands", "empty", "one-empty"])
def test_empty_commands_rejected(pipeline, commands):
    before = set(children())
    with pytest.raises(ValueError):
        pipeline.run_pipeline(commands, timeout=WAIT)
    left = [p for pid, p in children().items() if pid not in before]
    assert not left, say("bad input started processes: {processes}", processes=describe(left))
