"""The API under test as a real uvicorn server, pointed at the cluster's endpoints.

It always runs on the host, whatever the backend (the brief's flow: the API on
the host, the databases behind HAProxy), so this module is backend-neutral.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from .cluster import Cluster
from .errors import LabError
from .phases import phase
from .rundir import RunDir
from .topology import HAPROXY, REDIS, REPLICA
from .waits import wait_until

API = "api"
REPO = Path(__file__).resolve().parent.parent


class ApiServer:
    """One uvicorn process; ``restart(**settings)`` runs it again with other settings."""

    def __init__(self, cluster: Cluster, app: str = "service.app:create_app") -> None:
        self.cluster = cluster
        self.app = app
        # A run directory of its own: it reserves the port, holds the log, and lets
        # the reaper find a uvicorn left by a killed run (it runs inside it).
        self.run_dir = RunDir.create()
        self.log = self.run_dir.path / "api.log"
        self._process: subprocess.Popen | None = None
        self.port = self.run_dir.reserve_port()
        self.settings: dict[str, str] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self, **settings: str) -> dict[str, str]:
        redis = self.cluster.endpoint(REDIS)
        env = {
            "DB_WRITE_DSN": self.cluster.dsn(HAPROXY),
            "DB_READ_DSN": self.cluster.dsn(REPLICA),
            "REDIS_URL": f"redis://{redis.host}:{redis.port}/0",
        }
        env.update({key: str(value) for key, value in settings.items()})
        return env

    def effective_settings(self):
        """The settings the running API uses, defaults included, as the API itself parses them."""
        from service.settings import Settings
        return Settings.from_env(self.environment(**self.settings))

    @phase("api start")
    def start(self, **settings: str) -> None:
        self.settings = {key: str(value) for key, value in settings.items()}
        env = dict(os.environ, **self.environment(**self.settings))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", self.app, "--host", "127.0.0.1",
                 "--port", str(self.port), "--no-access-log", "--log-level", "warning"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.run_dir.path, start_new_session=True,
            )
        self.run_dir.record_process_group(API, self._process.pid)

        def healthy() -> bool:
            if self._process.poll() is not None:
                raise LabError(API, "uvicorn to start", self.log, f"it exited with {self._process.returncode}")
            return requests.get(f"{self.base_url}/health", timeout=2).status_code == 200
        wait_until(healthy, service=API, expected=f"GET /health to answer 200 on {self.base_url}",
                   timeout=20, log=self.log)

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(5)
        self.run_dir.forget_process_group(API)
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
        if self._process is None or self._process.poll() is not None or wanted != self.settings:
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
