"""The gateway's client of the worker services: one `Upstream` per pool (gateway/registry.py)."""

from gateway.upstream.channel import grpc_target
from gateway.upstream.client import Upstream

__all__ = ["Upstream", "grpc_target"]
