"""One locked-down container run: limits, the wall clock, and cleaning up.

``run`` starts the runner image with the kit mounted read-only at ``/kit``
and the submission read-only at ``/submission``, waits at most the wall-clock
limit, kills the container when it is over, and returns the harness's lines
(stdout of PID 1, see ``grader/harness.py``) with what happened.

Every limit has a default (``DEFAULTS``); a lab's ``resources:`` in lab.yaml
may raise it, never lower it below the default, except ``cpus`` which the lab
sets as it needs::

    resources: {cpus: 2, memory: 1g, pids: 512, nofile: 2048, tmpfs: 256m,
                shm: 1g, output: 2m, wall_clock: 300}

``/dev/shm`` is as large as the memory limit unless ``shm`` says otherwise:
its pages are charged to the container's memory, so the memory limit
already bounds it, and shared-memory labs need room.

The container has no network (loopback works), no capabilities, no new
privileges, a read-only root with size-limited tmpfs for ``/tmp``,
``/dev/shm`` and ``/work``, runs as uid 1000, and carries the label
``org.ipclab.grader``. Containers are removed when done, on Ctrl-C, and, at
the start of a run, when a crashed earlier grader left them behind (their
owner process is gone).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

LABEL = "org.ipclab.grader"
OWNER_LABEL = "org.ipclab.owner"  # "<hostname>:<pid>" of the grader process
RUN_LABEL = "org.ipclab.run"      # one random id per run
RUN_USER = "1000:1000"

DEFAULTS = {
    "cpus": 1.0,
    "memory": "512m",
    "pids": 256,
    "nofile": 1024,
    "nproc": 4096,      # per uid across containers: pids is the real cap
    "tmpfs": "64m",      # /tmp and /work
    "shm": None,         # /dev/shm; None: the memory limit (its pages count against it anyway)
    "output": "1m",
    "wall_clock": None,  # None: sum of the test timeouts + WALL_SLACK
}
WALL_SLACK = 30.0


class SandboxError(Exception):
    """The container could not be run (the kit's problem, not a submission's)."""


@dataclasses.dataclass
class Limits:
    cpus: float
    memory: str
    pids: int
    nofile: int
    nproc: int
    tmpfs: str
    shm: str
    output: str
    wall_clock: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RunResult:
    lines: list[dict]          # the harness's JSON lines, in order
    exit_code: int | None
    wall_clock_killed: bool
    oom_killed: bool
    seconds: float
    host_stats: dict           # cgroup figures read on the host while it ran
    stderr_tail: str
    unparsed_lines: int
    container_id: str = ""


def parse_size(text: str | int | float) -> int:
    """``"512m"`` -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def limits_for(resources: dict, timeouts: list[float]) -> Limits:
    """The limits for one run: defaults, raised where the lab asks for more."""
    chosen = {}
    for name, default in DEFAULTS.items():
        wanted = resources.get(name)
        if wanted is None:
            chosen[name] = default
        elif name == "cpus" or default is None or name == "shm":
            chosen[name] = wanted
        elif isinstance(default, str):
            chosen[name] = wanted if parse_size(wanted) > parse_size(default) else default
        else:
            chosen[name] = max(wanted, default)
    if chosen["shm"] is None:
        chosen["shm"] = chosen["memory"]
    if chosen["wall_clock"] is None:
        chosen["wall_clock"] = sum(timeouts) + WALL_SLACK
    return Limits(cpus=float(chosen["cpus"]), memory=str(chosen["memory"]), pids=int(chosen["pids"]),
                  nofile=int(chosen["nofile"]), nproc=int(chosen["nproc"]), tmpfs=str(chosen["tmpfs"]),
                  shm=str(chosen["shm"]),
                  output=str(chosen["output"]), wall_clock=float(chosen["wall_clock"]))


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def remove_stale(client) -> list[str]:
    """Remove grader containers whose grader process (on this host) is gone."""
    removed = []
    host = socket.gethostname()
    # sparse: no inspect per container, which would race with other graders removing theirs
    for container in client.containers.list(all=True, filters={"label": LABEL}, sparse=True):
        owner = (container.attrs.get("Labels") or {}).get(OWNER_LABEL, "")
        owner_host, _, pid = owner.rpartition(":")
        alive = owner_host == host and pid.isdigit() and _pid_alive(int(pid))
        if not alive:
            try:
                container.remove(force=True)
                removed.append(container.id[:12])
            except Exception:  # already gone, or the engine is busy removing it
                pass
    return removed


