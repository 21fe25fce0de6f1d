"""``python -m chaoslab.faultproxy --listen HOST:PORT [--populate FILE]``: the fault proxy's
HTTP API on HOST:PORT (Toxiproxy's default is 127.0.0.1:8474), with the proxies of a
Toxiproxy config file (a JSON list of {name, listen, upstream}) created at start."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import uvicorn

from .api import ApiError, Proxies, create_app
from .proxy import Address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab.faultproxy", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8474", help="where the HTTP API listens")
    parser.add_argument("--populate", metavar="FILE", help="a JSON list of proxies to create at start")
    args = parser.parse_args(argv)
    try:
        address = Address.parse(args.listen)
        populate = json.loads(open(args.populate).read()) if args.populate else []
    except (ValueError, OSError) as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 2
    return _event_loop_runner()(_serve(address, populate))


def _event_loop_runner():
    """uvloop's where it is installed (uvicorn[standard] brings it), else asyncio's. Every
    request of a scenario's workload crosses one or two links, so the proxy's relaying is a
    visible share of a run's CPU, and uvloop's transports cost less per chunk."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def _serve(address: Address, populate: list) -> int:
    proxies = Proxies()
    for item in populate:
        try:
            await proxies.create(item)
        except ApiError as exc:
            print(f"faultproxy: {exc}", file=sys.stderr)
            await proxies.close()
            return 2
    config = uvicorn.Config(create_app(proxies), host=address.host, port=address.port, log_level="warning",
                            access_log=False)
    await uvicorn.Server(config).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
