"""Cluster grading with the real Docker grader: ``python -m grader worker`` on loopback.

A ``dask scheduler`` and one ipclab worker (the ``grader worker`` command,
which checks the engine and the runner image, then advertises its cores and
memory) grade a generated class of lab 2; the gradebook must match the local
pool's batch of the same class. Needs the engine and the runner image (fails,
never skips, under IPCLAB_REQUIRE_DOCKER=1).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from graderkit import require_engine
from grader import batch, cluster, labs
from test_cluster import KIT, START_WAIT, LoopbackCluster, gradebook

pytestmark = pytest.mark.docker

CLASS_SIZE = 6


@pytest.fixture(scope="module")
def engine():
    return require_engine()


def scores(out) -> dict[str, tuple]:
    return {sid: (row["status"], row["score"]) for sid, row in gradebook(out).items()}


def test_the_worker_command_grades_a_class_like_the_local_batch(tmp_path, engine):
    lab = labs.find_lab("lab2")
    subs = tmp_path / "subs"
    kinds = {k: v for k, v in batch.submission_kinds(lab).items() if not k.startswith("attack:")}
    batch.generate_class(lab, subs, CLASS_SIZE, kinds=kinds)
    cores = sorted(os.sched_getaffinity(0))[:2]
    lc = LoopbackCluster(tmp_path, tmp_path / "calls.jsonl")
    executor = None
    try:
        lc.start_scheduler()
        lc.start_grader_worker("docker-worker", set(cores))
        executor = cluster.DaskExecutor(lc.address, worker_wait=START_WAIT)
        lc.wait_for_workers(executor.client, 1)
        offered = list(executor.workers().values())
        assert offered == [{cluster.CPU: len(cores), cluster.MEMORY: offered[0][cluster.MEMORY]}]
        assert executor.image_id() == batch.docker_backend().image_id()

        # the instructor's command line, end to end
        remote = subprocess.run([sys.executable, "-m", "grader", "batch", "--lab", "lab2", str(subs),
                                 "--out", str(tmp_path / "cluster"), "--cluster", lc.address],
                                cwd=KIT, capture_output=True, text=True, timeout=900)
    finally:
        if executor is not None:
            executor.close()
        lc.stop()
    local = batch.run_batch(lab, subs, tmp_path / "local", jobs=2, stream=io.StringIO())
    assert remote.returncode == local.exit_code == 0, (remote.stdout[-2000:], remote.stderr[-2000:], local.rows)
    assert scores(tmp_path / "cluster") == scores(tmp_path / "local")
    for sid in gradebook(tmp_path / "local"):
        assert sorted(p.name for p in (tmp_path / "cluster" / sid).iterdir()) == \
            sorted(p.name for p in (tmp_path / "local" / sid).iterdir())


def test_the_worker_command_checks_and_advertises(tmp_path, engine):
    proc = subprocess.run([sys.executable, "-m", "grader", "worker", "--scheduler", "tcp://127.0.0.1:9",
                           "--cores", "0", "--memory", "2g", "--check-only"],
                          cwd=KIT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"--resources {cluster.CPU}=1,{cluster.MEMORY}={2 * 2**30}" in proc.stderr
