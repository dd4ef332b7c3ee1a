"""Intent classification: texts in, each text's intent, confidence, top intents and complexity out (the cache
keeps each text's tokens and its Classification message). With labels (zero-shot), the request's labels take the
place of the model's intents; every route that classifies by labels builds them with `zero_shot_labels`."""

import struct
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from gateway.cache import CacheOutcome, Computed, Scope
from gateway.contract import clip, enforce_lengths, enforce_texts
from gateway.errors import ApiError
from gateway.merging import Mergeable
from gateway.tasks import Answer, Task, TaskCall
from gateway.upstream import Upstream
from torchgate.v1 import classifier_pb2, common_pb2

# A cached classification: the tokens the model saw, then the Classification message.
TOKENS = struct.Struct("<I")
SLOT = "{}"


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""
    examples: tuple[str, ...] = ()


def zero_shot_labels(labels: list[str | Label], field: str = "labels") -> tuple[Label, ...]:
    """A request's labels, each named once and non-blank; 400 naming the label otherwise."""
    made, seen = [], set()
    for index, label in enumerate(labels):
        label = Label(label) if isinstance(label, str) else label
        where = f"{field}[{index}]" if isinstance(labels[index], str) else f"{field}[{index}].name"
        if not label.name.strip():
            raise ApiError(400, "invalid_request_error", f"{where} is empty: name every label")
        if label.name in seen:
            raise ApiError(400, "invalid_request_error",
                           f"{where} {clip(label.name)!r} appears twice: send each label once")
        for number, example in enumerate(label.examples):
            if not example.strip():
                raise ApiError(400, "invalid_request_error", f"{field}[{index}].examples[{number}] is empty")
        seen.add(label.name)
        made.append(label)
    return tuple(made)


def hypothesis_template(template: str | None, field: str = "hypothesis_template") -> str:
    """The template a label is put in; "" leaves the worker's default. 400 when it has no `{}`."""
    if template is not None and SLOT not in template:
        raise ApiError(400, "invalid_request_error",
                       f"{field} {clip(template)!r} has no `{{}}` where the label goes: add it")
    return template or ""


@dataclass(frozen=True, kw_only=True)
class ClassifyCall(TaskCall):
    texts: list[str]
    field: str = "texts"  # the body's name for the texts, in errors
    top_k: int = 0
    force_intent: bool = False
    labels: tuple[Label, ...] = ()  # zero-shot: these instead of the model's intents
    multi_label: bool = False
    hypothesis_template: str = ""
    labels_field: str = "labels"


@dataclass(frozen=True, kw_only=True)
class Classified(Answer):
    """One classification per text, in request order."""

    results: list[classifier_pb2.Classification]


def _reply_part(reply: classifier_pb2.ClassifyResponse, start: int, stop: int) -> classifier_pb2.ClassifyResponse:
    """The reply to texts start:stop of a merged call."""
    input_tokens = reply.input_tokens[start:stop]
    tokens = sum(input_tokens)
    return classifier_pb2.ClassifyResponse(
        results=reply.results[start:stop], model=reply.model,
        usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens), timing=reply.timing,
        input_tokens=input_tokens, fingerprint=reply.fingerprint)


MERGE_TEXTS = Mergeable("texts", _reply_part)


def _is_classification(value: bytes) -> bool:
    try:
        classifier_pb2.Classification.FromString(value[TOKENS.size:])
    except DecodeError:
        return False
    return len(value) > TOKENS.size


class Classify(Task[ClassifyCall, Classified]):
    name = "classify"
    upstream = "classifier"

    def inputs(self, call: ClassifyCall) -> int:
        """Each text once, or with labels once per label: a tenant's inputs are what the model computes."""
        return len(call.texts) * max(1, len(call.labels))

    def check(self, call: ClassifyCall, pool: Upstream) -> None:
        enforce_texts(pool.limits, call.texts, call.field, pool.name)
        limits = pool.limits
        if not call.labels or limits is None:
            return
        if not limits.zero_shot:
            raise ApiError(400, "invalid_request_error", f"the model {limits.model_id} does not classify by labels "
                                                         f"the request brings: send no {call.labels_field}, or name "
                                                         "a model that does", pool.name)
        if len(call.labels) > limits.max_labels:
            raise ApiError(413, "request_too_large", f"{call.labels_field} has {len(call.labels)} items; at most "
                                                     f"{limits.max_labels} per request: split the labels", pool.name)
        pairs = len(call.texts) * len(call.labels)
        if pairs > limits.max_label_pairs:
            raise ApiError(413, "request_too_large",
                           f"{call.field} x {call.labels_field} is {len(call.texts)} x {len(call.labels)} = {pairs}; "
                           f"at most {limits.max_label_pairs} per request: send fewer texts per request", pool.name)
        enforce_lengths(limits, [label.name for label in call.labels], call.labels_field, pool.name)

    @staticmethod
    async def _call(pool: Upstream, call: ClassifyCall, model: str | None, texts: list[str],
                    timeout: float) -> classifier_pb2.ClassifyResponse:
        labels = [classifier_pb2.Label(name=label.name, description=label.description, examples=label.examples)
                  for label in call.labels]
        # A labelled call is heavy already and bounded by texts x labels, which a merged call could exceed.
        return await pool.call("Classify", classifier_pb2.ClassifyRequest(
            texts=texts, top_k=call.top_k, model=model or "", force_intent=call.force_intent, labels=labels,
            multi_label=call.multi_label, hypothesis_template=call.hypothesis_template), timeout,
            merge=None if labels else MERGE_TEXTS)

    async def compute(self, pool: Upstream, call: ClassifyCall, model: str | None, timeout: float) -> Classified:
        reply = await self._call(pool, call, model, call.texts, timeout)
        return Classified(results=list(reply.results), model=reply.model, tokens=reply.usage.total_tokens,
                          cache=CacheOutcome(0, len(call.texts)))

    def cache_options(self, call: ClassifyCall) -> tuple:
        return call.top_k, call.force_intent, call.labels, call.multi_label, call.hypothesis_template

    def cache_items(self, call: ClassifyCall) -> list[bytes]:
        return [text.encode() for text in call.texts]

    async def compute_items(self, pool: Upstream, call: ClassifyCall, model: str | None, indices: list[int],
                            timeout: float) -> Computed:
        reply = await self._call(pool, call, model, [call.texts[i] for i in indices], timeout)
        return Computed([TOKENS.pack(tokens) + result.SerializeToString(deterministic=True)
                         for tokens, result in zip(reply.input_tokens, reply.results, strict=True)],
                        reply.fingerprint)

    def valid(self, pool: Upstream):
        return _is_classification

    def assemble(self, call: ClassifyCall, values: list[bytes], outcome: CacheOutcome, scope: Scope,
                 pool: Upstream) -> Classified:
        return Classified(results=[classifier_pb2.Classification.FromString(value[TOKENS.size:]) for value in values],
                          model=scope.model_id, tokens=sum(TOKENS.unpack_from(value)[0] for value in values),
                          cache=outcome)

    def agreement(self, primary: Classified, shadow: Classified) -> float | None:
        """The share of texts given the same intent."""
        return float(np.mean([a.intent == b.intent for a, b in zip(primary.results, shadow.results, strict=True)]))


CLASSIFY = Classify()
