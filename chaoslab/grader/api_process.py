"""A student's API on the host, as the brief's students run it against the published ports.

The install command (``npm ci``, or a venv and ``pip install -r requirements.txt``) and
the API's command come from the submission's ``chaoslab-submission.toml``, and run in
the grader's copy of the submission, in a session of their own so that stopping the
API stops everything it started. Both have deadlines: an API that never answers ends
the submission's grading with that reason, not the batch.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..rundir import RunDir
from .submission import ApiSpec, SubmissionError

INSTALL_DEADLINE_S = 300
ANSWER_DEADLINE_S = 60


RECORD_NAME = "submission-api"


class ApiProcess:
    def __init__(self, spec: ApiSpec, workdir: Path, log: Path, run_dir: RunDir | None = None) -> None:
        if not spec.command:
            raise SubmissionError("aucune commande pour lancer l'API : ni service `api` dans le compose, ni "
                                  "[api] command dans chaoslab-submission.toml (voir docs/submission.md)")
        self.spec = spec
        self.workdir = workdir
        self.log = log
        # The submission's copy lives in this run directory: recorded there, the API is
        # reaped by the next run even if this one is killed before it can stop it.
        self.run_dir = run_dir
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.spec.env, "PORT": str(self.spec.port)}

    def start(self) -> None:
        if _port_taken(self.spec.port):
            raise SubmissionError(f"le port {self.spec.port} de l'API est déjà pris sur la machine de correction")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.spec.install:
            with open(self.log, "ab") as log:
                try:
                    done = subprocess.run(self.spec.install, shell=True, cwd=self.workdir, env=self._environment(),
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          timeout=INSTALL_DEADLINE_S, start_new_session=True)
                except subprocess.TimeoutExpired:
                    raise SubmissionError(f"`{self.spec.install}` n'a pas fini en {INSTALL_DEADLINE_S} s "
                                          f"(journal : {self.log})") from None
            if done.returncode != 0:
                raise SubmissionError(f"`{self.spec.install}` a échoué (code {done.returncode}, journal : {self.log})")
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(self.spec.command, shell=True, cwd=self.workdir, env=self._environment(),
                                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        if self.run_dir is not None:
            self.run_dir.record_process_group(RECORD_NAME, self._process.pid)
        deadline = time.monotonic() + ANSWER_DEADLINE_S
        while not _port_taken(self.spec.port):
            if self._process.poll() is not None:
                raise SubmissionError(f"l'API s'est arrêtée au démarrage (code {self._process.returncode}, "
                                      f"journal : {self.log})")
            if time.monotonic() > deadline:
                raise SubmissionError(f"l'API n'écoute pas sur le port {self.spec.port} après {ANSWER_DEADLINE_S} s "
                                      f"(journal : {self.log})")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._process is None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self._process.poll() is not None:
                break
            try:
                os.killpg(self._process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self._process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if self.run_dir is not None:
            self.run_dir.forget_process_group(RECORD_NAME)
        self._process = None


def _port_taken(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
