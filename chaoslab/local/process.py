"""One server process group, started as the unprivileged server user.

Each server is the leader of its own process group, so that a signal reaches the
whole node at once: SIGSTOP freezes a PostgreSQL postmaster *and* its backends,
SIGKILL crashes all of them, like a machine that fails.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import LabError
from ..rundir import RunDir, group_alive, kill_group
from ..waits import wait_until


@dataclass(frozen=True)
class ServerUser:
    """Who the servers run as: PostgreSQL refuses root, so root hands over to a plain user."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def detect(cls) -> "ServerUser":
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
        name = os.environ.get("CHAOSLAB_SERVER_USER", "postgres")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise LabError(
                "lab",
                f"an unprivileged user '{name}' to run the servers as (running as root)",
                cause="it does not exist: install postgresql (it creates 'postgres') or set CHAOSLAB_SERVER_USER",
            ) from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def own(self, path: Path) -> None:
        if not self.is_current:
            os.chown(path, self.uid, self.gid)
            for root, dirs, files in os.walk(path):
                os.chown(root, self.uid, self.gid)
                for name in files:
                    os.chown(os.path.join(root, name), self.uid, self.gid)

    def popen_args(self) -> dict:
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": self.home if not self.is_current else os.environ.get("HOME", "/tmp"),
        }
        env.update(extra or {})
        return env

    def run(self, args: Sequence[str], *, service: str, expected: str, log: Path, cwd: Path,
            env: dict[str, str] | None = None, timeout: float = 60) -> str:
        """Run a one-shot tool (initdb, pg_basebackup, pg_rewind...) as the server user."""
        try:
            done = subprocess.run(
                list(args), cwd=cwd, env=self.environment(env), capture_output=True, text=True,
                timeout=timeout, **self.popen_args(),
            )
        except FileNotFoundError:
            raise LabError(service, expected, log, f"the program {args[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise LabError(service, expected, log, f"{Path(args[0]).name} did not finish within {timeout:g}s") from None
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(args)}\n{done.stdout}{done.stderr}")
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise LabError(service, expected, log,
                           f"{Path(args[0]).name} exited with {done.returncode}: {detail[-1] if detail else ''}")
        return done.stdout


@dataclass
class ServerProcess:
    """A long-running server: start, signal, stop, wait for exit."""

    name: str
    args: list[str]
    cwd: Path
    log: Path
    user: ServerUser
    run_dir: RunDir
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    _popen: subprocess.Popen | None = None
    paused: bool = False

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        if self.running():
            return
        with open(self.log, "ab") as log:
            try:
                self._popen = subprocess.Popen(
                    self.args, cwd=self.cwd, env=self.user.environment(self.env), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self.user.popen_args(),
                )
            except FileNotFoundError:
                raise LabError(self.name, f"to start {self.args[0]}", self.log, "the program is not installed") from None
        self.paused = False
        self.run_dir.record_process_group(self.name, self._popen.pid)

    def signal_group(self, sig: int) -> None:
        if self._popen is None:
            return
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass

    def pause(self) -> None:
        self.signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 15) -> None:
        """Clean stop with the server's own shutdown signal; SIGKILL only past the deadline."""
        if not self.running():
            self._forget()
            return
        if self.paused:
            self.resume()
        self.signal_group(self.stop_signal)
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with open(self.log, "a") as log:
                log.write(f"[chaoslab] {self.name} ignored its stop signal for {timeout:g}s: SIGKILL\n")
            self.kill()
        self._forget()

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, with no chance to flush or say goodbye."""
        if self._popen is None:
            return
        kill_group(self._popen.pid)
        self._popen.wait(10)
        # Children of the leader may outlive it for a moment; wait until the group is empty.
        wait_until(lambda: not group_alive(self._popen.pid), service=self.name,
                   expected="every process of the group to exit after SIGKILL", timeout=10, log=self.log)
        self.paused = False
        self._forget()

    def _forget(self) -> None:
        self.run_dir.forget_process_group(self.name)
