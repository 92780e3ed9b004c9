"""The runner image: one Dockerfile for both bases, fast rebuilds, and what the tests need inside."""

from __future__ import annotations

import re
import time

import pytest

from graderkit import require_engine

from grader import image

pytestmark = pytest.mark.docker


def test_one_build_argument_switches_to_the_official_base():
    dockerfile = (image.TEMPLATES / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert image.OFFICIAL_BASE == "python:3.11-slim"


def test_rebuild_with_nothing_changed_is_fast():
    require_engine()  # builds once if needed
    started = time.monotonic()
    first = image.build(log=lambda *args: None)
    assert time.monotonic() - started < 10
    assert image.runner_image_id() == first
    labels = image.docker_client().images.get(image.image_tag()).labels
    assert labels[image.CONTENT_LABEL] in {image.content_hash(b) for b in (image.OFFICIAL_BASE, image.BOOTSTRAP_BASE)}


def test_image_has_what_the_lab_tests_use():
    client = require_engine()
    script = ("import pytest, pytest_timeout, posix_ipc, psutil, yaml, redis, matplotlib, os, sys; "
              "print(sys.version_info[:2], os.getuid())")
    out = client.containers.run(image.image_tag(), ["sh", "-c", f"python3 -c '{script}' && redis-cli --version && ps -o pid= -p 1"],
                                network_mode="none", remove=True, user="1000:1000")
    text = out.decode()
    assert "(3, 11) 1000" in text and "redis-cli" in text


def test_image_draws_korean_with_real_glyphs():
    """Lab 6's Korean chart labels need a CJK font in the image; matplotlib warns 'Glyph ... missing' without one."""
    client = require_engine()
    script = ("import warnings, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
              "warnings.simplefilter('always'); plt.rcParams['font.family'] = ['Noto Sans CJK KR', 'DejaVu Sans']\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    fig, ax = plt.subplots(); ax.set_title('스레드와 프로세스'); fig.savefig('/tmp/k.png')\n"
              "print('missing:', [str(w.message) for w in caught if 'Glyph' in str(w.message)])")
    out = client.containers.run(image.image_tag(), ["python3", "-c", script], network_mode="none", remove=True,
                                user="1000:1000", environment={"MPLCONFIGDIR": "/tmp/mpl"}, tmpfs={"/tmp": ""})
    assert "missing: []" in out.decode(), out.decode()
