"""Hidden tests for part A: run_pipeline (pipeline.py)."""

from __future__ import annotations

import shlex
import subprocess
import time

import pytest

from grader.i18n import say
from lab1_helpers import WAIT, children, describe, pipe_fds, run

PATTERN = bytes(range(256)) * 4096  # 1 MiB, every byte value

HIDDEN_SHELL_CASES = {
    "binary-od": ([["cat"], ["od", "-An", "-tx1"], ["sort"], ["uniq", "-c"]], PATTERN[:65536]),
    "ten-cats": ([["cat"]] * 10, PATTERN),
    "tail": ([["seq", "1", "100000"], ["tail", "-n", "3"]], None),
    "exit-status": ([["echo", "x"], ["sh", "-c", "cat; exit 5"]], None),
    "yes-head-wc": ([["yes", "abc"], ["head", "-c", "100000"], ["wc", "-c"]], None),
    "false-last": ([["printf", "x"], ["cat"], ["false"]], None),
    "sort-uniq": ([["env", "LC_ALL=C", "sort"], ["uniq", "-c"]], b"b\na\nb\nc\na\nb\n"),
}


@pytest.mark.parametrize("case", HIDDEN_SHELL_CASES)
def test_more_pipelines_match_shell(pipeline, case):
    commands, data = HIDDEN_SHELL_CASES[case]
    line = " | ".join(shlex.join(c) for c in commands)
    shell = subprocess.run(["/bin/sh", "-c", line], input=data or b"", capture_output=True, timeout=WAIT)
    result = run(pipeline, commands, input=data)
    assert result.stdout == shell.stdout, say("`{line}` printed something else than /bin/sh does", line=line[:200])
    assert result.returncodes[-1] == shell.returncode
    assert len(result.returncodes) == len(commands)


def test_not_executable(pipeline, tmp_path, capfd):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho should-not-run\n")
    script.chmod(0o644)
    capfd.readouterr()
    result = run(pipeline, [[str(script)]])
    assert result.returncodes == [126]
    assert result.stdout == b""
    assert capfd.readouterr().err.strip(), say("no message on stderr for a command that is not executable")
    codes = run(pipeline, [["echo", "x"], [str(script)], ["cat"]]).returncodes
    assert codes[1:] == [126, 0]
    assert run(pipeline, [[str(tmp_path)]]).returncodes == [126], say("a directory is not executable either")


TIMEOUT_CASES = {
    "all-sleep": ([["sleep", "30"], ["sleep", "30"], ["sleep", "30"]], None),
    "stdout-closed-early": ([["sh", "-c", "exec >&-; exec sleep 30"]], None),
    "input-blocked": ([["cat"], ["sleep", "30"]], PATTERN * 4),
}


@pytest.mark.parametrize("case", TIMEOUT_CASES)
def test_timeout_kills_everything(pipeline, case):
    commands, data = TIMEOUT_CASES[case]
    before_children, before_fds = set(children()), set(pipe_fds())
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        pipeline.run_pipeline(commands, input=data, timeout=0.5)
    elapsed = time.monotonic() - started
    assert elapsed < 3.5, say("TimeoutError came {elapsed:.1f} s after the call, for a 0.5 s timeout", elapsed=elapsed)
    left = [p for pid, p in children().items() if pid not in before_children]
    assert not left, say("after the timeout, stages are left running or as zombies: {processes}",
                         processes=describe(left))
    leaked = set(pipe_fds()) - before_fds
    assert not leaked, say("after the timeout, the parent still holds pipe ends: fds {fds}", fds=sorted(leaked))


def test_first_command_ignores_input(pipeline):
    big = PATTERN * 16
    result = run(pipeline, [["true"]], input=big)
    assert result.returncodes == [0] and result.stdout == b""
    result = run(pipeline, [["head", "-c", "10"], ["cat"]], input=big)
    assert result.stdout == big[:10]
    assert result.returncodes == [0, 0]


def test_sleeps_overlap(pipeline):
    """`sleep 1 | sleep 1 | sleep 1` takes about 1 s, one after the other 3 s."""
    started = time.monotonic()
    result = run(pipeline, [["sleep", "1"]] * 3)
    elapsed = time.monotonic() - started
    assert result.returncodes == [0, 0, 0]
    assert elapsed < 2.5, say("three `sleep 1` stages took {elapsed:.1f} s: are they run one after the other?",
                              elapsed=elapsed)


def test_reader_sees_end_of_file_without_a_timeout(pipeline):
    """With no timeout, `cat | cat` finishes only when every write end of each pipe is closed.

    A stray write end (in a child or in the parent) makes a reader wait for an
    end-of-file that never comes; the test's own time limit then ends it, and
    the report shows where each process was blocked.
    """
    result = pipeline.run_pipeline([["cat"], ["cat"]], input=b"end of file\n")
    assert result.stdout == b"end of file\n"
    assert result.returncodes == [0, 0]
