"""supervisor.py, run as a program and driven from outside with real signals.

The tests watch it with psutil: its children, their state (a zombie is a child
that exited and was not reaped), its CPU time. Every wait is bounded.
"""

import os
import signal
import time

import psutil

from grader.i18n import say
from lab5_helpers import Supervised, recorder, recorder_pid, seen_signals, supervisor_argv, wait_until

SLEEP = ["sleep", "60"]
# A command that ignores SIGTERM (exec keeps the ignored disposition).
STUBBORN = ["sh", "-c", "trap '' TERM; exec sleep 60"]


def start(impl, tmp_path, programs, options, commands) -> Supervised:
    supervisor = Supervised(supervisor_argv(impl, options, commands), tmp_path)
    programs.append(supervisor)
    return supervisor


def assert_clean_exit(supervisor: Supervised, status: int):
    assert status == 0, say("after SIGTERM: {exit}", exit=supervisor.describe_exit())
    leftovers = supervisor.leftovers()
    assert not leftovers, say("after the supervisor exited: {problems}", problems="; ".join(leftovers))


def test_starts_every_command_and_stops_on_sigterm(impl, tmp_path, programs):
    records = [tmp_path / "first.signals", tmp_path / "second.signals"]
    supervisor = start(impl, tmp_path, programs, ["--grace", "20"], [recorder(r) for r in records])
    for record in records:
        supervisor.wait_for(lambda: recorder_pid(record), 15,
                            say("the command writing {file} never started", file=record.name))
    children = {kid.pid for kid in supervisor.running()}
    assert {recorder_pid(r) for r in records} <= children, say("each command must run as a child of the supervisor")

    supervisor.send(signal.SIGTERM)
    # The children die of SIGTERM at once, so this must not wait out the 20 s grace period.
    status = supervisor.finish(10)
    for record in records:
        assert seen_signals(record) == {"SIGTERM"}, say("{file}: a child saw {signals}, not SIGTERM", file=record.name,
                                                        signals=sorted(seen_signals(record)) or say("no signal"))
    assert_clean_exit(supervisor, status)


def test_restart_limit(impl, tmp_path, programs):
    failing_runs, clean_runs, status_file = tmp_path / "failing.runs", tmp_path / "clean.runs", tmp_path / "status.json"
    failing = ["sh", "-c", f"echo run >> {failing_runs}; exit 3"]
    clean = ["sh", "-c", f"echo run >> {clean_runs}; exit 0"]
    supervisor = start(impl, tmp_path, programs, ["--max-restarts", "2", "--status-file", str(status_file)],
                       [failing, clean, SLEEP])
    supervisor.wait_running(SLEEP)  # handlers are in place once a child runs

    def settled():
        report = supervisor.request_status(status_file)
        states = [child.get("state") for child in report.get("children", [])]
        return report if states[:2] == ["failed", "exited"] else None
    report = supervisor.wait_for(settled, 20, say("the status never showed the failing command 'failed' "
                                                 "and the clean one 'exited'"))
    failing_status, clean_status = report["children"][:2]
    assert failing_status["restarts"] == 2, say("a command that always fails: {status}", status=failing_status)
    assert failing_runs.read_text().count("run") == 3, say("with --max-restarts 2 a failing command runs 3 times in all")
    assert clean_status["restarts"] == 0 and clean_runs.read_text().count("run") == 1, (
        say("a command that exits with status 0 is done: it must not be restarted"))
    supervisor.wait_for(lambda: not supervisor.zombies(), 5, say("exited children were left as zombies"))
    assert_clean_exit(supervisor, supervisor.stop(10))


