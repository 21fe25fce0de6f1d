"""etcd as a local process: Patroni's consensus store, one member (a lab, not production).

The v2 API is enabled because Debian's Patroni uses it (see config.DCS_API).
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass

import requests

from .process import ServerProcess, ServerUser
from ..rundir import RunDir
from ..topology import Endpoint


@dataclass
class EtcdNode:
    name: str
    client: Endpoint
    peer: Endpoint
    run_dir: RunDir
    user: ServerUser
    namespace: list[str] | None = None   # nsenter's arguments (chaoslab.local.netns), if any

    def __post_init__(self) -> None:
        binary = shutil.which("etcd") or "/usr/bin/etcd"
        self.dir = self.run_dir.service_dir(self.name)
        self.log = self.dir / "etcd.log"
        self.log.touch()
        self.user.own(self.dir)
        client_url, peer_url = f"http://{self.client}", f"http://{self.peer}"
        self.process = ServerProcess(
            name=self.name, cwd=self.dir, log=self.log, user=self.user, run_dir=self.run_dir,
            stop_signal=signal.SIGTERM, namespace=self.namespace,
            args=[binary, "--name", self.name, "--data-dir", str(self.dir / "data"),
                  "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                  "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                  "--initial-cluster", f"{self.name}={peer_url}", "--initial-cluster-state", "new",
                  "--initial-cluster-token", self.run_dir.run_id, "--enable-v2=true"],
        )

    @property
    def url(self) -> str:
        return f"http://{self.client}"

    def start(self, timeout: float = 20) -> None:
        self.process.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20) -> None:
        self.process.wait_answering(
            lambda: requests.get(f"{self.url}/health", timeout=1).json().get("health") == "true",
            expected=f"GET /health to say healthy on {self.client}", timeout=timeout)
