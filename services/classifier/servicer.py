"""ClassifierService: intents with calibrated confidences, complexity and suggested techniques."""

import asyncio
import dataclasses
import logging
import time

import numpy as np

from services.classifier.adapter import CheckpointAdapter, FewShotAdapter
from services.classifier.complexity import LEVELS, TechniqueTable, complexity
from services.classifier.head import IntentScores
from services.classifier.settings import ClassifierSettings
from services.classifier.zero_shot import DEFAULT_TEMPLATE, SLOT, Label, ZeroShot
from services.embedding.adapter import EmbeddingAdapter
from services.runtime.adapter import ModelDescription, ModelSpec
from services.runtime.errors import InvalidInput
from services.runtime.fingerprint import fingerprint
from services.runtime.servicer import ModelServicer, timing
from services.runtime.validation import validate_model_name, validate_text, validate_texts
from torchgate.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 3
OUT_OF_SCOPE_DESCRIPTION = ("None of the intents applies: the text is farther from every intent's examples than "
                            "the threshold learned from the example file.")


class ClassifierServicer(ModelServicer, classifier_pb2_grpc.ClassifierServiceServicer):
    SERVICE = classifier_pb2.DESCRIPTOR.services_by_name["ClassifierService"]
    adapter: FewShotAdapter | CheckpointAdapter

    def __init__(self, adapter, settings: ClassifierSettings):
        super().__init__(adapter, settings)
        self.techniques = TechniqueTable.load(settings.techniques)
        # Only the few-shot head learns where its intents end; a checkpoint always answers one of its labels.
        few_shot = isinstance(adapter, FewShotAdapter) or settings.backend == "few_shot"
        self.out_of_scope = settings.out_of_scope_intent if settings.out_of_scope and few_shot else ""
        self.zero_shot: ZeroShot | None = None

    async def prepare(self, model: ModelDescription) -> None:
        """The zero-shot method the model allows (services/classifier/zero_shot.py), unless zero_shot is off."""
        if self.settings.zero_shot:
            self.zero_shot = await asyncio.to_thread(self.adapter.zero_shot, self.settings)
        if self.zero_shot is not None:
            model.result_parts.extend(self.zero_shot.result_parts())
            model.result_files.extend(self.zero_shot.result_files())

    def add_to_server(self, server) -> None:
        classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(self, server)

    async def Classify(self, request: classifier_pb2.ClassifyRequest, context) -> classifier_pb2.ClassifyResponse:
        started = time.perf_counter()
        model = self.ready_model()
        texts = list(request.texts)
        validate_texts(texts, self.settings.max_items_per_request, self.settings.max_chars_per_item)
        validate_model_name(request.model, model)
        if request.labels:
            return await self._classify_by_labels(request, texts, started, context)
        # Read together on the event loop, where a reload swaps them together (reload below).
        head, fingerprint = self._serving_head(), model.fingerprint
        outcome = await self.run_batched(texts, context)
        if any(scores.labels is not None and scores.labels is not head for scores in outcome.results):
            fingerprint = ""  # computed across a reload: the reply names no one head, and no cache keeps it
        tokens = sum(outcome.token_counts)
        # Complexity scoring reads every character of every text: off the event loop, like the model.
        results = await asyncio.to_thread(
            lambda: [self._classification(text, scores, scores.labels or model.labels, request.top_k,
                                          request.force_intent)
                     for text, scores in zip(texts, outcome.results, strict=True)])
        return classifier_pb2.ClassifyResponse(
            results=results,
            model=model.model_id,
            usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
            timing=timing(outcome, started),
            input_tokens=outcome.token_counts,
            fingerprint=fingerprint,
        )

    async def _classify_by_labels(self, request: classifier_pb2.ClassifyRequest, texts: list[str], started: float,
                                  context) -> classifier_pb2.ClassifyResponse:
        model = self.ready_model()
        if self.zero_shot is None:
            raise InvalidInput(f"the model {model.model_id} does not classify by labels (a checkpoint without an "
                               "`entailment` label, or zero_shot off): send no `labels`, or use a model that does")
        labels = self._labels(request, len(texts))
        template = request.hypothesis_template or DEFAULT_TEMPLATE
        if SLOT not in template:
            raise InvalidInput("hypothesis_template has no `{}` where the label goes: add it")
        scored = await self.zero_shot.score(lambda items: self.run_batched(items, context), texts, labels, template,
                                            request.multi_label)
        top_k = min(request.top_k or len(labels), len(labels))
        names = [label.name for label in labels]
        results = await asyncio.to_thread(
            lambda: [self._labelled(text, row, names, top_k) for text, row in zip(texts, scored.scores, strict=True)])
        tokens = sum(scored.token_counts)
        return classifier_pb2.ClassifyResponse(
            results=results, model=model.model_id, usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
            timing=timing(scored.outcome, started), input_tokens=scored.token_counts, fingerprint=model.fingerprint)

    def _labels(self, request: classifier_pb2.ClassifyRequest, texts: int) -> list[Label]:
        s = self.settings
        if len(request.labels) > s.max_labels:
            raise InvalidInput(f"labels has {len(request.labels)} items; at most {s.max_labels} per request: "
                               "split the labels over several requests")
        if texts * len(request.labels) > s.max_label_pairs:
            raise InvalidInput(f"texts x labels is {texts} x {len(request.labels)} = {texts * len(request.labels)}; "
                               f"at most {s.max_label_pairs} per request: send fewer texts per request")
        labels, seen = [], set()
        for index, label in enumerate(request.labels):
            validate_text(label.name, s.max_chars_per_item, f"labels[{index}].name")
            if label.name in seen:
                raise InvalidInput(f"labels[{index}].name {label.name[:80]!r} appears twice: send each label once")
            seen.add(label.name)
            if len(label.description) > s.max_chars_per_item:
                raise InvalidInput(f"labels[{index}].description has {len(label.description)} characters; the limit "
                                   f"is {s.max_chars_per_item}: shorten it")
            for number, example in enumerate(label.examples):
                validate_text(example, s.max_chars_per_item, f"labels[{index}].examples[{number}]")
            labels.append(Label(label.name, label.description.strip(), tuple(label.examples)))
        return labels

    def _labelled(self, text: str, scores: np.ndarray, names: list[str], top_k: int) -> classifier_pb2.Classification:
        best = np.argsort(-scores, kind="stable")[:top_k]
        level, score = complexity(text)
        return classifier_pb2.Classification(
            intent=names[best[0]], confidence=float(scores[best[0]]),
            top=[classifier_pb2.IntentScore(intent=names[i], score=float(scores[i])) for i in best],
            complexity=classifier_pb2.Complexity(level=level, score=score),
            suggested_techniques=self.techniques.suggest(names[best[0]], level))

    async def Info(self, request, context) -> common_pb2.ModelInfo:
        info = await super().Info(request, context)
        if self.zero_shot is not None:
            info.zero_shot = self.zero_shot.method
            info.max_labels, info.max_label_pairs = self.settings.max_labels, self.settings.max_label_pairs
        return info

    def _serving_head(self) -> tuple[str, ...] | None:
        """The labels of the few-shot head serving now (each head's own tuple), None for other backends."""
        return self.adapter.state.labels if isinstance(self.adapter, FewShotAdapter) else None

    async def reload(self) -> None:
        """SIGHUP: learn the example file again off the serving path, then swap head, labels and fingerprint
        at once; requests in flight finish on the head they started with. A file that does not load changes
        nothing (the log says why)."""
        if not isinstance(self.adapter, FewShotAdapter) or self.model is None:
            return
        try:
            state = await asyncio.to_thread(self.adapter.learn)
            learned = dataclasses.replace(self.model, labels=list(state.labels))
            learned.fingerprint = await asyncio.to_thread(fingerprint, learned)
        except Exception as error:  # the operator's file: whatever is wrong with it, the old head serves on
            log.error("example file %s not reloaded, the previous intents stay: %s", self.settings.examples,
                      str(error).replace("\n", "; ")[:500])
            return
        self.adapter.state, self.model = state, learned
        log.info("example file reloaded", extra={"intents": len(state.labels), "fingerprint": learned.fingerprint})

    def _classification(self, text: str, scores: IntentScores, labels: list[str], top_k: int,
                        force_intent: bool) -> classifier_pb2.Classification:
        probabilities = scores.probabilities
        real = [i for i, label in enumerate(labels) if label != self.out_of_scope]
        best = sorted(real, key=lambda i: -probabilities[i])[:min(top_k or DEFAULT_TOP_K, len(real))]
        predicted = labels[int(np.argmax(probabilities))]
        beyond = self.out_of_scope and not force_intent and (scores.beyond_intents or predicted == self.out_of_scope)
        intent = self.out_of_scope if beyond else labels[best[0]]
        confidence = 1 - probabilities[best[0]] if beyond else probabilities[best[0]]
        level, score = complexity(text)
        return classifier_pb2.Classification(
            intent=intent,
            confidence=float(confidence),
            top=[classifier_pb2.IntentScore(intent=labels[i], score=float(probabilities[i])) for i in best],
            complexity=classifier_pb2.Complexity(level=level, score=score),
            suggested_techniques=self.techniques.suggest(intent, level),
        )

    async def ListIntents(self, request, context) -> classifier_pb2.ListIntentsResponse:
        self.ready_model()
        intents = [classifier_pb2.Intent(name=name, description=description, examples=count)
                   for name, description, count in self.adapter.intents() if name != self.out_of_scope]
        if self.out_of_scope:
            examples = dict((name, count) for name, _, count in self.adapter.intents()).get(self.out_of_scope, 0)
            intents.append(classifier_pb2.Intent(name=self.out_of_scope, description=OUT_OF_SCOPE_DESCRIPTION,
                                                 examples=examples))
        return classifier_pb2.ListIntentsResponse(intents=intents, complexity_levels=LEVELS)


def build(settings: ClassifierSettings) -> ClassifierServicer:
    spec = ModelSpec.from_settings(settings)
    if settings.backend == "checkpoint":
        adapter = CheckpointAdapter(spec)
    else:
        adapter = FewShotAdapter(EmbeddingAdapter(spec), settings.examples,
                                 settings.out_of_scope_intent if settings.out_of_scope else None)
    return ClassifierServicer(adapter, settings)
