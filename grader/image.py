"""The runner image: ``ipclab-runner:<kit version>``, where submissions are tested.

``python -m grader image build`` builds it from ``templates/Dockerfile``
through the Docker SDK (never the ``docker`` command). Two ways in, chosen by
one build argument, ``BASE_IMAGE``:

* a registry is reachable: ``python:3.11-slim`` is pulled and used as is;
* no registry (the usual case on a locked-down grading machine): a Debian
  bookworm root file system with Python 3 is made with ``mmdebstrap`` and
  imported as ``ipclab-base:bookworm-<hash>``, once per package list (the
  hash changes with ``BOOTSTRAP_PACKAGES``, so adding a package makes a new
  base instead of reusing a stale one).

Both ways give the same tools: ``ps``, ``redis-cli``, and a CJK font
(``fonts-noto-cjk``) so that lab 6 draws Korean chart labels with real glyphs.

Python packages are installed from a wheelhouse that ``pip download`` fills
on the host (``templates/runner-requirements.txt``), so the build needs no
index. The image carries a label with the hash of everything it was built
from; a rebuild with nothing changed finds the label and returns at once.

The kit's own code (``grader/``) is *not* baked in: each run mounts it
read-only at ``/kit``, so editing the kit never forces a rebuild.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from grader import labs

REPOSITORY = "ipclab-runner"
OFFICIAL_BASE = "python:3.11-slim"
PYTHON_VERSION = "3.11.2"
BOOTSTRAP_PACKAGES = ["python3", "python3-venv", "coreutils", "procps", "redis-tools", "fonts-noto-cjk"]
BOOTSTRAP_BASE = "ipclab-base:bookworm-" + hashlib.sha256(" ".join(BOOTSTRAP_PACKAGES).encode()).hexdigest()[:8]
CONTENT_LABEL = "org.ipclab.content"
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
WHEEL_CACHE = Path(os.environ.get("IPCLAB_CACHE", Path.home() / ".cache" / "ipclab")) / "wheels"


class ImageError(Exception):
    """The runner image could not be found or built (the kit's problem, not a student's)."""


def kit_version() -> str:
    try:
        return importlib.metadata.version("ipclab")
    except importlib.metadata.PackageNotFoundError:
        text = (labs.KIT_ROOT / "pyproject.toml").read_text(encoding="utf-8")
        match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
        return match.group(1) if match else "0"


def image_tag() -> str:
    """``ipclab-runner:<kit version>``, or ``$IPCLAB_IMAGE`` when set."""
    return os.environ.get("IPCLAB_IMAGE") or f"{REPOSITORY}:{kit_version()}"


def docker_client(timeout: int = 120):
    """A client for the local engine; raises ImageError when none answers."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as exc:  # docker raises several unrelated types here
        raise ImageError(f"no Docker engine answers ({exc}); start dockerd") from exc


def runner_image_id(tag: str | None = None) -> str:
    """Id (``sha256:...``) of the runner image; ImageError when it is not built."""
    import docker

    client = docker_client()
    try:
        return client.images.get(tag or image_tag()).id
    except docker.errors.ImageNotFound as exc:
        raise ImageError(f"runner image {tag or image_tag()} is not built: run `make image`") from exc


def content_hash(base: str) -> str:
    """Hash of what the image is made of: Dockerfile, requirements, base choice."""
    digest = hashlib.sha256()
    for name in ("Dockerfile", "runner-requirements.txt"):
        digest.update((TEMPLATES / name).read_bytes())
    digest.update(base.encode())
    return digest.hexdigest()[:16]


