"""ipclab's pytest plugin: runs a lab's tests against an implementation and scores them.

It is registered as a pytest plugin (entry point ``ipclab``) and stays inert
unless a lab is named, with ``--lab`` or by running tests that live in a lab
folder. Then it:

* imports the lab's modules from ``--impl DIR`` (default: the lab folder), only
  through the ``impl`` fixture, so a broken submission fails tests instead of
  breaking collection;
* gives every test the timeout lab.yaml sets; a test that times out gets the
  Python stack of itself and of every process it started, taken before
  anything is killed (see grader/diagnostics.py);
* after each test, reports and cleans up what it left behind (processes,
  zombies, shared memory, semaphores, queues, FIFOs, sockets, descriptors);
  the test process is a child subreaper, so double-forked daemons come back
  to it too;
* runs a ``@pytest.mark.stress(runs=N)`` test N times; it earns its points
  only when every run passes; ``--perturb SEED`` adds random delays around
  fork, locks and writes in the test process and its children;
* prints a score table with a hint under each failed test;
* with ``--ipclab-results FILE``, writes every test's outcome as JSON.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from grader import diagnostics, i18n, labs

OUTPUT_CAP = 4096
MESSAGE_CAP = 300
STACKS_CAP = 20_000
_PR_SET_CHILD_SUBREAPER = 36
_SESSION_KEY = pytest.StashKey["LabSession"]()
_LEAKS_KEY = pytest.StashKey[diagnostics.LeakCheck]()
_STACKS_KEY = pytest.StashKey[str]()


def pytest_addoption(parser):
    group = parser.getgroup("ipclab", "ipclab lab grading")
    group.addoption("--lab", help="lab id (lab1), folder name or path; inferred from the test paths when omitted")
    group.addoption("--impl", help="folder the lab's modules are imported from (default: the lab folder)")
    group.addoption("--ipclab-results", metavar="FILE", help="write per-test results as JSON to FILE")
    group.addoption("--lang", default=None, help="language of hints (en, ko); default from IPCLAB_LANG or LANG")
    group.addoption("--perturb", metavar="SEED", nargs="?", const="random", default=os.environ.get("IPCLAB_PERTURB"),
                    help="insert random delays around fork, locks and writes (seeded, for replay)")
    group.addoption("--perturb-stress", metavar="SEED", nargs="?", const="random", default=None,
                    help="perturb only the stress tests (the grader does this)")
    group.addoption("--no-diagnostics", action="store_true",
                    help="skip leak checks and stack capture (for measuring their cost)")


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
            message = i18n.gettext("could not import {module}: {error}", i18n.language())
            pytest.fail(message.format(module=f"{name}.py", error=f"{type(exc).__name__}: {exc}"), pytrace=False)
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
        self.lang = i18n.language(config.getoption("--lang"))
        self._ = i18n.translator(self.lang)
        self.results: dict[str, dict] = {}  # nodeid -> result
        self.keys: dict[str, str] = {}  # nodeid -> points key
        self.stress_keys: set[str] = set()
        self.main_pid = os.getpid()
        self.diag_dir = Path(tempfile.mkdtemp(prefix="ipclab-diag-"))
        self.perturb_seed = _seed(config.getoption("--perturb"))
        self.stress_seed = None if self.perturb_seed else _seed(config.getoption("--perturb-stress"))
        self.diagnostics = not config.getoption("--no-diagnostics")

    # -- recording -----------------------------------------------------------------

    def entry(self, nodeid: str, key: str) -> dict:
        return self.results.setdefault(nodeid, {
            "nodeid": nodeid, "key": key, "outcome": "passed", "duration": 0.0,
            "message": "", "output": "", "findings": [], "stacks": "", "symptoms": [],
        })

    def record(self, report, key: str, item):
        entry = self.entry(report.nodeid, key)
        entry["duration"] += report.duration
        if report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
            entry["message"] = _first_line(_skip_reason(report))
        elif report.failed and entry["outcome"] in ("passed", "skipped"):
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["message"] = self.not_implemented(_failure_line(report))
            entry["symptoms"].append(_symptom(report, item))
        if report.when == "call" and _STACKS_KEY in item.stash:
            entry["stacks"] = item.stash[_STACKS_KEY][:STACKS_CAP]
        output = (report.capstdout or "") + (report.capstderr or "")
        if output:
            entry["output"] = (entry["output"] + output)[:OUTPUT_CAP]

    def not_implemented(self, message: str) -> str:
        """A stub's NotImplementedError, said in the student's language.

        The stub's own words ("pipeline: fork one child per command...") are
        English; in another language the table names the function instead.
        """
        if self.lang == "en" or _exception_name(message) != "NotImplementedError":
            return message
        name = message.partition(":")[2].strip().partition(":")[0].strip() or "?"
        return self._("{name} is not implemented yet (NotImplementedError)").format(name=name)

    def add_findings(self, nodeid: str, key: str, findings: list[diagnostics.Finding]):
        entry = self.entry(nodeid, key)
        for finding in findings:
            hint = self.lab.hint_for(key, self.lang, [{"when": "leak", "kind": finding.kind}])
            own_hint = self.lab.hint_for(key, self.lang)
            entry["findings"].append({**finding.as_dict(), "text": finding.text(self._),
                                      "hint": hint if hint != own_hint else None})
        if findings and self.lab.leaks_cost_points and entry["outcome"] == "passed":
            entry["outcome"] = "failed"
            entry["message"] = self._("leaked: {finding}").format(finding=findings[0].text(self._))
            entry["symptoms"].append({"when": "leak", "kind": findings[0].kind})

    # -- scoring -----------------------------------------------------------------

    def score(self) -> dict:
        """Points per declared test: cases share a test's points; stress runs are all or nothing."""
        by_key: dict[str, list[dict]] = {}
        for entry in self.results.values():
            by_key.setdefault(entry["key"], []).append(entry)
        rows = [self._row(key, spec, by_key.get(key, [])) for key, spec in self.lab.tests.items()]
        return {
            "lab": self.lab.id,
            "total": round(sum(r["points"] for r in rows), 2),
            "max": labs.TOTAL_POINTS,
            "not_run": round(sum(r["max"] for r in rows if not r["ran"]), 2),
            "rows": rows,
            "undeclared": sorted(set(by_key) - set(self.lab.tests)),
            "perturb_seed": self.perturb_seed,
            "stress_seed": self.stress_seed,
        }

    def _row(self, key: str, spec: labs.TestSpec, cases: list[dict]) -> dict:
        passed = sum(1 for c in cases if c["outcome"] == "passed")
        stress = key in self.stress_keys
        if not cases:
            earned = 0.0
        elif stress:
            earned = spec.points if passed == len(cases) else 0.0
        else:
            earned = spec.points * passed / len(cases)
        failed = [c for c in cases if c["outcome"] != "passed"]
        symptoms = [s for c in failed for s in c["symptoms"]]
        message = failed[0]["message"] if failed else ""
        if failed and stress and self.stress_seed is not None:
            message += " " + self._("(perturbed run, seed {seed})").format(seed=self.stress_seed)
        return {
            "key": key, "hidden": spec.hidden, "ran": bool(cases), "stress": stress,
            "points": round(earned, 2), "max": spec.points,
            "passed": passed, "cases": len(cases),
            "message": message,
            "hint": self.lab.hint_for(key, self.lang, symptoms) if failed else None,
            "findings": _unique([f for c in cases for f in c["findings"]], "text"),
            "stacks": next((c["stacks"] for c in failed if c["stacks"]), ""),
        }


