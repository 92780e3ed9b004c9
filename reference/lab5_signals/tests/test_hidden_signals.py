"""Lab 5 hidden tests: more of the spec's promises, checked the same way as the public ones."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from grader.i18n import say

# The shared helpers live with the public tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "labs" / "lab5_signals" / "tests"))
from lab5_helpers import (PYTHON, Program, Supervised, programs, recorder, recorder_pid,  # noqa: E402,F401
                          run_both, seen_signals, supervisor_argv)

SLEEPS = [["sleep", "60"], ["sleep", "61"]]

# Reads the status file as fast as it can until told to stop, and reports any
# read that was not a whole JSON document (empty, cut short, or missing).
READER = r"""
import json, os, sys, time
path, stop = sys.argv[1], sys.argv[2]
reads, bad, sample = 0, 0, None
print("ready", os.getpid(), flush=True)
deadline = time.monotonic() + 20
while not os.path.exists(stop) and time.monotonic() < deadline:
    text = None
    try:
        with open(path) as f:
            text = f.read()
        json.loads(text)
    except (OSError, ValueError) as exc:
        bad += 1
        if sample is None:
            sample = f"{type(exc).__name__}: {exc}" + (f" (read {text[:60]!r})" if text is not None else "")
    reads += 1
print(json.dumps({"reads": reads, "bad": bad, "sample": sample}), flush=True)
"""


def start(impl, tmp_path, programs, options, commands) -> Supervised:
    supervisor = Supervised(supervisor_argv(impl, options, commands), tmp_path)
    programs.append(supervisor)
    return supervisor


def assert_clean_exit(supervisor: Supervised, status: int):
    assert status == 0, say("after SIGTERM: {exit}", exit=supervisor.describe_exit())
    leftovers = supervisor.leftovers()
    assert not leftovers, say("after the supervisor exited: {problems}", problems="; ".join(leftovers))


# -- timeout.py -------------------------------------------------------------------------


def test_preserve_status_keeps_command_status(impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs,
                                lambda record: ["--preserve-status", "1.5", *recorder(record, "exit3")], ready=True)
    assert clone.signals == coreutils.signals == {"SIGTERM"}, say("the command saw {signals}",
                                                                   signals=sorted(clone.signals) or say("no signal"))
    assert clone.status == coreutils.status == 3, (
        say("the command exited 3 after the time-out: {exit}; coreutils' timeout exits {status}",
            exit=clone.exit, status=coreutils.status))


# -- supervisor.py ----------------------------------------------------------------------


def test_sighup_restarts_every_child(impl, tmp_path, programs):
    status_file = tmp_path / "status.json"
    supervisor = start(impl, tmp_path, programs, ["--status-file", str(status_file)], SLEEPS)
    old = {supervisor.wait_running(command)[0].pid for command in SLEEPS}
    supervisor.send(signal.SIGHUP)

    def restarted():
        fresh = [kid for command in SLEEPS for kid in supervisor.running(command)]
        return {kid.pid for kid in fresh} if len(fresh) == 2 and not old & {kid.pid for kid in fresh} else None
    new = supervisor.wait_for(restarted, 15, say("after SIGHUP, every command should run again in a new process"))
    supervisor.wait_for(lambda: not (old & {kid.pid for kid in supervisor.children()}), 10,
                        say("the processes stopped by SIGHUP were left as zombies"))
    report = supervisor.request_status(status_file)
    assert {c.get("pid") for c in report.get("children", [])} == new, say("status after SIGHUP: {report}", report=report)
    assert all(c.get("state") == "running" for c in report["children"]), say("status after SIGHUP: {report}",
                                                                                  report=report)
    assert_clean_exit(supervisor, supervisor.stop(10))


def test_sigusr1_burst_keeps_status_file_valid(impl, tmp_path, programs):
    status_file, stop_file = tmp_path / "status.json", tmp_path / "stop-reading"
    commands = [*SLEEPS, ["sleep", "62"]]
    supervisor = start(impl, tmp_path, programs, ["--status-file", str(status_file)], commands)
    for command in commands:
        supervisor.wait_running(command)
    supervisor.request_status(status_file)

    reader = Program("reader", [PYTHON, "-c", READER, str(status_file), str(stop_file)], tmp_path)
    programs.append(reader)
    assert reader.read_line(10) is not None, say("the test's reader did not start: {exit}", exit=reader.describe_exit())
    for _ in range(3):
        for _ in range(100):
            supervisor.send(signal.SIGUSR1)
            time.sleep(0.001)  # a burst, paced so most signals are not merged into one
        assert supervisor.alive(), say("during a burst of SIGUSR1: {exit}", exit=supervisor.describe_exit())
    stop_file.touch()
    line = reader.read_line(10)
    assert line, say("the test's reader did not report: {exit}", exit=reader.describe_exit())
    seen = json.loads(line)
    assert seen["bad"] == 0, say("{bad} of {reads} reads of the status file during the burst were not a "
                                 "whole JSON report, e.g. {sample}", bad=seen["bad"], reads=seen["reads"],
                                 sample=seen["sample"])

    report = supervisor.request_status(status_file)
    assert [c.get("command") for c in report.get("children", [])] == commands, (
        say("status after the burst: {report}", report=report))
    assert_clean_exit(supervisor, supervisor.stop(10))
    assert "Traceback" not in supervisor.stderr(), say("the supervisor's stderr: {stderr}",
                                                        stderr=supervisor.stderr()[-1500:])


def test_sigint_stops_like_sigterm(impl, tmp_path, programs):
    record = tmp_path / "child.signals"
    supervisor = start(impl, tmp_path, programs, ["--grace", "20"], [recorder(record), ["sleep", "60"]])
    supervisor.wait_for(lambda: recorder_pid(record), 15, say("the recording command never started"))
    supervisor.wait_running(["sleep", "60"])
    supervisor.send(signal.SIGINT)
    status = supervisor.finish(10)
    assert seen_signals(record) == {"SIGTERM"}, say("on SIGINT a child saw {signals}, not SIGTERM",
                                                    signals=sorted(seen_signals(record)) or say("no signal"))
    assert_clean_exit(supervisor, status)


def test_supervisor_class_api(impl, tmp_path, programs):
    status_file = tmp_path / "status.json"
    code = ("import sys\nfrom supervisor import Supervisor\n"
            "commands = [['sleep', '60'], ['sh', '-c', 'exit 0'], ['sh', '-c', 'exit 1']]\n"
            "sys.exit(Supervisor(commands, max_restarts=1, grace=1.0, status_path=sys.argv[1]).run())\n")
    supervisor = Supervised([PYTHON, "-c", code, str(status_file)], tmp_path, env=impl.env())
    supervisor.name = "Supervisor(...).run()"
    programs.append(supervisor)
    supervisor.wait_running(["sleep", "60"])

    def settled():
        report = supervisor.request_status(status_file)
        return report if [c.get("state") for c in report.get("children", [])] == ["running", "exited", "failed"] else None
    report = supervisor.wait_for(settled, 15, say("status never showed states running, exited, failed"))
    assert [c["restarts"] for c in report["children"]] == [0, 0, 1], say("status: {report}", report=report)
    assert report["children"][1]["pid"] is None and report["children"][2]["pid"] is None, (
        say("a command that is not running has pid null: {report}", report=report))
    assert_clean_exit(supervisor, supervisor.stop(10))


@pytest.mark.parametrize("options, commands", [
    ([], []),
    ([], [["sleep", "1"], []]),
    (["--max-restarts", "many"], [["sleep", "1"]]),
    (["--grace", "soon"], [["sleep", "1"]]),
], ids=["no-command", "empty-command", "bad-max-restarts", "bad-grace"])
def test_supervisor_bad_usage(options, commands, impl, tmp_path, programs):
    program = Program("supervisor.py", supervisor_argv(impl, options, commands), tmp_path)
    programs.append(program)
    status = program.finish(5)
    stderr = program.stderr()
    assert status == 2, say("bad usage should exit 2 with a message: {exit}", exit=program.describe_exit())
    assert stderr.strip() and "Traceback" not in stderr, say("bad usage needs a one-line error, not: {stderr!r}",
                                                              stderr=stderr[-500:])
    Supervisor = impl.load("supervisor").Supervisor
    for bad in ([], [["sleep", "1"], []]):
        with pytest.raises(ValueError):
            Supervisor(bad)
