"""Scoring and the four reports, from hand-made harness lines (no Docker needed).

The rendered report.html is also loaded in headless Chromium when it is
installed (CI installs it), and its DOM checked for the facts a student needs.
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from graderkit import make_demo_kit

from grader import reports, sandbox

ALL = ["test_demo.py::test_add", "test_demo.py::test_param[0]", "test_demo.py::test_param[1]",
       "test_hidden_demo.py::test_hang", "test_hidden_demo.py::test_children"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_kit(tmp_path_factory.mktemp("kit"))


def result(nodeid, outcome="passed", message=""):
    return {"t": "result", "nodeid": f"labs/lab9_demo/tests/{nodeid}", "outcome": outcome, "duration": 0.01,
            "message": message, "output": ""}


def run_of(lines, **kwargs) -> sandbox.RunResult:
    defaults = dict(exit_code=0, wall_clock_killed=False, oom_killed=False, seconds=1.0,
                    host_stats={"peak_processes": 3}, stderr_tail="", unparsed_lines=0)
    defaults.update(kwargs)
    return sandbox.RunResult(lines=lines, **defaults)


def report_for(demo, lines, **kwargs) -> dict:
    ctx = reports.Context(lab=demo, submission=Path("/subs/alice.zip"), student_id="alice", kit_version="0.1.0",
                          image_tag="ipclab-runner:0.1.0", started_at=0.0, expected=list(ALL),
                          limits={"wall_clock": 20, "memory": "512m", "output": "1m"})
    ctx.run = run_of(lines, **kwargs)
    return reports.build(ctx, finished_at=2.0)


START, COLLECTED = {"t": "start"}, {"t": "collected", "count": 5}
END = {"t": "end", "exit": 1, "dropped_output": 0, "leftovers": [],
       "stats": {"cpu_seconds": 0.5, "peak_memory_bytes": 1000, "peak_processes": 5}}


def test_points_are_shared_among_cases_and_computed_here(demo):
    lines = [START, COLLECTED, result(ALL[0]), result(ALL[1]), result(ALL[2], "failed", "assert 2 == 1"),
             result(ALL[3], "failed", "Failed: Timeout >2.0s"), result(ALL[4], "error", "fixture broke"),
             {"t": "done"}, END]
    report = report_for(demo, lines)
    rows = {r["name"]: r for r in report["tests"]}
    assert report["status"] == "graded" and report["score"] == 45
    assert rows["test_demo.py::test_param"]["points"] == 15
    assert rows["test_demo.py::test_param"]["feedback"] == "[1] assert 2 == 1"
    assert rows["test_hidden_demo.py::test_hang"]["status"] == "timeout"
    assert rows["test_hidden_demo.py::test_children"]["status"] == "error"
    assert report["resources"] == {"peak_processes": 5, "cpu_seconds": 0.5, "peak_memory_bytes": 1000}


def test_missing_duplicate_and_unknown_results_earn_nothing(demo):
    lines = [START, COLLECTED, result(ALL[0]), result(ALL[0]), result("test_demo.py::test_bonus"),
             result(ALL[1]), result(ALL[2]), END]  # no "done": the test process died
    report = report_for(demo, lines)
    rows = {r["name"]: r for r in report["tests"]}
    assert rows["test_demo.py::test_add"]["points"] == 0  # reported twice
    assert rows["test_demo.py::test_param"]["points"] == 30
    assert report["score"] == 30 and report["events"]["unknown_results"] == ["test_demo.py::test_bonus"]
    assert "before reporting this test" in rows["test_hidden_demo.py::test_hang"]["feedback"]


def test_nothing_counts_once_the_channel_broke(demo):
    # Even results before the break: a forger sends its lies before the kit notices.
    lines = [START, COLLECTED, result(ALL[0]), {"t": "broken", "why": "a wrong signature"}, END]
    report = report_for(demo, lines)
    assert report["score"] == 0 and "broken after test_demo.py::test_add" in report["reason"]


def test_wall_clock_kill_is_graded_and_said(demo):
    report = report_for(demo, [START, COLLECTED, result(ALL[0])], wall_clock_killed=True, exit_code=137)
    assert report["status"] == "graded" and report["score"] == 30
    assert "wall-clock limit of 20 s" in report["reason"]


@pytest.mark.parametrize("lines, why", [([], "never started"), ([START], "did not collect"),
                                        ([START, COLLECTED, result(ALL[0])], "results were lost")])
def test_lost_results_are_a_grader_error(demo, lines, why, tmp_path):
    report = report_for(demo, lines, exit_code=1)
    assert report["status"] == "grader_error" and why in report["reason"] and report["tests"] == []
    reports.write_all(report, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


def test_results_json_is_gradescope_format(demo):
    report = report_for(demo, [START, COLLECTED, *[result(n) for n in ALL], {"t": "done"}, END])
    gs = reports.gradescope(report)
    assert set(gs) == {"score", "execution_time", "output", "stdout_visibility", "tests"}
    assert gs["score"] == 100
    for test in gs["tests"]:
        assert set(test) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["visibility"] in ("visible", "hidden", "after_due_date", "after_published")


def test_junit_is_readable_by_junitparser(demo, tmp_path):
    import junitparser

    lines = [START, COLLECTED, result(ALL[0], "failed", "assert 6 == 5"), result(ALL[1]), result(ALL[2]),
             result(ALL[3]), result(ALL[4], "skipped", "not here"), {"t": "done"}, END]
    (tmp_path / "junit.xml").write_text(reports.junit_xml(report_for(demo, lines)))
    suite = next(iter(junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml"))))
    cases = {case.name: case for case in suite}
    assert suite.tests == 4 and suite.failures == 1 and suite.skipped == 1
    failure = cases["test_add"].result[0]
    assert isinstance(failure, junitparser.Failure) and "assert 6 == 5" in failure.message


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts = []

    def handle_data(self, data):
        self.parts.append(data)


def _visible_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def _report_page(demo) -> str:
    lines = [START, COLLECTED, result(ALL[0], "failed", "assert 6 == 5 <script>"), result(ALL[1]), result(ALL[2]),
             result(ALL[3]), result(ALL[4]), {"t": "done"}, END]
    return reports.render_html(report_for(demo, lines))


def test_html_states_score_points_failure_and_hint(demo):
    page = _report_page(demo)
    assert "<script>" not in page  # the failure message is escaped
    text = _visible_text(page)
    assert text.index("70 / 100") < text.index("test_demo.py::test_add")
    assert "0 / 30" in text and "assert 6 == 5 <script>" in text
    assert "Hint: Return the sum, not the product." in text
    assert "(hidden test)" in text


def test_html_renders_in_headless_chromium(demo, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("IPCLAB_REQUIRE_DOCKER") == "1":  # CI installs chromium along with docker.io
            pytest.fail("chromium is not installed")
        pytest.skip("chromium is not installed")
    page = tmp_path / "report.html"
    page.write_text(_report_page(demo))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + str(tmp_path / "profile"),
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = _visible_text(proc.stdout)
    assert "70 / 100" in text and "Hint: Return the sum, not the product." in text and "assert 6 == 5" in text
