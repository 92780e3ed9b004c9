"""The ipclab pytest plugin, exercised on a tiny throwaway lab."""

import os

import psutil
import pytest

LAB_YAML = """\
id: lab9
title: Demo
modules: [demo.py]
timeout: 5
hidden_points: 40
tests:
  test_demo.py::test_add: {points: 30, hint: "Return the sum, not the product."}
  test_demo.py::test_param: {points: 30, hint: {en: "Zero is a number too.", ko: "0도 숫자입니다."}}
"""
HIDDEN_YAML = """\
tests:
  test_hidden_demo.py::test_hang: {points: 20, timeout: 2}
  test_hidden_demo.py::test_children: {points: 20}
"""
PUBLIC_TESTS = '''
import pytest
def test_add(impl):
    assert impl.load("demo").add(2, 3) == 5
@pytest.mark.parametrize("a", [0, 1])
def test_param(impl, a):
    assert impl.load("demo").add(a, 0) == a
'''
HIDDEN_TESTS = '''
def test_hang(impl):
    impl.load("demo").hang()
def test_children(impl):
    assert impl.load("demo").spawn() is None
'''
STUB = '''
def add(a, b):
    """Return a + b."""
    raise NotImplementedError("add")
def hang():
    """Return at once."""
    raise NotImplementedError("hang")
def spawn():
    """Start nothing."""
    raise NotImplementedError("spawn")
'''
REFERENCE = '''
def add(a, b):
    return a + b
def hang():
    return None
def spawn():
    return None
'''


@pytest.fixture
def kit(make_kit):
    """lab9 with a stub, a reference and hidden tests."""
    return make_kit().write(LAB_YAML, PUBLIC_TESTS, STUB, hidden_yaml=HIDDEN_YAML,
                            hidden_tests=HIDDEN_TESTS, reference=REFERENCE)


def test_stub_prints_a_clean_table_of_zeros(kit):
    proc, score = kit.run(hidden=False)
    assert proc.returncode != 0
    assert score["total"] == 0
    assert "lab9: 0/100" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "NotImplementedError: add" in proc.stdout
    assert "hint: Return the sum, not the product." in proc.stdout
    assert "40 points are in tests not run here" in proc.stdout


def test_reference_scores_100_and_exits_zero(kit):
    proc, score = kit.run(impl="reference/lab9_demo")
    assert score["total"] == 100, proc.stdout
    assert proc.returncode == 0
    assert "lab9: 100/100" in proc.stdout


def test_parametrised_test_shares_its_points(kit):
    impl = kit.impl("""
        def add(a, b): return a + b if a else 7
        def hang(): pass
        def spawn(): pass
    """)
    proc, score = kit.run(impl=impl)
    row = next(r for r in score["rows"] if r["key"] == "test_demo.py::test_param")
    assert (row["points"], row["passed"], row["cases"]) == (15, 1, 2)
    assert "Zero is a number too." in proc.stdout


def test_korean_hint_when_asked(kit):
    proc, _ = kit.run(hidden=False, env={"IPCLAB_LANG": "ko"})
    assert "0도 숫자입니다." in proc.stdout


def test_hung_test_fails_within_its_timeout_and_the_run_goes_on(kit):
    impl = kit.impl("""
        import time
        def add(a, b): return a + b
        def hang(): time.sleep(3600)
        def spawn(): pass
    """)
    proc, score = kit.run(impl=impl, timeout=30)
    rows = {r["key"]: r for r in score["rows"]}
    assert rows["test_hidden_demo.py::test_hang"]["points"] == 0
    assert "Timeout" in rows["test_hidden_demo.py::test_hang"]["message"]
    assert score["total"] == 80


def test_processes_a_test_started_are_killed_and_reaped(kit):
    marker = f"ipclab-orphan-{os.getpid()}"
    impl = kit.impl(f"""
        import subprocess
        def add(a, b): return a + b
        def hang(): pass
        def spawn():
            # a plain child, and a double-forked daemon that escapes its parent
            subprocess.Popen(["sh", "-c", "exec -a {marker} sleep 600"])
            subprocess.run(["sh", "-c", "(exec -a {marker} sleep 600) &"])
    """)
    kit.run(impl=impl)
    left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    for proc in left:
        proc.kill()
    assert not left, f"processes left running: {[p.pid for p in left]}"


def test_a_forked_child_that_returns_into_the_runner_is_stopped(kit):
    impl = kit.impl("""
        import os
        def add(a, b):
            os.fork()          # classic bug: the child returns instead of os._exit()
            return a + b
        def hang(): pass
        def spawn(): pass
    """)
    proc, score = kit.run(impl=impl)
    assert score["total"] == 100
    assert proc.stdout.count("lab9: 100/100") == 1


@pytest.mark.parametrize("body", [
    "def add(a, b) return a + b",              # syntax error
    "raise SystemExit(0)",                      # exits at import
    "import no_such_module_anywhere",          # import error
])
def test_a_submission_that_cannot_import_fails_its_tests_cleanly(kit, body):
    proc, score = kit.run(impl=kit.impl(body), hidden=False)
    assert score["total"] == 0
    assert len(score["rows"]) == 4 and all(r["ran"] for r in score["rows"] if not r["hidden"])
    assert "could not import demo.py" in proc.stdout
    assert "Traceback" not in proc.stdout
