"""The local backend's fault proxy: `python -m chaoslab.faultproxy` as one of the lab's servers,
recorded in the run directory like the others (so `down` and the reaper stop it too)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ..faultproxy.client import ToxiproxyClient
from ..network import LINKS, FaultLinks, Link
from ..rundir import RunDir
from ..topology import Endpoint
from .process import ServerProcess, ServerUser

NAME = "faultproxy"
REPO = Path(__file__).resolve().parents[2]


class FaultProxyNode:
    def __init__(self, api: Endpoint, run_dir: RunDir) -> None:
        self.api = api
        self.dir = run_dir.service_dir(NAME)
        self.log = self.dir / "faultproxy.log"
        self.log.touch()
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.process = ServerProcess(name=NAME, args=[sys.executable, "-m", "chaoslab.faultproxy", "--listen",
                                                      str(api)], cwd=self.dir, log=self.log,
                                     user=ServerUser.current(), run_dir=run_dir, stop_signal=signal.SIGTERM,
                                     env=env)
        self.client = ToxiproxyClient(f"http://{api}", str(self.log))

    def start(self, timeout: float = 20) -> None:
        self.process.start()
        self.process.wait_answering(lambda: self.client.answers() or None,
                                    expected=f"its Toxiproxy API to answer on {self.client.url}", timeout=timeout)

    def fault_links(self, listen: dict[str, Endpoint], links: tuple[Link, ...] = LINKS) -> FaultLinks:
        return FaultLinks(self.client, listen, str(self.log), links)
