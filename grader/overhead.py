"""Benchmark: what grading in a container costs over running the same tests on the host.

    python -m grader.overhead --lab lab1 [--rounds 5] [--impl DIR]

Runs the lab's public and hidden tests against one implementation (default:
the reference), alternately on the host (``pytest``, as ``selfcheck`` does)
and through ``grade_submission`` (collection, unpacking, container start,
tests, reports), and prints both wall-clock times side by side with the
difference. Alternating rounds keep the comparison fair on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from grader import grade, labs, selfcheck


def measure(lab: labs.Lab, impl: Path, rounds: int) -> list[tuple[float, float, float, float]]:
    """(host seconds, container seconds, host score, container score) per round."""
    import json

    rows = []
    grade.expected_tests(lab)  # the collection is cached per test-suite hash; warm it once, as a batch would
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            selfcheck.run_lab_tests(lab, impl, Path(tmp) / "host.json")
            host = time.perf_counter() - t0
            host_score = json.loads((Path(tmp) / "host.json").read_text())["score"]["total"]
            t0 = time.perf_counter()
            result = grade.grade_submission(lab, impl, Path(tmp) / "out")
            container = time.perf_counter() - t0
        if result.status != "graded":
            print(f"grader error in a round: {result.reason}", file=sys.stderr)
        rows.append((host, container, host_score, result.score if result.status == "graded" else float("nan")))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lab1")
    parser.add_argument("--impl", type=Path, help="implementation folder (default: the reference)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    lab = labs.find_lab(args.lab)
    rows = measure(lab, args.impl or lab.reference_dir, args.rounds)
    print(f"{lab.id}: host pytest vs grade in container, {args.rounds} alternating rounds")
    print(f"{'round':>5} {'host s':>8} {'container s':>12} {'overhead s':>11} {'scores':>14}")
    for i, (host, container, hs, cs) in enumerate(rows, 1):
        print(f"{i:>5} {host:8.2f} {container:12.2f} {container - host:11.2f} {hs:>6g} / {cs:<6g}")
    host_med = statistics.median(r[0] for r in rows)
    cont_med = statistics.median(r[1] for r in rows)
    print(f"{'median':>5} {host_med:8.2f} {cont_med:12.2f} {cont_med - host_med:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
