"""HAProxy as a local process, in master-worker mode so that a reload is hitless."""

from __future__ import annotations

import shutil
import signal
import socket
from dataclasses import dataclass

from ..errors import LabError
from ..rundir import RunDir
from ..waits import wait_until
from .process import ServerProcess, ServerUser


@dataclass
class HAProxyNode:
    name: str
    run_dir: RunDir
    user: ServerUser
    namespace: list[str] | None = None   # nsenter's arguments (chaoslab.local.netns), if any

    def __post_init__(self) -> None:
        self.binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.dir = self.run_dir.service_dir(self.name)
        self.config = self.dir / "haproxy.cfg"
        self.socket = self.dir / "admin.sock"
        self.log = self.dir / "haproxy.log"
        self.log.touch()
        self.user.own(self.dir)
        # -W: master-worker, so SIGUSR2 reloads the config with new workers while
        # the old ones finish their sessions (the "hitless reload" switch).
        # -db: stay in the foreground, the harness owns the process.
        self.process = ServerProcess(
            name=self.name, args=[self.binary, "-W", "-db", "-f", str(self.config)], cwd=self.dir,
            log=self.log, user=self.user, run_dir=self.run_dir, stop_signal=signal.SIGTERM,
            namespace=self.namespace,
        )

    def write_config(self, text: str) -> None:
        self.config.write_text(text)
        self.user.own(self.config)
        self._validate()

    def _validate(self) -> None:
        self.user.run([self.binary, "-c", "-f", str(self.config)], service=self.name,
                      expected=f"a valid configuration in {self.config}", log=self.log, cwd=self.dir)

    def start(self, timeout: float = 15) -> None:
        self.process.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 15) -> None:
        self.process.wait_answering(lambda: "Pid:" in self.command("show info"),
                                    expected=f"its runtime API to answer on {self.socket}", timeout=timeout)

    def worker_pid(self) -> str:
        for line in self.command("show info").splitlines():
            if line.startswith("Pid:"):
                return line.split(":", 1)[1].strip()
        return ""

    def reload(self, timeout: float = 10) -> None:
        """Hitless reload: the master starts new workers on the new config; old ones drain."""
        if not self.process.running():
            raise LabError(self.name, "a running master to reload", self.log, "haproxy is not running")
        before = self.worker_pid()
        self.process.signal_leader(signal.SIGUSR2)  # the master only: workers must not get it
        wait_until(lambda: self.worker_pid() not in ("", before), service=self.name,
                   expected="a new worker to answer after the reload", timeout=timeout, log=self.log)

    def command(self, line: str, timeout: float = 2.0) -> str:
        """One runtime API command over the stats socket; returns the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()
