"""A fault proxy for the lab's links, with Toxiproxy's toxics and HTTP API.

Toxiproxy cannot be installed on the lab's machines (no Debian package, no reachable
registry), so the harness carries this small asyncio stand-in: ``toxics.py`` (what a toxic
is), ``proxy.py`` (the TCP forwarding), ``api.py`` (Toxiproxy's HTTP API), ``client.py``
(what the harness calls, which works against a real Toxiproxy too) and ``__main__.py``
(``python -m chaoslab.faultproxy --listen 127.0.0.1:8474``).
"""
