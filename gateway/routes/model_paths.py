"""Model names in the paths of the protocols that carry them there (TorchServe, KServe, Open Inference).

Served ids hold slashes (`sentence-transformers/all-MiniLM-L6-v2`). TorchServe's and KServe's clients send such an
id percent-encoded in one path segment, so the name is read from the raw path, where `%2F` is still a slash
inside a segment and a plain `/` separates TorchServe's version. The Open Inference Protocol's paths end in
fixed parts (`/infer`, `/ready`, `/versions/{v}`), so its names match the decoded path whole.
"""

from urllib.parse import quote, unquote

from fastapi import Request
from starlette.convertors import Convertor, register_url_convertor

from gateway.errors import ApiError
from gateway.rollout import PIN_SEPARATOR


class ModelName(Convertor):
    """A model name or version in a path: anything, slashes and line breaks included (`:path` stops at a line
    break, which would make such a name a bare 404 instead of this protocol's)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model_name", ModelName())


def raw_model_name(request: Request, prefix: str, suffix: str = "", versioned: bool = True) -> str:
    """The model named between `prefix` and `suffix` of the raw path, each segment percent-decoded; with
    `versioned`, a second segment is a version of it (`model@version`, as the routing file pins one)."""
    raw = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
    named = raw.decode("latin-1")[len(prefix):len(raw) - len(suffix)]
    segments = [unquote(segment) for segment in named.split("/")] if versioned else [unquote(named)]
    if not all(segments) or len(segments) > 2:
        raise ApiError(404, "model_not_found", "name the model as one path segment (percent-encode its slashes as "
                                               "%2F), optionally followed by /{version}")
    return PIN_SEPARATOR.join(segments)
