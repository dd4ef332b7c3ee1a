"""Tenants at the edge, in three rooms: who is calling (identity.py), whether their limits let a request in
(limits.py) and what they used (usage.py). `TenantGate` is the one entry to all three.

Authentication reads headers only, before a byte of the body. Limits are taken once a request's inputs are
counted, before any upstream call: by the task pipeline for a task's call (gateway/pipeline.py), by the edge for
every other request. See docs/architecture.md, "The call pipeline".
"""

from gateway.reloading import ConfigFile
from gateway.tenants.identity import (
    ANONYMOUS,
    JWKS_REFETCH_S,
    UNLIMITED,
    Directory,
    Tenant,
    current_tenant,
)
from gateway.tenants.limits import Admission, Limiter
from gateway.tenants.usage import UsageLedger

__all__ = ["ANONYMOUS", "JWKS_REFETCH_S", "Admission", "Directory", "Limiter", "Tenant", "TenantGate",
           "current_tenant"]


class TenantGate:
    """The edge's one entry to tenants: authenticate, admit, account. `directory` is a Directory, or the
    tenants file's (gateway/reloading.py reloads it), or None when every caller is anonymous."""

    def __init__(self, directory: "Directory | ConfigFile[Directory] | None", limiter: Limiter):
        self._directory = directory
        self.limiter = limiter
        self.ledger = UsageLedger(limiter)
        self.anonymous = Tenant(ANONYMOUS, UNLIMITED)

    @property
    def directory(self) -> Directory | None:
        return self._directory.value if isinstance(self._directory, ConfigFile) else self._directory

    @property
    def file(self) -> "ConfigFile[Directory] | None":
        return self._directory if isinstance(self._directory, ConfigFile) else None

    @property
    def required(self) -> bool:
        return self._directory is not None

    async def authenticate(self, headers) -> Tenant:
        directory = self.directory
        if directory is None:
            return self.anonymous
        return await directory.authenticate(headers)

    def named(self, name: str) -> Tenant | None:
        """The tenant of that name now (a batch job runs as the tenant that created it), or None when the
        tenants file no longer has it."""
        directory = self.directory
        if directory is None:
            return self.anonymous if name == ANONYMOUS else None
        return directory.tenants.get(name)

    async def admit(self, tenant: Tenant, inputs: int, route: str, background: bool = False) -> Admission:
        return await self.limiter.admit(tenant, inputs, route, background)

    def record(self, tenant: Tenant, route: str, model: str, inputs: int, tokens: int, status: int) -> None:
        self.ledger.record(tenant, route, model, inputs, tokens, status)

    async def usage(self, tenant: Tenant) -> dict:
        return await self.ledger.usage(tenant)
