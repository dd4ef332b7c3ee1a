"""The embedding models' tokenizers, as their workers serve them (EmbeddingService.GetTokenizer).

Never a second copy configured by hand: a model's tokenizer is fetched from the embedding worker that serves it,
and fetched again when the caller names a fingerprint other than the one held (the model was reloaded or rolled
to another version).
"""

import asyncio
from dataclasses import dataclass

import grpc

from services.runtime.errors import InvalidInput, Unavailable
from torchgate.tls import channel_credentials
from torchgate.v1 import embedding_pb2, embedding_pb2_grpc

FETCH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HeldTokenizer:
    model: str
    fingerprint: str
    definition: str
    max_input_tokens: int


class Tokenizers:
    def __init__(self, addresses: str, credentials: grpc.ChannelCredentials | None = None):
        self.addresses = [address.strip() for address in addresses.split(",") if address.strip()]
        self.credentials = credentials
        self.held: dict[str, HeldTokenizer] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._fetching = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings) -> "Tokenizers":
        credentials = (channel_credentials(settings.tls_client_ca, settings.tls_cert, settings.tls_key)
                       if settings.tls_cert and settings.tls_client_ca else None)
        return cls(settings.embedding_addresses, credentials)

    async def get(self, model: str, fingerprint: str) -> HeldTokenizer:
        """The tokenizer of `model` (a full id; empty: the one model served), as its worker serves it now."""
        held = self.held.get(model)
        if held is not None and (not fingerprint or held.fingerprint == fingerprint):
            return held
        async with self._fetching:
            held = self.held.get(model)
            if held is not None and (not fingerprint or held.fingerprint == fingerprint):
                return held
            served = await self._fetch(model)
            self.held[model] = self.held[served.model] = served
            return served

    async def _fetch(self, model: str) -> HeldTokenizer:
        refusals = []
        for address in self.addresses:
            try:
                reply = await self._stub(address).GetTokenizer(embedding_pb2.GetTokenizerRequest(model=model),
                                                               timeout=FETCH_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                refusals.append(error.code())
                continue
            return HeldTokenizer(reply.model, reply.fingerprint, reply.tokenizer_json, reply.max_input_tokens)
        if refusals and all(code == grpc.StatusCode.INVALID_ARGUMENT for code in refusals):
            raise InvalidInput(f"no embedding worker serves the model {model[:200]!r}")
        raise Unavailable("the embedding workers that serve the tokenizers do not answer; retry later")

    def _stub(self, address: str) -> embedding_pb2_grpc.EmbeddingServiceStub:
        if address not in self._channels:
            self._channels[address] = (grpc.aio.secure_channel(address, self.credentials) if self.credentials
                                       else grpc.aio.insecure_channel(address))
        return embedding_pb2_grpc.EmbeddingServiceStub(self._channels[address])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
