"""``make bench``: what the kit's own machinery costs, measured side by side.

For each lab it runs the reference suite with the plugin's diagnostics on and
off, alternating the two so that a noisy machine disturbs both alike, and
prints the median times and their ratio (issue: diagnostics must add < 10%).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader import labs, selfcheck


def add_arguments(parser):
    parser.add_argument("--lab", action="append", help="only this lab (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant per lab (default 3)")


def _timed_run(lab: labs.Lab, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pytest", "-q", "--tb=no", "-rN", "-p", "no:cacheprovider",
               "--lab", str(lab.folder), "--impl", str(lab.reference_dir),
               "--ipclab-results", str(Path(tmp) / "r.json"), *extra, *selfcheck.lab_test_paths(lab)]
        start = time.perf_counter()
        subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
        return time.perf_counter() - start


def main(args) -> int:
    chosen = [labs.find_lab(name) for name in args.lab] if args.lab else labs.all_labs()
    print(f"{'lab':<6} {'diagnostics on':>15} {'off':>8} {'overhead':>9}   (median of {args.rounds} alternating runs)")
    for lab in chosen:
        on, off = [], []
        for _ in range(args.rounds):
            off.append(_timed_run(lab, ["--no-diagnostics"]))
            on.append(_timed_run(lab, []))
        m_on, m_off = statistics.median(on), statistics.median(off)
        print(f"{lab.id:<6} {m_on:>14.2f}s {m_off:>7.2f}s {100 * (m_on / m_off - 1):>+8.1f}%", flush=True)
    return 0
