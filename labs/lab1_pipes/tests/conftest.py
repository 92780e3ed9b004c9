# The fixtures live in lab1_helpers.py, which the hidden tests share.
from lab1_helpers import fifo_log, no_inherited_fds, pipeline, start_server  # noqa: F401
