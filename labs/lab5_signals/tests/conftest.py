"""Lab 5's fixtures: ``programs`` (see lab5_helpers.py) kills what a test started."""

from lab5_helpers import programs  # noqa: F401  (a pytest fixture)
