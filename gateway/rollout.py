"""Model versions behind aliases: weighted, sticky per caller, pinned on request, changed without a restart.

The routing file (TORCHGATE_GATEWAY_ROUTES_FILE, YAML) names aliases, each a list of versions: a model the
registry routes (a served id or its last path part) and a weight. A request whose `model` is an alias gets
one version, chosen by weighted rendezvous hashing of the caller (the body's `user`, else the tenant, else
at random): a caller keeps its version across requests, and a weight moved by a small step moves only the
callers it must. `alias@model` or the X-Torchgate-Version header pins a version. An alias may name a shadow:
a fraction of its requests is sent again to that model after the primary answered, in the background
(`Shadows`), and only the agreement, latency and errors are kept. The file reloads on SIGHUP or when it
changes (gateway/reloading.py).
"""

import asyncio
import hashlib
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.contract import Name, clip
from gateway.errors import ApiError
from gateway.metrics import SHADOW_AGREEMENT, SHADOW_CALLS, SHADOW_SECONDS

T = TypeVar("T")

PIN_SEPARATOR = "@"
VERSION_HEADER = "X-Torchgate-Version"


class Version(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Name = Field(min_length=1)
    weight: float = Field(ge=0)


class Shadow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Name = Field(min_length=1)
    fraction: float = Field(gt=0, le=1)


class Alias(BaseModel):
    model_config = ConfigDict(extra="forbid")

    versions: list[Version] = Field(min_length=1)
    shadow: Shadow | None = None

    @model_validator(mode="after")
    def routable(self):
        if sum(version.weight for version in self.versions) <= 0:
            raise ValueError("the weights of an alias's versions sum to 0: give at least one a weight")
        models = [version.model for version in self.versions]
        if len(set(models)) != len(models):
            raise ValueError("an alias names each model once")
        return self

    def models(self) -> list[str]:
        """Every model the alias sends requests to: its versions, then its shadow."""
        return [version.model for version in self.versions] + ([self.shadow.model] if self.shadow else [])


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aliases: dict[Name, Alias] = Field(default_factory=dict)

    @model_validator(mode="after")
    def no_alias_of_aliases(self):
        for name, alias in self.aliases.items():
            if PIN_SEPARATOR in name:
                raise ValueError(f"alias {name!r}: {PIN_SEPARATOR!r} is for pinning a version; rename it")
            for model in alias.models():
                if model in self.aliases:
                    raise ValueError(f"alias {name!r} names the alias {model!r}: versions and shadows are served "
                                     "models, never aliases (no loops)")
        return self


def routes_loader(served: Callable[[], set[str] | None]) -> Callable[[str], "Routing"]:
    """Reads a routing file; `served()` is every model name the registry routes, or None while some pool has
    not said yet (then names are checked by the requests themselves)."""

    def load(path: str) -> Routing:
        with open(path) as handle:
            routes = RoutesFile.model_validate(yaml.safe_load(handle) or {})
        names = served()
        if names is not None:
            for alias_name, alias in routes.aliases.items():
                if alias_name in names:
                    raise ValueError(f"alias {alias_name!r} is also a served model's name: rename the alias")
                unknown = [model for model in alias.models() if model not in names]
                if unknown:
                    raise ValueError(f"alias {alias_name!r} names models nobody serves: {', '.join(unknown)}")
        return Routing(routes)

    return load


def _score(caller: str, model: str, weight: float) -> float:
    """Weighted rendezvous: the version with the smallest -ln(u)/weight wins, u uniform per (caller, model)."""
    digest = hashlib.blake2b(f"{caller}\0{model}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)
    return -math.log(u) / weight


class Routing:
    """The aliases of one routing file (or none)."""

    def __init__(self, routes: RoutesFile | None = None):
        self.aliases = routes.aliases if routes else {}

    def shadow_of(self, alias: str) -> Shadow | None:
        """The alias's shadow, when this request is one of the fraction it mirrors."""
        shadow = self.aliases[alias].shadow
        return shadow if shadow is not None and secrets.randbelow(1_000_000) < shadow.fraction * 1_000_000 else None

    def resolve(self, requested: str | None, caller: str | None, pinned: str | None = None) -> tuple[str | None,
                                                                                                  str | None]:
        """(the model to route, the alias it came through): an alias becomes one of its versions, anything
        else passes unchanged. 404 for a pin that is not one of the alias's versions."""
        if not requested:
            return requested, None
        name, separator, pin = requested.partition(PIN_SEPARATOR)
        alias = self.aliases.get(name)
        if alias is None:
            return requested, None
        pin = pin if separator else pinned
        if pin:
            if pin not in {version.model for version in alias.versions}:
                raise ApiError(404, "model_not_found", f"{clip(pin)!r} is not a version of {name!r}; its versions: "
                               f"{', '.join(repr(version.model) for version in alias.versions)}")
            return pin, name
        key = caller or secrets.token_hex(8)
        chosen = min((version for version in alias.versions if version.weight > 0),
                     key=lambda version: _score(key, version.model, version.weight))
        return chosen.model, name


# Shadow calls in flight per gateway process; past this a mirrored request is dropped (and counted).
MAX_SHADOWS = 32


class Shadows:
    """Mirrors of answered requests to an alias's shadow model: never awaited by the client, never on the
    primary's pool; their agreement with the primary, latency and errors are exported."""

    def __init__(self):
        self._running: set[asyncio.Task] = set()

    def mirror(self, alias: str, model: str, run: Callable[[], Awaitable[T]], agree: Callable[[T], float | None]):
        if len(self._running) >= MAX_SHADOWS:
            SHADOW_CALLS.labels(alias, model, "dropped").inc()
            return
        task = asyncio.ensure_future(self._shadow(alias, model, run, agree))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _shadow(alias: str, model: str, run, agree) -> None:
        started = time.perf_counter()
        try:
            result = await run()
        except Exception as error:  # a shadow's failure is only ever a metric
            SHADOW_CALLS.labels(alias, model, getattr(error, "type", "error")).inc()
            return
        SHADOW_SECONDS.labels(alias, model).observe(time.perf_counter() - started)
        SHADOW_CALLS.labels(alias, model, "ok").inc()
        agreement = agree(result)
        if agreement is not None:
            SHADOW_AGREEMENT.labels(alias, model).observe(agreement)

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def vectors_agreement(primary: np.ndarray, shadow: np.ndarray) -> float | None:
    """Mean cosine between the two models' vectors when their dimensions match; else the Spearman rank
    correlation of the similarities among the request's inputs (None with fewer than three inputs)."""
    if primary.shape == shadow.shape:
        return float(np.mean(np.sum(primary * shadow, axis=1)))
    if len(primary) < 3:
        return None
    upper = np.triu_indices(len(primary), 1)
    first, second = (_ranks((vectors @ vectors.T)[upper]) for vectors in (primary, shadow))
    return float(np.corrcoef(first, second)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)
