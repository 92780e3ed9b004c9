"""Shared helpers for the grader's tests: a tiny demo lab and the Docker engine.

Not a test module (no ``test_`` prefix); ``tests/test_grade*.py`` import it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from grader import image, labs, sandbox

FIXTURES = Path(__file__).parent / "fixtures"

DEMO_FILES = {
    "labs/lab9_demo/lab.yaml": """\
        id: lab9
        title: Demo
        modules: [demo.py]
        timeout: 2
        resources: {wall_clock: 20}
        hidden_points: 40
        tests:
          test_demo.py::test_add: {points: 30, hint: "Return the sum, not the product."}
          test_demo.py::test_param: {points: 30, hint: "Zero is a number too."}
        """,
    "labs/lab9_demo/demo.py": '''\
        def add(a, b):
            """Return a + b."""
            raise NotImplementedError("add")
        def hang():
            """Return at once."""
            raise NotImplementedError("hang")
        def spawn():
            """Start nothing."""
            raise NotImplementedError("spawn")
        ''',
    "labs/lab9_demo/tests/test_demo.py": """\
        import pytest
        def test_add(impl):
            assert impl.load("demo").add(2, 3) == 5
        @pytest.mark.parametrize("a", [0, 1])
        def test_param(impl, a):
            assert impl.load("demo").add(a, 0) == a
        """,
    "reference/lab9_demo/hidden.yaml": """\
        tests:
          test_hidden_demo.py::test_hang: {points: 20, hint: "hang() must return at once."}
          test_hidden_demo.py::test_children: {points: 20}
        """,
    "reference/lab9_demo/demo.py": """\
        def add(a, b):
            return a + b
        def hang():
            return None
        def spawn():
            return None
        """,
    "reference/lab9_demo/tests/test_hidden_demo.py": """\
        def test_hang(impl):
            impl.load("demo").hang()
        def test_children(impl):
            assert impl.load("demo").spawn() is None
        """,
}


def make_demo_kit(root: Path) -> labs.Lab:
    for rel, text in DEMO_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return labs.load_lab(root / "labs" / "lab9_demo")


def require_engine():
    """The Docker engine and the runner image; fail (never skip) when CI demands them."""
    try:
        client = image.docker_client()
        image.build(log=lambda *args: None)
        return client
    except image.ImageError as exc:
        if os.environ.get("IPCLAB_REQUIRE_DOCKER") == "1":
            pytest.fail(f"IPCLAB_REQUIRE_DOCKER=1 but Docker is not usable: {exc}")
        pytest.skip(f"no Docker engine or runner image: {exc}")


def my_containers(client) -> list[str]:
    """Grader containers this test process started that still exist."""
    return sandbox.containers_of(client)
