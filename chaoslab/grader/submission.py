"""A submission of the TP: a directory with a compose file, HAProxy's config and an API.

What the brief fixes is all the grader assumes (docs/submission.md). How to start the
API, when it does not run in the compose file, comes from an optional
``chaoslab-submission.toml``::

    [api]
    install = "npm ci"              # run once, in the submission's directory
    command = "node index.js"       # the API, on the host, against the published ports
    port = 3000
    [api.env]
    DB_PASSWORD = "app_pwd"
    [database]                      # if not the brief's app / app_pwd / appdb
    user = "app"
    password = "app_pwd"
    name = "appdb"

With no ``.env`` beside the compose file but a ``.env.example``, the grader uses the
example, as a student who follows ``cp .env.example .env`` would.

A submission the grader cannot even start ends with a ``SubmissionError`` whose
message, in French, goes to the student's feedback and the class table.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .target import AppCredentials

COMPOSE_NAMES = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
SPEC_FILE = "chaoslab-submission.toml"
HAPROXY_CONFIG = Path("haproxy") / "haproxy.cfg"
DEFAULT_API_PORT = 3000


class SubmissionError(Exception):
    """The submission cannot be graded at all; the message says why, in French."""


@dataclass(frozen=True)
class ApiSpec:
    install: str | None = None
    command: str | None = None
    port: int = DEFAULT_API_PORT
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Submission:
    name: str
    path: Path
    compose_file: Path
    api: ApiSpec
    database: AppCredentials = AppCredentials()

    @property
    def haproxy_config(self) -> Path:
        return self.path / HAPROXY_CONFIG


def load(path: Path, name: str | None = None) -> Submission:
    path = Path(path)
    if not path.is_dir():
        raise SubmissionError(f"{path} n'est pas un dossier")
    compose = next((path / candidate for candidate in COMPOSE_NAMES if (path / candidate).is_file()), None)
    if compose is None:
        raise SubmissionError(f"aucun fichier docker-compose.yml dans {path.name or path}")
    document = _spec(path / SPEC_FILE)
    return Submission(name or path.name, path, compose, _api_spec(document), _database(document))


def _spec(spec_file: Path) -> dict:
    if not spec_file.exists():
        return {}
    try:
        return tomllib.loads(spec_file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{SPEC_FILE} ne se lit pas : {exc}") from None


def _database(document: dict) -> AppCredentials:
    database = document.get("database", {})
    if not isinstance(database, dict):
        raise SubmissionError(f"{SPEC_FILE} : [database] doit être une table")
    brief = AppCredentials()
    return AppCredentials(str(database.get("user", brief.user)), str(database.get("password", brief.password)),
                          str(database.get("name", brief.database)))


def _api_spec(document: dict) -> ApiSpec:
    api = document.get("api", {})
    if not isinstance(api, dict):
        raise SubmissionError(f"{SPEC_FILE} : [api] doit être une table")
    try:
        port = int(api.get("port", DEFAULT_API_PORT))
    except (TypeError, ValueError):
        raise SubmissionError(f"{SPEC_FILE} : port doit être un entier, pas {api.get('port')!r}") from None
    env = api.get("env", {})
    if not isinstance(env, dict):
        raise SubmissionError(f"{SPEC_FILE} : [api.env] doit être une table")
    return ApiSpec(install=api.get("install"), command=api.get("command"), port=port,
                   env={str(key): str(value) for key, value in env.items()})
