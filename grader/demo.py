"""``make demo``: grade a sample class of every lab and print where the summary is.

    python -m grader demo [--lab lab1 ...] [--out reports/demo] [--kinds reference,stub]

For each lab present, a class is generated from the kit's own fixtures
(``grader.batch.generate_class``): the reference, the stub, every broken
fixture of the lab, two hostile submissions (a flood of output, writes to the
read-only root) and two attacks on the grader (forged result lines, ``os._exit``
at import). Each class is batch-graded in containers exactly as an
instructor's would be (``grader.batch.run_batch``) into ``OUT/<lab>/``, and
``OUT/index.html`` links every lab's ``summary.html`` with what each student
was, so the scores can be checked at a glance: the reference at 100, the
stub at 0, each bug losing points, the attacks gaining nothing.

Labs whose tests take minutes (a default test timeout of 60 s or more: lab 6
measures its speed-ups) get a smaller class: the reference, the stub, one
bug, one hostile submission and one attack.

The batch is resumable, so running the demo again regrades only what changed.
"""

from __future__ import annotations

import html
import shutil
import sys
import time
from pathlib import Path

from grader import batch, labs

DEMO_HOSTILE = ["hostile:big_output", "hostile:write_rootfs"]
DEMO_ATTACKS = ["attack:forge_channel", "attack:os_exit_at_import"]
SLOW_LAB_TIMEOUT = 60  # seconds of default per-test timeout from which a lab gets the small class


def demo_kinds(lab: labs.Lab, only: list[str] | None = None) -> dict[str, dict[str, Path]]:
    """The kinds of submission in ``lab``'s sample class (see the module docstring)."""
    kinds = batch.submission_kinds(lab)
    bugs = sorted(k for k in kinds if k.startswith("bug:"))
    small = lab.timeout >= SLOW_LAB_TIMEOUT
    wanted = ["reference", "stub", *(bugs[:1] if small else bugs),
              *(DEMO_HOSTILE[:1] if small else DEMO_HOSTILE), *(DEMO_ATTACKS[:1] if small else DEMO_ATTACKS)]
    if only:
        wanted = [k for k in wanted if k in only or k.split(":")[0] in only]
    return {k: kinds[k] for k in wanted if k in kinds}


def grade_lab(lab: labs.Lab, out: Path, only: list[str] | None = None, jobs: int | None = None) -> dict:
    """Generate and batch-grade ``lab``'s sample class into ``out/<lab id>``; a summary for the index."""
    kinds = demo_kinds(lab, only)
    class_dir = out / "classes" / lab.id
    shutil.rmtree(class_dir, ignore_errors=True)  # regenerated each time; unchanged entries keep their grades
    students = batch.generate_class(lab, class_dir, len(kinds), kinds=kinds)
    started = time.monotonic()
    outcome = batch.run_batch(lab, class_dir, out / lab.id, jobs=jobs)
    rows = {row["student_id"]: row for row in outcome.rows}
    return {"lab": lab, "students": students, "rows": rows, "seconds": round(time.monotonic() - started, 1),
            "interrupted": outcome.interrupted, "not_graded": outcome.not_graded}


def surprise(kind: str, score: float | None) -> str:
    """Why a score is not what the kind of submission should get, or "" when it is."""
    if score is None:
        return "not graded"
    if kind == "reference" and score < 100:
        return "the reference should score 100 (a timing test on a busy machine?)"
    if kind == "stub" and score > 0:
        return "the stub should score 0"
    if kind != "reference" and score >= 100:
        return "a broken or hostile submission should lose points"
    return ""


def write_index(out: Path, results: list[dict]) -> Path:
    """``out/index.html``: each lab's summary, and each student's kind and score."""
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><meta charset='utf-8'><title>ipclab demo</title>",
             "<style>body{font:15px sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style>",
             "<h1>ipclab demo: a sample class per lab</h1>",
             "<p>Each class is generated from the kit's fixtures and graded in containers. Expected: the "
             "reference at 100, the stub at 0, each bug and each attack below 100.</p>"]
    for result in results:
        lab = result["lab"]
        parts.append(f"<h2>{esc(lab.id)}: {esc(lab.title)} &middot; "
                     f"<a href='{esc(lab.id)}/summary.html'>summary</a> &middot; "
                     f"<a href='{esc(lab.id)}/gradebook.csv'>gradebook.csv</a></h2>")
        parts.append(f"<p>graded in {result['seconds']:g} s</p>")
        parts.append("<table><tr><th>student</th><th>submission</th><th>score</th><th>report</th><th>check</th></tr>")
        for student, kind in result["students"].items():
            row = result["rows"].get(student, {})
            score = f"{row['score']:g}/{row['max']:g}" if row.get("score") is not None else \
                f"not graded: {row.get('reason', 'no row')}"
            check = surprise(kind, row.get("score")) or "as expected"
            parts.append(f"<tr><td>{esc(student)}</td><td>{esc(kind)}</td><td>{esc(score)}</td>"
                         f"<td><a href='{esc(lab.id)}/{esc(student)}/report.html'>report</a></td>"
                         f"<td>{esc(check)}</td></tr>")
        parts.append("</table>")
    index = out / "index.html"
    out.mkdir(parents=True, exist_ok=True)
    index.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return index


def add_arguments(parser):
    parser.add_argument("--lab", action="append", help="only this lab (repeatable; default: every lab)")
    parser.add_argument("--out", type=Path, default=Path("reports/demo"), help="output folder (default: reports/demo)")
    parser.add_argument("--kinds", help="only these kinds, comma-separated (reference,stub,bug,hostile,attack or full names)")
    parser.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: as the cores allow)")


def main(args) -> int:
    try:
        chosen = [labs.find_lab(name) for name in args.lab] if args.lab else labs.all_labs()
    except labs.LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    only = [k.strip() for k in args.kinds.split(",")] if args.kinds else None
    out = args.out.resolve()
    results = []
    for lab in chosen:
        print(f"{lab.id}: grading a sample class of {len(demo_kinds(lab, only))} submissions ...", flush=True)
        try:
            result = grade_lab(lab, out, only, args.jobs)
        except RuntimeError as exc:  # e.g. another batch writing the same folder
            print(f"error: {exc}", file=sys.stderr)
            return 2
        results.append(result)
        scores = ", ".join(f"{kind}={row.get('score') if row.get('score') is not None else 'not graded'}"
                           for student, kind in result["students"].items()
                           for row in [result["rows"].get(student, {})])
        print(f"{lab.id}: {scores} ({result['seconds']:g} s)", flush=True)
        for student, kind in result["students"].items():
            why = surprise(kind, result["rows"].get(student, {}).get("score"))
            if why:
                print(f"  note: {kind} ({student}): {why}", flush=True)
        if result["interrupted"]:
            write_index(out, results)
            return batch.EXIT_INTERRUPTED
    index = write_index(out, results)
    not_graded = sum(r["not_graded"] for r in results)
    print(f"\nDemo done: open {index}" + (f"  ({not_graded} submissions NOT graded: see the summaries)" if not_graded else ""))
    return 1 if not_graded else 0
