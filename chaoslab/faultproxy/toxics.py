"""Toxics: what a fault proxy does to the bytes of a link, in Toxiproxy's vocabulary.

A toxic is data: a type, the stream it acts on (``upstream``: client to server,
``downstream``: server to client, Toxiproxy's default), a toxicity (the share of
connections it touches) and the attributes of its type, in Toxiproxy's names and units
(milliseconds, KB/s with 1 KB = 1000 bytes, bytes). Validation lives here, so that the
HTTP API, the command line and the scenarios refuse the same bad input with the same
words; the proxy (``server.py``) only applies toxics that passed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

UPSTREAM = "upstream"
DOWNSTREAM = "downstream"
STREAMS = (UPSTREAM, DOWNSTREAM)

# Past these, a value is a typo, not an experiment: a lab's waits are seconds long.
MAX_DELAY_MS = 600_000
MAX_RATE_KBPS = 10_000_000
MAX_BYTES = 1 << 40


@dataclass(frozen=True)
class ToxicType:
    """One kind of toxic: its attributes with their defaults, and what it does, in a line."""

    name: str
    attributes: dict[str, int]
    does: str
    # Attributes that must be > 0 (a bandwidth of 0 KB/s is a blackhole: say `timeout`).
    positive: tuple[str, ...] = ()


TYPES = {toxic.name: toxic for toxic in (
    ToxicType("latency", {"latency": 0, "jitter": 0},
              "delays each chunk of data by latency ms, plus or minus up to jitter ms"),
    ToxicType("bandwidth", {"rate": 0}, "lets through at most rate KB/s", positive=("rate",)),
    ToxicType("timeout", {"timeout": 0},
              "holds the data back; closes the connection after timeout ms, or, if 0, lets what waited "
              "through once removed (a blackhole)"),
    ToxicType("reset_peer", {"timeout": 0}, "resets the connection (TCP RST) after timeout ms"),
    ToxicType("slow_close", {"delay": 0}, "delays the close of the connection by delay ms"),
    ToxicType("limit_data", {"bytes": 0}, "closes the connection once bytes bytes went through",
              positive=("bytes",)),
)}
LIMITS = {"latency": MAX_DELAY_MS, "jitter": MAX_DELAY_MS, "timeout": MAX_DELAY_MS, "delay": MAX_DELAY_MS,
          "rate": MAX_RATE_KBPS, "bytes": MAX_BYTES}


class ToxicError(ValueError):
    """Bad input for a toxic: the message names the toxic, what was expected and what came."""


@dataclass
class Toxic:
    name: str
    type: str
    stream: str = DOWNSTREAM
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "stream": self.stream, "toxicity": self.toxicity,
                "attributes": dict(self.attributes)}

    def touches(self, rng: random.Random = random._inst) -> bool:
        """Whether a new connection gets this toxic: Toxiproxy draws it once per connection."""
        return self.toxicity >= 1.0 or rng.random() < self.toxicity

    def delay_s(self, rng: random.Random = random._inst) -> float:
        """A latency toxic's delay for one chunk, jitter drawn uniformly, never negative."""
        jitter = self.attributes.get("jitter", 0)
        return max(0.0, self.attributes["latency"] + rng.uniform(-jitter, jitter)) / 1000


def parse(body: object, existing: set[str] = frozenset()) -> Toxic:
    """A toxic from a Toxiproxy-shaped JSON body: {"type", "name"?, "stream"?, "toxicity"?,
    "attributes"?}. Missing attributes take their type's defaults, as in Toxiproxy."""
    if not isinstance(body, dict):
        raise ToxicError(f"a toxic is a JSON object with a type, got {body!r}")
    kind = body.get("type")
    if kind not in TYPES:
        raise ToxicError(f"unknown toxic type {kind!r}; expected one of {', '.join(TYPES)} "
                         "(`down` is the proxy's enabled: false)")
    stream = body.get("stream") or DOWNSTREAM
    if stream not in STREAMS:
        raise ToxicError(f"toxic {kind}: stream {stream!r}; expected upstream or downstream")
    name = body.get("name") or f"{kind}_{stream}"
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ToxicError(f"toxic name {name!r}: expected letters, digits, - and _")
    if name in existing:
        raise ToxicError(f"toxic {name} already exists on this proxy; remove it first or give another name")
    toxicity = body.get("toxicity", 1.0)
    if isinstance(toxicity, bool) or not isinstance(toxicity, (int, float)) or not 0 <= toxicity <= 1:
        raise ToxicError(f"toxic {name}: toxicity {toxicity!r}; expected a number from 0 to 1")
    return Toxic(name, kind, stream, float(toxicity), attributes(kind, body.get("attributes") or {}, name))


def attributes(kind: str, given: object, name: str | None = None) -> dict[str, int]:
    """The type's attributes, defaults filled in, each a whole number within its limit."""
    toxic_type = TYPES[kind]
    label = f"toxic {name or kind}"
    if not isinstance(given, dict):
        raise ToxicError(f"{label}: attributes must be an object, got {given!r}")
    unknown = set(given) - set(toxic_type.attributes)
    if unknown:
        raise ToxicError(f"{label}: unknown attribute {', '.join(sorted(unknown))}; "
                         f"a {kind} toxic has {', '.join(toxic_type.attributes)}")
    values = {**toxic_type.attributes}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ToxicError(f"{label}: {key} must be a whole number, got {value!r}")
        if not 0 <= value <= LIMITS[key]:
            raise ToxicError(f"{label}: {key} = {value:g}; expected 0 to {LIMITS[key]:,} ({_unit(key)})")
        values[key] = int(value)
    for key in toxic_type.positive:
        if values[key] <= 0:
            raise ToxicError(f"{label}: {key} must be above 0 ({_unit(key)})")
    return values


def _unit(key: str) -> str:
    return {"rate": "KB/s", "bytes": "bytes"}.get(key, "ms")
