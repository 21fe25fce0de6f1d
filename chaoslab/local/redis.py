"""Redis as a local process: a pure cache, no persistence."""

from __future__ import annotations

import signal
import shutil
from dataclasses import dataclass

from .. import redis_probe
from ..rundir import RunDir
from ..topology import Endpoint
from .process import ServerProcess, ServerUser

REDIS_CONF = """\
# Written by chaoslab: a cache, so nothing is persisted and a restart starts empty.
bind {host}
# Bound to one address: the loopback, or the run's own bridge (chaoslab.local.netns), whose
# clients come from the host's leg on it; protected mode would refuse those.
protected-mode no
port {port}
dir {dir}
save ""
appendonly no
daemonize no
"""


@dataclass
class RedisNode:
    name: str
    endpoint: Endpoint
    run_dir: RunDir
    user: ServerUser
    extra_conf: str = ""  # e.g. "replicaof ..." for a Sentinel group's replica
    namespace: list[str] | None = None   # nsenter's arguments (chaoslab.local.netns), if any

    def __post_init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.dir = self.run_dir.service_dir(self.name)
        self.log = self.dir / "redis.log"
        self.log.touch()
        conf = self.dir / "redis.conf"
        if not conf.exists():  # a restarted node keeps what Sentinel wrote into it
            conf.write_text(REDIS_CONF.format(host=self.endpoint.host, port=self.endpoint.port, dir=self.dir) + self.extra_conf)
        self.user.own(self.dir)
        self.process = ServerProcess(name=self.name, args=[binary, str(conf)], cwd=self.dir, log=self.log,
                                     user=self.user, run_dir=self.run_dir, stop_signal=signal.SIGTERM,
                                     namespace=self.namespace)

    def start(self, timeout: float = 15) -> None:
        self.process.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 15) -> None:
        self.process.wait_answering(lambda: redis_probe.ping(self.endpoint), expected=f"PONG on {self.endpoint}",
                                    timeout=timeout)
