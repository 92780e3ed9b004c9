"""pytest plugin loaded inside the grading container (``-p grader.sandbox_plugin``).

It sends each test's result to the harness (``grader/harness.py``) the moment
the test ends, signed with a key the harness handed over on a pipe. The key
is read in ``pytest_configure``, before any submission code is imported, and
the pipe it came on is closed.

The verdict it sends is the one ``grader.plugin`` recorded (its
``LabSession.results``), so a test gets the same verdict in the container
as in a local run.

Before the first test runs it takes a snapshot of the pytest machinery that
decides a verdict (the runner, reports, the Python test item, the hook
implementations and the kit plugin's recorder). Before sending each result
it compares; a difference means something in the process rewired pytest,
and it sends a ``tamper`` line instead: the harness then trusts nothing more
from this run.

The harness also requires results in collection order, once per test
(the collected ids are sent before any submission code runs).

Limits, stated plainly: the submission runs in this very process, so code
written to attack this plugin specifically (call its sender, which any code
in the process can reach; find the key in memory; patch what the snapshot
does not cover and then undo the check) can forge results for the tests that
run after it. What it cannot do is forge results by any file it writes, by
exiting or killing its parent, by changing test files (they are mounted
read-only), or by the common ways of patching pytest; and every test it ends
before reporting counts as failed on the host.
"""

from __future__ import annotations

import hmac
import json
import os

import pytest

_state: dict = {}


def _signer(fd: int, key: bytes):
    """A function that writes one signed line; the key lives only in its closure."""
    seq = [0]

    def send(kind: str, **fields) -> None:
        fields.update(kind=kind, seq=seq[0])
        seq[0] += 1
        body = json.dumps(fields, ensure_ascii=True).encode()
        mac = hmac.new(key, body, "sha256").hexdigest().encode()
        data = mac + b" " + body + b"\n"
        while data:
            written = os.write(fd, data)
            data = data[written:]

    return send


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    result_fd = os.environ.pop("IPCLAB_RESULT_FD", None)
    key_fd = os.environ.pop("IPCLAB_KEY_FD", None)
    if result_fd is None or key_fd is None:
        return
    key = os.read(int(key_fd), 64)
    os.close(int(key_fd))
    os.set_inheritable(int(result_fd), False)
    _state.update(send=_signer(int(result_fd), key), config=config, pid=os.getpid())


def _watched(config) -> dict:
    """Identity of everything that turns a test run into a verdict."""
    import _pytest.outcomes
    import _pytest.python
    import _pytest.reports
    import _pytest.runner

    from grader import plugin

    watched = {}
    for module in (_pytest.runner, _pytest.outcomes, plugin):
        for name, value in vars(module).items():
            if callable(value):
                watched[f"{module.__name__}.{name}"] = id(value)
    for cls in (_pytest.reports.BaseReport, _pytest.reports.TestReport, _pytest.runner.CallInfo,
                _pytest.python.Function, plugin.LabSession, pytest.Item):
        for name, value in vars(cls).items():
            watched[f"{cls.__qualname__}.{name}"] = id(value)
    for hook in ("pytest_runtest_protocol", "pytest_runtest_makereport", "pytest_runtest_logreport",
                 "pytest_runtest_call", "pytest_pyfunc_call", "pytest_runtest_setup", "pytest_runtest_teardown"):
        impls = getattr(config.hook, hook).get_hookimpls()
        watched[f"hook.{hook}"] = tuple(id(impl.function) for impl in impls)
    watched["plugins"] = tuple(sorted(id(p) for p in config.pluginmanager.get_plugins()))
    for name, value in list(globals().items()):  # this plugin's own hooks and sender
        if callable(value):
            watched[f"sandbox_plugin.{name}"] = id(value)
    watched["sandbox_plugin.send"] = id(_state.get("send"))
    return watched


def pytest_collection_finish(session):
    if "send" in _state:
        _state["snapshot"] = _watched(session.config)
        _state["send"]("collected", nodeids=[item.nodeid for item in session.items])


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    if "send" not in _state or report.when != "teardown" or os.getpid() != _state["pid"]:
        return
    config = _state["config"]
    changed = _changes(config)
    if changed:
        _state["send"]("tamper", nodeid=report.nodeid, what=changed[:10])
        del _state["send"]  # nothing after this is worth sending
        return
    from grader import plugin

    session = plugin._session(config)
    entry = session.results.get(report.nodeid) if session else None
    if entry is None:
        return
    _state["send"]("result", nodeid=entry["nodeid"], outcome=entry["outcome"], duration=entry["duration"],
                   message=entry["message"], output=entry["output"])


def _changes(config) -> list[str]:
    snapshot = _state.get("snapshot")
    if snapshot is None:
        return []
    now = _watched(config)
    return sorted(name for name in set(snapshot) | set(now) if snapshot.get(name) != now.get(name))


def pytest_sessionfinish(session, exitstatus):
    if "send" in _state and os.getpid() == _state["pid"]:
        changed = _changes(session.config)
        if changed:
            _state["send"]("tamper", nodeid="", what=changed[:10])
        else:
            _state["send"]("done", exitstatus=int(exitstatus))
