"""Diagnostics of the plugin: leaks, stacks of hung tests, stress runs, symptom hints."""

import os
from pathlib import Path

import pytest

LAB_YAML = """\
id: lab9
title: Diagnostics demo
modules: [demo.py]
timeout: 4
resources: {cpus: 1, memory: 256m}
symptoms:
  - {when: timeout, test: "test_demo.py::test_hangs", hint: "A reader waits for EOF that never comes."}
  - {when: leak, kind: zombie, hint: "Call os.waitpid for every child."}
tests:
  test_demo.py::test_hangs: {points: 20, hint: "Generic hint."}
  test_demo.py::test_leaks: {points: 20, hint: "Leak hint."}
  test_demo.py::test_flaky: {points: 20, hint: "Race hint."}
  test_demo.py::test_fifo: {points: 20, hint: "FIFO hint."}
  test_demo.py::test_clean: {points: 20, hint: "Clean hint."}
"""
TESTS = '''
import os
import pytest

def test_hangs(impl):
    impl.load("demo").hang()

def test_leaks(impl):
    impl.load("demo").leak()

@pytest.mark.stress(runs=5)
def test_flaky(impl, stress_run):
    assert impl.load("demo").flaky(stress_run)

def test_fifo(impl, tmp_path):
    impl.load("demo").fifo(tmp_path / "f")

def test_clean(impl):
    assert impl.load("demo").clean() == 0
'''
CLEAN = '''
import os, subprocess
def hang(): pass
def leak(): pass
def flaky(run): return True
def fifo(path):
    os.mkfifo(path)
    os.unlink(path)
def clean():
    return subprocess.run(["true"]).returncode
'''
BROKEN = '''
import os, sys, subprocess
from multiprocessing import shared_memory

def hang():
    # classic: a child keeps the write end, so the parent's read never sees EOF
    r, w = os.pipe()
    subprocess.Popen([sys.executable, "-c", "import os,sys; os.read(int(sys.argv[1]), 1)", str(r)], pass_fds=(r, w))
    os.read(r, 1)

def leak():
    if os.fork() == 0:
        os._exit(0)                    # a zombie: nobody waits for it
    global kept
    kept = open("/dev/null")           # a descriptor never closed
    shm = shared_memory.SharedMemory(name="ipclab_demo_leak_%d" % os.getpid(), create=True, size=4096)
    shm.close()                        # closed but never unlinked
    from multiprocessing import resource_tracker
    resource_tracker.unregister(shm._name, "shared_memory")

def flaky(run):
    return run != 3

def fifo(path):
    os.mkfifo(path)                    # never removed

def clean():
    return 0
'''


@pytest.fixture
def kit(make_kit):
    return make_kit().write(LAB_YAML, TESTS, CLEAN)


def test_a_clean_implementation_has_no_findings(kit):
    proc, score = kit.run(impl=kit.impl(CLEAN))
    assert score["total"] == 100, proc.stdout
    assert not [r["findings"] for r in score["rows"] if r["findings"]]


@pytest.fixture
def broken(kit):
    proc, score = kit.run(impl=kit.impl(BROKEN), timeout=180)
    return kit, proc


def test_a_hung_test_shows_the_child_blocked_in_read(broken):
    kit, proc = broken
    row = kit.row("test_demo.py::test_hangs")
    assert row["points"] == 0
    assert "did not finish within 4 s" in row["message"]
    assert "blocked in <module> at <string>:1" in row["stacks"] or "os.read" in row["stacks"], row["stacks"]
    assert "blocked in hang at demo.py:9" in row["stacks"], row["stacks"]
    assert row["hint"] == "A reader waits for EOF that never comes."


def test_leaks_become_named_findings_and_are_cleaned_up(broken):
    kit, proc = broken
    row = kit.row("test_demo.py::test_leaks")
    kinds = {f["kind"] for f in row["findings"]}
    assert {"zombie", "shm", "fd"} <= kinds, row["findings"]
    assert row["points"] == 20, "by default a leak is shown, not charged"
    assert any(f["hint"] == "Call os.waitpid for every child." for f in row["findings"])
    leaked = [f["details"]["path"] for f in row["findings"] if f["kind"] == "shm"]
    assert leaked and not any(Path(path).exists() for path in leaked), "the leaked segment is cleaned up"
    assert "leak: left /dev/shm/ipclab_demo_leak_" in proc.stdout


