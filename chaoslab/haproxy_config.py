"""The HAProxy configurations of haproxy/, rendered for a backend.

There is one source per configuration. The files use the compose service names
(db-primary:5432), so the compose backend mounts them as they are; the local
backend substitutes its own addresses. The brief's switch (part F3) is a text
edit of the ``server primary`` line, the same edit a student makes by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .topology import DB_NODES, Endpoint

HAPROXY_DIR = Path(__file__).resolve().parent.parent / "haproxy"

CONFIGS = {
    "brief": "haproxy.cfg",
    "role_aware": "haproxy-role-aware.cfg",
}
# Where the files say the proxy listens (container ports) and its runtime socket.
WRITE_BIND = "*:5432"
READ_BIND = "*:5433"
SOCKET_PATH = "/var/run/haproxy/admin.sock"
# The write backend and the server that the brief's F3 edit repoints.
WRITE_BACKEND = "pg_primary"
READ_BACKEND = "pg_standby"
BRIEF_WRITE_SERVER = "primary"

_BRIEF_SERVER_LINE = re.compile(rf"^(\s*server\s+{BRIEF_WRITE_SERVER}\s+)(db-[a-z]+)(:5432\b)", re.MULTILINE)


def source(name: str) -> str:
    try:
        return (HAPROXY_DIR / CONFIGS[name]).read_text()
    except KeyError:
        raise ValueError(f"unknown HAProxy config {name!r}; known: {', '.join(CONFIGS)}") from None


def point_brief_writes_at(text: str, service: str) -> str:
    """The brief's F3: edit ``server primary db-primary:5432`` to name another node."""
    if service not in DB_NODES:
        raise ValueError(f"{service!r} is not a database node")
    edited, count = _BRIEF_SERVER_LINE.subn(rf"\g<1>{service}\g<3>", text)
    if count != 1:
        raise ValueError(f"this config has no single 'server {BRIEF_WRITE_SERVER} db-...:5432' line to edit")
    return edited


def brief_write_target(text: str) -> str | None:
    match = _BRIEF_SERVER_LINE.search(text)
    return match.group(2) if match else None


@dataclass(frozen=True)
class Addresses:
    """What the rendered file must say instead of the container names and ports."""

    nodes: dict[str, Endpoint]
    write_bind: Endpoint
    read_bind: Endpoint | None
    socket_path: Path


def render(text: str, addresses: Addresses) -> str:
    """Substitute a backend's addresses into a config written with service names."""
    for service, endpoint in addresses.nodes.items():
        text = re.sub(rf"\b{re.escape(service)}:5432\b", str(endpoint), text)
    text = text.replace(f"bind {WRITE_BIND}", f"bind {addresses.write_bind}")
    if addresses.read_bind is not None:
        text = text.replace(f"bind {READ_BIND}", f"bind {addresses.read_bind}")
    return text.replace(SOCKET_PATH, str(addresses.socket_path))
