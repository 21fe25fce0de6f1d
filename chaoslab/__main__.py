"""Hands-on use of the lab, as a student pokes at it: up, status, fault, down.

    python -m chaoslab up                 start the stack and its API, and leave them running
    python -m chaoslab up --topology patroni   (or sentinel) a bonus stack instead
    python -m chaoslab status             where everything is, and how to connect (curl, psql...)
    python -m chaoslab fault kill db-primary
    python -m chaoslab promote db-replica
    python -m chaoslab switch db-replica --method reload
    python -m chaoslab load --seconds 60  writes and reads through the API, judged at the end
    python -m chaoslab watch              a live view: roles, replication, HAProxy, Redis, the API
    python -m chaoslab demo failover      part F in one command: load, kill, promote, switch, timeline
    python -m chaoslab down               stop it and remove every trace
    python -m chaoslab phases             where a test run's seconds went (reports/results.json)
    python -m chaoslab cpu -- make test   where a command's CPU went, and whether the CPUs bounded it
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import signal
import sys

from . import rundir
from .api_server import API, ApiServer
from .cluster import FAULTS, PROMOTE_METHODS, SWITCH_METHODS
from .errors import LabError
from .interrupts import Terminated, terminate_like_ctrl_c
from . import hands_on
from .hands_on import HandsOnLab
from .lab_events import recorded
from .network import HEAL, NETWORK_FAULTS, PARTITION
from .topology import HAPROXY, REPLICA



def _names_present(cluster):
    """The product names the database behind HAProxy's write port holds now, which the load's
    checker compares with the acknowledged writes (chaoslab.steps imports pytest: only the
    commands that use it load it)."""
    from .steps import present_names
    return lambda: present_names(cluster, HAPROXY)


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


def print_status(lab: HandsOnLab, api: ApiServer | None) -> None:
    run_dir = lab.run_dir
    print(f"lab {run_dir.run_id} ({run_dir.path}), topology: {lab.topology}, {lab.headline()}")
    for service, info in lab.describe().items():
        state = "paused" if info["paused"] else "running" if info["running"] else "stopped"
        print(f"  {service:<11} {info['endpoint']:<16} {state:<8} log: {info['log']}")
    if api is not None:
        print(f"  {API:<11} {api.base_url.removeprefix('http://'):<16} {api.state():<8} log: {api.log}")
    faults: dict[str, list[str]] = {}
    if lab.has_links:   # the fault proxy serving the links: Toxiproxy's clients can drive it too
        links = lab.network_faults_here()
        answers = links.client.answers()
        print(f"  {'faultproxy':<11} {links.client.url.removeprefix('http://'):<16} "
              f"{'running' if answers else 'stopped':<8} log: {links.log}   (Toxiproxy API)")
        faults = links.active() if answers else {}
    if faults:
        print("network faults (`python -m chaoslab fault heal` removes them):")
        for link, toxics in faults.items():
            print(f"  {link}: {'; '.join(toxics)}")
    print("connect:")
    for line in lab.connection_lines():
        print(f"  {line}")
    if api is not None:
        print("the API (GET and PUT /products/{id}, reads cached in Redis under product:{id}):")
        for line in api_lines(api):
            print(f"  {line}")


def _the_running_lab() -> tuple[HandsOnLab, ApiServer | None]:
    runs = rundir.detached_runs()
    if not runs:
        raise LabError("lab", "a stack started by `python -m chaoslab up`",
                       cause="none is running: start one with `python -m chaoslab up`")
    lab = hands_on.attach(runs[-1])
    return lab, ApiServer.attach(lab.cluster, lab.run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stack (the brief's ports when free) and leave it running")
    up.add_argument("--topology", choices=list(hands_on.TOPOLOGIES), default=hands_on.DEFAULT_TOPOLOGY,
                    help="the brief's stack, or a bonus: Redis with Sentinel, or PostgreSQL with Patroni")
    up.add_argument("--config", choices=["brief", "role_aware"], default="brief",
                    help="HAProxy configuration (brief and sentinel topologies)")
    up.add_argument("--no-api", action="store_true", help="no API: bring your own (it reaches the printed ports)")
    commands.add_parser("status", help="show the running stack and how to connect")
    fault = commands.add_parser(
        "fault", help="inject a fault into a service, or into the network links to it",
        description="Process faults: " + ", ".join(FAULTS) + ". Network faults on the links to a service "
                    "(the brief's topology: the API's to Redis, HAProxy and db-replica, replication, and HAProxy's to "
                    "the nodes; patroni: each node's to etcd): "
                    + ", ".join(NETWORK_FAULTS) + f"; `{PARTITION} A B` blackholes every link between two "
                    f"services; `{HEAL}` removes them (from every link when no service is named).")
    fault.add_argument("action", choices=[*FAULTS, *NETWORK_FAULTS, PARTITION, HEAL])
    fault.add_argument("service", nargs="?", help=f"a service of the running lab (`status` lists them), or {API}")
    fault.add_argument("other", nargs="?", help=f"{PARTITION}: the service on the other side")
    fault.add_argument("--ms", type=int, help="latency: the delay added to each answer; slow_close: the delay "
                                              "of a close, in ms")
    fault.add_argument("--jitter-ms", type=int, help="latency: plus or minus up to this, in ms")
    fault.add_argument("--kbps", type=int, help="bandwidth: the rate, in KB/s")
    fault.add_argument("--bytes", type=int, help="limit_data: bytes from the service before each connection closes")
    promote = commands.add_parser("promote", help="promote a standby (TP F2); on patroni, a switchover")
    promote.add_argument("service", nargs="?", default=REPLICA)
    promote.add_argument("--method", choices=PROMOTE_METHODS, help="brief and sentinel: pg_ctl (default) or sql")
    switch = commands.add_parser("switch", help="point HAProxy's writes at another node (TP F3)")
    switch.add_argument("service")
    switch.add_argument("--method", choices=SWITCH_METHODS,
                        help="brief and sentinel: restart (default), reload or runtime_api; patroni: none, "
                             "HAProxy follows by itself")
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
    watch.add_argument("--svg", type=Path, help="also save the last view drawn as an image (SVG), e.g. for a report")
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
    commands.add_parser("cpu", add_help=False,
                        help="where a command's CPU went, machine-wide (root; see cpu --help)")
    down = commands.add_parser("down", help="stop the stack and remove every trace")
    down.add_argument("--all", action="store_true", help="also reap any abandoned run")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["phases"]:   # its own options: chaoslab.phase_report
        from .phase_report import main as phases_main
        return phases_main(argv[1:])
    if argv[:1] == ["cpu"]:      # its own options: chaoslab.cpu_budget
        from .cpu_budget import main as cpu_main
        return cpu_main(argv[1:])
    args = parser.parse_args(argv)
    terminate_like_ctrl_c()   # `kill`/`timeout` clean up as Ctrl-C does (a grading's compose project...)

    try:
        if args.command == "up":
            if rundir.detached_runs():
                raise LabError("lab", "no stack running yet", cause="one is already up: see `python -m chaoslab status`")
            lab = hands_on.TOPOLOGIES[args.topology].start(config=args.config)
            api = None
            try:
                if not args.no_api:
                    api = ApiServer.in_lab(lab.cluster, lab.run_dir)
                    api.start(**lab.api_settings())
                    api.detach()
            except BaseException:
                lab.close()   # its run directory holds the API too: nothing stays running
                raise
            lab.detach()
            print_status(lab, api)
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
        lab, api = _the_running_lab()
        cluster = lab.cluster
        if args.command == "load":
            if args.writers + args.readers == 0:
                parser.error("load: give at least one writer or reader")
            if api is None and not args.api_url:
                raise LabError(API, "an API to send the load to", cause="this lab was started with --no-api: "
                               "pass --api-url URL, or run `python -m chaoslab down` then `python -m chaoslab up`")
            from .load import run_load
            return run_load(args.api_url or api.base_url, cluster.run_dir, _names_present(cluster),
                            seconds=args.seconds, writers=args.writers, readers=args.readers, rate=args.rate)
        if args.command == "demo":
            if api is None:
                raise LabError(API, "the lab's API", cause="this lab was started with --no-api: run "
                               "`python -m chaoslab down` then `python -m chaoslab up`")
            from .demo import run_demo
            cluster = lab.brief_cluster("demo")
            return run_demo(cluster, api.base_url, fault=args.fault, switch=args.switch, out_dir=args.out,
                            present_names=_names_present(cluster))
        if args.command == "watch":
            from .watch import run_watch
            return run_watch(lab.brief_cluster("watch"), args.api_url or (api.base_url if api else None),
                             seconds=args.seconds, svg=args.svg)
        if args.command == "fault" and args.service == API and args.action in FAULTS:
            if api is None:
                raise LabError(API, "an API started by `python -m chaoslab up`",
                               cause="this lab was started with --no-api: restart it with `python -m chaoslab down` "
                                     "then `python -m chaoslab up`")
            with recorded(cluster.run_dir, "fault", f"{args.action} {API}"):
                api.fault(args.action)
        elif args.command == "fault" and args.action == HEAL and args.service is None:
            with recorded(lab.run_dir, "fault", HEAL):
                lab.network_faults_here()
                lab.cluster.heal_network()
        elif args.command == "fault" and args.action == PARTITION:
            if args.service is None or args.other is None:
                parser.error(f"fault {PARTITION}: which two services? e.g. `fault {PARTITION} db-primary db-replica`")
            with recorded(lab.run_dir, "fault", f"{PARTITION} {args.service} {args.other}"):
                lab.partition(args.service, args.other)
        elif args.command == "fault":
            if args.other is not None:
                parser.error(f"fault {args.action} takes one service, not {args.service} and {args.other}")
            if args.service is None:
                parser.error(f"fault {args.action}: which service? (`python -m chaoslab status` lists them)")
            parameters = {"ms": args.ms, "jitter_ms": args.jitter_ms, "kbps": args.kbps, "bytes": args.bytes}
            with recorded(lab.run_dir, "fault", f"{args.action} {args.service}",
                          on_primary=lab.leads(args.service)):
                lab.fault(args.action, args.service, **parameters)
        elif args.command == "promote":
            with recorded(lab.run_dir, "promote", f"{args.service} ({args.method or 'default'})"):
                lab.promote(args.service, args.method)
        elif args.command == "switch":
            with recorded(lab.run_dir, "switch", f"{args.service} ({args.method or 'default'})"):
                lab.switch(args.service, args.method)
        lab.save_state()
        print_status(lab, api)
        return 0
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `status | head -1`: the reader has what it wanted and left. Quiet, as Unix tools are:
        # point stdout at /dev/null so that the interpreter's last flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as exc:   # Ctrl-C or SIGTERM, once every `finally` has cleaned up
        signal_name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        print(f"interrupted ({signal_name})", file=sys.stderr)
        return 128 + (15 if isinstance(exc, Terminated) else 2)


if __name__ == "__main__":
    sys.exit(main())
