"""The fault proxy's HTTP API, shaped like Toxiproxy's (its README, "HTTP API"), so that a
client written for one drives the other: the harness's client (``client.py``) can be pointed
at a real Toxiproxy, and Toxiproxy's own clients at this one.

    GET    /version
    GET    /proxies                       {name: proxy}
    POST   /proxies                       {name, listen, upstream, enabled?}      -> 201
    POST   /populate                      [{name, listen, upstream, enabled?}...] -> 201
    GET    /proxies/{proxy}
    POST   /proxies/{proxy}               {enabled?, listen?, upstream?}
    DELETE /proxies/{proxy}                                                        -> 204
    GET    /proxies/{proxy}/toxics
    POST   /proxies/{proxy}/toxics        {name?, type, stream?, toxicity?, attributes?}
    GET    /proxies/{proxy}/toxics/{toxic}
    POST   /proxies/{proxy}/toxics/{toxic} {attributes}
    DELETE /proxies/{proxy}/toxics/{toxic}                                         -> 204
    POST   /reset                         every proxy enabled, every toxic removed  -> 204

Errors are JSON, {"error": ..., "status": ...}, as Toxiproxy's.
"""

from __future__ import annotations

import contextlib
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import toxics
from .proxy import Address, Proxy

VERSION = "chaoslab-faultproxy 1 (Toxiproxy 2 HTTP API)"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


async def _body(request: Request) -> object:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, "the body is not JSON") from None


class Proxies:
    """Every link of a lab, by name."""

    def __init__(self) -> None:
        self.by_name: dict[str, Proxy] = {}

    def get(self, name: str) -> Proxy:
        if name not in self.by_name:
            raise ApiError(404, f"proxy {name} not found; the proxies are: {', '.join(self.by_name) or 'none'}")
        return self.by_name[name]

    async def create(self, body: object) -> Proxy:
        if not isinstance(body, dict) or not all(isinstance(body.get(key), str) for key in
                                                 ("name", "listen", "upstream")):
            raise ApiError(400, "a proxy needs name, listen (host:port) and upstream (host:port)")
        if body["name"] in self.by_name:
            raise ApiError(409, f"proxy {body['name']} already exists")
        try:
            proxy = Proxy(body["name"], Address.parse(body["listen"]), Address.parse(body["upstream"]))
        except ValueError as exc:
            raise ApiError(400, f"proxy {body['name']}: {exc}") from None
        if body.get("enabled", True):
            try:
                await proxy.start()
            except OSError as exc:
                raise ApiError(409, f"proxy {proxy.name}: cannot listen on {proxy.listen}: {exc.strerror}") from None
        else:
            proxy.enabled = False
        self.by_name[proxy.name] = proxy
        return proxy

    async def update(self, proxy: Proxy, body: object) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object")
        if "upstream" in body:
            try:
                proxy.upstream = Address.parse(body["upstream"])
            except ValueError as exc:
                raise ApiError(400, f"proxy {proxy.name}: {exc}") from None
        if "enabled" in body and bool(body["enabled"]) != proxy.enabled:
            if body["enabled"]:
                await proxy.start()
            else:
                await proxy.stop()

    async def remove(self, proxy: Proxy) -> None:
        await proxy.stop()
        del self.by_name[proxy.name]

    async def reset(self) -> None:
        for proxy in self.by_name.values():
            for name in list(proxy.toxics):
                proxy.remove_toxic(name)
            if not proxy.enabled:
                await proxy.start()

    async def close(self) -> None:
        for proxy in list(self.by_name.values()):
            await proxy.stop()


def create_app(proxies: Proxies | None = None) -> Starlette:
    proxies = proxies or Proxies()

    async def version(request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def list_proxies(request: Request) -> Response:
        return JSONResponse({name: proxy.to_json() for name, proxy in proxies.by_name.items()})

    async def create_proxy(request: Request) -> Response:
        return JSONResponse((await proxies.create(await _body(request))).to_json(), status_code=201)

    async def populate(request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body, list):
            raise ApiError(400, "populate takes a list of proxies")
        created = []
        for item in body:
            if isinstance(item, dict) and item.get("name") in proxies.by_name:
                proxy = proxies.get(item["name"])
                await proxies.update(proxy, item)
            else:
                proxy = await proxies.create(item)
            created.append(proxy.to_json())
        return JSONResponse({"proxies": created}, status_code=201)

    async def one_proxy(request: Request) -> Response:
        proxy = proxies.get(request.path_params["proxy"])
        if request.method == "DELETE":
            await proxies.remove(proxy)
            return Response(status_code=204)
        if request.method == "POST":
            await proxies.update(proxy, await _body(request))
        return JSONResponse(proxy.to_json())

    async def proxy_toxics(request: Request) -> Response:
        proxy = proxies.get(request.path_params["proxy"])
        if request.method == "POST":
            try:
                toxic = toxics.parse(await _body(request), set(proxy.toxics))
            except toxics.ToxicError as exc:
                raise ApiError(409 if "already exists" in str(exc) else 400, f"proxy {proxy.name}: {exc}") from None
            proxy.add_toxic(toxic)
            return JSONResponse(toxic.to_json())
        return JSONResponse([toxic.to_json() for toxic in proxy.toxics.values()])

    async def one_toxic(request: Request) -> Response:
        proxy = proxies.get(request.path_params["proxy"])
        name = request.path_params["toxic"]
        if name not in proxy.toxics:
            raise ApiError(404, f"toxic {name} not found on proxy {proxy.name}")
        toxic = proxy.toxics[name]
        if request.method == "DELETE":
            proxy.remove_toxic(name)
            return Response(status_code=204)
        if request.method == "POST":
            body = await _body(request)
            given = body.get("attributes", {}) if isinstance(body, dict) else body
            try:
                values = toxics.attributes(toxic.type, {**toxic.attributes, **(given or {})}, name)
            except (toxics.ToxicError, TypeError) as exc:
                raise ApiError(400, f"proxy {proxy.name}: {exc}") from None
            proxy.remove_toxic(name)
            toxic.attributes = values
            proxy.add_toxic(toxic)
        return JSONResponse(toxic.to_json())

    async def reset(request: Request) -> Response:
        await proxies.reset()
        return Response(status_code=204)

    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, str(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await proxies.close()   # the listeners and their connections go with the server

    app = Starlette(routes=[
        Route("/version", version),
        Route("/proxies", list_proxies, methods=["GET"]),
        Route("/proxies", create_proxy, methods=["POST"]),
        Route("/populate", populate, methods=["POST"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/proxies/{proxy}", one_proxy, methods=["GET", "POST", "DELETE"]),
        Route("/proxies/{proxy}/toxics", proxy_toxics, methods=["GET", "POST"]),
        Route("/proxies/{proxy}/toxics/{toxic}", one_toxic, methods=["GET", "POST", "DELETE"]),
    ], exception_handlers={ApiError: api_error}, lifespan=lifespan)
    app.state.proxies = proxies
    return app
