"""Check a worker with the standard gRPC health protocol: `python -m torchgate.health_probe HOST:PORT [SERVICE]`.

Exit 0 when SERVING, 1 otherwise. Used by scripts/, Docker healthchecks and tests.
"""

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from torchgate.tls import channel_credentials


def check(address: str, service: str = "", timeout: float = 2.0,
          credentials: grpc.ChannelCredentials | None = None, server_name: str = "") -> str:
    """Return the health status name (SERVING, NOT_SERVING, ...) or UNREACHABLE."""
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, credentials, options=options)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return "UNKNOWN_SERVICE" if error.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("address")
    parser.add_argument("service", nargs="?", default="")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--ca", default="", help="CA (PEM) of the worker's certificate: probe over TLS")
    parser.add_argument("--cert", default="", help="client certificate (PEM) for mTLS")
    parser.add_argument("--key", default="", help="client private key (PEM) for mTLS")
    parser.add_argument("--server-name", default="", help="name the worker's certificate carries")
    args = parser.parse_args()
    credentials = channel_credentials(args.ca, args.cert, args.key) if args.ca else None
    status = check(args.address, args.service, args.timeout, credentials, args.server_name)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
