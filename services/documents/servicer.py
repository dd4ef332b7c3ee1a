"""DocumentService: sniff, bound, and hand each document to a conversion child; the tokenizer from the embedding
worker that serves the model."""

import asyncio
from dataclasses import replace

from services.documents.formats import BINARY_FORMATS, TEXT_FORMATS, TooLarge, sniff
from services.documents.isolation import ChildLimits, Conversions
from services.documents.job import Job
from services.documents.served_tokenizers import Tokenizers
from services.documents.settings import DocumentsSettings
from services.runtime.errors import InvalidInput, Unavailable
from services.runtime.servicer import WorkerServicer
from torchgate import __version__
from torchgate.v1 import documents_pb2, documents_pb2_grpc


class DocumentsServicer(WorkerServicer, documents_pb2_grpc.DocumentServiceServicer):
    SERVICE = documents_pb2.DESCRIPTOR.services_by_name["DocumentService"]

    def __init__(self, settings: DocumentsSettings):
        self.settings = settings
        self.tokenizers = Tokenizers.from_settings(settings)
        self.conversions: Conversions | None = None

    def add_to_server(self, server) -> None:
        documents_pb2_grpc.add_DocumentServiceServicer_to_server(self, server)

    async def load(self) -> None:
        settings = self.settings
        conversions = Conversions(ChildLimits(settings.conversion_memory_mb, settings.conversion_cpu_s,
                                              settings.conversion_timeout_s), settings.conversions,
                                  settings.max_waiting)
        await conversions.start()
        self.conversions = conversions

    async def drain(self, timeout: float) -> None:
        await self.tokenizers.close()

    async def _job(self, source: documents_pb2.Source) -> Job:
        if self.conversions is None:
            raise Unavailable("the documents worker is still starting; retry shortly")
        if len(source.content) > self.settings.max_document_bytes:
            raise TooLarge(f"the document has {len(source.content)} bytes; at most "
                           f"{self.settings.max_document_bytes} are allowed")
        # Decoding and looking into megabytes of a caller's bytes is no work for the event loop.
        format_ = await asyncio.to_thread(sniff, source.content, source.format, self.settings.max_decompressed_bytes)
        return Job(content=source.content, format=format_, filename=source.filename[:255] or f"document.{format_}",
                   max_pages=self.settings.max_pages, max_chunks=self.settings.max_chunks)

    async def Chunk(self, request: documents_pb2.ChunkRequest, context) -> documents_pb2.ChunkResponse:
        job = await self._job(request.source)
        tokenizer = await self.tokenizers.get(request.model, request.fingerprint)
        max_tokens = request.max_tokens or tokenizer.max_input_tokens
        if max_tokens > tokenizer.max_input_tokens:
            raise InvalidInput(f"max_tokens is {max_tokens} but {tokenizer.model} reads at most "
                               f"{tokenizer.max_input_tokens} tokens: ask for fewer")
        # An overlap is at most under half a chunk: a chunk must bring more new text than it repeats.
        overlap = min(request.overlap, (max_tokens - 1) // 2)
        result = await self.conversions.run(replace(job, tokenizer_json=tokenizer.definition, max_tokens=max_tokens,
                                                    overlap=overlap))
        return documents_pb2.ChunkResponse(model=tokenizer.model, format=job.format, pages=result["pages"],
                                           chunks=[documents_pb2.Chunk(**chunk) for chunk in result["chunks"]])

    async def Convert(self, request: documents_pb2.ConvertRequest, context) -> documents_pb2.ConvertResponse:
        job = await self._job(request.source)
        result = await self.conversions.run(job)
        return documents_pb2.ConvertResponse(format=job.format, **result)

    async def Info(self, request, context) -> documents_pb2.DocumentsInfo:
        return documents_pb2.DocumentsInfo(
            version=__version__, formats=[*TEXT_FORMATS, *BINARY_FORMATS],
            max_document_bytes=self.settings.max_document_bytes, max_pages=self.settings.max_pages,
            embedding_models=sorted(self.tokenizers.held))


def build(settings: DocumentsSettings) -> DocumentsServicer:
    return DocumentsServicer(settings)
