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
from typing import Callable, Sequence, TypeVar

from ..errors import LabError
from ..rundir import RunDir, alive, kill_tree, signal_tree
from ..waits import wait_until

T = TypeVar("T")


@dataclass(frozen=True)
class ServerUser:
    """Who the servers run as: PostgreSQL refuses root, so root hands over to a plain user."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def current(cls) -> "ServerUser":
        """This process's user (the API runs as the harness does: it reads the project's code)."""
        entry = pwd.getpwuid(os.geteuid())
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    @classmethod
    def detect(cls) -> "ServerUser":
        if os.geteuid() != 0:
            return cls.current()
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
    """A long-running server known by its process group: start, signal, stop.

    State is read from /proc, not remembered, so that another process (the
    ``python -m chaoslab fault`` command) can drive a stack started earlier.
    """

    name: str
    args: list[str]
    cwd: Path
    log: Path
    user: ServerUser
    run_dir: RunDir
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    # nsenter's arguments for a network namespace of its own (chaoslab.local.netns), if any.
    namespace: list[str] | None = None
    pid: int | None = None
    _popen: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        if self.pid is None:
            self.pid = self.run_dir.recorded_process_group(self.name)

    def _state(self) -> str | None:
        """The leader's state letter from /proc (R, S, T for stopped...), None if gone."""
        if self.pid is None:
            return None
        if self._popen is not None:
            self._popen.poll()  # reap our own child, or it lingers as a zombie
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None
        return None if state in ("Z", "X") else state

    def running(self) -> bool:
        return self._state() is not None

    @property
    def paused(self) -> bool:
        return self._state() == "T"

    def start(self) -> None:
        if self.running():
            return
        args, user = self.args, self.user.popen_args()
        if self.namespace:
            # Entering a namespace needs root: nsenter enters it, drops to the server user, then
            # execs the server (same pid, so the process group is the server's).
            drop = [] if self.user.is_current else ["--setuid", str(self.user.uid), "--setgid", str(self.user.gid)]
            args, user = ["nsenter", *self.namespace, *drop, "--", *self.args], {}
        with open(self.log, "ab") as log:
            try:
                self._popen = subprocess.Popen(
                    args, cwd=self.cwd, env=self.user.environment(self.env), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **user,
                )
            except FileNotFoundError:
                raise LabError(self.name, f"to start {self.args[0]}", self.log, "the program is not installed") from None
        self.pid = self._popen.pid
        self.run_dir.record_process_group(self.name, self.pid)

    def wait_answering(self, probe: Callable[[], T], *, expected: str, timeout: float) -> T:
        """Poll ``probe`` (the server's own protocol) until it answers; return its answer.

        If the process is gone, waiting cannot help: a LabError naming the server,
        ``expected`` and its log ends the wait at once. Otherwise this is
        ``wait_until``: exceptions from the probe mean "not yet", but a LabError is final.
        """
        def answers() -> T:
            if not self.running():
                raise LabError(self.name, expected, self.log, "the process exited")
            return probe()
        return wait_until(answers, service=self.name, expected=expected, timeout=timeout, log=self.log)

    def signal_tree(self, sig: int) -> None:
        """Signal the server and every process it started (see rundir.process_tree)."""
        if self.pid is not None:
            signal_tree(self.pid, sig)

    def signal_leader(self, sig: int) -> None:
        if not self.running():
            raise LabError(self.name, "a running process to signal", self.log, "it is not running")
        os.kill(self.pid, sig)

    def pause(self) -> None:
        self.signal_tree(signal.SIGSTOP)
        wait_until(lambda: self.paused, service=self.name, expected="to be stopped by SIGSTOP", timeout=5,
                   log=self.log)

    def resume(self) -> None:
        self.signal_tree(signal.SIGCONT)

    def stop(self, timeout: float = 15) -> None:
        """Clean stop with the server's own shutdown signal; SIGKILL only past the deadline."""
        if not self.running():
            self._forget()
            return
        if self.paused:
            self.resume()
        self.signal_leader(self.stop_signal)
        try:
            wait_until(lambda: not self.running(), service=self.name, expected="to exit after its stop signal",
                       timeout=timeout, log=self.log)
        except LabError:
            with open(self.log, "a") as log:
                log.write(f"[chaoslab] {self.name} ignored its stop signal for {timeout:g}s: SIGKILL\n")
        self.kill()

    def kill(self) -> None:
        """SIGKILL every process of the server at once: a crash, no chance to flush or say goodbye."""
        if self.pid is not None:
            pids = kill_tree(self.pid)
            if self._popen is not None:
                self._popen.wait(10)
            # A backend that outlived its postmaster would keep the shared memory busy
            # and stop the next start: wait until every one of them is gone.
            wait_until(lambda: not alive(pids), service=self.name,
                       expected="every process of the server to exit after SIGKILL", timeout=10, log=self.log)
        self._forget()

    def _forget(self) -> None:
        self.run_dir.forget_process_group(self.name)
        self.pid = None
        self._popen = None
