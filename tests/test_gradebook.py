"""The late policy, the manifest, gradebook.csv and the class summary."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from grader import gradebook, labs

UTC = dt.timezone.utc
KST = dt.timezone(dt.timedelta(hours=9))
KEYS = ["test_a.py::test_one", "test_a.py::test_two"]


def lab(tmp_path) -> labs.Lab:
    tests = {k: labs.TestSpec(key=k, points=50.0, hint="h") for k in KEYS}
    return labs.Lab(id="lab9", title="Demo", folder=tmp_path, modules=["demo.py"], timeout=5,
                    resources={"cpus": 1, "memory": "256m"}, hidden_points=0, tests=tests, raw={})


def row(student, score=None, status="graded", reason="", tests=None, duration=1.0):
    tests = tests if tests is not None else {
        k: {"points": 50.0 if score and score >= 50 * (i + 1) else 0.0, "max": 50.0, "status": "passed"}
        for i, k in enumerate(KEYS)}
    return {"student_id": student, "entry": student, "status": status, "reason": reason,
            "score": score, "max": 100.0 if score is not None else None, "tests": tests if score is not None else {},
            "duration": duration}


POLICY = {
    "deadline": "2026-03-01T23:59:00+09:00",
    "penalty": {"percent": 10, "per": "day"},
    "cap": 30,
    "grace": "15m",
    "extensions": {"alice": "2d", "bob": "2026-03-10T12:00:00+09:00"},
}


@pytest.mark.parametrize("student, submitted, percent", [
    ("zoe", dt.datetime(2026, 3, 1, 23, 0, tzinfo=KST), 0),                     # on time
    ("zoe", dt.datetime(2026, 3, 2, 0, 10, tzinfo=KST), 0),                     # within the grace
    ("zoe", dt.datetime(2026, 3, 2, 0, 20, tzinfo=KST), 10),                    # a started day counts
    ("zoe", dt.datetime(2026, 3, 3, 0, 20, tzinfo=KST), 20),
    ("zoe", dt.datetime(2026, 3, 9, 0, 0, tzinfo=KST), 30),                     # capped
    ("zoe", dt.datetime(2026, 3, 1, 15, 30, tzinfo=UTC), 10),                   # other timezone, 16 min late
    ("alice", dt.datetime(2026, 3, 3, 23, 0, tzinfo=KST), 0),                   # 2-day extension
    ("alice", dt.datetime(2026, 3, 4, 1, 0, tzinfo=KST), 10),
    ("bob", dt.datetime(2026, 3, 10, 11, 0, tzinfo=KST), 0),                    # a new deadline
    ("zoe", None, 0),                                                          # time unknown
])
def test_late_policy(student, submitted, percent):
    policy = gradebook.LatePolicy.from_dict(POLICY)
    assert policy.penalty_percent(student, submitted) == percent


def test_per_hour_penalty_and_naive_times_in_the_policy_timezone():
    policy = gradebook.LatePolicy.from_dict({"deadline": "2026-03-01 23:00", "timezone": "Asia/Seoul",
                                             "penalty": {"percent": 2, "per": "hour"}})
    assert policy.deadline == dt.datetime(2026, 3, 1, 23, 0, tzinfo=KST)
    assert policy.penalty_percent("x", dt.datetime(2026, 3, 2, 1, 30, tzinfo=KST)) == 6


@pytest.mark.parametrize("bad, message", [
    ({}, "deadline"),
    ({"deadline": "yesterday", "penalty": {"percent": 1}}, "ISO 8601"),
    ({"deadline": "2026-03-01", "penalty": 10}, "percent"),
    ({"deadline": "2026-03-01", "penalty": {"percent": 1, "per": "week"}}, "day or hour"),
    ({"deadline": "2026-03-01", "penalty": {"percent": 1}, "timezone": "Mars/Olympus"}, "timezone"),
])
def test_a_bad_policy_says_what_is_wrong(bad, message):
    with pytest.raises(gradebook.PolicyError, match=message):
        gradebook.LatePolicy.from_dict(bad)


def test_manifest(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("\ufeffStudent_ID,Submitted_At\nalice,2026-03-02T10:00:00+09:00\nbob,2026-03-01 12:00\ncarol,\n",
                    encoding="utf-8")
    times = gradebook.load_manifest(path, KST)
    assert times == {"alice": dt.datetime(2026, 3, 2, 10, tzinfo=KST), "bob": dt.datetime(2026, 3, 1, 12, tzinfo=KST),
                     "carol": None}
    path.write_text("name,when\nalice,2026-03-02\n")
    with pytest.raises(gradebook.PolicyError, match="student_id"):
        gradebook.load_manifest(path)
    path.write_text("student_id,submitted_at\nalice,2026-03-02\nalice,2026-03-03\n")
    with pytest.raises(gradebook.PolicyError, match="twice"):
        gradebook.load_manifest(path)


def test_penalties_come_from_the_manifest_never_from_file_times_unless_asked():
    policy = gradebook.LatePolicy.from_dict(POLICY)
    late = dt.datetime(2026, 3, 3, 12, tzinfo=KST)
    rows = [row("alice", 80.0), row("zoe", 80.0), row("yan", 60.0), row("err", status="error", reason="bad zip")]
    file_times = {"yan": late}
    gradebook.apply_late_policy(rows, policy, {"zoe": late}, file_times)
    by = {r["student_id"]: r for r in rows}
    assert (by["zoe"]["late_penalty"], by["zoe"]["final_score"]) == (16.0, 64.0)
    assert (by["alice"]["late_penalty"], by["alice"]["final_score"]) == (0.0, 80.0)
    assert by["yan"]["final_score"] == 60.0 and "no submission time" in by["yan"]["notes"][0]
    assert by["err"]["final_score"] is None and by["err"]["late_penalty"] is None

    rows = [row("yan", 60.0)]
    gradebook.apply_late_policy(rows, gradebook.LatePolicy.from_dict(dict(POLICY, use_file_times=True)), {}, file_times)
    assert rows[0]["late_penalty"] == 12.0


def test_no_policy_means_no_penalty():
    rows = [row("zoe", 80.0)]
    gradebook.apply_late_policy(rows, None, None)
    assert rows[0]["late_penalty"] == 0.0 and rows[0]["final_score"] == 80.0


def test_gradebook_csv_imports_cleanly(tmp_path):
    rows = [row("alice", 100.0), row("bob", 50.0), row("carol", status="grader_error", reason="=HYPERLINK(\"x\")")]
    gradebook.apply_late_policy(rows, None, None)
    text = gradebook.gradebook_csv(lab(tmp_path), rows)
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["student_id", "score", "max", "late_penalty", "final_score", "status", "reason", *KEYS]
    assert table[1] == ["alice", "100", "100", "0", "100", "graded", "", "50", "50"]
    assert table[2][:5] == ["bob", "50", "100", "0", "50"] and table[2][7:] == ["50", "0"]
    assert table[3][1:6] == ["", "", "", "", "grader_error"], "not graded is blank, never a zero"
    assert table[3][6].startswith("'="), "a reason must not run as a spreadsheet formula"


def test_summary_counts_rates_and_page(tmp_path):
    rows = [row("alice", 100.0, duration=30), row("bob", 50.0, duration=5), row("carol", 0.0, duration=70),
            row("dan", status="error", reason="cannot unpack dan.zip: BadZipFile")]
    gradebook.apply_late_policy(rows, None, None)
    summary = gradebook.write_all(tmp_path, lab(tmp_path), rows, meta={"image_id": "sha256:x"})
    assert summary["counts"] == {"students": 4, "graded": 3, "full": 1, "partial": 2, "errors": 1, "late": 0}
    assert summary["scores"]["mean"] == 50.0 and summary["scores"]["median"] == 50.0
    rates = {t["test"]: t["pass_rate"] for t in summary["tests"]}
    assert rates == {KEYS[0]: round(2 / 3, 4), KEYS[1]: round(1 / 3, 4)}
    assert [s["student_id"] for s in summary["slowest"]] == ["carol", "alice", "bob"]
    assert json.loads((tmp_path / "summary.json").read_text())["image_id"] == "sha256:x"
    html = (tmp_path / "summary.html").read_text()
    assert html.count('src="data:image/png;base64,') == 2
    assert "cannot unpack dan.zip" in html and "carol" in html
    assert not list(tmp_path.glob(".*.tmp"))
