"""The grader removes its containers: when done (tests/test_grade.py), on Ctrl-C or
SIGTERM, and, at the next run, those a crashed grader left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from graderkit import FIXTURES, make_demo_kit, require_engine

from grader import image, sandbox

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine():
    return require_engine()


def containers_of(client, owner: str) -> list[str]:
    return sandbox.containers_of(client, owner)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_grader_removes_its_container(engine, tmp_path, signum):
    lab = make_demo_kit(tmp_path / "kit")
    proc = subprocess.Popen([sys.executable, "-m", "grader", "grade", "--lab", str(lab.folder),
                             str(FIXTURES / "hostile" / "sleep_past_wall_clock"), "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    owner = f"{sandbox.socket.gethostname()}:{proc.pid}"
    try:
        deadline = time.monotonic() + 60
        while not containers_of(engine, owner):
            assert proc.poll() is None and time.monotonic() < deadline, "no container appeared"
            time.sleep(0.2)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert containers_of(engine, owner) == []


def test_stale_containers_of_a_dead_grader_are_removed(engine):
    dead = subprocess.Popen(["true"])
    dead.wait()
    owner = f"{sandbox.socket.gethostname()}:{dead.pid}"
    stale = engine.containers.create(image.image_tag(), command=["true"], network_mode="none",
                                     labels={sandbox.LABEL: "1", sandbox.OWNER_LABEL: owner})
    mine = engine.containers.create(image.image_tag(), command=["true"], network_mode="none",
                                    labels={sandbox.LABEL: "1", sandbox.OWNER_LABEL: sandbox._owner()})
    try:
        removed = sandbox.remove_stale(engine)
        assert stale.id[:12] in removed and mine.id[:12] not in removed
        assert containers_of(engine, owner) == []
    finally:
        mine.remove(force=True)
        try:
            stale.remove(force=True)
        except Exception:
            pass
