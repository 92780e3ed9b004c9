"""ipclab's pytest plugin: runs a lab's tests against an implementation and scores them.

It is registered as a pytest plugin (entry point ``ipclab``) and stays inert
unless a lab is named, with ``--lab`` or by running tests that live in a lab
folder. Then it:

* imports the lab's modules from ``--impl DIR`` (default: the lab folder), only
  through the ``impl`` fixture, so a broken submission fails tests instead of
  breaking collection;
* gives every test the timeout lab.yaml sets (pytest-timeout, signal method);
* kills and reaps every process a test started, even when the test fails
  (the test process is made a child subreaper, so double-forked daemons come
  back to it too);
* prints a score table with a hint under each failed test;
* with ``--ipclab-results FILE``, writes every test's outcome as JSON.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from grader import labs

OUTPUT_CAP = 4096
MESSAGE_CAP = 300
# Python's own helper processes, started on first use and meant to live on.
_RUNTIME_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
_PR_SET_CHILD_SUBREAPER = 36


def pytest_addoption(parser):
    group = parser.getgroup("ipclab", "ipclab lab grading")
    group.addoption("--lab", help="lab id (lab1), folder name or path; inferred from the test paths when omitted")
    group.addoption("--impl", help="folder the lab's modules are imported from (default: the lab folder)")
    group.addoption("--ipclab-results", metavar="FILE", help="write per-test results as JSON to FILE")
    group.addoption("--lang", default=None, help="language of hints (en, ko)")


class Implementation:
    """The folder a lab's modules are imported from (the ``impl`` fixture)."""

    def __init__(self, folder: Path):
        self.dir = Path(folder).resolve()

    def path(self, filename: str) -> Path:
        """Path of one of the implementation's files, e.g. ``impl.path("timeout.py")``."""
        return self.dir / filename

    def load(self, name: str):
        """Import module ``name`` from the implementation folder.

        It is imported under its plain name with the folder on ``sys.path``, so
        that ``multiprocessing`` children started with *spawn* find it too. Any
        failure to import fails the calling test with one clear line.
        """
        if str(self.dir) not in sys.path:
            sys.path.insert(0, str(self.dir))
        try:
            module = importlib.import_module(name)
        except BaseException as exc:  # SystemExit and friends too: a submission did it
            if isinstance(exc, KeyboardInterrupt):
                raise
            pytest.fail(f"could not import {name}.py: {type(exc).__name__}: {exc}", pytrace=False)
        origin = Path(getattr(module, "__file__", "") or "").resolve()
        if origin.parent != self.dir:
            pytest.fail(f"{name} was imported from {origin}, not from {self.dir}", pytrace=False)
        return module

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a separate program that imports the implementation."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.dir), env.get("PYTHONPATH")]))
        env.update(extra)
        return env


class LabSession:
    """State of one pytest run against one lab."""

    def __init__(self, config, lab: labs.Lab):
        self.config = config
        self.lab = lab
        impl = config.getoption("--impl")
        self.impl = Implementation(Path(impl) if impl else lab.folder)
        self.lang = config.getoption("--lang") or _language_from_env()
        self.results: dict[str, dict] = {}  # nodeid -> result
        self.keys: dict[str, str] = {}  # nodeid -> points key
        self.main_pid = os.getpid()

    # -- scoring -----------------------------------------------------------------

    def record(self, report, item_key: str):
        entry = self.results.setdefault(report.nodeid, {
            "nodeid": report.nodeid, "key": item_key, "outcome": "passed",
            "duration": 0.0, "message": "", "output": "",
        })
        entry["duration"] += report.duration
        failed = report.failed or (report.when == "call" and report.skipped)
        if report.when == "call" and report.skipped:
            entry["outcome"] = "skipped"
            entry["message"] = _first_line(_skip_reason(report))
        elif failed and entry["outcome"] == "passed":
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["message"] = _failure_line(report)
        if report.when == "setup" and report.skipped:
            entry["outcome"] = "skipped"
            entry["message"] = _first_line(_skip_reason(report))
        output = (report.capstdout or "") + (report.capstderr or "")
        if output:
            entry["output"] = (entry["output"] + output)[:OUTPUT_CAP]

    def score(self) -> dict:
        """Points per declared test; a parametrised test shares its points."""
        by_key: dict[str, list[dict]] = {}
        for entry in self.results.values():
            by_key.setdefault(entry["key"], []).append(entry)
        rows = []
        for key, spec in self.lab.tests.items():
            cases = by_key.get(key, [])
            passed = sum(1 for c in cases if c["outcome"] == "passed")
            earned = spec.points * passed / len(cases) if cases else 0.0
            failed = [c for c in cases if c["outcome"] != "passed"]
            rows.append({
                "key": key, "hidden": spec.hidden, "ran": bool(cases),
                "points": round(earned, 2), "max": spec.points,
                "passed": passed, "cases": len(cases),
                "message": failed[0]["message"] if failed else "",
                "hint": self.lab.hint_for(key, self.lang) if failed else None,
            })
        undeclared = sorted(set(by_key) - set(self.lab.tests))
        return {
            "lab": self.lab.id,
            "total": round(sum(r["points"] for r in rows), 2),
            "max": labs.TOTAL_POINTS,
            "not_run": round(sum(r["max"] for r in rows if not r["ran"]), 2),
            "rows": rows,
            "undeclared": undeclared,
        }


