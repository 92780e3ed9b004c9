"""timeout.py against GNU coreutils' timeout, case by case, side by side.

Each case runs both programs on the same command line and compares the exit
status (as a shell reports it), the signals the command received and, where
the clock matters, how long it took.
"""

import signal

import pytest

from grader.i18n import say
from lab5_helpers import recorder, run_both

STATUS_CASES = {
    "command-succeeds": lambda tmp: ["5", "true"],
    "command-exit-status": lambda tmp: ["5", "sh", "-c", "exit 7"],
    "timed-out": lambda tmp: ["0.3", "sleep", "10"],
    "preserve-status": lambda tmp: ["--preserve-status", "0.3", "sleep", "10"],
    "signal-KILL": lambda tmp: ["-s", "KILL", "0.3", "sleep", "10"],
    "zero-means-no-limit": lambda tmp: ["0", "sh", "-c", "sleep 0.3; exit 5"],
    "killed-by-signal": lambda tmp: ["5", "sh", "-c", "kill -USR1 $$"],
    "not-found": lambda tmp: ["5", "no-such-command-ipclab5"],
    "cannot-run": lambda tmp: ["5", str(tmp)],  # a directory: found, but exec fails
    "bad-duration": lambda tmp: ["soon", "true"],
    "bad-signal": lambda tmp: ["-s", "NOSUCHSIGNAL", "1", "true"],
    "no-command": lambda tmp: ["5"],
}


@pytest.mark.parametrize("case", STATUS_CASES)
def test_exit_status_matches_coreutils(case, impl, tmp_path, programs):
    args = STATUS_CASES[case](tmp_path)
    clone, coreutils = run_both(impl, tmp_path, programs, lambda record: args)
    assert clone.status == coreutils.status, (
        say("timeout {args}: {exit}; coreutils' timeout exits {status}", args=" ".join(args), exit=clone.exit,
            status=coreutils.status))


@pytest.mark.parametrize("duration, seconds", [("0.6s", 0.6), ("0.01m", 0.6), ("0.0002h", 0.72), ("0.00001d", 0.864)])
def test_duration_suffixes(duration, seconds, impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs, lambda record: [duration, "sleep", "10"])
    assert clone.status == coreutils.status == 124, say("timeout {duration} sleep 10: {exit}", duration=duration,
                                                              exit=clone.exit)
    assert clone.elapsed >= seconds - 0.05, say("timeout {duration} stopped the command after {elapsed:.2f} s, not {seconds} s",
                                                 duration=duration, elapsed=clone.elapsed, seconds=seconds)
    assert clone.elapsed < seconds + 4, say("timeout {duration} took {elapsed:.2f} s to stop the command",
                                             duration=duration, elapsed=clone.elapsed)


@pytest.mark.parametrize("options, expected", [([], "SIGTERM"), (["-s", "INT"], "SIGINT"), (["--signal=HUP"], "SIGHUP")],
                         ids=["default-TERM", "INT", "HUP"])
def test_timeout_signal_reaches_the_command(options, expected, impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs,
                                lambda record: [*options, "1.5", *recorder(record)], ready=True)
    assert coreutils.signals == {expected}, say("coreutils' command saw {signals} (machine overloaded?)",
                                                 signals=coreutils.signals)
    assert clone.signals == coreutils.signals, say("the command saw {signals}, not {expected}",
                                                   signals=sorted(clone.signals) or say("no signal"), expected=expected)
    assert clone.status == coreutils.status, say("{exit}; coreutils' timeout exits {status}", exit=clone.exit,
                                                 status=coreutils.status)
    assert 1.45 <= clone.elapsed < 1.5 + 4, say("the command was signalled after {elapsed:.2f} s, not 1.5 s",
                                                 elapsed=clone.elapsed)


def test_kill_after_sends_sigkill(impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs,
                                lambda record: ["-k", "0.5", "1.5", *recorder(record, "ignore")], ready=True)
    assert clone.signals == coreutils.signals == {"SIGTERM"}, say("the command saw {signals}",
                                                                   signals=sorted(clone.signals) or say("no signal"))
    assert clone.status == coreutils.status == 128 + 9, say("{exit}; coreutils' timeout exits {status}",
                                                                exit=clone.exit, status=coreutils.status)
    assert 1.95 <= clone.elapsed < 2 + 4, say("SIGKILL came {elapsed:.2f} s after the start, not 1.5 + 0.5 s",
                                               elapsed=clone.elapsed)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_forwards_signals(signum, impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs,
                                lambda record: ["10", *recorder(record)], send=signum)
    assert clone.signals == coreutils.signals == {signum.name}, (
        say("{signal} sent to timeout.py: its command saw {signals}", signal=signum.name,
            signals=sorted(clone.signals) or say("nothing")))
    assert clone.status == coreutils.status, say("{exit}; coreutils' timeout exits {status}", exit=clone.exit,
                                                 status=coreutils.status)
    assert clone.elapsed < 6, say("timeout.py took {elapsed:.1f} s to end after {signal}", elapsed=clone.elapsed,
                                   signal=signum.name)
