from torchgate.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifyRequest(_message.Message):
    __slots__ = ("texts", "top_k", "model", "force_intent", "labels", "multi_label", "hypothesis_template")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORCE_INTENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESIS_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    model: str
    force_intent: bool
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    multi_label: bool
    hypothesis_template: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., model: _Optional[str] = ..., force_intent: _Optional[bool] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., multi_label: _Optional[bool] = ..., hypothesis_template: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("name", "description", "examples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    examples: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., examples: _Optional[_Iterable[str]] = ...) -> None: ...

class IntentScore(_message.Message):
    __slots__ = ("intent", "score")
    INTENT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    intent: str
    score: float
    def __init__(self, intent: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Complexity(_message.Message):
    __slots__ = ("level", "score")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    level: str
    score: float
    def __init__(self, level: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("intent", "confidence", "top", "complexity", "suggested_techniques")
    INTENT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    COMPLEXITY_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_TECHNIQUES_FIELD_NUMBER: _ClassVar[int]
    intent: str
    confidence: float
    top: _containers.RepeatedCompositeFieldContainer[IntentScore]
    complexity: Complexity
    suggested_techniques: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, intent: _Optional[str] = ..., confidence: _Optional[float] = ..., top: _Optional[_Iterable[_Union[IntentScore, _Mapping]]] = ..., complexity: _Optional[_Union[Complexity, _Mapping]] = ..., suggested_techniques: _Optional[_Iterable[str]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "model", "usage", "timing", "input_tokens", "fingerprint")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    model: str
    usage: _common_pb2.Usage
    timing: _common_pb2.Timing
    input_tokens: _containers.RepeatedScalarFieldContainer[int]
    fingerprint: str
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., timing: _Optional[_Union[_common_pb2.Timing, _Mapping]] = ..., input_tokens: _Optional[_Iterable[int]] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ListIntentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Intent(_message.Message):
    __slots__ = ("name", "description", "examples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    examples: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., examples: _Optional[int] = ...) -> None: ...

class ListIntentsResponse(_message.Message):
    __slots__ = ("intents", "complexity_levels")
    INTENTS_FIELD_NUMBER: _ClassVar[int]
    COMPLEXITY_LEVELS_FIELD_NUMBER: _ClassVar[int]
    intents: _containers.RepeatedCompositeFieldContainer[Intent]
    complexity_levels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, intents: _Optional[_Iterable[_Union[Intent, _Mapping]]] = ..., complexity_levels: _Optional[_Iterable[str]] = ...) -> None: ...