def _language_from_env() -> str:
    lang = os.environ.get("IPCLAB_LANG") or os.environ.get("LC_ALL") or os.environ.get("LANG") or ""
    return "ko" if lang.lower().startswith("ko") else "en"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:MESSAGE_CAP]


def _failure_line(report) -> str:
    """One line that says why a test failed, without the traceback."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return _first_line(crash.message)
    return _first_line(str(report.longrepr))


# -- discovering the lab --------------------------------------------------------------


def _infer_lab(config) -> labs.Lab | None:
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        for folder in [path, *path.parents]:
            if (folder / "lab.yaml").is_file():
                return labs.load_lab(folder)
            if folder.parent.name == "reference" and (folder.parent.parent / "labs" / folder.name / "lab.yaml").is_file():
                return labs.load_lab(folder.parent.parent / "labs" / folder.name)
    return None


def _session(config) -> LabSession | None:
    return config.stash.get(_SESSION_KEY, None)


_SESSION_KEY = pytest.StashKey[LabSession]()


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    name = config.getoption("--lab")
    lab = labs.find_lab(name) if name else _infer_lab(config)
    if lab is None:
        return
    config.stash[_SESSION_KEY] = LabSession(config, lab)
    _become_subreaper()


def _become_subreaper():
    """Orphaned grandchildren are re-parented to us, so we can reap them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def pytest_collection_modifyitems(config, items):
    session = _session(config)
    if session is None:
        return
    for item in items:
        key = labs.test_key(item.nodeid)
        session.keys[item.nodeid] = key
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(session.lab.timeout_for(key), method="signal"))


@pytest.fixture
def impl(request) -> Implementation:
    """The implementation under test: ``impl.load("pipeline")``, ``impl.path(...)``, ``impl.env()``."""
    session = _session(request.config)
    if session is None:
        pytest.fail("the impl fixture needs a lab: pass --lab", pytrace=False)
    return session.impl


@pytest.fixture
def lab(request) -> labs.Lab:
    """The lab under test, as read from its lab.yaml."""
    session = _session(request.config)
    if session is None:
        pytest.fail("the lab fixture needs a lab: pass --lab", pytrace=False)
    return session.lab


# -- process hygiene --------------------------------------------------------------------


def _descendants() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


def _is_runtime_helper(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(helper in cmdline for helper in _RUNTIME_HELPERS)


def kill_and_reap(procs) -> list[int]:
    """SIGKILL each process, then reap every child of ours that has exited."""
    killed = []
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)
    reap_children()
    return killed


def reap_children():
    """Collect the exit status of every exited child (zombies included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    session = _session(item.config)
    before = set(_descendants()) if session else set()
    yield
    if session is None or os.getpid() != session.main_pid:
        return
    leftovers = [p for pid, p in _descendants().items() if pid not in before and not _is_runtime_helper(p)]
    kill_and_reap(leftovers)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    session = _session(item.config)
    if session is not None and os.getpid() != session.main_pid:
        # A forked child of the student's code fell back into the test runner
        # (it returned instead of calling os._exit). Never let it report.
        os._exit(70)
    outcome = yield
    if session is not None:
        session.record(outcome.get_result(), session.keys.get(item.nodeid, labs.test_key(item.nodeid)))


def pytest_sessionfinish(session, exitstatus):
    lab_session = _session(session.config)
    if lab_session is None or os.getpid() != lab_session.main_pid:
        return
    kill_and_reap([p for p in _descendants().values()])
    path = session.config.getoption("--ipclab-results")
    if path:
        write_json_atomically(Path(path), {
            "lab": lab_session.lab.id,
            "impl": str(lab_session.impl.dir),
            "tests": list(lab_session.results.values()),
            "score": lab_session.score(),
            "finished_at": time.time(),
        })


def write_json_atomically(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


# -- the score table ------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = _session(config)
    if session is None:
        return
    score = session.score()
    write = terminalreporter.write_line
    terminalreporter.section(f"{session.lab.id} score: {session.lab.title}", sep="=")
    for row in score["rows"]:
        if not row["ran"]:
            continue
        mark = "ok  " if row["passed"] == row["cases"] else "FAIL"
        pts = f"{_fmt(row['points'])}/{_fmt(row['max'])}"
        cases = f"  (passed {row['passed']}/{row['cases']})" if row["cases"] > 1 and row["passed"] != row["cases"] else ""
        write(f" {mark} {pts:>9}  {row['key']}{cases}")
        if row["passed"] != row["cases"]:
            if row["message"]:
                write(f"                 why:  {row['message']}")
            if row["hint"]:
                write(f"                 hint: {row['hint']}")
    if score["undeclared"]:
        write(f" (tests with no points in lab.yaml: {', '.join(score['undeclared'])})")
    tail = ""
    if score["not_run"]:
        tail = f"   ({_fmt(score['not_run'])} points are in tests not run here: the grader's hidden tests)"
    write(f"{session.lab.id}: {_fmt(score['total'])}/{score['max']}{tail}", bold=True)


def _fmt(points: float) -> str:
    return f"{points:g}"
