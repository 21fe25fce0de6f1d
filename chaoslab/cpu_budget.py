"""Where a command's CPU went, and whether the machine's CPUs were what bounded it.

    python -m chaoslab cpu -- make test          (root; `make cpu` installs acct and runs this)

`make test` runs its files on several workers because most of a scenario is waiting on a
system's timers. Whether more workers would shorten it depends on one fact: were the CPUs
idle while it ran? This command answers from outside the harness:

- the machine's busy share, sampled once a second from /proc/stat while the command runs;
- the CPU seconds of every process that ended meanwhile, from the kernel's process
  accounting (acct(2) through `accton`, BSD v3 records), short-lived ones included (a
  psql, a pg_basebackup, an API restart), grouped by kind;
- what the kernel spent outside any process (interrupts, the loopback network's softirqs,
  iptables), as the difference between the two.

A process is named from its command line when it was alive at one of the samples (an
`uvicorn` or a `python -m chaoslab` shows as such), otherwise from its 16-character name.
Process accounting is machine-wide and the machine has one accounting file: two runs side by
side would cut each other's, while a run inside a measured command shares the outer file.
It turns accounting off when done: a machine that keeps its own (the acct service) turns it
back on with `accton /var/log/account/pacct`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# struct acct_v3 of <linux/acct.h>: flag, version, tty, exitcode, uid, gid, pid, ppid,
# btime, etime (float), utime, stime, mem, io, rw, minflt, majflt, swaps (comp_t), comm[16].
ACCT_V3 = struct.Struct("<BBHIIIIIIf8H16s")
ACCT_HZ = 100          # AHZ: the unit of the accounted times, fixed by the kernel's ABI
STAT_PATH = Path("/proc/stat")
# Redis names its threads; the accounted name is the last thread's to end.
REDIS_THREADS = ("bio_", "io_thd", "jemalloc_bg")


def comp_t(value: int) -> int:
    """The kernel's 16-bit comp_t: a 13-bit mantissa and a base-8 exponent in 3 bits."""
    return (value & 0x1FFF) << (3 * ((value >> 13) & 0x7))


@dataclass(frozen=True)
class Accounted:
    """One process that ended while accounting was on."""
    pid: int
    ppid: int
    comm: str
    cpu_s: float           # user + system
    system_s: float
    elapsed_s: float


def parse_acct(data: bytes) -> list[Accounted]:
    """The v3 records of an accounting file; anything else is refused, not misread."""
    if len(data) % ACCT_V3.size:
        raise ValueError(f"{len(data)} bytes is not a whole number of {ACCT_V3.size}-byte acct_v3 records")
    records = []
    for fields in ACCT_V3.iter_unpack(data):
        version = fields[1] & 0x7F      # the top bit marks a big-endian writer
        if version != 3:
            raise ValueError(f"an accounting record of version {version}, not 3 (acct_v3)")
        utime, stime = comp_t(fields[10]), comp_t(fields[11])
        records.append(Accounted(pid=fields[6], ppid=fields[7],
                                 comm=fields[18].split(b"\0", 1)[0].decode(errors="replace"),
                                 cpu_s=(utime + stime) / ACCT_HZ, system_s=stime / ACCT_HZ,
                                 elapsed_s=fields[9] / ACCT_HZ))
    return records


def kind_of(comm: str, argv: list[str] | None = None) -> str:
    """What a process is, for the summary: by its command line when known, else by its name."""
    line = " ".join(argv or [])
    if argv:
        if "uvicorn" in line:
            return "the API (uvicorn)"
        if "chaoslab.faultproxy" in line:
            return "the fault proxy (the labs' links)"
        if "-m chaoslab" in line or "chaoslab/__main__" in line:
            return f"chaoslab CLI `{_subcommand(argv)}` (hands-on tests, grader)"
        if "pytest" in line or "exec(eval(sys.stdin" in line:     # xdist starts its workers so
            return "pytest (controller and workers)"
        if Path(argv[0]).name in ("node", "npm") or "npm" in line:
            return "node (a submission's API, npm)"
    if comm.startswith("patroni") or "patroni" in line:
        return "patroni"
    if comm == "postgres":
        return "postgres"
    if comm.startswith("pg_") or comm in ("initdb", "psql"):
        return "PostgreSQL tools (pg_basebackup, pg_ctl, initdb...)"
    if comm.startswith(("redis", *REDIS_THREADS)):
        return "redis"
    if comm.startswith("haproxy"):
        return "haproxy"
    if comm == "etcd":
        return "etcd"
    if comm in ("ip", "iptables", "nsenter", "iptables-legacy", "iptables-nft", "xtables-nft-mul"):
        return "network set-up (ip, iptables)"
    if comm == "libuv-worker":      # uvloop's and node's threads: the API or a node process
        return "the API (uvicorn) or node"
    if comm == "docker-compose":    # compose v1, Debian's: a Python program run once a command
        return "docker-compose (v1)"
    if comm.startswith(("docker", "containerd", "runc")):
        return "docker (dockerd, containerd, the docker command)"
    if comm.startswith("python"):
        return "python, other"
    return comm


