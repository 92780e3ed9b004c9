"""timeout.py against GNU coreutils' timeout, case by case, side by side.

Each case runs both programs on the same command line and compares the exit
status (as a shell reports it), the signals the command received and, where
the clock matters, how long it took.
"""

import signal

import pytest

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
        f"timeout {' '.join(args)}: {clone.exit}; coreutils' timeout exits {coreutils.status}")


@pytest.mark.parametrize("duration, seconds", [("0.6s", 0.6), ("0.01m", 0.6), ("0.0002h", 0.72), ("0.00001d", 0.864)])
def test_duration_suffixes(duration, seconds, impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs, lambda record: [duration, "sleep", "10"])
    assert clone.status == coreutils.status == 124, f"timeout {duration} sleep 10: {clone.exit}"
    assert clone.elapsed >= seconds - 0.05, f"timeout {duration} stopped the command after {clone.elapsed:.2f} s, not {seconds} s"
    assert clone.elapsed < seconds + 4, f"timeout {duration} took {clone.elapsed:.2f} s to stop the command"


@pytest.mark.parametrize("options, expected", [([], "SIGTERM"), (["-s", "INT"], "SIGINT"), (["--signal=HUP"], "SIGHUP")],
                         ids=["default-TERM", "INT", "HUP"])
def test_timeout_signal_reaches_the_command(options, expected, impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs,
                                lambda record: [*options, "1.5", *recorder(record)], ready=True)
    assert coreutils.signals == {expected}, f"coreutils' command saw {coreutils.signals} (machine overloaded?)"
    assert clone.signals == coreutils.signals, f"the command saw {sorted(clone.signals) or 'no signal'}, not {expected}"
    assert clone.status == coreutils.status, f"{clone.exit}; coreutils' timeout exits {coreutils.status}"
    assert 1.45 <= clone.elapsed < 1.5 + 4, f"the command was signalled after {clone.elapsed:.2f} s, not 1.5 s"


def test_kill_after_sends_sigkill(impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs,
                                lambda record: ["-k", "0.5", "1.5", *recorder(record, "ignore")], ready=True)
    assert clone.signals == coreutils.signals == {"SIGTERM"}, f"the command saw {sorted(clone.signals) or 'no signal'}"
    assert clone.status == coreutils.status == 128 + 9, f"{clone.exit}; coreutils' timeout exits {coreutils.status}"
    assert 1.95 <= clone.elapsed < 2 + 4, f"SIGKILL came {clone.elapsed:.2f} s after the start, not 1.5 + 0.5 s"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_forwards_signals(signum, impl, tmp_path, programs):
    clone, coreutils = run_both(impl, tmp_path, programs,
                                lambda record: ["10", *recorder(record)], send=signum)
    assert clone.signals == coreutils.signals == {signum.name}, (
        f"{signum.name} sent to timeout.py: its command saw {sorted(clone.signals) or 'nothing'}")
    assert clone.status == coreutils.status, f"{clone.exit}; coreutils' timeout exits {coreutils.status}"
    assert clone.elapsed < 6, f"timeout.py took {clone.elapsed:.1f} s to end after {signum.name}"
