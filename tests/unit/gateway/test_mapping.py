import grpc
import pytest

from gateway.errors import error_from_grpc
from gateway.upstream import grpc_target


@pytest.mark.parametrize(
    ("code", "status", "type_"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error"),
        (grpc.StatusCode.NOT_FOUND, 404, "not_found_error"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "overloaded"),
        (grpc.StatusCode.UNAVAILABLE, 503, "upstream_unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout"),
        (grpc.StatusCode.INTERNAL, 502, "upstream_error"),
        (grpc.StatusCode.UNKNOWN, 502, "upstream_error"),
    ],
)
def test_grpc_status_maps_to_http(code, status, type_):
    error = error_from_grpc(code, "worker detail", "embedding")
    assert (error.status, error.type, error.upstream) == (status, type_, "embedding")


def test_only_client_errors_pass_the_workers_message_through():
    assert error_from_grpc(grpc.StatusCode.INVALID_ARGUMENT, "texts[0] is empty", "e").message == "texts[0] is empty"
    assert "secret" not in error_from_grpc(grpc.StatusCode.INTERNAL, "secret stack", "e").message


def test_overload_and_unavailability_carry_retry_after():
    assert error_from_grpc(grpc.StatusCode.RESOURCE_EXHAUSTED, "", "e").response().headers["Retry-After"] == "1"
    assert error_from_grpc(grpc.StatusCode.UNAVAILABLE, "", "e").response().headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    ("addresses", "target"),
    [
        ("127.0.0.1:50052", "ipv4:127.0.0.1:50052"),
        ("10.0.0.1:1, 10.0.0.2:1", "ipv4:10.0.0.1:1,10.0.0.2:1"),
        ("[::1]:50052", "ipv6:[::1]:50052"),
        ("embedding.torchgate.svc:50052", "dns:///embedding.torchgate.svc:50052"),
        ("dns://127.0.0.1:5053/embedding.mesh.test:50062", "dns://127.0.0.1:5053/embedding.mesh.test:50062"),
        ("dns:///embedding.torchgate.svc:50052", "dns:///embedding.torchgate.svc:50052"),
        ("ipv4:10.0.0.1:1,10.0.0.2:1", "ipv4:10.0.0.1:1,10.0.0.2:1"),
        ("ipv6:[::1]:50052", "ipv6:[::1]:50052"),
        ("unix:/run/torchgate/embedding.sock", "unix:/run/torchgate/embedding.sock"),
        ("unix:50052", "dns:///unix:50052"),
    ],
)
def test_addresses_become_grpc_targets(addresses, target):
    assert grpc_target(addresses) == target


def test_several_dns_names_are_refused_with_advice():
    with pytest.raises(ValueError, match="headless Service"):
        grpc_target("a.svc:1,b.svc:1")
