"""TLS credentials for secure mode (gateway <-> workers), read from PEM files named in settings.

A worker's server credentials follow their files: gRPC asks for the certificate at each new handshake, and a
changed file (a rotation by scripts/certs.sh --rotate, cert-manager or a Kubernetes Secret update) is read then,
so new connections get the new certificate while open ones finish on theirs (the gateway reconnects every
MAX_CONNECTION_AGE_S, so a rotation reaches it within that). The gateway follows its client certificate's file
the same way: a new channel per upstream takes the new calls while the old one finishes its own. The gateway and
the workers export when the certificates they use expire (torchgate_certificate_expiry_timestamp_seconds).
"""

import logging
import os
import ssl
from pathlib import Path

import grpc
from cryptography import x509
from prometheus_client import Gauge

log = logging.getLogger(__name__)

CERTIFICATE_EXPIRY = Gauge("torchgate_certificate_expiry_timestamp_seconds", "When a certificate this process "
                           "serves or presents expires (Unix time), as its file reads now",
                           ["certificate", "path"], multiprocess_mode="livemax")


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def certificate_facts(pem: bytes) -> tuple[float, str]:
    """The first certificate's expiry (Unix time) and serial (hex) in a PEM file's bytes."""
    certificate = x509.load_pem_x509_certificate(pem)
    return certificate.not_valid_after_utc.timestamp(), format(certificate.serial_number, "x")


def export_expiry(role: str, path: str) -> str:
    """Publish the expiry of the certificate in `path` under `role` (server, client, ca); returns its serial."""
    expires, serial = certificate_facts(Path(path).read_bytes())
    CERTIFICATE_EXPIRY.labels(role, path).set(expires)
    return serial


def check_pair(cert: str, key: str) -> None:
    """Raise unless `key` is the private key of `cert`: a pair caught half-written during a rotation (the new
    certificate beside the old key) must not be used."""
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)


def _stamp(paths: list[str]) -> tuple:
    """What changes when any of the files is replaced or rewritten (a rename onto it included)."""
    stamps = []
    for path in paths:
        status = os.stat(path)
        stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
    return tuple(stamps)


class ServerCertificates:
    """A worker's certificate, key and client CA, read again at the first handshake after any of them changed."""

    def __init__(self, cert: str, key: str, client_ca: str = ""):
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.paths = [path for path in (cert, key, client_ca) if path]
        self.stamp = _stamp(self.paths)
        self.initial = self._configuration()
        self.serial = self._export()

    def _configuration(self):
        check_pair(self.cert, self.key)
        return grpc.ssl_server_certificate_configuration([(_read(self.key), _read(self.cert))],
                                                         root_certificates=_read(self.client_ca))

    def _export(self) -> str:
        if self.client_ca:
            export_expiry("ca", self.client_ca)
        return export_expiry("server", self.cert)

    def fetch(self):
        """gRPC's certificate fetcher, called at each new handshake: a new configuration when the files changed,
        else None (keep serving the current one). A rotation that cannot be read keeps the current one."""
        try:
            stamp = _stamp(self.paths)
            if stamp == self.stamp:
                return None
            configuration = self._configuration()
            serial = self._export()
        except (OSError, ValueError, ssl.SSLError) as error:
            log.warning("certificate files changed but cannot be used yet; serving the current ones",
                        extra={"cert": self.cert, "error": str(error)})
            return None
        self.stamp, previous, self.serial = stamp, self.serial, serial
        log.info("certificate reloaded", extra={"cert": self.cert, "serial": serial, "previous_serial": previous})
        return configuration


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """TLS for a worker; with `client_ca` it is mTLS: only clients holding a certificate it signed get in. The files
    are followed: a rotation reaches the next connection without a restart."""
    certificates = ServerCertificates(cert, key, client_ca)
    return grpc.dynamic_ssl_server_credentials(certificates.initial, certificates.fetch,
                                               require_client_authentication=bool(client_ca))


def channel_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """TLS for a client trusting `ca`; `cert` and `key` present a client certificate (mTLS)."""
    return grpc.ssl_channel_credentials(root_certificates=_read(ca), private_key=_read(key),
                                        certificate_chain=_read(cert))


def client_credentials(settings) -> grpc.ChannelCredentials:
    """The gateway's TLS to the workers (`tls_ca`; with `tls_cert` and `tls_key`, mTLS), its files checked and their
    expiry exported; read again by the gateway when the certificate file changes."""
    if settings.tls_cert:
        check_pair(settings.tls_cert, settings.tls_key)
        export_expiry("client", settings.tls_cert)
    export_expiry("ca", settings.tls_ca)
    return channel_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)
