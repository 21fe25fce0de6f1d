"""`make bench`: GET throughput and latency with wrk, in one run, as ratios.

Targets under the same uvicorn settings: a bare Starlette endpoint (constant
JSON), the API's cached GET, the API's uncached GET, and for comparison the cached
GET through redis-py's pooled asyncio client instead of the API's lean Redis client
(REDIS_CLIENT=redis-py; ``--no-redis-py`` skips it). Machines here are noisy, so
the figures are printed and compared, not asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from . import api_client, pg
from .api_server import API, ApiServer
from .local.cluster import LocalCluster
from .topology import PRIMARY, REPLICA

TARGETS = {"cached_ratio": 0.6, "p50_ratio": 0.5}
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from `wrk --latency` output."""
    figures = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    for percent, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE):
        figures[f"p{percent}_ms"] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def run_wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it when root)")
    done = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                          capture_output=True, text=True, timeout=seconds + 30, check=True)
    figures = parse_wrk(done.stdout)
    requests_done = re.search(r"(\d+) requests in", done.stdout)
    figures["requests"] = float(requests_done.group(1)) if requests_done else 0.0
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: ApiServer, path: str, seconds: int, connections: int) -> dict[str, float]:
    """One wrk run, plus the server's own CPU time per request: a figure that other
    load on the machine barely moves, unlike requests/s."""
    pid = server.run_dir.recorded_process_group(API)
    before = cpu_seconds(pid)
    figures = run_wrk(f"{server.base_url}{path}", seconds, connections)
    if figures["requests"]:
        figures["cpu_us_per_request"] = (cpu_seconds(pid) - before) / figures["requests"] * 1e6
    return figures


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (so a noisy round does not decide)."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab.bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each runs every target once, interleaved, and medians are reported")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    parser.add_argument("--no-redis-py", dest="redis_py", action="store_false",
                        help="skip the cached GET through redis-py (the comparison row)")
    args = parser.parse_args(argv)

    # The brief's stack on 127.0.0.1, with no fault proxy in its paths.
    cluster = LocalCluster(links=False, namespaces=False)
    servers: list[ApiServer] = []
    try:
        cluster.start()
        targets = {
            "bare": (ApiServer(cluster, app="chaoslab.bench_bare:create_app"), {}),
            "cached": (ApiServer(cluster), {}),
            "uncached": (ApiServer(cluster), {"CACHE_ENABLED": "false"}),
        }
        if args.redis_py:
            targets["cached_redis_py"] = (ApiServer(cluster), {"REDIS_CLIENT": "redis-py"})
        for server, settings in targets.values():
            servers.append(server)
            server.start(**settings)
        product = api_client.create(targets["cached"][0].base_url, "Keyboard", 4999)
        cluster.wait_replayed(REPLICA, pg.current_lsn(cluster.endpoint(PRIMARY), cluster.creds))
        for name in ("cached", "cached_redis_py"):
            if name in targets:  # warm: the next reads hit
                assert api_client.read(targets[name][0].base_url, product["id"]).status == 200
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (server, _) in targets.items():
                rounds[name].append(measure(server, f"/products/{product['id']}", args.seconds, args.connections))
    finally:
        for server in servers:
            server.close()
        cluster.close()

    results = {name: median_run(runs) for name, runs in rounds.items()}
    ratios = {
        "cached_vs_bare_throughput": results["cached"]["requests_per_s"] / results["bare"]["requests_per_s"],
        "uncached_vs_bare_throughput": results["uncached"]["requests_per_s"] / results["bare"]["requests_per_s"],
        "cached_vs_uncached_p50": results["cached"]["p50_ms"] / results["uncached"]["p50_ms"],
        "bare_vs_cached_cpu_per_request": (results["bare"]["cpu_us_per_request"]
                                           / results["cached"]["cpu_us_per_request"]),
    }
    if "cached_redis_py" in results:
        ratios["cached_redis_py_vs_bare_throughput"] = (
            results["cached_redis_py"]["requests_per_s"] / results["bare"]["requests_per_s"])
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, one uvicorn worker each, {args.rounds} interleaved "
          f"round(s), medians")
    print(f"{'target':<16}{'req/s':>10}{'(min-max)':>16}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
          f"{'cpu us/req':>12}{'non-2xx':>9}")
    for name, figures in results.items():
        spread = [run["requests_per_s"] for run in rounds[name]]
        print(f"{name:<16}{figures['requests_per_s']:>10.0f}{f'({min(spread):.0f}-{max(spread):.0f})':>16}"
              f"{figures['p50_ms']:>9.2f}{figures['p90_ms']:>9.2f}{figures['p99_ms']:>9.2f}"
              f"{figures.get('cpu_us_per_request', float('nan')):>12.1f}{figures['non_2xx']:>9.0f}")
    verdicts = {
        "cached_vs_bare_throughput": ratios["cached_vs_bare_throughput"] >= TARGETS["cached_ratio"],
        "cached_vs_uncached_p50": ratios["cached_vs_uncached_p50"] <= TARGETS["p50_ratio"],
    }
    print(f"cached / bare throughput   {ratios['cached_vs_bare_throughput']:.2f}  (target >= {TARGETS['cached_ratio']}): "
          f"{'met' if verdicts['cached_vs_bare_throughput'] else 'MISSED'}")
    print(f"uncached / bare throughput {ratios['uncached_vs_bare_throughput']:.2f}")
    if "cached_redis_py_vs_bare_throughput" in ratios:
        print(f"cached with redis-py / bare throughput {ratios['cached_redis_py_vs_bare_throughput']:.2f}"
              "  (the API's Redis client swapped for redis-py's, for comparison)")
    print(f"cached / uncached p50      {ratios['cached_vs_uncached_p50']:.2f}  (target <= {TARGETS['p50_ratio']}): "
          f"{'met' if verdicts['cached_vs_uncached_p50'] else 'MISSED'}")
    print(f"bare / cached server CPU per request {ratios['bare_vs_cached_cpu_per_request']:.2f}"
          "  (the throughput ratio the API would reach if the server's CPU were the only limit)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "rounds": rounds, "ratios": ratios, "targets_met": verdicts,
                                    "seconds": args.seconds, "rounds_count": args.rounds,
                                    "connections": args.connections}, indent=2))
    print(f"figures: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
