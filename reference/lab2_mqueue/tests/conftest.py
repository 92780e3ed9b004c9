"""Fixtures for lab 2's hidden tests (the same as the public ones: this folder runs on its own too)."""

import os
import uuid

import posix_ipc
import pytest


@pytest.fixture
def jq(impl):
    """The jobqueue module under test."""
    return impl.load("jobqueue")


@pytest.fixture
def new_queue_name():
    """Make unique queue names; every one is unlinked after the test, pass or fail.

    Queues outlive processes, so a test that forgot one would leave it in the
    kernel until reboot (and count against the user's queue quota).
    """
    names = []

    def make() -> str:
        name = f"/ipclab_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    for name in names:
        try:
            posix_ipc.unlink_message_queue(name)
        except posix_ipc.ExistentialError:
            pass


@pytest.fixture
def queue_name(new_queue_name):
    """One unique queue name, unlinked after the test."""
    return new_queue_name()


@pytest.fixture
def plant_queue():
    """Create a queue with posix_ipc directly, independently of the code under test.

    Returns a function ``plant(name, max_messages=10, max_message_size=1024)``;
    the handles it makes are closed after the test (the names are unlinked by
    ``new_queue_name``).
    """
    handles = []

    def plant(name: str, *, max_messages: int = 10, max_message_size: int = 1024) -> posix_ipc.MessageQueue:
        mq = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, mode=0o600,
                                    max_messages=max_messages, max_message_size=max_message_size)
        handles.append(mq)
        return mq

    yield plant
    for mq in handles:
        try:
            mq.close()
        except posix_ipc.Error:
            pass
