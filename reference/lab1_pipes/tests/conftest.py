# Hidden tests share the public tests' helpers and fixtures (labs/lab1_pipes/tests/lab1_helpers.py).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "labs" / "lab1_pipes" / "tests"))

from lab1_helpers import fifo_log, no_inherited_fds, pipeline, start_server  # noqa: E402,F401
