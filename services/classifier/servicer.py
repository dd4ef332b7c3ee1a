"""ClassifierService: intents with calibrated confidences, complexity and suggested techniques."""

import asyncio
import time

import numpy as np

from services.classifier.adapter import CheckpointAdapter, FewShotAdapter
from services.classifier.complexity import LEVELS, TechniqueTable, complexity
from services.classifier.settings import ClassifierSettings
from services.embedding.adapter import EmbeddingAdapter
from services.runtime.adapter import ModelSpec
from services.runtime.servicer import ModelServicer, timing
from services.runtime.validation import validate_model_name, validate_texts
from torchgate.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

DEFAULT_TOP_K = 3


class ClassifierServicer(ModelServicer, classifier_pb2_grpc.ClassifierServiceServicer):
    SERVICE = classifier_pb2.DESCRIPTOR.services_by_name["ClassifierService"]
    adapter: FewShotAdapter | CheckpointAdapter

    def __init__(self, adapter, settings: ClassifierSettings):
        super().__init__(adapter, settings)
        self.techniques = TechniqueTable.load(settings.techniques)

    def add_to_server(self, server) -> None:
        classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(self, server)

    async def Classify(self, request: classifier_pb2.ClassifyRequest, context) -> classifier_pb2.ClassifyResponse:
        started = time.perf_counter()
        model = self.ready_model()
        texts = list(request.texts)
        validate_texts(texts, self.settings.max_items_per_request, self.settings.max_chars_per_item)
        validate_model_name(request.model, model.model_id)
        top_k = min(request.top_k or DEFAULT_TOP_K, len(model.labels))
        outcome = await self.run_batched(texts, context)
        tokens = sum(outcome.token_counts)
        # Complexity scoring reads every character of every text: off the event loop, like the model.
        results = await asyncio.to_thread(
            lambda: [self._classification(text, probabilities, model.labels, top_k)
                     for text, probabilities in zip(texts, outcome.results, strict=True)])
        return classifier_pb2.ClassifyResponse(
            results=results,
            model=model.model_id,
            usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
            timing=timing(outcome, started),
        )

    def _classification(self, text: str, probabilities: np.ndarray, labels: list[str],
                        top_k: int) -> classifier_pb2.Classification:
        best = np.argsort(-probabilities)[:top_k]
        intent = labels[best[0]]
        level, score = complexity(text)
        return classifier_pb2.Classification(
            intent=intent,
            confidence=float(probabilities[best[0]]),
            top=[classifier_pb2.IntentScore(intent=labels[i], score=float(probabilities[i])) for i in best],
            complexity=classifier_pb2.Complexity(level=level, score=score),
            suggested_techniques=self.techniques.suggest(intent, level),
        )

    async def ListIntents(self, request, context) -> classifier_pb2.ListIntentsResponse:
        self.ready_model()
        return classifier_pb2.ListIntentsResponse(
            intents=[classifier_pb2.Intent(name=name, description=description, examples=count)
                     for name, description, count in self.adapter.intents()],
            complexity_levels=LEVELS,
        )


def build(settings: ClassifierSettings) -> ClassifierServicer:
    spec = ModelSpec.from_settings(settings)
    if settings.backend == "checkpoint":
        adapter = CheckpointAdapter(spec)
    else:
        adapter = FewShotAdapter(EmbeddingAdapter(spec), settings.examples)
    return ClassifierServicer(adapter, settings)
