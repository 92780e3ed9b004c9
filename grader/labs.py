"""Lab specifications: what a lab is made of and what each test is worth.

A lab is a folder ``labs/labN_topic/`` with a ``lab.yaml``::

    id: lab1
    title: Pipes
    modules: [pipeline.py, fifo_log.py]   # files a submission must contain
    timeout: 10                           # default per-test timeout, seconds
    resources: {cpus: 1, memory: 512m}    # what one grading run needs
    hidden_points: 30                     # points carried by hidden tests
    leaks_cost_points: false              # true: a test that leaks earns nothing
    symptoms:                             # hints chosen by what went wrong
      - {when: timeout, test: "test_pipeline.py::test_big_input", hint: "..."}
      - {when: timeout, test: "test_pipeline.py::*", hint: "..."}   # a glob; first match wins
      - {when: exception, exception: BrokenPipeError, hint: "..."}
      - {when: leak, kind: semaphore, hint: "..."}   # kinds: see diagnostics.Finding
    tests:                                # public tests, "<file>::<test>"
      test_pipeline.py::test_one_command:
        points: 5
        hint: "Did the child call os.execvp after dup2?"
        timeout: 20                       # optional, overrides the default

Hidden tests live with the reference solution, in
``reference/labN_topic/tests/``, and their points in
``reference/labN_topic/hidden.yaml`` (same ``tests:`` mapping), so that a
student copy of the kit (the repository minus ``reference/``) tells nothing
about them but their total.

Public and hidden points add up to 100. A parametrised test shares its points
evenly among its cases; a stress test (``@pytest.mark.stress(runs=20)``)
earns its points only when every run passes.

Every hint may be a string or a mapping by language (``{en: ..., ko: ...}``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from pathlib import Path

import yaml

KIT_ROOT = Path(os.environ.get("IPCLAB_KIT", Path(__file__).resolve().parents[1]))
TOTAL_POINTS = 100


class LabError(Exception):
    """A lab folder or its lab.yaml is not usable."""


@dataclasses.dataclass
class TestSpec:
    key: str
    points: float
    hint: str | dict | None = None
    timeout: float | None = None
    hidden: bool = False


@dataclasses.dataclass
class Lab:
    id: str
    title: str
    folder: Path
    modules: list[str]
    timeout: float
    resources: dict
    hidden_points: float
    tests: dict[str, TestSpec]
    raw: dict
    symptoms: list[dict] = dataclasses.field(default_factory=list)
    leaks_cost_points: bool = False

    @property
    def name(self) -> str:
        """The folder name, e.g. ``lab1_pipes``."""
        return self.folder.name

    @property
    def public_tests_dir(self) -> Path:
        return self.folder / "tests"

    @property
    def reference_dir(self) -> Path:
        return self.folder.parent.parent / "reference" / self.name

    @property
    def hidden_tests_dir(self) -> Path:
        return self.reference_dir / "tests"

    @property
    def has_hidden(self) -> bool:
        return (self.reference_dir / "hidden.yaml").is_file()

    def timeout_for(self, key: str) -> float:
        spec = self.tests.get(key)
        return (spec.timeout if spec and spec.timeout else None) or self.timeout

    def hint_for(self, key: str, lang: str = "en", symptoms: list[dict] | None = None) -> str | None:
        """The hint for a failed test: a matching symptom's hint first, else the test's own.

        ``symptoms`` describe what went wrong, e.g. ``[{"when": "timeout"}]``,
        ``[{"when": "exception", "exception": "BrokenPipeError"}]``,
        ``[{"when": "leak", "kind": "zombie"}]``.
        """
        for seen in symptoms or []:
            for rule in self.symptoms:
                if rule.get("test") is not None and not fnmatch.fnmatchcase(key, rule["test"]):
                    continue
                if all(rule.get(field) in (None, value) for field, value in seen.items()):
                    return localised(rule.get("hint"), lang)
        spec = self.tests.get(key)
        return localised(spec.hint, lang) if spec else None


def localised(text: str | dict | None, lang: str) -> str | None:
    """A hint in ``lang``, falling back to English."""
    if isinstance(text, dict):
        return text.get(lang) or text.get("en")
    return text


def _test_specs(mapping: dict | None, *, hidden: bool, source: Path) -> dict[str, TestSpec]:
    specs = {}
    for key, entry in (mapping or {}).items():
        if not isinstance(entry, dict) or "points" not in entry:
            raise LabError(f"{source}: test {key!r} needs a 'points' entry")
        specs[key] = TestSpec(
            key=key,
            points=float(entry["points"]),
            hint=entry.get("hint"),
            timeout=entry.get("timeout"),
            hidden=hidden,
        )
    return specs


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LabError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise LabError(f"{path} must hold a mapping")
    return data


def load_lab(folder: Path | str) -> Lab:
    """Read ``folder/lab.yaml`` and, when present, the hidden tests' points."""
    folder = Path(folder).resolve()
    data = _read_yaml(folder / "lab.yaml")
    tests = _test_specs(data.get("tests"), hidden=False, source=folder / "lab.yaml")
    lab = Lab(
        id=str(data["id"]),
        title=str(data.get("title", data["id"])),
        folder=folder,
        modules=list(data.get("modules", [])),
        timeout=float(data.get("timeout", 10)),
        resources=dict(data.get("resources") or {}),
        hidden_points=float(data.get("hidden_points", 0)),
        tests=tests,
        raw=data,
        symptoms=list(data.get("symptoms") or []),
        leaks_cost_points=bool(data.get("leaks_cost_points", False)),
    )
    if lab.has_hidden:
        hidden_file = lab.reference_dir / "hidden.yaml"
        hidden = _test_specs(_read_yaml(hidden_file).get("tests"), hidden=True, source=hidden_file)
        clash = set(hidden) & set(tests)
        if clash:
            raise LabError(f"{hidden_file}: tests declared twice: {sorted(clash)}")
        lab.tests.update(hidden)
    return lab


def all_labs(root: Path = KIT_ROOT) -> list[Lab]:
    """Every lab of the kit, in lab-number order."""
    folders = [p for p in (root / "labs").iterdir() if (p / "lab.yaml").is_file()]
    return [load_lab(p) for p in sorted(folders, key=_lab_number)]


def _lab_number(folder: Path) -> int:
    match = re.match(r"lab(\d+)", folder.name)
    return int(match.group(1)) if match else 10**6


def find_lab(name: str | Path, root: Path = KIT_ROOT) -> Lab:
    """Find a lab by id (``lab1``), folder name (``lab1_pipes``) or path."""
    path = Path(name)
    if (path / "lab.yaml").is_file():
        return load_lab(path)
    for folder in (root / "labs").glob("lab*"):
        if folder.name == str(name) or folder.name.startswith(f"{name}_"):
            if (folder / "lab.yaml").is_file():
                return load_lab(folder)
    raise LabError(f"no lab called {name!r} under {root / 'labs'}")


def test_key(nodeid: str) -> str:
    """``labs/lab1_pipes/tests/test_x.py::test_y[case]`` -> ``test_x.py::test_y``."""
    path, _, rest = nodeid.partition("::")
    rest = re.sub(r"\[.*\]$", "", rest)
    return f"{Path(path).name}::{rest}"
