"""Documents: a file or text converted by the documents worker, and chunked by the tokenizer of the embedding model
that names the call (its rollout, permission and limits apply as for embedding), optionally embedded in the same
call. Conversion alone names no model. Neither is cached (a document is seldom sent twice) nor shadowed."""

import asyncio
from dataclasses import dataclass

import numpy as np

from gateway.cache import CacheOutcome
from gateway.errors import ApiError
from gateway.tasks import Answer, Task, TaskCall
from gateway.tasks.embed import EMBED, EmbedCall
from gateway.upstream import Upstream
from torchgate.v1 import documents_pb2


@dataclass(frozen=True, kw_only=True)
class DocumentCall(TaskCall):
    content: bytes
    filename: str = ""
    format: str = ""  # among the text formats only; binary formats are sniffed by the worker

    @property
    def source(self) -> documents_pb2.Source:
        return documents_pb2.Source(content=self.content, filename=self.filename, format=self.format)


@dataclass(frozen=True, kw_only=True)
class ChunkCall(DocumentCall):
    documents: Upstream  # the documents worker the call converts on (pipeline.upstream(request, "documents"))
    max_tokens: int = 0
    overlap: int = 0
    embed: bool = False


@dataclass(frozen=True, kw_only=True)
class Chunked(Answer):
    format: str
    pages: int
    chunks: list[documents_pb2.Chunk]
    vectors: np.ndarray | None


@dataclass(frozen=True, kw_only=True)
class ConvertCall(DocumentCall):
    pass


@dataclass(frozen=True, kw_only=True)
class Converted(Answer):
    reply: documents_pb2.ConvertResponse


class Chunk(Task[ChunkCall, Chunked]):
    name = "chunk"
    upstream = "embedding"
    cached = False
    shadowed = False

    def inputs(self, call: ChunkCall) -> int:
        return 1

    def check(self, call: ChunkCall, pool: Upstream) -> None:
        window = pool.limits.max_tokens if pool.limits else 0
        if window and call.max_tokens > window:
            raise ApiError(400, "invalid_request_error", f"max_tokens is {call.max_tokens} but "
                                                         f"{pool.limits.model_id} reads at most {window} tokens: ask "
                                                         f"for fewer", pool.name)

    async def compute(self, pool: Upstream, call: ChunkCall, model: str | None, timeout: float) -> Chunked:
        identity = pool.model_identity()
        model_id, fingerprint = identity if identity else (pool.limits.model_id if pool.limits else model or "", "")
        reply = await call.documents.call("Chunk", documents_pb2.ChunkRequest(
            source=call.source, model=model_id, fingerprint=fingerprint, max_tokens=call.max_tokens,
            overlap=call.overlap), timeout)
        chunks = list(reply.chunks)
        vectors, tokens = None, 0
        if call.embed and chunks:
            vectors, tokens = await self._embedded(pool, [chunk.contextualized_text for chunk in chunks], model,
                                                   timeout)
        return Chunked(model=reply.model, tokens=tokens, cache=CacheOutcome(0, 1), format=reply.format,
                       pages=reply.pages, chunks=chunks, vectors=vectors)

    @staticmethod
    async def _embedded(pool: Upstream, texts: list[str], model: str | None,
                        timeout: float) -> tuple[np.ndarray, int]:
        """The chunks' vectors as /v1/embeddings gives them, in slices of the worker's per-request limit."""
        size = pool.limits.max_items if pool.limits else len(texts)
        parts = await asyncio.gather(*(EMBED.compute(pool, EmbedCall(inputs=texts[start:start + size], model=model),
                                                     model, timeout) for start in range(0, len(texts), size)))
        return np.concatenate([part.vectors for part in parts]), sum(part.tokens for part in parts)


class Convert(Task[ConvertCall, Converted]):
    name = "convert"
    upstream = "documents"
    names_model = False
    cached = False
    shadowed = False

    def inputs(self, call: ConvertCall) -> int:
        return 1

    def check(self, call: ConvertCall, pool: Upstream) -> None:
        return None

    async def compute(self, pool: Upstream, call: ConvertCall, model: str | None, timeout: float) -> Converted:
        reply = await pool.call("Convert", documents_pb2.ConvertRequest(source=call.source), timeout)
        return Converted(model="", tokens=0, cache=CacheOutcome(0, 1), reply=reply)


CHUNK = Chunk()
CONVERT = Convert()