def containers_of(client, owner: str | None = None) -> list[str]:
    """Ids of the grader containers that ``owner`` (default: this process) started and that still exist."""
    owner = owner or _owner()
    found = client.containers.list(all=True, sparse=True, filters={"label": [LABEL, f"{OWNER_LABEL}={owner}"]})
    return [c.id for c in found]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def run(client, image: str, kit_dir: Path, submission_dir: Path, limits: Limits, *,
        cpuset: str | None = None, name_hint: str = "") -> RunResult:
    """Run the harness in a fresh container; always removes the container."""
    import docker
    from docker.types import LogConfig, Mount, Ulimit

    remove_stale(client)
    tmpfs_opts = f"rw,nosuid,nodev,size={parse_size(limits.tmpfs)}"
    memory = parse_size(limits.memory)
    run_id = uuid.uuid4().hex
    try:
        try:
            container = client.containers.create(
                image,
                command=["python3", "-I", "/kit/grader/harness.py"],
                user=RUN_USER,
                network_mode="none",
                mem_limit=memory,
                memswap_limit=memory,  # equal to the memory limit: no swap
                nano_cpus=int(limits.cpus * 1e9),
                cpuset_cpus=cpuset,
                pids_limit=limits.pids,
                read_only=True,
                tmpfs={"/tmp": tmpfs_opts + ",mode=1777", "/work": tmpfs_opts + ",uid=1000,gid=1000,mode=0755"},
                shm_size=parse_size(limits.shm),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                ulimits=[Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
                         Ulimit(name="nproc", soft=limits.nproc, hard=limits.nproc),
                         Ulimit(name="core", soft=0, hard=0)],
                mounts=[Mount("/kit", str(kit_dir), type="bind", read_only=True),
                        Mount("/submission", str(submission_dir), type="bind", read_only=True)],
                labels={LABEL: "1", OWNER_LABEL: _owner(), RUN_LABEL: run_id,
                        "org.ipclab.submission": name_hint[:60]},
                # Room for the harness's capped output even when JSON escaping multiplies it
                # by six, plus the results: a rotated log would lose the first lines.
                log_config=LogConfig(type="json-file", config={
                    "max-size": str(6 * parse_size(limits.output) + (16 << 20)), "max-file": "1"}),
                environment={},
                detach=True,
            )
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(f"runner image {image} is not built: run `make image`") from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"the engine refused to create the container: {exc}") from exc
        return _start_and_wait(client, container, limits)
    finally:
        # By label, not by object: Ctrl-C during create() leaves a container we hold no handle to.
        _remove_run(client, run_id)


def _remove_run(client, run_id: str) -> None:
    try:
        for container in client.containers.list(all=True, sparse=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
            container.remove(force=True)
    except Exception:
        pass  # remove_stale() at the next run gets it


def _start_and_wait(client, container, limits: Limits) -> RunResult:
    import docker

    started = time.monotonic()
    try:
        container.start()
    except docker.errors.APIError as exc:
        raise SandboxError(f"the container did not start: {exc}") from exc
    container.reload()
    cgroups = _cgroup_dirs(container.attrs["State"].get("Pid") or 0)
    waited: dict = {}

    def wait():
        try:
            waited["status"] = container.wait(timeout=limits.wall_clock + 60)
        except Exception as exc:  # noqa: BLE001 - reported below
            waited["error"] = exc

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    stats = {"peak_processes": 0}
    deadline = started + limits.wall_clock
    killed = False
    while waiter.is_alive():
        _sample(cgroups, stats)
        if time.monotonic() > deadline:
            killed = True
            try:
                container.kill()
            except docker.errors.APIError:
                pass
            waiter.join(30)
            break
        waiter.join(0.2)
    seconds = time.monotonic() - started
    if "error" in waited and not killed:
        raise SandboxError(f"lost the container while waiting for it: {waited['error']}")
    try:
        container.reload()
        state = container.attrs["State"]
        raw = container.logs(stdout=True, stderr=False)
        err = container.logs(stdout=False, stderr=True)[-2000:]
    except docker.errors.APIError as exc:
        raise SandboxError(f"could not read the container's output: {exc}") from exc
    lines, unparsed = [], 0
    for line in raw.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            unparsed += 1
            continue
        if isinstance(item, dict):
            lines.append(item)
    return RunResult(lines=lines, exit_code=state.get("ExitCode"), wall_clock_killed=killed,
                     oom_killed=bool(state.get("OOMKilled")), seconds=round(seconds, 3), host_stats=stats,
                     stderr_tail=err.decode("utf-8", "replace"), unparsed_lines=unparsed,
                     container_id=container.id)


def _cgroup_dirs(pid: int) -> dict[str, Path]:
    """The container's cgroup folders on the host, by controller (v1) or ``""`` (v2)."""
    dirs = {}
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return dirs
    for row in text.splitlines():
        _, controllers, path = row.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            base = Path("/sys/fs/cgroup") / controllers if controllers else Path("/sys/fs/cgroup")
            dirs[controller] = base / path.lstrip("/")
    return dirs


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _sample(cgroups: dict[str, Path], stats: dict) -> None:
    """Keep the figures a wall-clock kill would otherwise lose."""
    pids = cgroups.get("pids") or cgroups.get("")
    memory = cgroups.get("memory") or cgroups.get("")
    cpu = cgroups.get("cpuacct") or cgroups.get("")
    if pids:
        current = _read_int(pids / "pids.current")
        if current:
            stats["peak_processes"] = max(stats["peak_processes"], current)
    if memory:
        peak = _read_int(memory / "memory.max_usage_in_bytes") or _read_int(memory / "memory.peak")
        if peak:
            stats["peak_memory_bytes"] = peak
    if cpu:
        usage = _read_int(cpu / "cpuacct.usage")
        if usage:
            stats["cpu_seconds"] = round(usage / 1e9, 3)
