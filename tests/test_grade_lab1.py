"""Acceptance on lab 1: the reference scores 100 and the stub 0 in the container,
and every broken fixture of lab 1 gets the same verdict in the container as in
a local run on the tests that name its bug."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from graderkit import my_containers, require_engine

from grader import grade, labs, selfcheck

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine():
    return require_engine()


@pytest.fixture(scope="module")
def lab1():
    try:
        return labs.find_lab("lab1")
    except labs.LabError:
        pytest.fail("lab 1 is missing from labs/")


def test_reference_scores_100_in_all_four_reports(lab1, engine, tmp_path):
    import junitparser

    result = grade.grade_submission(lab1, lab1.reference_dir, tmp_path)
    assert (result.status, result.score, result.max_score) == ("graded", 100, 100), result.reason + json.dumps(
        [r for r in result.report["tests"] if r["status"] != "passed"])[:3000]
    assert json.loads((tmp_path / "results.json").read_text())["score"] == 100
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    assert all(case.is_passed for suite in xml for case in suite)
    assert "100 / 100" in (tmp_path / "report.html").read_text()
    assert my_containers(engine) == []


def test_stub_scores_0(lab1, engine, tmp_path):
    result = grade.grade_submission(lab1, lab1.folder, tmp_path)
    assert (result.status, result.score) == ("graded", 0), result.reason


def _local_verdicts(lab, impl: Path, tmp: Path, keys: list[str]) -> dict[str, bool]:
    results = tmp / "local.json"
    targets = []
    for key in keys:
        filename, _, name = key.partition("::")
        folder = lab.public_tests_dir if (lab.public_tests_dir / filename).is_file() else lab.hidden_tests_dir
        targets.append(f"{folder / filename}::{name}")
    selfcheck.run_lab_tests(lab, impl, results, targets)
    rows = json.loads(results.read_text())["score"]["rows"]
    return {row["key"]: row["passed"] == row["cases"] and row["ran"] for row in rows if row["key"] in keys}


LAB1_FIXTURES = sorted(p for p in (Path(__file__).parent / "fixtures" / "lab1").glob("*") if list(p.glob("*.py")))


@pytest.mark.parametrize("fixture", LAB1_FIXTURES, ids=lambda p: p.name)
def test_fixture_verdicts_match_a_local_run(fixture, lab1, engine, tmp_path):
    impl = tmp_path / "impl"
    impl.mkdir()
    lab = lab1
    for module in lab.modules:  # the reference with the fixture's one buggy module over it
        shutil.copy(lab.reference_dir / module, impl / module)
    for buggy in fixture.glob("*.py"):
        shutil.copy(buggy, impl / buggy.name)
    # The tests that name the fixture's bug (all tests when it names none): a full
    # run of every fixture twice would take minutes of timeouts.
    spec = yaml.safe_load((fixture / "fixture.yaml").read_text()) if (fixture / "fixture.yaml").is_file() else {}
    keys = spec.get("must_fail") or list(lab.tests)
    local = _local_verdicts(lab, impl, tmp_path, keys)
    result = grade.grade_submission(lab, impl, tmp_path / "out", only_tests=keys)
    assert result.status == "graded", result.reason
    container = {row["name"]: row["status"] == "passed" for row in result.report["tests"]}
    differ = {key: (local[key], container[key]) for key in local if local[key] != container.get(key)}
    assert not differ, f"(local, container) verdicts differ: {differ}"
