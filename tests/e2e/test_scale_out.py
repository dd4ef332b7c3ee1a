"""Scale-out as on Kubernetes: a headless Service simulated by a real DNS server on loopback (A records edited
live, TTL 1 s) and embedding replicas on 127.0.0.x, one port, as pods behind one name."""

import asyncio
import signal
import time
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.dns import dns_server
from tests.e2e.processes import Service, closed_loop, report, start_gateway, start_worker, wait_serving
from tests.network import released_port

NAME = "embedding.scale-out.test"
# Connections age out fast here so the test need not wait the default 30 s; the mechanism is the same.
CONNECTION_AGE_S = "3"
JOIN_WITHIN_S = 45
RECOVER_WITHIN_S = 5
CONCURRENCY = 8
DEADLINE_S = 10.0


class Replicas:
    """Embedding workers that all listen on one port, each on its own loopback address, and the zone naming them."""

    def __init__(self, zone, logs):
        self.zone, self.logs = zone, logs
        self.port = released_port("127.0.0.2")
        self.metrics_port = released_port("127.0.0.2")
        self.running: dict[str, Service] = {}
        self._next_host = 2

    def start(self, count: int) -> list[str]:
        """Start `count` replicas, wait until each is SERVING, then publish the new set in DNS."""
        hosts = [f"127.0.0.{self._next_host + i}" for i in range(count)]
        self._next_host += count
        for host in hosts:
            # torch: these tests time the gateway finding replicas, and a replacement's OpenVINO self-check would
            # lengthen the outage gRPC's DNS resolver backs off over before the replacement serves.
            self.running[host], _ = start_worker(
                self.logs, self.port, host, metrics_port=str(self.metrics_port), max_connection_age_s=CONNECTION_AGE_S,
                max_connection_age_grace_s=CONNECTION_AGE_S, grace_period_s="5", inference_backend="torch")
        for host in hosts:
            wait_serving(self.port, host=host)
        self.publish()
        return hosts

    def publish(self) -> None:
        self.zone.set(NAME, [host for host, service in self.running.items() if service.process.poll() is None])

    def stop(self, host: str, signum: int) -> Service:
        service = self.running[host]
        service.signal(signum)
        return service

    def served(self, host: str) -> int:
        """Embed calls the replica answered OK, from its own Prometheus endpoint."""
        text = httpx.get(f"http://{host}:{self.metrics_port}/metrics", timeout=5).text
        return int(sum(sample.value for family in text_string_to_metric_families(text)
                       if family.name == "torchgate_worker_requests"
                       for sample in family.samples
                       if sample.name.endswith("_total") and sample.labels["method"].endswith("/Embed")
                       and sample.labels["code"] == "OK"))

    def stop_all(self) -> None:
        for service in self.running.values():
            service.stop()


@pytest.fixture
def cluster(tmp_path):
    with dns_server() as (zone, dns_port):
        replicas = Replicas(zone, tmp_path)
        gateway: Service | None = None
        try:
            replicas.start(2)
            gateway, url = start_gateway(f"dns://127.0.0.1:{dns_port}/{NAME}:{replicas.port}", tmp_path)
            yield replicas, url
        finally:
            if gateway:
                gateway.stop()
            replicas.stop_all()


async def until(condition, timeout: float, interval: float = 0.25) -> float:
    """Seconds until `condition()` holds; fails the test after `timeout`."""
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        assert time.monotonic() - started < timeout, f"not within {timeout}s"
        await asyncio.sleep(interval)
    return time.monotonic() - started


def embeds(url: str) -> bool:
    """Whether a replica embeds (past the response cache, which could answer this repeated text itself)."""
    try:
        return httpx.post(f"{url}/v1/embeddings", json={"input": "are you back?"}, timeout=3,
                          headers={"X-Request-Timeout": "2", "Cache-Control": "no-cache"}).status_code == 200
    except httpx.TransportError:
        return False


def breaker(url: str) -> str:
    return httpx.get(f"{url}/health/ready", timeout=5).json()["upstreams"]["embedding"]["breaker"]


async def test_load_spreads_over_replicas_and_one_that_joins_takes_traffic(cluster):
    replicas, url = cluster
    first, second = replicas.running
    load = asyncio.create_task(closed_loop(url, CONCURRENCY, 1e9, DEADLINE_S))
    try:
        await until(lambda: replicas.served(first) > 20 and replicas.served(second) > 20, 20)
        (joined,) = await asyncio.to_thread(replicas.start, 1)
        joined_after = await until(lambda: replicas.served(joined) > 0, JOIN_WITHIN_S)
        shares = {host: replicas.served(host) for host in replicas.running}
    finally:
        load.cancel()
    answers = await asyncio.gather(load, return_exceptions=True)
    assert isinstance(answers[0], asyncio.CancelledError)
    report("replica joins", joined_after_s=round(joined_after, 1), served=shares)


async def test_sigterm_and_kill_9_of_replicas_under_load_lose_no_request(cluster):
    replicas, url = cluster
    draining, killed = replicas.running
    (survivor,) = await asyncio.to_thread(replicas.start, 1)
    await until(lambda: embeds(url) and replicas.served(survivor) > 0, JOIN_WITHIN_S)
    load = asyncio.create_task(closed_loop(url, CONCURRENCY, 10, DEADLINE_S))
    await asyncio.sleep(2)
    replicas.stop(draining, signal.SIGTERM)
    replicas.publish()
    await asyncio.sleep(2)
    replicas.stop(killed, signal.SIGKILL).wait(5)
    replicas.publish()
    answers = await load
    statuses = Counter(answer.status for answer in answers)
    assert statuses == Counter({200: len(answers)}), statuses
    assert replicas.running[draining].wait(15) == 0, "a drained replica exits cleanly"
    report("replicas lost under load", sent=len(answers), ok=statuses[200])


async def test_after_every_replica_died_a_replacement_serves_within_seconds_of_serving(cluster):
    replicas, url = cluster
    assert await until(lambda: embeds(url), 10) >= 0
    for host in list(replicas.running):
        replicas.stop(host, signal.SIGKILL).wait(5)
    replicas.publish()
    await until(lambda: not embeds(url) and breaker(url) == "open", 30, interval=0)
    replacement = await asyncio.to_thread(replicas.start, 1)
    serving_again = await until(lambda: embeds(url), RECOVER_WITHIN_S, interval=0.1)
    assert breaker(url) == "closed"
    report("replacement", replica=replacement, serving_again_after_s=round(serving_again, 2),
           breaker_reset_s=60)
