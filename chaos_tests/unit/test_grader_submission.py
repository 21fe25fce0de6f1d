"""Loading a submission: what the grader needs to start it, and clear French errors."""

from __future__ import annotations

import pytest

from chaoslab.grader.submission import SubmissionError, load
from chaoslab.grader.target import AppCredentials


def test_a_directory_without_a_compose_file_cannot_be_graded(tmp_path):
    with pytest.raises(SubmissionError, match="aucun fichier docker-compose.yml"):
        load(tmp_path)
    with pytest.raises(SubmissionError, match="n'est pas un dossier"):
        load(tmp_path / "missing")


def test_the_brief_defaults_and_the_optional_spec(tmp_path):
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    plain = load(tmp_path, "alice")
    assert (plain.name, plain.compose_file.name) == ("alice", "compose.yaml")
    assert plain.database == AppCredentials("app", "app_pwd", "appdb")
    assert plain.api.command is None and plain.api.port == 3000
    (tmp_path / "chaoslab-submission.toml").write_text(
        '[api]\ninstall = "npm ci"\ncommand = "node index.js"\nport = 3100\n[api.env]\nX = 1\n'
        '[database]\npassword = "secret"\n')
    spec = load(tmp_path)
    assert (spec.api.install, spec.api.command, spec.api.port, spec.api.env) == ("npm ci", "node index.js", 3100,
                                                                                {"X": "1"})
    assert spec.database == AppCredentials("app", "secret", "appdb")


@pytest.mark.parametrize(("text", "message"), [
    ("[api\n", "ne se lit pas"), ('[api]\nport = "x"\n', "port doit être un entier"),
    ("api = 3\n", "[api] doit être une table"), ("database = 3\n", "[database] doit être une table"),
])
def test_a_broken_spec_says_what_is_wrong(tmp_path, text, message):
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    (tmp_path / "chaoslab-submission.toml").write_text(text)
    with pytest.raises(SubmissionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path)
