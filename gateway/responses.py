"""JSON responses serialised by orjson (numpy arrays included, so vectors never become Python lists)."""

import orjson
from starlette import responses


class JSONResponse(responses.JSONResponse):
    """A JSON response (FastAPI documents it as one) rendered by orjson."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
