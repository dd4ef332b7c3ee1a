"""A real DNS server on loopback whose A records a test edits live, as a headless Service's change with its pods."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

TTL_S = 1


class Zone(BaseResolver):
    """Answers A queries for the names it holds (TTL 1 s); other types of a held name get an empty answer."""

    def __init__(self):
        self._records: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.queries = 0

    def set(self, name: str, addresses: list[str]) -> None:
        with self._lock:
            self._records[name.rstrip(".") + "."] = list(addresses)

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname)
        with self._lock:
            self.queries += 1
            addresses = self._records.get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            for address in addresses:
                reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=TTL_S))
        return reply


@contextmanager
def dns_server() -> Iterator[tuple[Zone, int]]:
    """A zone served over UDP and TCP on one free 127.0.0.1 port; yields (zone, port)."""
    zone = Zone()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    udp = DNSServer(zone, address="127.0.0.1", port=0, logger=quiet)
    port = udp.server.server_address[1]
    tcp = DNSServer(zone, address="127.0.0.1", port=port, tcp=True, logger=quiet)
    udp.start_thread()
    tcp.start_thread()
    try:
        yield zone, port
    finally:
        udp.stop()
        tcp.stop()
