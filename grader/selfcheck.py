"""Check the kit itself: every reference scores 100, every stub scores 0.

``make test-reference`` and ``make test-stubs`` call this. Each lab runs in its
own pytest process (a lab's tests load that lab's modules by plain name), one
lab after another so that timing-sensitive tests have the machine to themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from grader import labs

# pytest exit codes that mean the run itself broke (interrupted, internal
# error, usage error, no tests collected), as opposed to tests failing.
_BROKEN_RUN = {2, 3, 4, 5}


def add_arguments(parser):
    parser.add_argument("--expect", choices=["reference", "stub"], required=True,
                        help="reference: public+hidden tests against reference/ must score 100; "
                             "stub: they must collect cleanly and score 0 against labs/")
    parser.add_argument("--lab", action="append", help="only this lab (repeatable)")
    parser.add_argument("--runs", type=int, default=1,
                        help="check everything this many times over (a soak test: a flaky test or a false "
                             "finding against the reference shows up as a failed run)")


def lab_test_paths(lab: labs.Lab) -> list[str]:
    """The lab's public tests folder and, when the kit has it, the hidden one."""
    paths = [str(lab.public_tests_dir)]
    if lab.hidden_tests_dir.is_dir():
        paths.append(str(lab.hidden_tests_dir))
    return paths


def run_lab_tests(lab: labs.Lab, impl: Path, results: Path, targets: list[str] | None = None,
                  extra_args: list[str] = ()) -> subprocess.CompletedProcess:
    """Run ``targets`` (default: all public and hidden tests) against ``impl``; results land in ``results``."""
    paths = targets or lab_test_paths(lab)
    cmd = [sys.executable, "-m", "pytest", "-q", "--tb=short", "-rN", "-p", "no:cacheprovider",
           "--lab", str(lab.folder), "--impl", str(impl), "--ipclab-results", str(results), *extra_args, *paths]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, text=True, capture_output=True)


def check_lab(lab: labs.Lab, expect: str) -> list[str]:
    """Problems found with one lab (an empty list means it is fine)."""
    impl = lab.reference_dir if expect == "reference" else lab.folder
    with tempfile.TemporaryDirectory() as tmp:
        results_file = Path(tmp) / "results.json"
        proc = run_lab_tests(lab, impl, results_file)
        if proc.returncode in _BROKEN_RUN or not results_file.exists():
            return [f"pytest could not run the tests (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"]
        score = json.loads(results_file.read_text())["score"]
    problems = []
    declared = sum(spec.points for spec in lab.tests.values())
    if declared != labs.TOTAL_POINTS:
        problems.append(f"points declared add up to {declared:g}, not {labs.TOTAL_POINTS}")
    if score["undeclared"]:
        problems.append(f"tests with no points in lab.yaml/hidden.yaml: {score['undeclared']}")
    not_run = [row["key"] for row in score["rows"] if not row["ran"]]
    if not_run:
        problems.append(f"declared tests that did not run: {not_run}")
    if expect == "reference":
        # The diagnostics must never blame a correct solution (issue: no false findings).
        false_findings = [f"{r['key']}: {f['text']}" for r in score["rows"] for f in r["findings"]]
        if false_findings:
            problems.append("diagnostics found leaks in the reference: " + "; ".join(false_findings[:10]))
    target = labs.TOTAL_POINTS if expect == "reference" else 0
    if score["total"] != target:
        failing = [f"{r['key']}: {r['message']}" for r in score["rows"] if (r["passed"] == r["cases"]) != (expect == "reference")]
        problems.append(f"scored {score['total']:g}, expected {target}; " + "; ".join(failing[:10]))
    return problems


def main(args) -> int:
    chosen = [labs.find_lab(name) for name in args.lab] if args.lab else labs.all_labs()
    failed = 0
    for run in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"run {run}/{args.runs}", flush=True)
        for lab in chosen:
            problems = check_lab(lab, args.expect)
            verdict = "ok" if not problems else "FAILED"
            print(f"{lab.id} ({args.expect}): {verdict}", flush=True)
            for problem in problems:
                print(f"    {problem}")
            failed += bool(problems)
    checks = len(chosen) * args.runs
    print(f"{checks - failed} passed, {failed} failed" + (f" ({args.runs} runs)" if args.runs > 1 else ""))
    return 1 if failed else 0
