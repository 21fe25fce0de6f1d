"""Hands-on use of the lab, as a student pokes at it: up, status, fault, down.

    python -m chaoslab up                 start the stack and its API, and leave them running
    python -m chaoslab status             where everything is, and how to connect (curl, psql...)
    python -m chaoslab fault kill db-primary
    python -m chaoslab promote db-replica
    python -m chaoslab switch db-replica --method reload
    python -m chaoslab load --seconds 60  writes and reads through the API, judged at the end
    python -m chaoslab watch              a live view: roles, replication, HAProxy, Redis, the API
    python -m chaoslab demo failover      part F in one command: load, kill, promote, switch, timeline
    python -m chaoslab down               stop it and remove every trace
    python -m chaoslab phases             where a test run's seconds went (reports/results.json)
"""

from __future__ import annotations

import argparse
from pathlib import Path
import shlex
import sys

from . import rundir
from .api_server import API, ApiServer
from .cluster import FAULTS, PROMOTE_METHODS, SWITCH_METHODS
from .errors import LabError
from .lab_events import recorded
from .local.cluster import LocalCluster
from .topology import DB_NODES, HAPROXY, PRIMARY, REDIS, REPLICA, SERVICES


def connection_lines(cluster: LocalCluster) -> list[str]:
    creds = cluster.creds

    def psql(service: str) -> str:
        endpoint = cluster.endpoint(service)
        return (f"PGPASSWORD={shlex.quote(creds.app_password)} psql -h {endpoint.host} -p {endpoint.port} "
                f"-U {creds.app_user} -d {creds.database}")
    redis = cluster.endpoint(REDIS)
    return [
        f"{PRIMARY:<11} {psql(PRIMARY)}",
        f"{REPLICA:<11} {psql(REPLICA)}",
        f"{HAPROXY:<11} {psql(HAPROXY)}   (writes; role-aware reads on port {cluster.haproxy_read_endpoint().port})",
        f"{REDIS:<11} redis-cli -h {redis.host} -p {redis.port}",
        f"{'stats':<11} echo 'show stat' | socat stdio {cluster.haproxy.socket}",
    ]


def api_lines(api: ApiServer) -> list[str]:
    """curl lines that work as pasted on a new lab: a product is created (the brief's B2 row),
    then read (twice: a miss, then a hit from Redis) and changed."""
    url = f"{api.base_url}/products"
    body = """-H 'Content-Type: application/json' -d '{"name": "Keyboard", "price_cents": %d}'"""
    return [
        f"curl -s -X POST {body % 4999} {url}",
        f"curl -s -i {url}/1          # X-Cache: miss, then hit",
        f"curl -s -X PUT {body % 3999} {url}/1",
        f"curl -s {api.base_url}/health",
    ]


def print_status(cluster: LocalCluster, api: ApiServer | None) -> None:
    print(f"lab {cluster.run_dir.run_id} ({cluster.run_dir.path}), HAProxy config: {cluster.haproxy_config_name}")
    for service, info in cluster.describe().items():
        state = "paused" if info["paused"] else "running" if info["running"] else "stopped"
        print(f"  {service:<11} {info['endpoint']:<16} {state:<8} log: {info['log']}")
    if api is not None:
        print(f"  {API:<11} {api.base_url.removeprefix('http://'):<16} {api.state():<8} log: {api.log}")
    print("connect:")
    for line in connection_lines(cluster):
        print(f"  {line}")
    if api is not None:
        print("the API (GET and PUT /products/{id}, reads cached in Redis under product:{id}):")
        for line in api_lines(api):
            print(f"  {line}")