def _subcommand(argv: list[str]) -> str:
    """The command a `python -m chaoslab` process ran (`up`, `load`, `grade`...): they differ
    by orders of magnitude, a `status` against a `load` of thirty seconds."""
    for i, word in enumerate(argv):
        if word == "chaoslab" or word.endswith("chaoslab/__main__.py"):
            return argv[i + 1] if i + 1 < len(argv) else "?"   # no option comes before it
    return "?"


@dataclass
class MachineSamples:
    """/proc/stat's cpu line, once a second: the share of each second the CPUs were idle."""
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    busy_s: float = 0.0
    total_s: float = 0.0
    idle_shares: list[float] = field(default_factory=list)

    def add(self, before: tuple[int, int], after: tuple[int, int]) -> None:
        busy, total = after[0] - before[0], after[1] - before[1]
        if total <= 0:
            return
        self.busy_s += busy / ACCT_HZ
        self.total_s += total / ACCT_HZ
        self.idle_shares.append(1 - busy / total)


def read_cpu_ticks(stat: Path = STAT_PATH) -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot; idle and iowait are not busy."""
    fields = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def command_lines() -> dict[int, tuple[str, list[str]]]:
    """{pid: (name, argv)} of the processes alive now."""
    seen = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue                      # it ended between the listing and the read
        seen[int(entry.name)] = (comm, [a.decode(errors="replace") for a in argv if a])
    return seen


def summarize(records: Iterable[Accounted], names: Mapping[int, tuple[str, list[str]]]) -> dict[str, tuple[int, float]]:
    """{kind: (processes, CPU seconds)}, most CPU first. A sampled command line names a
    record only when its name agrees (a pid can be reused within a run)."""
    totals: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for record in records:
        sampled = names.get(record.pid)
        argv = sampled[1] if sampled and _same_process(sampled[0], record.comm) else None
        entry = totals[kind_of(record.comm, argv)]
        entry[0] += 1
        entry[1] += record.cpu_s
    return {kind: (count, seconds) for kind, (count, seconds) in
            sorted(totals.items(), key=lambda item: item[1][1], reverse=True)}


def _same_process(sampled_comm: str, accounted_comm: str) -> bool:
    # A process renames its threads (uvloop's libuv-worker, Redis' bio_*): the accounted name
    # is the last thread's. The sample is trusted unless both look like different programs.
    return sampled_comm == accounted_comm or accounted_comm.startswith(("libuv-worker", *REDIS_THREADS))


def render(command: list[str], exit_code: int, wall_s: float, machine: MachineSamples,
           by_kind: Mapping[str, tuple[int, float]]) -> str:
    available = machine.total_s
    accounted = sum(seconds for _, seconds in by_kind.values())
    outside = max(0.0, machine.busy_s - accounted)
    shares = machine.idle_shares
    saturated = sum(1 for share in shares if share < 0.10) / len(shares) if shares else 0.0
    lines = [f"command: {shlex.join(command)}  (exit {exit_code}, {wall_s:.0f} s of wall time)",
             f"machine: {machine.cpus} CPUs, {available:.0f} CPU-seconds in that time; busy "
             f"{machine.busy_s:.0f} ({_share(machine.busy_s, available)}), idle "
             f"{available - machine.busy_s:.0f} ({_share(available - machine.busy_s, available)})",
             f"  seconds in which the CPUs were under 10% idle: {saturated:.0%} of {len(shares)}",
             "", f"{'CPU-seconds by kind of process':<64}{'processes':>10}{'CPU-s':>9}{'share':>8}"]
    for kind, (count, seconds) in by_kind.items():
        if seconds < 0.5:
            continue
        lines.append(f"  {kind:<62}{count:10d}{seconds:9.1f}{_share(seconds, machine.busy_s):>8}")
    small = [(count, seconds) for count, seconds in by_kind.values() if seconds < 0.5]
    if small:
        lines.append(f"  {'the other kinds':<62}{sum(c for c, _ in small):10d}"
                     f"{sum(s for _, s in small):9.1f}{_share(sum(s for _, s in small), machine.busy_s):>8}")
    lines.append(f"  {'the kernel outside any process, and processes still running':<62}{'':10}"
                 f"{outside:9.1f}{_share(outside, machine.busy_s):>8}")
    if saturated >= 0.5:
        lines += ["", "The CPUs were saturated for most of the run: more workers would share the same "
                      "CPUs; only less CPU work shortens it."]
    return "\n".join(lines)


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "-"


# A measured command that runs `python -m chaoslab cpu` itself (`make cpu` runs make test,
# whose harness test measures a small command) reads the outer accounting file from where it
# stood, rather than switching the machine's one accounting file under the outer run's feet.
OUTER_FILE = "CHAOSLAB_ACCT_FILE"


def run(command: list[str], interval: float = 1.0) -> int:
    outer = os.environ.get(OUTER_FILE)
    accton = shutil.which("accton")
    if not outer:
        if accton is None:
            raise SystemExit("error: `accton` is missing: install the acct package "
                             "(apt-get install -y acct; scripts/setup.sh does)")
        if os.geteuid() != 0:
            raise SystemExit("error: process accounting needs root (acct(2))")
    machine = MachineSamples()
    names: dict[int, tuple[str, list[str]]] = {}
    done = threading.Event()

    def sample() -> None:
        before = read_cpu_ticks()
        while not done.wait(interval):
            names.update(command_lines())
            after = read_cpu_ticks()
            machine.add(before, after)
            before = after
        machine.add(before, read_cpu_ticks())

    with tempfile.TemporaryDirectory(prefix="chaoslab-cpu-") as tmp:
        acct_file = Path(outer) if outer else Path(tmp) / "pacct"
        start = acct_file.stat().st_size if outer else 0
        if not outer:
            acct_file.touch(mode=0o600)
            turned_on = subprocess.run([accton, str(acct_file)], capture_output=True, text=True)
            if turned_on.returncode != 0:      # e.g. a container without CAP_SYS_PACCT
                raise SystemExit(f"error: `accton {acct_file}` failed, process accounting is off: "
                                 f"{(turned_on.stderr or turned_on.stdout).strip()}")
        sampler = threading.Thread(target=sample, name="cpu-samples", daemon=True)
        started = time.monotonic()
        try:
            sampler.start()
            child = subprocess.Popen(command, env={**os.environ, OUTER_FILE: str(acct_file)})
            exit_code = _wait_for(child)
        finally:
            wall_s = time.monotonic() - started
            done.set()
            sampler.join(timeout=5)
            if not outer:
                subprocess.run([accton, "off"], check=False, capture_output=True)
        with acct_file.open("rb") as records_file:
            records_file.seek(start)
            data = records_file.read()
        records = parse_acct(data[:len(data) - len(data) % ACCT_V3.size])   # an outer one may be mid-write
    print(render(command, exit_code, wall_s, machine, summarize(records, names)), flush=True)
    if not any(record.pid == child.pid for record in records):
        # The command's own record is written as it ends: without it, accounting was turned
        # off (or to another file) meanwhile, and the table misses what ran after that.
        print(f"warning: process accounting stopped before the command ended (no record of its pid "
              f"{child.pid}): another `accton` ran meanwhile; the table above is incomplete",
              file=sys.stderr, flush=True)
    return exit_code


def _wait_for(child: subprocess.Popen) -> int:
    """The command's exit code. A Ctrl-C reached the command too (the terminal's process
    group): it is left to end as it does (pytest tears its labs down), never killed."""
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --, e.g. `-- make test`")
    return run(command, interval=max(0.1, args.interval))


if __name__ == "__main__":
    sys.exit(main())
