"""A job handler for the hidden run_workers test (module level, so spawn can import it)."""


def tenfold_unless_even(job: dict) -> int:
    """Return ten times ``job["n"]``; jobs with an even id raise."""
    if job["id"] % 2 == 0:
        raise RuntimeError(f"job {job['id']} is even")
    return job["n"] * 10
