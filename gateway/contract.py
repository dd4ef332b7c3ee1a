"""The input contract of every route, written once: field types, the workers' published limits, and the schema.

Static constraints (types, non-blank, valid Unicode, ranges that fit the proto fields, bounded names) live
in the pydantic types below, so validation and /openapi.json agree by construction. The limits a worker
publishes in its `Info` (items per request, characters per item, dimension, model id) are learned at run
time by each `Upstream`; `enforce_texts` applies them before anything is forwarded, and `publish_limits`
writes the same numbers into the OpenAPI schema at the fields tagged with `LIMIT_KEY`.
"""

import copy
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from gateway.errors import AS_TEXTS, AS_TOKEN_IDS, ApiError
from torchgate.models import model_names

UINT32_MAX = 2**32 - 1
MAX_TIMEOUT_S = 600
# Below this a deadline cannot cover even the network hop; such requests are refused, not attempted.
MIN_TIMEOUT_S = 0.01
MAX_NAME_CHARS = 256
# A text must hold something to embed: one character outside Python's whitespace (str.isspace, the set the
# workers' `text.strip()` removes), spelled out so that every regex dialect reads the schema alike.
NON_BLANK = r"[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# Where a worker-published limit applies: "<upstream>.<limit>", replaced by the number in the schema.
LIMIT_KEY = "x-torchgate-limit"
_LIMIT_KEYWORDS = {"max_items": "maxItems", "max_chars": "maxLength", "dimension": "maximum",
                   "max_token_id": "maximum", "prompt_names": "enum", "max_tokens": "maximum",
                  "max_labels": "maxItems"}


def _valid_unicode(value: str) -> str:
    """JSON may carry lone UTF-16 surrogates (\\ud800); they are not text and cannot cross gRPC."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"invalid Unicode at character {error.start} (a lone surrogate): send valid UTF-16 "
                         "pairs or UTF-8") from None
    return value


def valid_text(text: str) -> str:
    """The Unicode rule for a text a protocol's own decoding took from the body: a 400 when it breaks it."""
    try:
        return _valid_unicode(text)
    except ValueError as error:
        raise ApiError(400, "invalid_request_error", str(error)) from None


def _integral(value: Any) -> Any:
    """JSON Schema counts 69.0 as an integer; so does the contract (strings and booleans stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(minimum: int, maximum: int) -> Any:
    """An integer in [minimum, maximum]; the bounds stay plain JSON Schema keywords."""
    return Annotated[int, Field(ge=minimum, le=maximum), BeforeValidator(_integral)]

# Constraints come before the Unicode check so that they stay plain JSON Schema keywords.
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS), AfterValidator(_valid_unicode)]


def text_type(upstream: str, description: str = "A non-blank text.") -> Any:
    """One input text for `upstream`: non-blank, valid Unicode, at most the worker's max_chars_per_item."""
    return Annotated[str, Field(min_length=1, pattern=NON_BLANK, description=description,
                                json_schema_extra={LIMIT_KEY: f"{upstream}.max_chars"}),
                     AfterValidator(_valid_unicode)]


def label_text_type(upstream: str, description: str) -> Any:
    """A label's name, description or example for `upstream`: blank passes the schema, for the task to refuse
    with a 400 that names the label (gateway/tasks/classify.py)."""
    return Annotated[str, Field(description=description, json_schema_extra={LIMIT_KEY: f"{upstream}.max_chars"}),
                     AfterValidator(_valid_unicode)]


def texts_type(upstream: str) -> Any:
    """A non-empty list of texts for `upstream`, at most the worker's max_items_per_request."""
    return Annotated[list[text_type(upstream)], Field(min_length=1,
                                                      json_schema_extra={LIMIT_KEY: f"{upstream}.max_items"})]


# JSON numbers that can be token ids (JSON Schema counts 7.0 as an integer); a list starting with one is ids.
_NUMBERS = (int, float)


def _one_or_many_token_ids(value: Any) -> Any:
    return [value] if isinstance(value, list) and value and type(value[0]) in _NUMBERS else value


def _input_kind(value: Any) -> str:
    is_ids = isinstance(value, list) and bool(value) and type(value[0]) in (*_NUMBERS, list)
    return AS_TOKEN_IDS if is_ids else AS_TEXTS


