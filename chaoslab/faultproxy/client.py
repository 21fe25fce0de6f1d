"""The harness's client of the Toxiproxy HTTP API: the lab's own fault proxy, or a real
Toxiproxy at the same address (the calls and bodies are Toxiproxy's)."""

from __future__ import annotations

import requests

from ..errors import LabError

TIMEOUT_S = 5


class ToxiproxyClient:
    def __init__(self, url: str, log_hint: str = "") -> None:
        self.url = url.rstrip("/")
        self.log_hint = log_hint

    def _call(self, method: str, path: str, body: object = None) -> object:
        try:
            response = requests.request(method, self.url + path, json=body, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise LabError("faultproxy", f"its HTTP API at {self.url} to answer {method} {path}",
                           self.log_hint or None, f"no answer: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise LabError("faultproxy", f"{method} {path} to succeed", self.log_hint or None,
                           f"HTTP {response.status_code}: {message}")
        return response.json() if response.content else None

    def answers(self) -> bool:
        try:
            return requests.get(self.url + "/version", timeout=TIMEOUT_S).ok
        except requests.RequestException:
            return False

    def proxies(self) -> dict[str, dict]:
        return self._call("GET", "/proxies")

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> dict:
        return self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                               "enabled": enabled})

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def set_enabled(self, proxy: str, enabled: bool) -> dict:
        return self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def add_toxic(self, proxy: str, type: str, attributes: dict | None = None, *, stream: str = "downstream",
                  name: str | None = None, toxicity: float = 1.0) -> dict:
        body = {"type": type, "stream": stream, "toxicity": toxicity, "attributes": attributes or {}}
        if name:
            body["name"] = name
        return self._call("POST", f"/proxies/{proxy}/toxics", body)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def reset(self) -> None:
        self._call("POST", "/reset")