def build(*, base: str | None = None, force: bool = False, log=print) -> str:
    """Build the runner image if needed; return its id.

    ``base`` forces a base image (``python:3.11-slim`` or
    ``ipclab-base:bookworm-<hash>``); by default the official one is used when present
    or pullable, the bootstrapped one otherwise.
    """
    import docker

    client = docker_client(timeout=900)
    tag = image_tag()
    base = base or _choose_base(client, log)
    wanted = content_hash(base)
    if not force:
        try:
            existing = client.images.get(tag)
            if existing.labels.get(CONTENT_LABEL) == wanted:
                log(f"{tag} is up to date ({existing.short_id})")
                return existing.id
        except docker.errors.ImageNotFound:
            pass
    with tempfile.TemporaryDirectory(prefix="ipclab-image-") as tmp:
        context = Path(tmp)
        shutil.copy(TEMPLATES / "Dockerfile", context / "Dockerfile")
        _fill_wheelhouse(context / "wheels", log)
        log(f"building {tag} from {base}")
        try:
            image, _ = client.images.build(
                path=str(context), tag=tag, buildargs={"BASE_IMAGE": base},
                labels={CONTENT_LABEL: wanted, "org.ipclab.kit-version": kit_version()},
                rm=True, forcerm=True, network_mode="none" if base == BOOTSTRAP_BASE else None,
            )
        except docker.errors.BuildError as exc:
            tail = "".join(chunk.get("stream", "") for chunk in exc.build_log if isinstance(chunk, dict))[-3000:]
            raise ImageError(f"building {tag} failed: {exc}\n{tail}") from exc
        except docker.errors.APIError as exc:
            raise ImageError(f"building {tag} failed: {exc}") from exc
    log(f"built {tag} ({image.short_id})")
    return image.id


def _choose_base(client, log) -> str:
    import docker

    for name in (OFFICIAL_BASE, BOOTSTRAP_BASE):
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            pass
    try:
        log(f"pulling {OFFICIAL_BASE}")
        client.images.pull(OFFICIAL_BASE)
        return OFFICIAL_BASE
    except docker.errors.APIError as exc:
        log(f"cannot pull {OFFICIAL_BASE} ({_first_line(exc)}): bootstrapping Debian bookworm with mmdebstrap")
    bootstrap_base(client, log)
    return BOOTSTRAP_BASE


def bootstrap_base(client, log=print) -> None:
    """Make ``ipclab-base:bookworm-<hash>`` with mmdebstrap, streamed into the engine."""
    if shutil.which("mmdebstrap") is None:
        raise ImageError("no container registry and no mmdebstrap: apt-get install mmdebstrap")
    cmd = ["mmdebstrap", "--variant=minbase", "--quiet",
           "--include=" + ",".join(BOOTSTRAP_PACKAGES), "bookworm", "-"]
    log("running " + " ".join(cmd))
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
        try:
            client.api.import_image(
                src=iter(lambda: proc.stdout.read(1 << 20), b""), stream_src=True,
                repository=BOOTSTRAP_BASE.split(":")[0], tag=BOOTSTRAP_BASE.split(":")[1],
                changes=['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
                         'CMD ["/bin/bash"]'],
            )
        finally:
            proc.stdout.close()
            status = proc.wait()
        if status != 0:
            errors.seek(0)
            raise ImageError(f"mmdebstrap failed ({status}): {errors.read()[-2000:].decode(errors='replace')}")
    log(f"imported {BOOTSTRAP_BASE}")


def _fill_wheelhouse(dest: Path, log) -> None:
    """Wheels for the image's Python (3.11, x86_64 glibc), cached on the host."""
    requirements = TEMPLATES / "runner-requirements.txt"
    # 3.11.2 is bookworm's python3: markers such as python_full_version < "3.11.3"
    # must resolve as they will inside the image.
    key = hashlib.sha256(requirements.read_bytes() + PYTHON_VERSION.encode()).hexdigest()[:16]
    cache = WHEEL_CACHE / key
    if not (cache / "requirements.txt").is_file():
        log(f"downloading wheels into {cache}")
        tmp = cache.with_name(key + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        platforms = [arg for p in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
                                   "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64")
                     for arg in ("--platform", p)]
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(tmp),
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:",
               *platforms, "-r", str(requirements)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError(f"pip download failed: {proc.stderr[-2000:]}")
        shutil.copy(requirements, tmp / "requirements.txt")
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    shutil.copytree(cache, dest)


def _first_line(exc) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


# -- command line: python -m grader image build|id ---------------------------------


def add_arguments(parser):
    parser.add_argument("action", choices=["build", "id"], help="build: build if needed; id: print the image id")
    parser.add_argument("--force", action="store_true", help="rebuild even when the image is up to date")
    parser.add_argument("--base", help=f"base image ({OFFICIAL_BASE} or {BOOTSTRAP_BASE}); default: pick one")


def main(args) -> int:
    try:
        if args.action == "build":
            print(build(base=args.base, force=args.force))
        else:
            print(runner_image_id())
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
