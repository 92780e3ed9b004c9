"""Every broken fixture loses points on the tests that name its bug.

A fixture is ``tests/fixtures/labN/<bug>/``: ``fixture.yaml`` (lab, bug,
must_fail; optionally ``findings``, the kinds of leak the diagnostics must
report on those tests, ``stack``, a pattern the stacks of a hung test must
show, and ``message``, a pattern their failure messages must show) and the
buggy module(s). Modules it does not hold come from the
reference, so each fixture differs from a correct submission by one bug.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from grader import labs, selfcheck

FIXTURES = Path(__file__).parent / "fixtures"


def lab_fixtures():
    return sorted(p.parent for p in FIXTURES.glob("lab*/*/fixture.yaml"))


def assemble(fixture: Path, dest: Path) -> tuple[labs.Lab, dict]:
    """Reference modules overlaid with the fixture's buggy ones, in ``dest``."""
    spec = yaml.safe_load((fixture / "fixture.yaml").read_text())
    lab = labs.find_lab(spec["lab"])
    for module in lab.modules:
        shutil.copy(lab.reference_dir / module, dest / module)
    for buggy in fixture.glob("*.py"):
        shutil.copy(buggy, dest / buggy.name)
    return lab, spec


def node_id(lab: labs.Lab, key: str) -> str:
    filename, _, name = key.partition("::")
    for folder in (lab.public_tests_dir, lab.hidden_tests_dir):
        if (folder / filename).is_file():
            return f"{folder / filename}::{name}"
    raise AssertionError(f"no test file {filename} in {lab.name}")


@pytest.mark.parametrize("fixture", lab_fixtures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_loses_points_on_the_named_tests(fixture, tmp_path):
    impl = tmp_path / "impl"
    impl.mkdir()
    lab, spec = assemble(fixture, impl)
    assert spec.get("bug") and spec.get("must_fail"), "fixture.yaml needs bug and must_fail"
    unknown = [key for key in spec["must_fail"] if key not in lab.tests]
    assert not unknown, f"must_fail names tests with no points: {unknown}"

    results_file = tmp_path / "results.json"
    proc = selfcheck.run_lab_tests(lab, impl, results_file, [node_id(lab, k) for k in spec["must_fail"]])
    assert results_file.exists(), proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = {row["key"]: row for row in json.loads(results_file.read_text())["score"]["rows"]}
    survived = [key for key in spec["must_fail"] if rows[key]["points"] >= rows[key]["max"]]
    assert not survived, f"{fixture.name} ({spec['bug']}) kept full points on {survived}"
    named = [rows[key] for key in spec["must_fail"]]
    found = {f["kind"] for row in named for f in row["findings"]}
    missing = set(spec.get("findings", [])) - found
    assert not missing, f"the diagnostics did not report {missing} (found {found})"
    if spec.get("stack"):
        stacks = "\n".join(row["stacks"] for row in named)
        assert re.search(spec["stack"], stacks), f"no stack matching {spec['stack']!r}:\n{stacks[:3000]}"
    if spec.get("message"):
        messages = "\n".join(row["message"] for row in named)
        assert re.search(spec["message"], messages), f"no failure message matching {spec['message']!r}:\n{messages}"
