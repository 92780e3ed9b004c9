"""Packaging the kit for a course: the student bundle and a GitHub Classroom workflow.

* ``python -m grader distribute student-bundle`` (``make student-bundle``)
  writes ``dist/ipclab-student-<version>.tar.gz``: the kit as a student gets
  it, without ``reference/`` (solutions and hidden tests), without the kit's
  own tests (their fixtures are near-copies of the solutions) and without CI.
* ``python -m grader distribute classroom --lab lab3`` (``make classroom``)
  writes ``dist/classroom-lab3/.github/workflows/classroom.yml`` for the
  student repository: one GitHub Classroom autograding step per public test,
  worth that test's points, and the reporter that adds them up.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import yaml

from grader import labs

# What a student copy of the kit holds, relative to the kit root.
STUDENT_PATHS = ["labs", "grader", "templates", "Makefile", "pyproject.toml"]
SKIP_NAMES = {"__pycache__", ".pytest_cache", ".venv"}
SKIP_SUFFIXES = (".pyc", ".egg-info")

STUDENT_README = """\
# ipclab: student kit

Labs on inter-process communication in Python, one folder each under `labs/`.

## Set up (once)

    make setup            # creates .venv and installs what the tests need

You need Python 3.11 or newer, `make` and `python3-venv`
(`sudo apt-get install make python3-venv` on Debian or Ubuntu); lab 4 also
uses `redis-cli` (`sudo apt-get install redis-tools`).

## Work on a lab

1. Read the handout, e.g. `labs/lab1_pipes/handout.md` (한국어: `labs/lab1_pipes/handout.ko.md`).
2. Fill in the stub modules in that folder (they raise `NotImplementedError`).
3. Run the public tests:

       make test-lab1          # score table, with a hint under each failed test
       make test-lab1 V=1      # the same with tracebacks

The table ends with your total, e.g. `lab1: 35/100`. Some points are in
hidden tests that run only when your work is graded; the table says how many.

## Submit

Hand in the module files the lab lists under `modules:` in its `lab.yaml`
(for lab 1: `pipeline.py` and `fifo_log.py`), as a folder or a `.zip`, the
way your course asks. Only those files are graded, each in a fresh sandbox
with no network.
"""


def kit_version(root: Path = labs.KIT_ROOT) -> str:
    data = (root / "pyproject.toml").read_text(encoding="utf-8")
    for line in data.splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    return "0"


def _student_files(root: Path):
    for top in STUDENT_PATHS:
        path = root / top
        if path.is_file():
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_NAMES and not d.endswith(SKIP_SUFFIXES))
            for name in sorted(filenames):
                if not name.endswith(SKIP_SUFFIXES):
                    yield Path(dirpath) / name


def student_bundle(out_dir: Path, root: Path = labs.KIT_ROOT) -> Path:
    """Write the student tarball into ``out_dir`` and return its path."""
    prefix = f"ipclab-student-{kit_version(root)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{prefix}.tar.gz"
    tmp = target.with_name(f".{target.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in _student_files(root):
            tar.add(path, arcname=f"{prefix}/{path.relative_to(root)}", recursive=False)
        readme = STUDENT_README.encode("utf-8")
        info = tarfile.TarInfo(f"{prefix}/README.md")
        info.size, info.mode = len(readme), 0o644
        tar.addfile(info, io.BytesIO(readme))
    os.replace(tmp, target)
    return target


def classroom_workflow(lab: labs.Lab) -> dict:
    """The GitHub Actions workflow that grades a lab's public tests in a student repository."""
    public = {key: spec for key, spec in lab.tests.items() if not spec.hidden}
    steps = [
        {"name": "Checkout code", "uses": "actions/checkout@v4"},
        {"name": "Set up Python", "uses": "actions/setup-python@v5", "with": {"python-version": "3.11"}},
        {"name": "Install the kit", "run": "sudo apt-get install -y redis-tools && make setup"},
    ]
    runners = []
    for number, (key, spec) in enumerate(public.items(), start=1):
        step_id = f"test-{number}"
        runners.append(step_id)
        filename, _, name = key.partition("::")
        steps.append({
            "name": key,
            "id": step_id,
            "uses": "classroom-resources/autograding-command-grader@v1",
            "with": {
                "test-name": key,
                "command": f".venv/bin/python -m pytest -q --lab {lab.id} "
                           f"labs/{lab.name}/tests/{filename}::{name}",
                "timeout": max(1, int(lab.timeout_for(key) * 3 // 60) + 1),
                "max-score": int(spec.points) if float(spec.points).is_integer() else spec.points,
            },
        })
    steps.append({
        "name": "Autograding Reporter",
        "uses": "classroom-resources/autograding-grading-reporter@v1",
        "env": {f"{r.upper()}_RESULTS": f"${{{{steps.{r}.outputs.result}}}}" for r in runners},
        "with": {"runners": ",".join(runners)},
    })
    return {
        "name": f"Autograding {lab.id}: {lab.title}",
        "on": ["push", "repository_dispatch"],
        "permissions": {"checks": "write", "actions": "read", "contents": "read"},
        "jobs": {"run-autograding-tests": {
            "runs-on": "ubuntu-latest",
            "if": "github.actor != 'github-classroom[bot]'",
            "steps": steps,
        }},
    }


def write_classroom(lab: labs.Lab, out_dir: Path) -> Path:
    target = out_dir / f"classroom-{lab.id}" / ".github" / "workflows" / "classroom.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# GitHub Classroom autograding for {lab.id} ({lab.title}): public tests only;\n"
              f"# hidden tests ({lab.hidden_points:g} points) run when the instructor grades.\n")
    target.write_text(header + yaml.safe_dump(classroom_workflow(lab), sort_keys=False), encoding="utf-8")
    return target


def add_arguments(parser):
    parser.add_argument("what", choices=["student-bundle", "classroom"])
    parser.add_argument("--lab", help="lab id, for classroom")
    parser.add_argument("--out", type=Path, default=labs.KIT_ROOT / "dist")


def main(args) -> int:
    if args.what == "student-bundle":
        print(student_bundle(args.out))
        return 0
    if not args.lab:
        print("classroom needs --lab")
        return 2
    print(write_classroom(labs.find_lab(args.lab), args.out))
    return 0