def _the_running_lab() -> tuple[LocalCluster, ApiServer | None]:
    runs = rundir.detached_runs()
    if not runs:
        raise LabError("lab", "a stack started by `python -m chaoslab up`",
                       cause="none is running: start one with `python -m chaoslab up`")
    cluster = LocalCluster.attach(runs[-1])
    return cluster, ApiServer.attach(cluster, cluster.run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stack (the brief's ports when free) and leave it running")
    up.add_argument("--config", choices=["brief", "role_aware"], default="brief", help="HAProxy configuration")
    up.add_argument("--no-api", action="store_true", help="no API: bring your own (it reaches the printed ports)")
    commands.add_parser("status", help="show the running stack and how to connect")
    fault = commands.add_parser("fault", help="inject a fault into a service")
    fault.add_argument("action", choices=FAULTS)
    fault.add_argument("service", choices=SERVICES + (API,))
    promote = commands.add_parser("promote", help="promote a standby (TP F2)")
    promote.add_argument("service", choices=DB_NODES, nargs="?", default=REPLICA)
    promote.add_argument("--method", choices=PROMOTE_METHODS, default="pg_ctl")
    switch = commands.add_parser("switch", help="point HAProxy's writes at another node (TP F3)")
    switch.add_argument("service", choices=DB_NODES)
    switch.add_argument("--method", choices=SWITCH_METHODS, default="restart")
    load = commands.add_parser("load", help="the scenarios' workload through the lab's API, judged at the end")
    load.add_argument("--seconds", type=float, default=60, help="how long at most (Ctrl-C stops it before)")
    load.add_argument("--writers", type=int, default=2, choices=range(0, 17), metavar="N", help="writer threads")
    load.add_argument("--readers", type=int, default=1, choices=range(0, 17), metavar="N", help="reader threads")
    load.add_argument("--rate", type=float, help="operations per second per thread (default: as fast as "
                      "answers come, with 10 ms between them)")
    load.add_argument("--api-url", help="another API than the lab's (it must use the lab's databases)")
    watch = commands.add_parser("watch", help="a live view of the lab (Ctrl-C quits)")
    watch.add_argument("--seconds", type=float, help="quit by itself after this long")
    watch.add_argument("--api-url", help="another API than the lab's")
    demo = commands.add_parser("demo", help="the brief's part F in one command, on the running lab")
    demo.add_argument("scenario", choices=["failover"])
    demo.add_argument("--fault", choices=["kill", "stop"], default="kill", help="how the primary goes away")
    demo.add_argument("--switch", choices=SWITCH_METHODS, default="restart",
                      help="how HAProxy is switched (the brief restarts it)")
    demo.add_argument("--out", type=Path, default=Path("reports/demo"), help="where the timeline's PNG goes")
    grade = commands.add_parser("grade", help="grade a submission with the rubric's black-box checks")
    target = grade.add_mutually_exclusive_group(required=True)
    target.add_argument("path", nargs="?", type=Path, help="a submission's directory (its docker-compose.yml, "
                        "haproxy/haproxy.cfg, its API)")
    target.add_argument("--lab", action="store_true", help="grade this lab's own stack (local processes and its API)")
    target.add_argument("--git", metavar="URL", help="grade branches of a git repository, one after another")
    grade.add_argument("--branch", action="append", help="with --git: a branch to grade (repeatable)")
    grade.add_argument("--all-branches", action="store_true", help="with --git: every branch")
    grade.add_argument("--api-url", help="an API someone else started, instead of the submission's own")
    grade.add_argument("--out", default="reports/grade", help="where to write JUnit, results.json, FEEDBACK.md")
    commands.add_parser("phases", add_help=False,
                        help="where a run's seconds went, per phase and per scenario (see phases --help)")
    down = commands.add_parser("down", help="stop the stack and remove every trace")
    down.add_argument("--all", action="store_true", help="also reap any abandoned run")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["phases"]:   # its own options: chaoslab.phase_report
        from .phase_report import main as phases_main
        return phases_main(argv[1:])
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            if rundir.detached_runs():
                raise LabError("lab", "no stack running yet", cause="one is already up: see `python -m chaoslab status`")
            cluster = LocalCluster(brief_ports=True)
            cluster.start()
            api = None
            try:
                if args.config != "brief":
                    cluster.use_haproxy_config(args.config)
                if not args.no_api:
                    api = ApiServer.in_lab(cluster, cluster.run_dir)
                    api.start()
                    api.detach()
            except BaseException:
                cluster.close()   # its run directory holds the API too: nothing stays running
                raise
            cluster.detach()
            print_status(cluster, api)
            print("stop it with: python -m chaoslab down")
            return 0
        if args.command == "grade":
            from .grader.run import grade_path, grade_the_lab
            if args.lab:
                return grade_the_lab(Path(args.out))
            if args.git:
                from .grader.batch import grade_branches
                if bool(args.branch) == args.all_branches:
                    parser.error("with --git, give --branch B (one or more) or --all-branches")
                grade_branches(args.git, None if args.all_branches else args.branch, Path(args.out))
                return 0
            return grade_path(args.path, Path(args.out), args.api_url)
        if args.command == "down":
            for run in rundir.detached_runs():
                rundir.reap_run(run)
                print(f"removed {run}")
            if args.all:
                for run in rundir.reap_abandoned_runs():
                    print(f"reaped abandoned {run}")
            return 0
        cluster, api = _the_running_lab()
        if args.command == "load":
            if args.writers + args.readers == 0:
                parser.error("load: give at least one writer or reader")
            if api is None and not args.api_url:
                raise LabError(API, "an API to send the load to", cause="this lab was started with --no-api: "
                               "pass --api-url URL, or run `python -m chaoslab down` then `python -m chaoslab up`")
            from .load import run_load
            from .steps import present_names
            return run_load(args.api_url or api.base_url, cluster.run_dir, lambda: present_names(cluster, HAPROXY),
                            seconds=args.seconds, writers=args.writers, readers=args.readers, rate=args.rate)
        if args.command == "demo":
            if api is None:
                raise LabError(API, "the lab's API", cause="this lab was started with --no-api: run "
                               "`python -m chaoslab down` then `python -m chaoslab up`")
            from .demo import run_demo
            from .steps import present_names
            return run_demo(cluster, api.base_url, fault=args.fault, switch=args.switch, out_dir=args.out,
                            present_names=lambda: present_names(cluster, HAPROXY))
        if args.command == "watch":
            from .watch import run_watch
            return run_watch(cluster, args.api_url or (api.base_url if api else None), seconds=args.seconds)
        if args.command == "fault" and args.service == API:
            if api is None:
                raise LabError(API, "an API started by `python -m chaoslab up`",
                               cause="this lab was started with --no-api: restart it with `python -m chaoslab down` "
                                     "then `python -m chaoslab up`")
            with recorded(cluster.run_dir, "fault", f"{args.action} {API}"):
                api.fault(args.action)
        elif args.command == "fault":
            with recorded(cluster.run_dir, "fault", f"{args.action} {args.service}"):
                cluster.fault(args.action, args.service)
        elif args.command == "promote":
            with recorded(cluster.run_dir, "promote", f"{args.service} ({args.method})"):
                cluster.promote(args.service, method=args.method)
        elif args.command == "switch":
            with recorded(cluster.run_dir, "switch", f"{args.service} ({args.method})"):
                cluster.switch_writes(args.service, args.method)
        cluster.save_state()
        print_status(cluster, api)
        return 0
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