def test_a_fifo_left_in_the_test_folder_is_a_finding(broken):
    kit, _ = broken
    findings = kit.row("test_demo.py::test_fifo")["findings"]
    assert [f["kind"] for f in findings] == ["fifo"]


def test_a_stress_test_earns_its_points_only_when_every_run_passes(broken):
    kit, proc = broken
    row = kit.row("test_demo.py::test_flaky")
    assert (row["points"], row["passed"], row["cases"]) == (0, 4, 5)
    assert "passed 4/5 runs" in proc.stdout


def test_leaks_can_cost_points(kit):
    (kit.lab / "lab.yaml").write_text(LAB_YAML + "leaks_cost_points: true\n")
    kit.run(impl=kit.impl(BROKEN), timeout=180)
    assert kit.row("test_demo.py::test_leaks")["points"] == 0
    assert kit.row("test_demo.py::test_clean")["points"] == 20


def test_perturbation_is_seeded_and_reported(kit):
    proc, score = kit.run(impl=kit.impl(CLEAN), extra=["--perturb", "1234"])
    assert score["total"] == 100, proc.stdout
    assert score["perturb_seed"] == 1234
    assert "--perturb 1234 replays this run" in proc.stdout


def test_perturbation_of_stress_tests_only(kit):
    proc, score = kit.run(impl=kit.impl(CLEAN), extra=["--perturb-stress", "77"])
    assert score["total"] == 100, proc.stdout
    assert score["stress_seed"] == 77 and score["perturb_seed"] is None
    assert "--perturb-stress 77 replays them" in proc.stdout


def test_a_failed_stress_test_names_its_seed(kit):
    kit.run(impl=kit.impl(BROKEN), extra=["--perturb-stress", "78"], timeout=180)
    assert "(perturbed run, seed 78)" in kit.row("test_demo.py::test_flaky")["message"]


def _shm_leak_check(during):
    """A LeakCheck around a test that leaves a file in /dev/shm while ``during()`` runs."""
    import uuid

    from grader import diagnostics

    check = diagnostics.LeakCheck()
    leaked = Path("/dev/shm") / f"ipclab_kit_test_{uuid.uuid4().hex[:8]}"
    try:
        leaked.touch()
        during()
        return {f.kind for f in check.findings()}, leaked.exists()
    finally:
        leaked.unlink(missing_ok=True)


@pytest.fixture
def own_registry(tmp_path, monkeypatch):
    """A session registry of its own, so that kit runs elsewhere on the machine do not count."""
    from grader import diagnostics

    monkeypatch.setattr(diagnostics, "SESSIONS_DIR", tmp_path / "sessions")
    return diagnostics.SESSIONS_DIR


def test_a_shm_leftover_is_blamed_when_no_other_run_came_or_went(own_registry):
    kinds, still_there = _shm_leak_check(lambda: None)
    assert "shm" in kinds and not still_there


def test_a_run_that_came_and_went_during_the_test_is_not_blamed_on_it(own_registry):
    """Another kit run that started and ended mid-test may have left that name: it is not ours to blame."""
    def another_run_comes_and_goes():
        own_registry.mkdir(exist_ok=True)
        ghost = own_registry / "999999999"
        ghost.touch()
        ghost.unlink()

    kinds, still_there = _shm_leak_check(another_run_comes_and_goes)
    assert "shm" not in kinds and still_there


def test_a_message_queue_left_behind_is_a_finding(own_registry):
    import uuid

    import posix_ipc

    from grader import diagnostics

    assert os.path.ismount(diagnostics.MQUEUE_DIR), \
        "/dev/mqueue is not mounted, so leaked message queues cannot be seen: mount -t mqueue none /dev/mqueue"
    check = diagnostics.LeakCheck()
    name = f"/ipclab_kit_test_{uuid.uuid4().hex[:8]}"
    queue = posix_ipc.MessageQueue(name, posix_ipc.O_CREX)
    queue.close()
    try:
        found = check.findings()
        assert [f.kind for f in found] == ["mqueue"], found
        assert not (diagnostics.MQUEUE_DIR / name.lstrip("/")).exists(), "the leaked queue was not removed"
    finally:
        try:
            posix_ipc.unlink_message_queue(name)
        except posix_ipc.ExistentialError:
            pass
