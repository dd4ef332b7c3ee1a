"""Server interceptors: domain errors to status codes, request metrics and access logs, in one place."""

import logging
import time

import grpc

from services.runtime.errors import WorkerError
from services.runtime.metrics import REQUEST_SECONDS, REQUESTS

log = logging.getLogger("torchgate.access")


class StatusInterceptor(grpc.aio.ServerInterceptor):
    """Turns WorkerError into its status code, anything else into INTERNAL with a generic message."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        async def behaviour(request, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except WorkerError as error:
                code = error.code
                await context.abort(code, str(error))
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", method)
                await context.abort(code, "internal error")
            finally:
                elapsed = time.perf_counter() - started
                REQUESTS.labels(method, code.name).inc()
                REQUEST_SECONDS.labels(method).observe(elapsed)
                if code is not grpc.StatusCode.OK:
                    log.info("rpc %s -> %s in %.1f ms", method, code.name, elapsed * 1000)

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
