"""Every lab follows the kit's format (see grader/labs.py)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grader import labs

ALL_LABS = labs.all_labs()
HANDOUT_TOPICS = ("make test-lab",)


def lab_param(lab):
    return pytest.param(lab, id=lab.id)


@pytest.fixture(params=[lab_param(lab) for lab in ALL_LABS])
def lab(request):
    return request.param


def test_the_kit_has_labs():
    assert ALL_LABS, "no lab under labs/"


def test_lab_yaml_is_complete(lab):
    assert re.fullmatch(rf"{lab.id}_[a-z0-9]+", lab.name), f"folder {lab.name} does not match id {lab.id}"
    assert lab.modules, "lab.yaml lists no modules"
    assert lab.resources.get("cpus") and lab.resources.get("memory"), "resources need cpus and memory"
    points = sum(spec.points for spec in lab.tests.values())
    assert points == labs.TOTAL_POINTS, f"public + hidden points add up to {points:g}"
    hidden = sum(spec.points for spec in lab.tests.values() if spec.hidden)
    assert hidden == lab.hidden_points, f"hidden_points says {lab.hidden_points:g}, hidden.yaml has {hidden:g}"
    no_hint = [key for key, spec in lab.tests.items() if not spec.hint]
    assert not no_hint, f"tests without a hint: {no_hint}"


def test_handout_exists_and_says_how_to_test(lab):
    """README.md points to the handouts; both handouts (English, Korean) say how to test."""
    for name in ("README.md", "handout.md", "handout.ko.md"):
        path = lab.folder / name
        assert path.is_file(), f"{lab.name}/{name} is missing"
        text = path.read_text(encoding="utf-8")
        assert f"make test-{lab.id}" in text, f"{lab.name}/{name} never says make test-{lab.id}"


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node


def test_stub_documents_every_function_and_implements_none(lab):
    for module in lab.modules:
        tree = ast.parse((lab.folder / module).read_text(encoding="utf-8"))
        functions = list(_functions(tree))
        assert functions, f"{module} defines no function"
        for fn in functions:
            assert ast.get_docstring(fn), f"{module}: {fn.name} has no docstring"
        raises = [n for n in ast.walk(tree) if isinstance(n, ast.Raise) and "NotImplementedError" in ast.unparse(n)]
        assert raises, f"{module} raises NotImplementedError nowhere"


def test_reference_has_every_module(lab):
    for module in lab.modules:
        assert (lab.reference_dir / module).is_file(), f"reference/{lab.name}/{module} missing"


def _test_files(lab):
    return sorted(lab.public_tests_dir.glob("test_*.py")) + sorted(lab.hidden_tests_dir.glob("test_*.py"))


def test_tests_never_import_an_implementation_directly(lab):
    """Tests reach the implementation only through the impl fixture (see --impl)."""
    forbidden = {Path(m).stem for m in lab.modules} | {"reference"}
    for path in _test_files(lab):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0] in forbidden]
            assert not bad, f"{path.name} imports {bad}: use impl.load() instead"


def test_hidden_test_files_do_not_shadow_public_ones(lab):
    public = {p.name for p in lab.public_tests_dir.glob("test_*.py")}
    hidden = {p.name for p in lab.hidden_tests_dir.glob("test_*.py")}
    assert not public & hidden


def test_every_collected_test_has_points_and_every_declared_test_exists(lab):
    paths = [str(lab.public_tests_dir)] + ([str(lab.hidden_tests_dir)] if lab.hidden_tests_dir.is_dir() else [])
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--lab", str(lab.folder), *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    collected = {labs.test_key(line) for line in proc.stdout.splitlines() if "::" in line}
    assert collected == set(lab.tests), (
        f"collected but undeclared: {sorted(collected - set(lab.tests))}; "
        f"declared but not collected: {sorted(set(lab.tests) - collected)}")


def test_symptom_rules_match_by_glob_and_first_match_wins():
    lab = labs.Lab(id="lab9", title="t", folder=Path("/nonexistent"), modules=[], timeout=10, resources={},
                   hidden_points=0, raw={}, symptoms=[
        {"when": "timeout", "test": "test_a.py::test_big", "hint": {"en": "big", "ko": "큰"}},
        {"when": "timeout", "test": "test_a.py::*", "hint": {"en": "any a", "ko": "아무 a"}},
        {"when": "exception", "exception": "BusyError", "hint": "busy"},
    ], tests={})
    assert lab.hint_for("test_a.py::test_big", "ko", [{"when": "timeout"}]) == "큰"
    assert lab.hint_for("test_a.py::test_small", "en", [{"when": "timeout"}]) == "any a"
    assert lab.hint_for("test_b.py::test_small", "en", [{"when": "timeout"}]) is None
    assert lab.hint_for("test_b.py::test_x", "en", [{"when": "exception", "exception": "BusyError"}]) == "busy"


@pytest.mark.parametrize("lab", labs.all_labs(), ids=lambda lab: lab.id)
def test_every_symptom_rule_names_a_test_that_exists(lab):
    import fnmatch

    for rule in lab.symptoms:
        assert rule.get("when") in ("timeout", "exception", "leak", "failure"), rule
        if rule.get("test"):
            assert any(fnmatch.fnmatchcase(key, rule["test"]) for key in lab.tests), \
                f"{lab.id}: symptom rule for {rule['test']!r} matches no test"
