"""HAProxy in a container of the run: its config file, its runtime API, what the override mounts.

The config is a file of the run's directory, bind-mounted read-only into the container,
so that the harness rewrites it and the container sees the change. The runtime API is
there twice: the config's own socket (a tmpfs in the container, for ``docker exec``),
and one in a directory of the run, reached from here.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

from .. import haproxy_config
from ..errors import LabError
from ..topology import HAPROXY, Endpoint
from .probe import Probe

SOCKET_DIR_IN_CONTAINER = "/var/run/chaoslab"
CONFIG_IN_CONTAINER = "/usr/local/etc/haproxy/haproxy.cfg"
PG_PORT = 5432
WRITE_PORT, READ_PORT = 5432, 5433   # the frontends, inside the container
STOP_TIMEOUT = 5


def with_host_socket(rendered: str) -> str:
    """A second runtime API socket, in the directory the run mounts, so the harness reaches it from here."""
    extra = f"stats socket {SOCKET_DIR_IN_CONTAINER}/admin.sock mode 666 level admin"
    rendered, count = re.subn(r"^(\s*)(stats socket \S+.*)$", rf"\1\2\n\1{extra}", rendered, count=1,
                              flags=re.MULTILINE)
    if count == 0:
        rendered, count = re.subn(r"^global\s*$", f"global\n  {extra}", rendered, count=1, flags=re.MULTILINE)
    if count == 0:
        raise ValueError("this HAProxy config has no global section to add the runtime API socket to")
    return rendered


def runtime_api(socket_path: Path, line: str, timeout: float = 2.0) -> str:
    """One command on an HAProxy runtime API socket, its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


class ContainerHAProxy:
    """The files of the run's HAProxy service (``service``, as compose names it), and its runtime API."""

    def __init__(self, directory: Path, service: str, log_for: Callable[[str], str]) -> None:
        self.service = service
        self.log_for = log_for   # how to read a service's log, for error messages
        self.config = directory / "haproxy.cfg"
        self.socket_dir = directory / "run"
        self.socket_dir.mkdir(exist_ok=True)
        self.socket_dir.chmod(0o777)  # the image's haproxy user creates the socket there
        self.socket = self.socket_dir / "admin.sock"
        self.probe = Probe(lambda: "Pid:" in self.runtime_api("show info"),
                           f"its runtime API to answer on {self.socket}")

    def write_config(self, text: str, nodes: dict[str, Endpoint]) -> None:
        """Render a config of haproxy/ with the nodes' fixed addresses (HAProxy resolves names only at
        start, and a node may be down then), in place: the container mounts this file."""
        addresses = haproxy_config.Addresses(
            nodes=nodes,
            write_bind=Endpoint("*", WRITE_PORT), read_bind=Endpoint("*", READ_PORT),
            socket_path=Path(haproxy_config.SOCKET_PATH))
        rendered = with_host_socket(haproxy_config.render(text, addresses))
        with open(self.config, "w") as handle:  # same inode: a file bind mount sees the change
            handle.write(rendered)

    def override(self) -> dict:
        """What the service needs beyond the compose file: its files, and how it stops."""
        return {
            "volumes": [f"{self.config}:{CONFIG_IN_CONTAINER}:ro", f"{self.socket_dir}:{SOCKET_DIR_IN_CONTAINER}"],
            # The image's SIGUSR1 waits for every session to end; the harness wants the
            # brief's "restart drops every session", at once, as the local backend does.
            "stop_signal": "SIGTERM",
            "stop_grace_period": f"{STOP_TIMEOUT}s",
        }

    def runtime_api(self, line: str) -> str:
        return runtime_api(self.socket, line)

    def command(self, line: str) -> str:
        """One command on the runtime API; a failure names HAProxy, the command and its log."""
        try:
            return self.runtime_api(line)
        except OSError as exc:
            raise LabError(HAPROXY, f"its runtime API to answer {line!r} on {self.socket}", self.log_for(self.service),
                           str(exc)) from None
