"""Job handlers for the run_workers tests.

They live in a module of their own, at module level, so that workers started
with *spawn* can import them by name, just as workers started with *fork*
inherit them.
"""

import os


def square_or_fail(job: dict) -> dict:
    """Square ``job["n"]``; multiples of 7 raise, to test error replies."""
    n = job["n"]
    if n % 7 == 0:
        raise ValueError(f"unlucky number {n}")
    return {"square": n * n, "pid": os.getpid()}