def _unique(items: list[dict], field: str) -> list[dict]:
    seen, out = set(), []
    for item in items:
        if item[field] not in seen:
            seen.add(item[field])
            out.append(item)
    return out


def _seed(option: str | None) -> int | None:
    if option in (None, "", "0", "off"):
        return None
    return random.randrange(1, 2**31) if option == "random" else int(option)


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
        return _first_line(crash.message.removeprefix("Failed: "))
    return _first_line(str(report.longrepr))


def _symptom(report, item) -> dict:
    if _STACKS_KEY in item.stash:
        return {"when": "timeout"}
    name = _exception_name(_failure_line(report))
    return {"when": "exception", "exception": name} if name else {"when": "failure"}


def _exception_name(message: str) -> str | None:
    """The exception a failure line starts with ("posix_ipc.BusyError: ..." -> "BusyError"), if any."""
    name = message.split(":", 1)[0].strip()
    if name and all(part.isidentifier() for part in name.split(".")):
        return name.rsplit(".", 1)[-1]
    return None


# -- discovering the lab --------------------------------------------------------------


def _infer_lab(config) -> labs.Lab | None:
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        for folder in [path, *path.parents]:
            if (folder / "lab.yaml").is_file():
                return labs.load_lab(folder)
            sibling = folder.parent.parent / "labs" / folder.name
            if folder.parent.name == "reference" and (sibling / "lab.yaml").is_file():
                return labs.load_lab(sibling)
    return None


