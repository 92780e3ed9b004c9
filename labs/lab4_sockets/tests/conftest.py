"""Lab 4's fixtures live in lab4_helpers.py, shared with the grader's hidden tests."""

from lab4_helpers import (  # noqa: F401  (pytest finds fixtures by name)
    clients, collector, kvserver, server, socket_dir, stats, udp_sender, unix_server,
)
