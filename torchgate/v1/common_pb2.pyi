from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_ms", "inference_ms", "total_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    inference_ms: float
    total_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class BatchingInfo(_message.Message):
    __slots__ = ("max_batch_size", "max_batch_tokens", "max_wait_ms", "max_queue_items", "device_streams", "threads_per_stream")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_STREAM_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_batch_tokens: int
    max_wait_ms: float
    max_queue_items: int
    device_streams: int
    threads_per_stream: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_batch_tokens: _Optional[int] = ..., max_wait_ms: _Optional[float] = ..., max_queue_items: _Optional[int] = ..., device_streams: _Optional[int] = ..., threads_per_stream: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "model_path", "device", "dtype", "max_input_tokens", "dimension", "labels", "batching", "version", "max_items_per_request", "max_chars_per_item", "fallback_reason", "dtype_reason", "prompts", "vocab_size", "stands_in_for", "fingerprint", "backend", "backend_reason", "zero_shot", "max_labels", "max_label_pairs")
    class PromptsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_CHARS_PER_ITEM_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    DTYPE_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    STANDS_IN_FOR_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_REASON_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_LABEL_PAIRS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_path: str
    device: str
    dtype: str
    max_input_tokens: int
    dimension: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    batching: BatchingInfo
    version: str
    max_items_per_request: int
    max_chars_per_item: int
    fallback_reason: str
    dtype_reason: str
    prompts: _containers.ScalarMap[str, str]
    vocab_size: int
    stands_in_for: str
    fingerprint: str
    backend: str
    backend_reason: str
    zero_shot: str
    max_labels: int
    max_label_pairs: int
    def __init__(self, model_id: _Optional[str] = ..., model_path: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_input_tokens: _Optional[int] = ..., dimension: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., batching: _Optional[_Union[BatchingInfo, _Mapping]] = ..., version: _Optional[str] = ..., max_items_per_request: _Optional[int] = ..., max_chars_per_item: _Optional[int] = ..., fallback_reason: _Optional[str] = ..., dtype_reason: _Optional[str] = ..., prompts: _Optional[_Mapping[str, str]] = ..., vocab_size: _Optional[int] = ..., stands_in_for: _Optional[str] = ..., fingerprint: _Optional[str] = ..., backend: _Optional[str] = ..., backend_reason: _Optional[str] = ..., zero_shot: _Optional[str] = ..., max_labels: _Optional[int] = ..., max_label_pairs: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
