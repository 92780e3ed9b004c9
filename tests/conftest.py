"""Helpers for the kit's own tests: throwaway labs to run the plugin on."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


class Kit:
    """A kit folder with one lab, ``lab9``, built from the strings a test gives."""

    def __init__(self, root: Path):
        self.root = root
        self.lab = root / "labs" / "lab9_demo"
        self.ref = root / "reference" / "lab9_demo"
        (self.lab / "tests").mkdir(parents=True)
        (self.ref / "tests").mkdir(parents=True)

    def write(self, lab_yaml: str, public_tests: str, stub: str, *, hidden_yaml=None, hidden_tests=None, reference=None):
        (self.lab / "lab.yaml").write_text(textwrap.dedent(lab_yaml))
        (self.lab / "tests" / "test_demo.py").write_text(textwrap.dedent(public_tests))
        (self.lab / "demo.py").write_text(textwrap.dedent(stub))
        if hidden_yaml:
            (self.ref / "hidden.yaml").write_text(textwrap.dedent(hidden_yaml))
            (self.ref / "tests" / "test_hidden_demo.py").write_text(textwrap.dedent(hidden_tests))
        if reference:
            (self.ref / "demo.py").write_text(textwrap.dedent(reference))
        return self

    def impl(self, source: str, name="impl") -> str:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        (folder / "demo.py").write_text(textwrap.dedent(source))
        return str(folder)

    def run(self, impl=None, hidden=True, env=None, extra=(), timeout=120):
        """Run the lab's tests in a fresh pytest; returns (process, score)."""
        results = self.root / "results.json"
        args = [sys.executable, "-m", "pytest", "-q", "--tb=no", "-rN", "-p", "no:cacheprovider",
                "--lab", "lab9", "--ipclab-results", str(results), *extra, "labs/lab9_demo/tests"]
        if hidden and (self.ref / "tests" / "test_hidden_demo.py").exists():
            args.append("reference/lab9_demo/tests")
        if impl:
            args += ["--impl", impl]
        full_env = {**os.environ, "IPCLAB_KIT": str(self.root), "IPCLAB_LANG": "en", **(env or {})}
        proc = subprocess.run(args, cwd=self.root, env=full_env, capture_output=True, text=True, timeout=timeout)
        assert results.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
        self.results = json.loads(results.read_text())
        return proc, self.results["score"]

    def row(self, key):
        return next(r for r in self.results["score"]["rows"] if r["key"] == key)


@pytest.fixture
def make_kit(tmp_path):
    return lambda: Kit(tmp_path)
