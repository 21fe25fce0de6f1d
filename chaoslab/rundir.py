"""Per-run directories, port reservations and the reaping of killed runs.

Every lab run owns one directory under the run root. Each server it starts
records its process group there, and each port it takes is reserved there, so
that two runs never collide and a run killed with SIGKILL can be cleaned up by
the next one: nothing is left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError
from .waits import wait_until

RUN_ROOT = Path(os.environ.get("CHAOSLAB_RUN_ROOT", "/tmp/chaoslab"))
# What every run on this machine shares, whatever its run root: the port reservations (two
# runs in two roots, the hands-on tests' and the scenarios', both want the brief's ports) and
# the lock under which a run picks a subnet for its network namespaces.
MACHINE_DIR = Path(os.environ.get("CHAOSLAB_MACHINE_DIR", "/tmp/chaoslab-machine"))
PORTS_DIR = MACHINE_DIR / "ports"
OWNER_FILE = "owner.json"
DETACHED_FILE = "detached"  # `python -m chaoslab up` leaves its stack running on purpose


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process: a pid plus this is unique, a pid alone is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(run_dir: Path) -> bool:
    try:
        owner = json.loads((run_dir / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return _process_start_time(owner["pid"]) == owner["start"]


def _marker_owner(marker: Path) -> Path | None:
    """The run directory that reserved a port, from its marker; None while the marker is being
    written (it is created empty, then filled) or if it is gone."""
    try:
        text = marker.read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def _root() -> Path:
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    PORTS_DIR.mkdir(parents=True, exist_ok=True)
    # Servers may run as another user than the harness: they need to traverse the root.
    os.chmod(RUN_ROOT, 0o755)
    return RUN_ROOT


@dataclass
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @classmethod
    def create(cls) -> "RunDir":
        root = _root()
        name = f"run-{os.getpid()}-{secrets.token_hex(3)}"
        # Filled under a name the reaper does not look at, then renamed (atomically): another
        # run reaping at the same moment (a pytest-xdist worker) never sees it without its owner.
        building = root / f".{name}"
        building.mkdir(mode=0o755)
        (building / "pgroups").mkdir()
        (building / OWNER_FILE).write_text(
            json.dumps({"pid": os.getpid(), "start": _process_start_time(os.getpid())})
        )
        path = root / name
        building.rename(path)
        return cls(path)

    def service_dir(self, service: str) -> Path:
        directory = self.path / service
        directory.mkdir(exist_ok=True)
        return directory

    # -- process groups -------------------------------------------------------
    def record_process_group(self, name: str, pgid: int) -> None:
        (self.path / "pgroups" / name).write_text(str(pgid))

    def recorded_process_group(self, name: str) -> int | None:
        try:
            return int((self.path / "pgroups" / name).read_text())
        except (OSError, ValueError):
            return None

    def forget_process_group(self, name: str) -> None:
        (self.path / "pgroups" / name).unlink(missing_ok=True)

    # -- ports ----------------------------------------------------------------
    def reserve_port(self, preferred: int | None = None) -> int:
        """A free TCP port of 127.0.0.1, reserved for this run.

        The reservation file makes two concurrent runs agree; the bind test makes
        sure nothing else (another program) holds the port right now.
        """
        if preferred and self._try_reserve(preferred):
            return preferred
        for _ in range(200):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            if self._try_reserve(port):
                return port
        raise RuntimeError("no free port could be reserved on 127.0.0.1")

    def _try_reserve(self, port: int) -> bool:
        if not _port_free(port):
            return False
        marker = PORTS_DIR / str(port)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _marker_owner(marker)
            if owner is None or owner.exists():   # None: its owner is writing it right now
                return False
            marker.unlink(missing_ok=True)  # reserved by a run that is gone
            return self._try_reserve(port)
        with os.fdopen(fd, "w") as handle:
            handle.write(str(self.path))   # the owner's whole path: runs of several roots share the registry
        (self.path / "ports").mkdir(exist_ok=True)
        (self.path / "ports" / str(port)).touch()
        return True

    # -- lifecycle ------------------------------------------------------------
    def mark_detached(self) -> None:
        (self.path / DETACHED_FILE).touch()

    def remove(self) -> None:
        """Kill whatever this run still has running, release its ports, delete it."""
        reap_run(self.path)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state letter), read from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def process_tree(leader: int) -> list[int]:
    """The leader, its process group and all their descendants that are alive, leader first.

    PostgreSQL's children call setsid(): they leave the postmaster's process group,
    so a group signal alone would miss every backend. Parent links find them.
    Zombies are left out: a zombie holds no port and no file, and PID 1 may never
    reap the orphans here.
    """
    table = _process_table()
    members = {pid for pid, (_, pgid, _) in table.items() if pid == leader or pgid == leader}
    frontier = list(members)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    alive = [pid for pid in members if table[pid][2] not in ("Z", "X")]
    return sorted(alive, key=lambda pid: pid != leader)


def children(parent: int) -> list[int]:
    """The live processes whose parent is ``parent`` (not their own children)."""
    return sorted(pid for pid, (ppid, _, state) in _process_table().items()
                  if ppid == parent and state not in ("Z", "X"))


def signal_tree(leader: int, sig: int) -> list[int]:
    """Send ``sig`` to the whole tree, leader first (a stopped leader forks nothing new)."""
    pids = process_tree(leader)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def kill_tree(leader: int) -> list[int]:
    """Crash a whole server at once: freeze every process, then SIGKILL them all.

    Freezing first means no backend can commit one more transaction while the
    postmaster is already dead, as on a machine that loses power.
    """
    signal_tree(leader, signal.SIGSTOP)
    return signal_tree(leader, signal.SIGKILL)


def alive(pids: list[int]) -> list[int]:
    table = _process_table()
    return [pid for pid in pids if pid in table and table[pid][2] not in ("Z", "X")]


def _tree_in(leader: int, run_dir: Path) -> list[int]:
    """The tree of a recorded leader, if it still runs inside the run directory (pid not reused)."""
    pids = process_tree(leader)
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(run_dir)):
                return pids
        except OSError:
            continue
    return []


# Where a run directory leaves its logs when it goes: set once a test failed (see
# pytest_plugin), so that the "log: ..." a failure names can still be read after the run.
_logs_kept_in: Path | None = None


def keep_logs_in(directory: Path) -> None:
    """From now on, every run directory removed copies its logs to ``directory/<run id>/``."""
    global _logs_kept_in
    _logs_kept_in = directory


def logs_kept_in() -> Path | None:
    return _logs_kept_in


def _keep_logs(run_dir: Path) -> None:
    if _logs_kept_in is None:
        return
    for log in run_dir.rglob("*.log"):
        if log.is_file():
            target = _logs_kept_in / run_dir.name / log.relative_to(run_dir)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, target)
            except OSError:
                pass   # a log that cannot be copied never stops the clean-up


def reap_run(run_dir: Path) -> None:
    pgroups = run_dir / "pgroups"
    for record in sorted(pgroups.glob("*")) if pgroups.exists() else []:
        try:
            pgid = int(record.read_text())
        except (OSError, ValueError):
            continue
        if _tree_in(pgid, run_dir):
            pids = kill_tree(pgid)
            try:  # SIGKILL is asynchronous: make sure the ports are free before they are released
                wait_until(lambda: not alive(pids), service=record.name, expected="to exit after SIGKILL",
                           timeout=5)
            except LabError:
                pass  # the directory goes anyway; what resists holds no port of a live run
    for port in (run_dir / "ports").glob("*") if (run_dir / "ports").exists() else []:
        marker = PORTS_DIR / port.name
        if _marker_owner(marker) == run_dir:
            marker.unlink(missing_ok=True)
    from .local.netns import remove_namespaces   # the local backend's; a no-op where there are none
    remove_namespaces(run_dir.name)
    _keep_logs(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)


def reap_abandoned_runs() -> list[Path]:
    """Clean up the runs whose owner died without cleaning up (pytest killed with SIGKILL)."""
    if not RUN_ROOT.exists():
        return []
    reaped = []
    for run_dir in sorted(RUN_ROOT.glob("run-*")):
        if (run_dir / DETACHED_FILE).exists() or _owner_alive(run_dir):
            continue
        reap_run(run_dir)
        reaped.append(run_dir)
    return reaped


def detached_runs() -> list[Path]:
    if not RUN_ROOT.exists():
        return []
    return [run_dir for run_dir in sorted(RUN_ROOT.glob("run-*")) if (run_dir / DETACHED_FILE).exists()]
