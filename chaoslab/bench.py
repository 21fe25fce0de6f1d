"""`make bench`: GET throughput and latency with wrk, in one run, as ratios.

Three targets under the same uvicorn settings: a bare Starlette endpoint
(constant JSON), the API's cached GET, the API's uncached GET. Machines here are
noisy, so the figures are printed and compared, not asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import api_client, pg
from .api_server import ApiServer
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
    return parse_wrk(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab.bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    args = parser.parse_args(argv)

    cluster = LocalCluster()
    servers: list[ApiServer] = []
    try:
        cluster.start()
        bare = ApiServer(cluster, app="chaoslab.bench_bare:create_app")
        cached = ApiServer(cluster)
        uncached = ApiServer(cluster)
        servers += [bare, cached, uncached]
        bare.start()
        cached.start()
        uncached.start(CACHE_ENABLED="false")
        product = api_client.create(cached.base_url, "Keyboard", 4999)
        cluster.wait_replayed(REPLICA, pg.current_lsn(cluster.endpoint(PRIMARY), cluster.creds))
        assert api_client.read(cached.base_url, product["id"]).status == 200  # warm: the next reads hit
        results = {}
        for name, server in (("bare", bare), ("cached", cached), ("uncached", uncached)):
            results[name] = run_wrk(f"{server.base_url}/products/{product['id']}", args.seconds, args.connections)
    finally:
        for server in servers:
            server.close()
        cluster.close()

    ratios = {
        "cached_vs_bare_throughput": results["cached"]["requests_per_s"] / results["bare"]["requests_per_s"],
        "uncached_vs_bare_throughput": results["uncached"]["requests_per_s"] / results["bare"]["requests_per_s"],
        "cached_vs_uncached_p50": results["cached"]["p50_ms"] / results["uncached"]["p50_ms"],
    }
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, one uvicorn worker each, same run")
    print(f"{'target':<10}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'non-2xx':>9}")
    for name, figures in results.items():
        print(f"{name:<10}{figures['requests_per_s']:>10.0f}{figures['p50_ms']:>10.2f}"
              f"{figures['p90_ms']:>10.2f}{figures['p99_ms']:>10.2f}{figures['non_2xx']:>9.0f}")
    verdicts = {
        "cached_vs_bare_throughput": ratios["cached_vs_bare_throughput"] >= TARGETS["cached_ratio"],
        "cached_vs_uncached_p50": ratios["cached_vs_uncached_p50"] <= TARGETS["p50_ratio"],
    }
    print(f"cached / bare throughput   {ratios['cached_vs_bare_throughput']:.2f}  (target >= {TARGETS['cached_ratio']}): "
          f"{'met' if verdicts['cached_vs_bare_throughput'] else 'MISSED'}")
    print(f"uncached / bare throughput {ratios['uncached_vs_bare_throughput']:.2f}")
    print(f"cached / uncached p50      {ratios['cached_vs_uncached_p50']:.2f}  (target <= {TARGETS['p50_ratio']}): "
          f"{'met' if verdicts['cached_vs_uncached_p50'] else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "ratios": ratios, "targets_met": verdicts,
                                    "seconds": args.seconds, "connections": args.connections}, indent=2))
    print(f"figures: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
