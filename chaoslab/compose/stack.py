"""One run's compose stack: what every compose topology starts, reaches and removes alike.

A stack is a compose project of its own (``chaoslab-<run id>``), named after a run
directory (chaoslab.rundir) that holds its files and reserves its host ports, on a
network of its own where each service has a fixed address (compose/project.py). The
repository's docker-compose.yml is used unchanged: the run adds an environment file
(the credentials, the images, the published ports) and an override file (each
service's address, the owner label, HAProxy's files, and healthchecks put off: the
harness asks each service's protocol itself, see ``project.without_healthchecks``). A
profile's services can start later beside a stack, in its project and on its network
(``beside``): the Sentinel group does, next to the brief's stack.

Closing keeps the services' logs, then removes what the stack made, by label, from the
engine (what ``down -v`` does, without starting compose again), so that nothing outlives
the run, also after a failed start.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import rundir
from ..errors import LabError
from ..topology import HAPROXY, Credentials, Endpoint
from ..waits import wait_until
from . import project as lab_project
from .cli import Compose, check_engine, detect_compose, docker
from .containers import Containers
from .haproxy import ContainerHAProxy
from .probe import Probe

LOCALHOST = "127.0.0.1"
COMPOSE_FILE = Path(__file__).resolve().parent.parent.parent / "docker-compose.yml"
# The services' logs outlive the containers here, for the last few runs.
LOGS_DIR = rundir.RUN_ROOT / "compose-logs"
KEEP_LOGS = 5


def credentials_environment(creds: Credentials) -> dict[str, str]:
    """The variables docker-compose.yml takes the credentials from."""
    return {
        "POSTGRES_USER": creds.superuser, "POSTGRES_PASSWORD": creds.superuser_password,
        "APP_DB_USER": creds.app_user, "APP_DB_PASSWORD": creds.app_password, "APP_DB_NAME": creds.database,
        "REPLICATION_USER": creds.replication_user, "REPLICATION_PASSWORD": creds.replication_password,
    }


class ComposeStack:
    """The compose project of one run, or a profile's services started beside one."""

    def __init__(self, run_dir: rundir.RunDir, command: list[str], environment: dict[str, str], *,
                 profile: str | None = None, base: ComposeStack | None = None,
                 extra_profiles: tuple[str, ...] = ()) -> None:
        self.run_dir: rundir.RunDir | None = run_dir
        self.command = command
        self.project = lab_project.project_name(run_dir)
        self.profile = profile
        # Every profile the stack's commands enable: its own, and others whose services it starts too.
        self.profiles = (*([profile] if profile else []), *extra_profiles)
        self.base = base
        self.network: lab_project.LabNetwork | None = base.network if base else None
        self.containers = Containers(self.project, self.log_hint)
        self.environment = environment
        self.images: dict[str, str] = {}
        self.services: list[str] = []
        self.haproxy: ContainerHAProxy | None = None
        # What a service needs beyond its address and label, merged into its override entry.
        self.service_overrides: dict[str, dict] = {}
        self.compose: Compose | None = None
        # A stack beside another names its files, logs included, after its profile.
        suffix = f"-{profile}" if base else ""
        self._env_file = run_dir.path / f"compose{suffix}.env"
        self._override_file = run_dir.path / (f"docker-compose.{profile}.json" if base else
                                              "docker-compose.override.json")
        self.saved_logs = LOGS_DIR / f"{self.project}{suffix}.log"
        # What one-off containers said (they are removed as they end), kept with the services' logs.
        self.one_off_log = run_dir.path / f"one-off{suffix}.log"

    @classmethod
    def open(cls, creds: Credentials, *, profile: str | None = None,
             extra_profiles: tuple[str, ...] = ()) -> ComposeStack:
        """A new run's stack, once the engine answers and what killed runs left is gone; nothing runs yet."""
        check_engine()
        command = detect_compose()
        rundir.reap_abandoned_runs()
        lab_project.reap_abandoned_projects()
        return cls(rundir.RunDir.create(), command, {**credentials_environment(creds), "PUBLISH_ADDRESS": LOCALHOST},
                   profile=profile, extra_profiles=extra_profiles)

    def beside(self, profile: str) -> ComposeStack:
        """``profile``'s services, to start later in this project and network, with files of their own
        (this stack's environment and override, and more); closing it removes only them."""
        return ComposeStack(self.run_dir, self.command, self.environment, profile=profile, base=self)

    @property
    def owns_project(self) -> bool:
        return self.base is None

    # -- before compose runs ------------------------------------------------------------------------
    def reserve_endpoint(self) -> Endpoint:
        """A free port of 127.0.0.1 for compose to publish a container port on, never the brief's."""
        return Endpoint(LOCALHOST, self.run_dir.reserve_port())

    def use_images(self, defaults: dict[str, str], how_to_get: str) -> None:
        """The images by variable, the environment's or else ``defaults``. Checked before compose runs,
        which would try a registry for a missing one: here it fails at once, saying how to get it."""
        self.images = {name: os.environ.get(name) or default for name, default in defaults.items()}
        missing = [image for image in self.images.values()
                   if docker("image", "inspect", image, service="docker", expected=f"the image {image}",
                             check=False).returncode != 0]
        if missing:
            raise LabError("docker", f"the images {', '.join(self.images.values())}",
                           cause=f"{', '.join(missing)} not on this engine. {how_to_get}, or, with no registry, "
                                 "build local stand-ins: scripts/build-local-images.sh, "
                                 "then `set -a; . docker/local-images.env; set +a`")

    def create_network(self) -> None:
        self.network = lab_project.LabNetwork.create(self.project)

    def add_haproxy(self, service: str) -> ContainerHAProxy:
        """HAProxy's files in the run's directory, mounted into ``service``'s container."""
        self.haproxy = ContainerHAProxy(self.run_dir.service_dir(HAPROXY), service, self.log_hint)
        return self.haproxy

    def write_files(self, services: Iterable[str], variables: dict[str, str],
                    ports: dict[str, Endpoint] | None = None) -> None:
        """The environment file (credentials, ``variables``, images, then each published port by its
        variable) and the override file of ``services``, and the compose command that reads them."""
        self.services = list(services)
        self.environment = {**self.environment, **variables, **self.images,
                            **{variable: str(endpoint.port) for variable, endpoint in (ports or {}).items()}}
        lab_project.write_env_file(self._env_file, self.environment)
        lab_project.write_override(self._override_file, self._override())
        files = self.base.compose.files if self.base else [COMPOSE_FILE]
        self.compose = Compose(self.command, [*files, self._override_file], self.project, self._env_file,
                               set(self.environment))

    def _override(self) -> dict:
        services = {name: {"networks": {"default": {"ipv4_address": self.network.address(name)}},
                           "labels": {lab_project.OWNER_LABEL: self.project}}
                    for name in self.services}
        if self.haproxy is not None:
            services[self.haproxy.service].update(self.haproxy.override())
        for name, extra in lab_project.without_healthchecks(COMPOSE_FILE, self.services).items():
            services[name].update(extra)
        for name, extra in self.service_overrides.items():
            if name in services:
                services[name].update(extra)
        return {"services": services, "networks": {"default": {"external": True, "name": self.network.name}}}

    # -- running ------------------------------------------------------------------------------------
    def run(self, *args: str, service: str, expected: str, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        """A compose command on this stack, its profiles first; a failure names ``service``."""
        return self.compose(*self._profile_arguments(), *args, service=service, expected=expected, timeout=timeout,
                            check=check)

    def _profile_arguments(self) -> list[str]:
        return [argument for profile in self.profiles for argument in ("--profile", profile)]

    def wait_ready(self, service: str, probe: Probe, *, log: Path | str, timeout: float = 60,
                   compose_service: str | None = None) -> None:
        """Until the service answers ``probe``; a container that exits fails at once. ``compose_service``
        is the container's service where the harness names it otherwise."""
        def answers() -> bool:
            if not self.containers.state(compose_service or service)[0]:
                raise LabError(service, probe.expected, log, "its container exited")
            return probe.answers()
        wait_until(answers, service=service, expected=probe.expected, timeout=timeout, interval=0.1, log=log)

    def log_hint(self, service: str | None = None) -> str:
        """How to read a service's log (every service's without one) now, and where it is kept after the run."""
        if self.compose is None:
            return str(self.saved_logs)
        profile = self._profile_arguments()
        named = [service] if service in self.services else []
        return f"{shlex.join([*self.compose.base, *profile, 'logs', *named])}; after the run: {self.saved_logs}"

    def record_one_off(self, heading: str, output: str) -> None:
        with open(self.one_off_log, "a") as log:
            log.write(f"{heading}\n{output}\n")

    # -- the end ------------------------------------------------------------------------------------
    @contextmanager
    def closed_on_failure(self) -> Iterator[None]:
        """Whatever stops a start half-way (a failure, Ctrl-C) closes the stack before it goes on."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Keep the logs, then remove what this stack made (all of the project, if it owns it)."""
        if self.compose is not None:
            self._save_logs()
            if not self.owns_project:
                try:
                    self.containers.remove(self.services)
                except LabError:
                    pass  # whatever is left goes by label, with the project
            self.containers.forget(*self.services)
            self.compose = None
        if self.owns_project and self.run_dir is not None:
            lab_project.remove_project(self.project)
            self.run_dir.remove()
            self.run_dir = None
            self.network = None

    def _save_logs(self) -> None:
        """Every service's log, kept after the run (the containers go); the last runs' are kept."""
        try:
            LOGS_DIR.mkdir(parents=True, exist_ok=True)
            text = self.containers.logs(None if self.owns_project else self.services)
            if self.one_off_log.exists():
                text += f"\n== one-off operations ==\n{self.one_off_log.read_text()}"
            lab_project.write_private(self.saved_logs, text)
        except (LabError, OSError):
            return
        for old in sorted(LOGS_DIR.glob("*.log"), key=lambda path: path.stat().st_mtime)[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)
