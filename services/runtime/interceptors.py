"""Server interceptors: domain errors to status codes, request metrics, the request id and access logs, in one
place."""

import asyncio
import logging
import time

import grpc
from google.protobuf.message import DecodeError

from services.runtime.errors import InvalidInput, WorkerError
from services.runtime.metrics import IN_FLIGHT, REQUEST_SECONDS, REQUESTS
from torchgate.telemetry import REQUEST_ID_HEADER, accepted_request_id, request_id

log = logging.getLogger("torchgate.access")

# Status details travel in an HTTP/2 header: a message must never outgrow it, whatever it quotes.
MAX_DETAILS_CHARS = 1024
REASON_KEY = "torchgate-error"


class StatusInterceptor(grpc.aio.ServerInterceptor):
    """Turns WorkerError into its status code, anything else into INTERNAL with a generic message.

    Requests are parsed here rather than by gRPC, so a body that is not a valid message (invalid UTF-8 in
    a string field, say) is the caller's INVALID_ARGUMENT instead of gRPC's generic INTERNAL.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary
        parse = handler.request_deserializer

        in_flight = IN_FLIGHT.labels(method)

        async def behaviour(raw: bytes, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            # A call the gateway merged from several requests names each of them.
            offered = [value for key, value in context.invocation_metadata() or () if key == REQUEST_ID_HEADER]
            request_id.set(",".join(map(accepted_request_id, offered)) or accepted_request_id(None))
            in_flight.inc()
            try:
                try:
                    request = parse(raw)
                except DecodeError:
                    raise InvalidInput("the request is not a valid protobuf message for this method "
                                       "(strings must be valid UTF-8)") from None
                return await inner(request, context)
            except WorkerError as error:
                code = error.code
                await context.abort(code, str(error)[:MAX_DETAILS_CHARS],
                                    ((REASON_KEY, error.reason),) if error.reason else ())
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", method)
                await context.abort(code, "internal error")
            finally:
                in_flight.dec()
                elapsed = time.perf_counter() - started
                REQUESTS.labels(method, code.name).inc()
                REQUEST_SECONDS.labels(method).observe(elapsed)
                log.log(logging.DEBUG if code is grpc.StatusCode.OK else logging.INFO, "rpc %s -> %s in %.1f ms",
                        method, code.name, elapsed * 1000)

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )
