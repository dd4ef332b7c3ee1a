"""Who is calling: an API key (compared by its sha256) or a JWT (verified against the issuer's keys), read from the
headers alone, before a byte of the body; and the tenants file that names each tenant, its keys and its limits.

The tenants file (TORCHGATE_GATEWAY_TENANTS_FILE, YAML) names each tenant's keys by their sha256, its token
buckets (requests and inputs per second, with bursts), its concurrent requests, an optional daily token quota
and the models it may use; an optional `jwt` section says which tokens to trust and which claim names the
tenant. TORCHGATE_GATEWAY_API_KEYS alone still works: one tenant, `api-keys`, without limits.
"""

import asyncio
import contextvars
import hashlib
import hmac
import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import jwt
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import ApiError

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
API_KEYS_TENANT = "api-keys"
ANONYMOUS = "anonymous"
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# Verified tokens kept until they expire, so a token is checked once, not per request.
VERIFIED_TOKENS = 10_000
# An unknown `kid` fetches the JWKS again at most this often (a stream of forged kids cannot hammer the issuer).
JWKS_REFETCH_S = 1.0
JWKS_REFRESH_S = 300.0
JWKS_FETCH_TIMEOUT_S = 2.0
# The tenant of the request being served in this context (the upstream's fair share of a pool reads it).
current_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_tenant", default=None)
_JWT_SHAPE = re.compile(rb"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class TenantSpec(BaseModel):
    """One tenant of the file."""

    model_config = ConfigDict(extra="forbid")

    keys_sha256: list[str] = Field(default_factory=list)
    requests_per_second: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    inputs_per_second: float | None = Field(None, gt=0)
    inputs_burst: int | None = Field(None, ge=1)
    max_concurrency: int | None = Field(None, ge=1)
    daily_tokens: int | None = Field(None, ge=1)
    models: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("keys_sha256")
    @classmethod
    def hex_digests(cls, digests: list[str]) -> list[str]:
        for digest in digests:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError("keys_sha256 holds hex sha256 digests of the keys (64 hex digits), never keys")
        return [digest.lower() for digest in digests]


class JwtSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jwks_file: str = ""
    jwks_url: str = ""
    issuer: str
    audience: str
    algorithms: list[Literal[ASYMMETRIC_ALGORITHMS]] = Field(min_length=1)
    tenant_claim: str = "tenant"
    leeway_s: float = Field(30.0, ge=0, le=300)

    @model_validator(mode="after")
    def one_key_source(self):
        if bool(self.jwks_file) == bool(self.jwks_url):
            raise ValueError("jwt needs exactly one of jwks_file or jwks_url")
        return self


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    jwt: JwtSpec | None = None


@dataclass(frozen=True)
class Tenant:
    """A caller the gateway knows, with its limits."""

    name: str
    spec: TenantSpec

    def may_use(self, names: set[str]) -> bool:
        return "*" in self.spec.models or bool(names & set(self.spec.models))


UNLIMITED = TenantSpec()


class JwtVerifier:
    """Verifies JWTs against the issuer's keys (a JWKS file, or a URL fetched with pyjwt's JWKS client)."""

    def __init__(self, spec: JwtSpec):
        self.spec = spec
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._fetching: asyncio.Lock | None = None
        self._background: asyncio.Future | None = None
        if spec.jwks_file:
            with open(spec.jwks_file) as handle:
                self._keys = self._parse(json.load(handle))

    @staticmethod
    def _parse(document: dict) -> dict[str, jwt.PyJWK]:
        keys = jwt.PyJWKSet.from_dict(document).keys
        return {key.key_id or "": key for key in keys}

    async def _refresh(self, reason: str) -> None:
        """Fetch the JWKS again; on failure the keys already known stay in use."""
        if not self.spec.jwks_url:
            return
        self._fetching = self._fetching or asyncio.Lock()
        async with self._fetching:
            if reason == "unknown kid" and time.monotonic() - self._fetched_at < JWKS_REFETCH_S:
                return
            self._fetched_at = time.monotonic()
            try:
                client = jwt.PyJWKClient(self.spec.jwks_url, cache_jwk_set=False, timeout=JWKS_FETCH_TIMEOUT_S)
                self._keys = self._parse(await asyncio.to_thread(client.fetch_data))
            except (jwt.PyJWKClientError, jwt.PyJWKSetError, OSError, ValueError) as error:
                log.warning("JWKS fetch failed (%s): keeping %d known keys", type(error).__name__, len(self._keys))

    async def verify(self, token: str) -> tuple[dict, float]:
        """The token's claims and its expiry (epoch seconds); ApiError 401 naming the rule that failed."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise _unauthorized("the token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.spec.algorithms:
            raise _unauthorized(f"token algorithm {str(algorithm)[:16]!r} is not allowed; allowed: "
                                f"{', '.join(self.spec.algorithms)}")
        kid = header.get("kid") or ""
        if kid not in self._keys:
            await self._refresh("unknown kid")
        elif self.spec.jwks_url and time.monotonic() - self._fetched_at > JWKS_REFRESH_S:
            self._fetched_at = time.monotonic()  # one background refresh, off this request's path
            self._background = asyncio.ensure_future(self._refresh("periodic"))
        key = self._keys.get(kid)
        if key is None:
            raise _unauthorized("the token's key id (kid) is not among the issuer's keys")
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.spec.audience,
                                issuer=self.spec.issuer, leeway=self.spec.leeway_s,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthorized("the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized(f"the token's audience is not {self.spec.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized(f"the token's issuer is not {self.spec.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as error:
            raise _unauthorized(f"the token lacks the {error.claim!r} claim") from None
        except jwt.PyJWTError:
            raise _unauthorized("the token does not verify") from None
        return claims, float(claims["exp"])


def _unauthorized(reason: str) -> ApiError:
    return ApiError(401, "authentication_error", reason)


class Directory:
    """One loaded tenants file (or the API_KEYS list): authenticates a request's Authorization header."""

    def __init__(self, tenants: dict[str, TenantSpec], verifier: JwtVerifier | None, source: str):
        self.tenants = {name: Tenant(name, spec) for name, spec in tenants.items()}
        self.verifier = verifier
        self.source = source
        self._digests = [(bytes.fromhex(digest), tenant) for tenant in self.tenants.values()
                         for digest in tenant.spec.keys_sha256]
        self._verified: OrderedDict[bytes, tuple[Tenant, float]] = OrderedDict()

    @classmethod
    def from_file(cls, path: str) -> "Directory":
        with open(path) as handle:
            document = yaml.safe_load(handle) or {}
        parsed = TenantsFile.model_validate(document)
        return cls(parsed.tenants, JwtVerifier(parsed.jwt) if parsed.jwt else None, path)

    @classmethod
    def from_api_keys(cls, keys: list[str]) -> "Directory":
        digests = [hashlib.sha256(key.encode()).hexdigest() for key in keys]
        return cls({API_KEYS_TENANT: TenantSpec(keys_sha256=digests)}, None, "TORCHGATE_GATEWAY_API_KEYS")

    async def authenticate(self, headers: list[tuple[bytes, bytes]]) -> Tenant:
        values = [value for name, value in headers if name == b"authorization"]
        if not values:
            raise _unauthorized("missing credentials: send Authorization: Bearer <API key or JWT>")
        if len(values) > 1:
            raise _unauthorized("several Authorization headers: send exactly one")
        scheme, _, token = values[0].partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            raise _unauthorized("send Authorization: Bearer <API key or JWT>")
        if token != token.strip():
            raise _unauthorized("the credential has leading or trailing whitespace (a newline from a file?)")
        if self.verifier is not None and _JWT_SHAPE.match(token):
            return await self._tenant_of_jwt(token)
        digest = hashlib.sha256(token).digest()
        found = None
        for known, tenant in self._digests:  # every digest compared, in constant time each
            if hmac.compare_digest(digest, known):
                found = tenant
        if found is None:
            raise _unauthorized("invalid API key")
        return found

    async def _tenant_of_jwt(self, token: bytes) -> Tenant:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        claims, expires = await self.verifier.verify(token.decode("ascii"))
        name = claims.get(self.verifier.spec.tenant_claim)
        tenant = self.tenants.get(name) if isinstance(name, str) else None
        tenant = tenant or self.tenants.get(DEFAULT_TENANT)
        if tenant is None:
            raise ApiError(403, "permission_denied", f"the token's {self.verifier.spec.tenant_claim!r} claim names "
                                                     "no tenant of this gateway")
        self._verified[token] = (tenant, expires + self.verifier.spec.leeway_s)
        while len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return tenant
