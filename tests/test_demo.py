"""``make demo`` (grader/demo.py): the sample class of each lab and the index that links the summaries."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from graderkit import require_engine
from grader import demo, labs

KIT = Path(__file__).resolve().parents[1]


def test_every_lab_gets_its_fixtures():
    for lab in labs.all_labs():
        kinds = demo.demo_kinds(lab)
        bugs = sorted(p.parent.name for p in (KIT / "tests" / "fixtures" / lab.id).glob("*/fixture.yaml"))
        assert {"reference", "stub"} <= set(kinds), lab.id
        assert any(k.startswith("hostile:") for k in kinds) and any(k.startswith("attack:") for k in kinds), lab.id
        if lab.timeout >= demo.SLOW_LAB_TIMEOUT:  # lab 6: minutes per submission, a small class
            assert len([k for k in kinds if k.startswith("bug:")]) == min(1, len(bugs)), lab.id
            assert len(kinds) <= 5
        else:
            assert sorted(k[4:] for k in kinds if k.startswith("bug:")) == bugs, lab.id
        for files in kinds.values():
            assert sorted(files) == sorted(lab.modules) and all(Path(p).is_file() for p in files.values())


def test_kinds_filter():
    lab = labs.find_lab("lab1")
    assert list(demo.demo_kinds(lab, ["reference", "stub"])) == ["reference", "stub"]
    assert all(k.startswith("bug:") for k in demo.demo_kinds(lab, ["bug"]))


@pytest.mark.docker
def test_demo_grades_a_tiny_class_and_links_its_summary(tmp_path):
    require_engine()
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "grader", "demo", "--lab", "lab1", "--out", str(out),
           "--kinds", "reference,stub,attack:os_exit_at_import,bug:keeps_write_end"]
    proc = subprocess.run(cmd, cwd=KIT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    index = out / "index.html"
    assert f"open {index}" in proc.stdout
    page = index.read_text()
    assert "lab1/summary.html" in page and (out / "lab1" / "summary.html").is_file()
    for link in re.findall(r"href='([^']+)'", page):
        assert (out / link).is_file(), f"index.html links a missing file: {link}"
    classes = {row["student_id"]: row for row in csv.DictReader(io.StringIO((out / "lab1" / "gradebook.csv").read_text()))}
    kinds = dict(re.findall(r"<td>(student\d+)</td><td>([^<]+)</td>", page))
    scores = {kinds[s]: float(row["score"]) for s, row in classes.items()}
    assert scores["reference"] == 100 and scores["stub"] == 0
    assert scores["attack:os_exit_at_import"] == 0
    assert 0 < scores["bug:keeps_write_end"] < 100
    assert page.count("as expected") == 4


def test_surprises_are_named():
    assert demo.surprise("reference", 100) == "" and demo.surprise("stub", 0) == ""
    assert demo.surprise("bug:x", 97) == "" and demo.surprise("attack:y", 0) == ""
    assert "100" in demo.surprise("reference", 91)
    assert demo.surprise("stub", 5) and demo.surprise("bug:x", 100) and demo.surprise("hostile:z", 100)
    assert demo.surprise("reference", None) == "not graded"