def test_no_zombie_when_many_children_exit_together(impl, tmp_path, programs):
    supervisor = start(impl, tmp_path, programs, ["--max-restarts", "0"], [SLEEP] * 50)
    children = supervisor.wait_running(SLEEP, count=50, timeout=20)
    # Stopped, the supervisor cannot take delivery: the 50 SIGCHLDs merge into one pending signal.
    supervisor.send(signal.SIGSTOP)
    try:
        for child in children:
            child.kill()
        wait_until(lambda: len(supervisor.zombies()) == 50, 10, say("the killed children did not all die"))
    finally:
        supervisor.send(signal.SIGCONT)
    supervisor.wait_for(lambda: not supervisor.children(), 10,
                        lambda: say("{count} of 50 children exited together and stayed zombies "
                                    "(pids {pids}...): their parent, the supervisor, never waited for them",
                                    count=len(supervisor.zombies()), pids=", ".join(map(str, supervisor.zombies()[:5]))))
    assert_clean_exit(supervisor, supervisor.stop(10))


def test_grace_period_then_sigkill(impl, tmp_path, programs):
    grace = 1.5
    supervisor = start(impl, tmp_path, programs, ["--grace", str(grace)], [STUBBORN, SLEEP])
    supervisor.wait_running(["sleep", "60"], count=2)  # the stubborn one has exec'd sleep too
    started = time.monotonic()
    supervisor.send(signal.SIGTERM)
    status = supervisor.finish(grace + 10)
    elapsed = time.monotonic() - started
    assert elapsed >= grace - 0.1, say("the supervisor gave up after {elapsed:.2f} s, before the {grace} s grace period",
                                        elapsed=elapsed, grace=grace)
    assert elapsed < grace + 6, say("a child that ignores SIGTERM must be killed after {grace} s, not {elapsed:.1f} s",
                                     grace=grace, elapsed=elapsed)
    assert_clean_exit(supervisor, status)


def test_status_file_on_sigusr1(impl, tmp_path, programs):
    status_file = tmp_path / "status.json"
    commands = [SLEEP, ["sleep", "61"]]
    supervisor = start(impl, tmp_path, programs, ["--status-file", str(status_file)], commands)
    pids = [supervisor.wait_running(command)[0].pid for command in commands]
    report = supervisor.request_status(status_file)
    lifetime = time.monotonic() - supervisor.started

    assert isinstance(report.get("uptime"), (int, float)) and 0 <= report["uptime"] <= lifetime + 1, (
        say("uptime should be the seconds since the supervisor started, got {uptime!r}", uptime=report.get("uptime")))
    children = report.get("children")
    assert isinstance(children, list) and len(children) == 2, say("'children' should list the 2 commands: {children!r}",
                                                                     children=children)
    for entry, command, pid in zip(children, commands, pids):
        expected = {"command": command, "pid": pid, "restarts": 0, "state": "running"}
        assert {key: entry.get(key) for key in expected} == expected, say("status entry {entry}", entry=entry)
    assert_clean_exit(supervisor, supervisor.stop(10))


def test_idle_supervisor_uses_no_cpu(impl, tmp_path, programs):
    supervisor = start(impl, tmp_path, programs, [], [SLEEP, ["sleep", "61"]])
    supervisor.wait_running(SLEEP)
    supervisor.wait_running(["sleep", "61"])
    # Two measures over the same window: CPU time, and how often the supervisor
    # is found runnable. On a crowded machine a spinning loop may get little CPU,
    # but it is still always runnable; a blocked one is asleep.
    window, samples, runnable = 2.0, 0, 0
    before = supervisor.ps.cpu_times()
    end = time.monotonic() + window
    while time.monotonic() < end:
        samples += 1
        runnable += supervisor.ps.status() == psutil.STATUS_RUNNING
        time.sleep(0.02)
    after = supervisor.ps.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    assert supervisor.alive(), supervisor.describe_exit()
    assert used < 0.2, say("an idle supervisor used {used:.2f} s of CPU in {window:g} s: it is busy-waiting",
                            used=used, window=window)
    assert runnable < samples / 2, (
        say("an idle supervisor was runnable in {runnable} of {samples} samples: it is busy-waiting",
            runnable=runnable, samples=samples))
    assert_clean_exit(supervisor, supervisor.stop(10))
