"""The gRPC channel to one worker service: its target URI and the options that make gRPC retry, balance,
health-check and re-resolve (docs/architecture.md, "Upstreams")."""

import ipaddress
import json
from typing import Any

from gateway.config import UpstreamSettings

# gRPC's default of 30 s between DNS look-ups would leave a replaced replica unreachable for up to 30 s.
DNS_MIN_INTERVAL_MS = 1_000
# gRPC target URI schemes passed to the channel as they are (dns://AUTHORITY/name:port, ipv4:, unix:, ...).
TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def grpc_target(addresses: str) -> str:
    """A gRPC target URI as given; else `ipv4:`/`ipv6:` for a list of IP literals, `dns:///` for one host name."""
    addresses = addresses.strip()
    if addresses.startswith(TARGET_SCHEMES) and not addresses.partition(":")[2].isdigit():
        return addresses
    parts = [part.strip() for part in addresses.split(",") if part.strip()]
    if not parts:
        raise ValueError("an upstream needs at least one address")
    hosts = [part.rsplit(":", 1)[0].strip("[]") for part in parts]
    try:
        versions = {ipaddress.ip_address(host).version for host in hosts}
    except ValueError:
        if len(parts) == 1:
            return f"dns:///{parts[0]}"
        raise ValueError(
            f"{addresses!r}: several replicas must be IP:port literals; for DNS use one name that resolves "
            "to every replica (a headless Service)"
        ) from None
    if len(versions) > 1:
        raise ValueError(f"{addresses!r}: mix of IPv4 and IPv6 replicas")
    return f"ipv{versions.pop()}:{','.join(parts)}"


def channel_options(service: str, settings: UpstreamSettings) -> list[tuple[str, Any]]:
    """Retries, round-robin over the replicas that report SERVING, keepalive, fast reconnects and re-resolution.

    `healthCheckConfig` makes the channel watch every replica's gRPC health: one that is loading or draining
    (NOT_SERVING) gets no new calls. Workers age their connections out (max_connection_age), and each reconnect
    re-resolves a DNS target, so replicas that join a headless Service are found.
    """
    service_config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": service},
        "methodConfig": [{
            "name": [{"service": service}],
            "retryPolicy": {
                "maxAttempts": settings.retry_attempts,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }],
    }
    return [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_INTERVAL_MS),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