def _session(config) -> LabSession | None:
    return config.stash.get(_SESSION_KEY, None)


def lab_session(config) -> LabSession | None:
    """The running lab session, for other plugins (``None`` when no lab is under test)."""
    return _session(config)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.addinivalue_line("markers", "stress(runs=20): run the test this many times; it earns its points only if all pass")
    name = config.getoption("--lab")
    lab = labs.find_lab(name) if name else _infer_lab(config)
    if lab is None:
        return
    session = LabSession(config, lab)
    config.stash[_SESSION_KEY] = session
    _become_subreaper()
    _restore_ignored_signals()
    diagnostics.register_session()
    _prepare_children_environment(session)


def _become_subreaper():
    """Orphaned grandchildren are re-parented to us, so we can reap them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _restore_ignored_signals():
    """Signals ignored when we started stay ignored in every program we exec.

    A shell without job control starts background jobs with SIGINT and SIGQUIT
    ignored; a student's program that must stop on SIGINT would then be blamed.
    """
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        if signal.getsignal(signum) == signal.SIG_IGN:
            handler = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, handler)


def _prepare_children_environment(session: LabSession):
    """Every Python program the tests start will dump its stack on request (and perturb, if asked)."""
    if not session.diagnostics and session.perturb_seed is None and session.stress_seed is None:
        return
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(diagnostics.STARTUP_DIR), os.environ.get("PYTHONPATH")]))
    if session.diagnostics:
        diagnostics.register_dump_handler(session.diag_dir)
        os.environ[diagnostics.DIAG_DIR_ENV] = str(session.diag_dir)
    seed = session.perturb_seed or session.stress_seed
    if seed is not None:
        if session.perturb_seed is not None:  # every test; with --perturb-stress, set per stress test
            os.environ["IPCLAB_PERTURB"] = str(seed)
        sys.path.insert(0, str(diagnostics.STARTUP_DIR))
        import ipclab_perturb
        ipclab_perturb.install(seed, enabled=session.perturb_seed is not None)


def pytest_unconfigure(config):
    session = _session(config)
    if session is not None and os.getpid() == session.main_pid:
        shutil.rmtree(session.diag_dir, ignore_errors=True)
        diagnostics.unregister_session()


@pytest.fixture
def stress_run(request) -> int:
    """Which run of a ``@pytest.mark.stress(runs=N)`` test this is: 1 to N."""
    return getattr(request, "param", 1)


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("stress")
    if marker is None:
        return
    runs = int(marker.kwargs.get("runs", marker.args[0] if marker.args else 20))
    if "stress_run" not in metafunc.fixturenames:
        metafunc.fixturenames.append("stress_run")
    metafunc.parametrize("stress_run", range(1, runs + 1), indirect=True,
                         ids=[f"run{i}of{runs}" for i in range(1, runs + 1)])


def pytest_collection_modifyitems(config, items):
    session = _session(config)
    if session is None:
        return
    for item in items:
        key = labs.test_key(item.nodeid)
        session.keys[item.nodeid] = key
        if item.get_closest_marker("stress"):
            session.stress_keys.add(key)
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


# -- timeouts with stacks ---------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item, settings):
    """Like pytest-timeout's signal method, but first capture every process's stack."""
    session = _session(item.config)
    if session is None or not session.diagnostics or os.getpid() != session.main_pid:
        return None

    def on_timeout(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 0)
        item.stash[_STACKS_KEY] = diagnostics.capture_stacks(frame, session.diag_dir)
        summary = item.stash[_STACKS_KEY].split("\n\n", 1)[0].replace("\n", "; ")
        message = session._("Timeout: the test did not finish within {seconds} s").format(seconds=f"{settings.timeout:g}")
        pytest.fail(f"{message}; {summary}", pytrace=False)

    signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item):
    session = _session(item.config)
    if session is None or not session.diagnostics:
        return None
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    return True


# -- leaks and process hygiene ---------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    session = _session(item.config)
    before = set(diagnostics.descendants()) if session is not None else set()
    if session is not None and session.diagnostics:
        item.stash[_LEAKS_KEY] = diagnostics.LeakCheck()
    perturbed = session is not None and session.stress_seed is not None and item.get_closest_marker("stress")
    if perturbed:
        _perturb_stress_test(True, session.stress_seed)
    try:
        yield
    finally:
        if perturbed and os.getpid() == session.main_pid:
            _perturb_stress_test(False, session.stress_seed)
    if session is not None and os.getpid() == session.main_pid:
        # Process hygiene holds even without diagnostics: kill whatever the test started.
        diagnostics.kill_and_reap([p for pid, p in diagnostics.descendants().items()
                                   if pid not in before and not diagnostics.is_runtime_helper(p)])


def _perturb_stress_test(on: bool, seed: int) -> None:
    """Delays in this process and in every program the stress test starts."""
    import ipclab_perturb

    ipclab_perturb.enable(on)
    if on:
        os.environ["IPCLAB_PERTURB"] = str(seed)
    else:
        os.environ.pop("IPCLAB_PERTURB", None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    session = _session(item.config)
    if session is None or os.getpid() != session.main_pid or _LEAKS_KEY not in item.stash:
        return
    tmp_path = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    findings = item.stash[_LEAKS_KEY].findings(Path(tmp_path) if tmp_path else None)
    session.add_findings(item.nodeid, session.keys.get(item.nodeid, labs.test_key(item.nodeid)), findings)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    session = _session(item.config)
    if session is not None and os.getpid() != session.main_pid:
        # A forked child of the student's code fell back into the test runner
        # (it returned instead of calling os._exit). Never let it report.
        os._exit(70)
    outcome = yield
    if session is not None:
        session.record(outcome.get_result(), session.keys.get(item.nodeid, labs.test_key(item.nodeid)), item)


def pytest_sessionfinish(session, exitstatus):
    lab_session = _session(session.config)
    if lab_session is None or os.getpid() != lab_session.main_pid:
        return
    diagnostics.kill_and_reap(list(diagnostics.descendants().values()))
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
    _ = session._
    score = session.score()
    write = terminalreporter.write_line
    terminalreporter.section(_("{lab} score: {title}").format(
        lab=session.lab.id, title=_(session.lab.title)), sep="=")
    for row in score["rows"]:
        if row["ran"]:
            _write_row(write, row, _)
    if score["undeclared"]:
        write(" (" + _("tests with no points in lab.yaml: {tests}").format(tests=", ".join(score["undeclared"])) + ")")
    if score["perturb_seed"] is not None:
        write(" (" + _("perturbation on: --perturb {seed} replays this run").format(seed=score["perturb_seed"]) + ")")
    if score["stress_seed"] is not None and session.stress_keys:
        write(" (" + _("stress tests perturbed: --perturb-stress {seed} replays them").format(seed=score["stress_seed"]) + ")")
    tail = ""
    hidden_only = all(row["hidden"] for row in score["rows"] if not row["ran"])
    if score["not_run"]:
        message = _("{points} points are in tests not run here: the grader's hidden tests") if hidden_only \
            else _("{points} points are in tests not run here")
        tail = "   (" + message.format(points=_fmt(score["not_run"])) + ")"
    write(f"{session.lab.id}: {_fmt(score['total'])}/{score['max']}{tail}", bold=True)


def _write_row(write, row, _):
    indent = " " * 17
    ok = row["passed"] == row["cases"]
    pts = f"{_fmt(row['points'])}/{_fmt(row['max'])}"
    runs = ""
    if row["cases"] > 1 and not ok:
        template = _("passed {passed}/{cases} runs") if row["stress"] else _("passed {passed}/{cases}")
        runs = "  (" + template.format(passed=row["passed"], cases=row["cases"]) + ")"
    write(f" {'ok  ' if ok else 'FAIL'} {pts:>9}  {row['key']}{runs}")
    if not ok:
        if row["message"]:
            write(f"{indent}{_('why:')}  {row['message']}")
        if row["hint"]:
            write(f"{indent}{_('hint:')} {row['hint']}")
    for finding in row["findings"]:
        write(f"{indent}{_('leak:')} {finding['text']}")
        if finding.get("hint"):
            write(f"{indent}{_('hint:')} {finding['hint']}")


def _fmt(points: float) -> str:
    return f"{points:g}"
