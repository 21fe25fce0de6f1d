"""The API under test as a real uvicorn server, pointed at the cluster's endpoints.

It always runs on the host, whatever the backend (the brief's flow: the API on
the host, the databases behind HAProxy), so this module is backend-neutral.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from . import pg
from .cluster import Cluster
from .errors import LabError
from .phases import phase
from .local.process import ServerProcess, ServerUser
from .rundir import RunDir
from .topology import API, HAPROXY, REDIS, REPLICA
from .waits import wait_until

REPO = Path(__file__).resolve().parent.parent


# The port of the API in a lab started by `python -m chaoslab up`, when it is free: the one
# docs/submission.md gives students (the brief fixes none).
HANDS_ON_PORT = 3000
API_STATE_FILE = "api.json"


class ApiServer:
    """One uvicorn process; ``restart(**settings)`` runs it again with other settings."""

    def __init__(self, cluster: Cluster, app: str = "service.app:create_app", *,
                 run_dir: RunDir | None = None, port: int | None = None) -> None:
        self.cluster = cluster
        self.app = app
        # A run directory: it reserves the port, holds the log, and lets the reaper find a
        # uvicorn left by a killed run (it runs inside it). The scenarios' API has one of its
        # own; the API of a lab left running by `up` lives in the lab's, so `down` removes both.
        self._owns_run_dir = run_dir is None
        self.run_dir = run_dir or RunDir.create()
        self.log = self.run_dir.path / "api.log"
        self._process: ServerProcess | None = None
        self.port = port or self.run_dir.reserve_port()
        self.settings: dict[str, str] = {}

    # -- the API of a lab left running by `python -m chaoslab up` ---------------------------
    @classmethod
    def in_lab(cls, cluster: Cluster, run_dir: RunDir) -> "ApiServer":
        """A new API for a hands-on lab: the students' port when free, in the lab's run directory."""
        return cls(cluster, run_dir=run_dir, port=run_dir.reserve_port(HANDS_ON_PORT))

    def detach(self) -> None:
        """Leave it running after this process exits; ``attach`` finds it again."""
        (self.run_dir.path / API_STATE_FILE).write_text(json.dumps({"port": self.port, "settings": self.settings}))

    @classmethod
    def attach(cls, cluster: Cluster, run_dir: RunDir) -> "ApiServer | None":
        """The API that `up` started in this lab, or None if it was started with --no-api."""
        try:
            state = json.loads((run_dir.path / API_STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        server = cls(cluster, run_dir=run_dir, port=state["port"])
        server.settings = state["settings"]
        return server

    def state(self) -> str:
        """running, paused or stopped, read from /proc (whoever started it)."""
        process = self._server_process()
        return "paused" if process.paused else "running" if process.running() else "stopped"

    def fault(self, action: str) -> None:
        """The lab's faults (FAULTS) applied to the API's processes, as to any server's."""
        process = self._server_process()
        if action in ("start", "restart"):
            if action == "restart" or not process.running():
                process.stop(timeout=10)
                self.start(**self.settings)
            return
        if action in ("pause", "resume") and not process.running():
            raise LabError(API, f"a running API to {action}", self.log, "it is stopped")
        {"stop": lambda: process.stop(timeout=10), "kill": process.kill, "pause": process.pause,
         "resume": process.resume}[action]()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self, **settings: str) -> dict[str, str]:
        def reach(service: str):   # through the link's fault proxy, where the lab serves that link
            return self.cluster.path(API, service)
        redis = reach(REDIS)
        env = {
            "DB_WRITE_DSN": pg.conninfo(reach(HAPROXY), self.cluster.creds),
            "DB_READ_DSN": pg.conninfo(reach(REPLICA), self.cluster.creds),
            "REDIS_URL": f"redis://{redis.host}:{redis.port}/0",
        }
        env.update({key: str(value) for key, value in settings.items()})
        return env

    def effective_settings(self):
        """The settings the running API uses, defaults included, as the API itself parses them."""
        from service.settings import Settings
        return Settings.from_env(self.environment(**self.settings))

    def _server_process(self, env: dict[str, str] | None = None) -> ServerProcess:
        """The uvicorn process as the lab's servers are run: recorded in the run directory (so
        the reaper and another `python -m chaoslab` process find it), state read from /proc."""
        command = [sys.executable, "-m", "uvicorn", "--factory", self.app, "--host", "127.0.0.1",
                   "--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        return ServerProcess(API, command, cwd=self.run_dir.path, log=self.log, user=ServerUser.current(),
                             run_dir=self.run_dir, env=env or {})

    @phase("api start")
    def start(self, **settings: str) -> None:
        self.settings = {key: str(value) for key, value in settings.items()}
        env = dict(os.environ, **self.environment(**self.settings))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._process = self._server_process(env)
        self._process.start()
        self._process.wait_answering(
            lambda: requests.get(f"{self.base_url}/health", timeout=2).status_code == 200 or None,
            expected=f"GET /health to answer 200 on {self.base_url}", timeout=20)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=10)
        self._process = None

    def restart(self, **settings: str) -> None:
        """Run again with these settings (the defaults for any not given)."""
        self.stop()
        self.start(**settings)

    @phase("api start")
    def ensure(self, **settings: str) -> None:
        """Running with exactly these settings (restarted only if they differ), and ready: every
        dependency answers it and no breaker is open. A lab restored to its baseline may have
        restarted HAProxy or a node under the API, whose pools then need a moment to reconnect."""
        wanted = {key: str(value) for key, value in settings.items()}
        if self._process is None or not self._process.running() or wanted != self.settings:
            self.restart(**wanted)

        # A read and a write of an id that does not exist: they pass through Redis, the replica
        # and the primary (closing a breaker a past outage left open) and change nothing.
        missing = f"{self.base_url}/products/{2**31 - 1}"

        def ready() -> bool:
            if requests.get(f"{self.base_url}/health", timeout=5).json()["status"] != "ok":
                return False
            return (requests.get(missing, timeout=5).status_code == 404 and requests.put(
                missing, json={"name": "readiness", "price_cents": 0}, timeout=5).status_code == 404)
        wait_until(ready, service=API, expected=f"GET /health ok, and GET and PUT of {missing} answered 404",
                   timeout=20, interval=0.1, log=self.log)

    def close(self) -> None:
        self.stop()
        if self._owns_run_dir:
            self.run_dir.remove()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` with these labels in GET /metrics (see ``sample_sum``)."""
        return sample_sum(requests.get(f"{self.base_url}/metrics", timeout=5).text, name, **labels)


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``, 0 if there are none.

    ``name`` is a sample's name, not its family's: a counter ``db_queries`` exposes
    ``db_queries_total`` (and ``db_queries_created``), so ``sample_sum(text, "db_queries_total")``.
    """
    wanted = {key: str(value) for key, value in labels.items()}
    return sum((sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name == name and all(sample.labels.get(key) == value for key, value in wanted.items())),
               0.0)