def texts_or_token_ids(upstream: str) -> Any:
    """A text, a list of texts, the model's token ids (OpenAI style: one list of ints, or a list of such lists);
    told apart by the first item. Ids are bounded by the vocabulary the worker published."""
    token_id = Annotated[json_int(0, UINT32_MAX), Field(json_schema_extra={LIMIT_KEY: f"{upstream}.max_token_id"})]
    TokenIds = Annotated[list[token_id], Field(min_length=1, description="The model's own token ids.")]  # noqa: N806
    many = Annotated[list[TokenIds], Field(min_length=1, json_schema_extra={LIMIT_KEY: f"{upstream}.max_items"})]
    token_ids = Annotated[many, BeforeValidator(_one_or_many_token_ids, json_schema_input_type=TokenIds | many)]
    return Annotated[Annotated[one_or_many_texts(upstream), Tag(AS_TEXTS)] | Annotated[token_ids, Tag(AS_TOKEN_IDS)],
                     Discriminator(_input_kind)]


def one_or_many_texts(upstream: str) -> Any:
    """A text or a list of texts, validated as a list (so errors name `input.N`, not a union branch)."""
    return Annotated[texts_type(upstream), BeforeValidator(
        lambda value: [value] if isinstance(value, str) else value,
        json_schema_input_type=text_type(upstream) | texts_type(upstream),
    )]


class RequestBody(BaseModel):
    """Base of every JSON body: JSON types as the schema says them (strict); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", regex_engine="python-re", strict=True)


class ModelRequest(RequestBody):
    """Fields every model route accepts."""

    model: Name | None = Field(None, description="The served model id (or its last path part); empty for the default.")
    timeout: float | None = Field(None, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S,
                                  description="Deadline in seconds (else the X-Request-Timeout header).")


@dataclass(frozen=True)
class Limits:
    """What one worker accepts, from its Info."""

    model_id: str
    max_items: int
    max_chars: int
    dimension: int
    max_token_id: int = 0
    prompt_names: tuple[str | None, ...] = (None,)  # null: no prompt
    stands_in_for: str = ""  # the configured model a fallback replaces
    fingerprint: str = ""  # equal fingerprints, equal results (the response cache's key)
    max_tokens: int = 0  # the model's window, special tokens included
    zero_shot: str = ""  # how a classifier scores labels a request brings; empty: it does not
    max_labels: int = 0
    max_label_pairs: int = 0  # texts x labels

    @classmethod
    def from_info(cls, info) -> "Limits":
        return cls(info.model_id, info.max_items_per_request, info.max_chars_per_item, info.dimension,
                   max(info.vocab_size - 1, 0), (None, *sorted(info.prompts)), info.stands_in_for, info.fingerprint,
                   info.max_input_tokens, info.zero_shot, info.max_labels, info.max_label_pairs)

    def names(self) -> set[str]:
        """What a request may call the model (torchgate.models.model_names)."""
        return model_names(self.model_id, self.stands_in_for)


def clip(value: str, limit: int = 80) -> str:
    """A client's value echoed in an error: at most `limit` characters."""
    return value if len(value) <= limit else value[:limit] + "…"


def enforce_texts(limits: Limits | None, texts: list[str], field: str, upstream: str) -> None:
    """422 for more items or longer texts than the worker accepts, before anything is forwarded."""
    if limits is None:
        return
    if len(texts) > limits.max_items:
        raise ApiError(422, "invalid_request_error",
                       f"{field} has {len(texts)} items; at most {limits.max_items} per request: split the request",
                       upstream)
    enforce_lengths(limits, texts, field, upstream)


def enforce_lengths(limits: Limits, texts: list[str], field: str, upstream: str) -> None:
    """422 for a text longer than the worker accepts."""
    for index, text in enumerate(texts):
        if len(text) > limits.max_chars:
            where = field if field in ("query", "text") else f"{field}[{index}]"
            raise ApiError(422, "invalid_request_error",
                           f"{where} has {len(text)} characters; the limit is {limits.max_chars}: shorten it",
                           upstream)


def publish_limits(schema: dict, limits: dict[str, Limits | None]) -> dict:
    """A copy of the OpenAPI schema with every tagged field bounded by the limit its worker published."""
    published = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            tag = node.get(LIMIT_KEY)
            if isinstance(tag, str):
                upstream, _, name = tag.partition(".")
                known = limits.get(upstream)
                if known is not None:
                    value = getattr(known, name)
                    node[_LIMIT_KEYWORDS[name]] = list(value) if isinstance(value, tuple) else value
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(published)
    return published
