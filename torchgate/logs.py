"""Structured logging for worker and gateway processes."""

import json
import logging
import sys
import time

from opentelemetry import trace

from torchgate.telemetry import request_id

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the request's id and trace id, extra fields,
    exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(request_context())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def request_context() -> dict[str, str]:
    """request_id and trace_id of the request being served in this context, those that are known."""
    context = {}
    if rid := request_id.get():
        context["request_id"] = rid
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        context["trace_id"] = format(span.trace_id, "032x")
    return context


class TextFormatter(logging.Formatter):
    """Human-readable lines, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id.get()
        return f"{line} [request_id={rid}]" if rid else line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger once, before model code is imported, so import failures are logged."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
