"""The two command-line tools the compose backend drives: compose and the docker engine.

Compose (``docker compose`` v2 or ``docker-compose`` v1, detected once) creates and
removes the project; the docker CLI acts on the containers compose made, found by
compose's own labels. A fault is the engine's stop, kill or pause, which is all that
``docker compose stop`` does too, without compose's start-up cost (0.6 s a command
for v1) in the middle of a measured scenario.

Every command runs in a session of its own, so that Ctrl-C in the terminal reaches
pytest (which then cleans up) but never interrupts the clean-up commands themselves.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError

COMPOSE_ENV = "CHAOSLAB_COMPOSE"  # force a compose command, e.g. "docker-compose"
ENGINE_HINT = ("start it as root with `scripts/docker-engine.sh start` (Debian: apt-get install -y docker.io), "
               "or point DOCKER_HOST at a running engine")


def run(args: list[str], *, service: str, expected: str, log: str | Path | None = None, timeout: float = 60,
        env: dict[str, str] | None = None, check: bool = True,
        merge_stderr: bool = False) -> subprocess.CompletedProcess:
    """Run one command; a failure or a timeout is a LabError that names the service and its log.
    ``merge_stderr`` keeps both streams in one, in the order they were written (a log)."""
    try:
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                              text=True, errors="replace", timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        raise LabError(service, expected, log, f"the program {args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(service, expected, log, f"`{_short(args)}` did not finish within {timeout:g}s") from None
    if check and done.returncode != 0:
        detail = ((done.stderr or "").strip() or done.stdout.strip()).splitlines()
        raise LabError(service, expected, log,
                       f"`{_short(args)}` exited with {done.returncode}: {' | '.join(detail[-3:])}")
    return done


def _short(args: list[str]) -> str:
    text = shlex.join(args)
    return text if len(text) < 160 else text[:157] + "..."


def detect_compose() -> list[str]:
    """``docker compose`` (v2) if the plugin is there, else ``docker-compose`` (v1); asked once
    a process (v1 is a Python program: 0.5 CPU-second a command, and each lab started asked)."""
    return list(_detect_compose(os.environ.get(COMPOSE_ENV) or None))


@functools.cache
def _detect_compose(forced: str | None) -> tuple[str, ...]:
    if forced:
        return tuple(shlex.split(forced))
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            done = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return tuple(command)
    raise LabError("compose", "docker compose (v2) or docker-compose (v1)",
                   cause="neither answers `version`: install Docker Compose (Debian: apt-get install -y docker-compose)")


def check_engine() -> None:
    done = run(["docker", "version", "--format", "{{.Server.Version}}"], service="docker",
               expected="a Docker engine that answers", check=False, timeout=30)
    if done.returncode != 0 or not done.stdout.strip():
        raise LabError("docker", "a Docker engine that answers", cause=f"`docker version` failed: {ENGINE_HINT}")


@dataclass
class Compose:
    """One compose project: its command, files, name and environment file."""

    command: list[str]
    files: list[Path]
    project: str
    env_file: Path
    # Variables the env file sets: removed from the inherited environment, because
    # compose lets the shell's values win over the env file's.
    owned_variables: set[str] = field(default_factory=set)

    @property
    def base(self) -> list[str]:
        args = [*self.command, "--env-file", str(self.env_file)]
        for path in self.files:
            args += ["-f", str(path)]
        return [*args, "-p", self.project]

    def logs_command(self, service: str | None = None) -> str:
        return f"{shlex.join(self.base)} logs" + (f" {service}" if service in _SERVICE_NAMES else "")

    def environment(self) -> dict[str, str]:
        return {key: value for key, value in os.environ.items() if key not in self.owned_variables}

    def __call__(self, *args: str, service: str, expected: str, timeout: float = 120,
                 check: bool = True) -> subprocess.CompletedProcess:
        return run([*self.base, *args], service=service, expected=expected, timeout=timeout,
                   env=self.environment(), check=check,
                   log=self.logs_command(service))


_SERVICE_NAMES = {"db-primary", "db-replica", "redis", "haproxy", "api"}


def docker(*args: str, service: str, expected: str, log: str | None = None, timeout: float = 60,
           env: dict[str, str] | None = None, check: bool = True,
           merge_stderr: bool = False) -> subprocess.CompletedProcess:
    return run(["docker", *args], service=service, expected=expected, log=log, timeout=timeout, env=env,
               check=check, merge_stderr=merge_stderr)
