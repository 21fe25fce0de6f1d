"""One Patroni node as local processes: Patroni, and the PostgreSQL it runs.

Patroni starts PostgreSQL in a session of its own (``setsid``), so a node is two
sets of processes: Patroni's process group (the harness starts it; its helpers,
pg_basebackup or pg_rewind, run in it), and PostgreSQL: the postmaster and its
children, each of which is the leader of a group of its own (see
``_freeze_postgres``). That is what lets a scenario crash PostgreSQL alone while
Patroni watches, or lose the whole node at once.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import requests

from .process import ServerProcess, ServerUser
from ..rundir import RunDir, alive, kill_tree, signal_tree
from ..topology import Credentials, Endpoint
from ..waits import wait_until
from ..patroni.config import LAB_TIMINGS, NodeAddresses, Timings, node_config, node_config_text

# Patroni runs ``bin_dir/postgres``; this wrapper records the new postmaster's
# process group in the run directory before it becomes PostgreSQL, so that even a
# run killed with SIGKILL (whose Patroni can no longer say where its PostgreSQL
# is) gets it reaped by the next run. Only server starts (-D) are recorded.
POSTGRES_WRAPPER = """#!/bin/sh
# Written by chaoslab: record the postmaster's process group, then become postgres.
case " $* " in
  *" -D "*) pgid=$(cut -d' ' -f5 /proc/$$/stat) && echo "$pgid" > '{records}/{name}.postmaster.'"$pgid" ;;
esac
exec '{postgres}' "$@"
"""


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


@dataclass
class PatroniNode:
    name: str
    addresses: NodeAddresses
    etcd: Endpoint
    run_dir: RunDir
    user: ServerUser
    creds: Credentials
    bindir: Path
    timings: Timings = LAB_TIMINGS
    etcd_is_a_proxy: bool = False   # ``etcd`` is its link's fault proxy
    namespace: list[str] | None = None   # nsenter's arguments (chaoslab.local.netns), if any
    client_networks: tuple[str, ...] = ("127.0.0.1/32",)   # who may connect over TCP

    def __post_init__(self) -> None:
        self.dir = self.run_dir.service_dir(self.name)
        self.data = self.dir / "data"
        self.bin = self.dir / "bin"
        self.config_path = self.dir / "patroni.yml"
        self.log = self.dir / "patroni.log"   # Patroni's log and PostgreSQL's stderr, interleaved
        self.log.touch()
        patroni = shutil.which("patroni") or "/usr/bin/patroni"
        self.process = ServerProcess(name=self.name, args=[patroni, str(self.config_path)], cwd=self.dir,
                                     log=self.log, user=self.user, run_dir=self.run_dir,
                                     stop_signal=signal.SIGTERM, namespace=self.namespace)

    @property
    def postgres(self) -> Endpoint:
        return self.addresses.postgres

    @property
    def rest(self) -> Endpoint:
        return self.addresses.rest

    # -- files ----------------------------------------------------------------------------
    def write_files(self, *, synchronous_mode: bool = False) -> None:
        """patroni.yml (it holds passwords: 0600) and the bin_dir with the recording wrapper."""
        self.bin.mkdir(exist_ok=True)
        for tool in self.bindir.iterdir():
            link = self.bin / tool.name
            if tool.name != "postgres" and not link.exists():
                link.symlink_to(tool)
        wrapper = self.bin / "postgres"
        wrapper.write_text(POSTGRES_WRAPPER.format(records=self.run_dir.path / "pgroups", name=self.name,
                                                   postgres=self.bindir / "postgres"))
        wrapper.chmod(0o755)
        config = node_config(self.name, addresses=self.addresses, etcd=self.etcd, data_dir=self.data,
                             bin_dir=self.bin, socket_dir=self.dir, creds=self.creds, timings=self.timings,
                             synchronous_mode=synchronous_mode, etcd_is_a_proxy=self.etcd_is_a_proxy,
                             client_networks=self.client_networks)
        self.config_path.touch(mode=0o600)
        self.config_path.write_text(node_config_text(config))
        os.chmod(self.config_path, 0o600)
        self.user.own(self.dir)

    # -- Patroni ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start Patroni (it starts, clones or rewinds PostgreSQL by itself) and wait for its REST API."""
        self.process.start()
        self.process.wait_answering(lambda: self.status() is not None,
                                    expected=f"Patroni's REST API to answer on {self.rest}", timeout=30)

    def stop(self, timeout: float = 20) -> None:
        """Patroni's own clean stop (it shuts PostgreSQL down first); then nothing of the node is left."""
        if self.paused:
            self.resume()
        self.process.stop(timeout=timeout)
        self.kill_postgres()

    def status(self, timeout: float = 1.0) -> dict | None:
        """GET /patroni: this node's own view (role, state, timeline), None if it does not answer."""
        try:
            return requests.get(f"http://{self.rest}/patroni", timeout=timeout).json()
        except (requests.RequestException, ValueError):
            return None

    # -- PostgreSQL, started by Patroni ---------------------------------------------------------
    def _postmaster(self) -> tuple[int, list[str]] | None:
        """This node's live postmaster (pid, /proc stat fields), told by its postmaster.pid."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return None
        try:  # a stale pid file may name a pid that now belongs to someone else
            if os.readlink(f"/proc/{pid}/cwd") != str(self.data):
                return None
        except OSError:
            return None
        return pid, stat

    def _freeze_postgres(self) -> list[int]:
        """SIGSTOP the postmaster, then every process under it (see rundir.process_tree:
        PostgreSQL's children call setsid(), so a group signal would miss them)."""
        postmaster = self._postmaster()
        if postmaster is None:
            return []
        pids = signal_tree(postmaster[0], signal.SIGSTOP)
        wait_until(lambda: all(_state(pid) in ("T", None) for pid in pids), service=self.name,
                   expected="every PostgreSQL process to be stopped by SIGSTOP", timeout=5, log=self.log)
        return pids

    def _kill_postgres_processes(self) -> None:
        postmaster = self._postmaster()
        if postmaster is None:
            return
        pids = kill_tree(postmaster[0])
        wait_until(lambda: not alive(pids), service=self.name,
                   expected="every PostgreSQL process to exit after SIGKILL", timeout=10, log=self.log)

    def kill_postgres(self) -> None:
        """SIGKILL PostgreSQL, all of its processes at once: it crashes, Patroni lives on."""
        self._kill_postgres_processes()

    # -- the whole node -------------------------------------------------------------------------
    def kill(self) -> None:
        """The node is lost: Patroni and PostgreSQL frozen together, then SIGKILLed."""
        self.process.signal_tree(signal.SIGSTOP)
        self._kill_postgres_processes()
        self.process.kill()

    def pause(self) -> None:
        """SIGSTOP Patroni and PostgreSQL: a frozen machine, that keeps its sockets open."""
        self.process.pause()
        self._freeze_postgres()

    def resume(self) -> None:
        """SIGCONT every process of the node, back to back, as a VM that is thawed."""
        postmaster = self._postmaster()
        if postmaster is not None:
            signal_tree(postmaster[0], signal.SIGCONT)
        self.process.resume()

    @property
    def paused(self) -> bool:
        postmaster = self._postmaster()
        return self.process.paused or (postmaster is not None and postmaster[1][0] == "T")


def _state(pid: int) -> str | None:
    """A process's state letter, None once it is gone (a zombie is gone)."""
    stat = _proc_stat(pid)
    return None if stat is None or stat[0] in ("Z", "X") else stat[0]


