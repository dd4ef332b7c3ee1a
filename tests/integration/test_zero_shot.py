"""Zero-shot classification in the classifier worker: labels from the request, scored by similarity (the bundled
MiniLM) or by entailment (a tiny NLI checkpoint built here), checked against the same computation in-process."""

import grpc
import numpy as np
import pytest

from services.classifier.servicer import build
from services.classifier.settings import ClassifierSettings
from services.classifier.zero_shot import read_reference
from services.runtime.worker import Worker
from tests.network import worker_channel
from tests.tiny_models import save_sequence_classifier
from tests.workers import started
from torchgate.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2

TEMPLATE = "This example is {}."


async def serve(**fields) -> Worker:
    return await started(build(ClassifierSettings(port=0, metrics_port=0, **fields)))


async def by_labels(worker: Worker, texts: list[str], labels: list, **fields) -> classifier_pb2.ClassifyResponse:
    labels = [classifier_pb2.Label(name=label) if isinstance(label, str) else label for label in labels]
    async with worker_channel(worker.port) as channel:
        stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        return await stub.Classify(classifier_pb2.ClassifyRequest(texts=texts, labels=labels, **fields))


def scores_of(reply: classifier_pb2.ClassifyResponse, labels: list[str]) -> np.ndarray:
    return np.array([[{t.intent: t.score for t in result.top}[label] for label in labels] for result in reply.results])


@pytest.fixture(scope="module")
async def classifier():
    worker = await serve()
    yield worker
    await worker.stop(0)


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


async def test_similarity_scores_are_the_documented_computation(classifier, minilm):
    """Prototype = normalize(name + template), hub = mean of its 20 nearest reference texts, score =
    softmax((cos - 0.5 hub) / T), or with multi_label a logistic of it: as docs/api/zero-shot.md says."""
    settings = ClassifierSettings()
    texts = ["my card was stolen yesterday", "what will the weather be tomorrow", "play some jazz"]
    labels = ["report lost card", "weather forecast", "play music", "book a flight"]
    encode = lambda items: minilm.encode(items, normalize_embeddings=True, convert_to_numpy=True)  # noqa: E731
    prototypes = normalized(encode(labels) + encode([TEMPLATE.format(label) for label in labels]))
    reference = encode(read_reference(settings.reference_texts))
    hubs = np.sort(prototypes @ reference.T, axis=1)[:, -settings.hub_neighbours:].mean(axis=1)
    similarity = encode(texts) @ prototypes.T - settings.hubness * hubs
    single = np.exp(similarity / settings.temperature)
    single /= single.sum(axis=1, keepdims=True)
    multi = 1 / (1 + np.exp(-settings.multi_label_scale * (similarity - settings.multi_label_bias)))

    reply = await by_labels(classifier, texts, labels)
    np.testing.assert_allclose(scores_of(reply, labels), single, atol=1e-3)
    assert [result.intent for result in reply.results] == ["report lost card", "weather forecast", "play music"]
    assert all(len(result.top) == len(labels) for result in reply.results)
    multi_reply = await by_labels(classifier, texts, labels, multi_label=True)
    np.testing.assert_allclose(scores_of(multi_reply, labels), multi, atol=1e-3)


async def test_a_text_that_matches_two_labels_scores_both_above_half_with_multi_label(classifier):
    labels = ["book a flight", "book a hotel", "play music", "check the weather"]
    reply = await by_labels(classifier, ["book me a flight to Paris and a hotel room near the airport"], labels,
                            multi_label=True)
    scores = dict(zip(labels, scores_of(reply, labels)[0], strict=True))
    assert scores["book a flight"] > 0.5 and scores["book a hotel"] > 0.5
    assert scores["play music"] < 0.5 and scores["check the weather"] < 0.5
    single = scores_of(await by_labels(classifier, ["book me a flight to Paris"], labels), labels)[0]
    assert single.sum() == pytest.approx(1.0, abs=1e-4)


async def test_descriptions_and_examples_move_a_label_toward_its_texts(classifier):
    text = "the thing I ordered never showed up"
    bare = [classifier_pb2.Label(name="issue A"), classifier_pb2.Label(name="issue B")]
    described = [classifier_pb2.Label(name="issue A", description="a question about the weather"),
                 classifier_pb2.Label(name="issue B", description="a parcel that was not delivered",
                                      examples=["my package is missing", "where is my delivery"])]
    plain = scores_of(await by_labels(classifier, [text], bare), ["issue A", "issue B"])[0]
    guided = scores_of(await by_labels(classifier, [text], described), ["issue A", "issue B"])[0]
    assert guided[1] > 0.9 and guided[1] > plain[1]


async def test_known_labels_are_not_encoded_again(classifier):
    labels = [f"topic number {index}" for index in range(40)]
    zero_shot = classifier.servicer.zero_shot
    await by_labels(classifier, ["first text"], labels)
    cached = len(zero_shot._prototypes)
    served_before = classifier.servicer.batcher.metrics.batch_size._sum.get()
    reply = await by_labels(classifier, ["second text", "third text"], labels, top_k=5)
    assert len(zero_shot._prototypes) == cached
    assert classifier.servicer.batcher.metrics.batch_size._sum.get() - served_before == 2
    assert [len(result.top) for result in reply.results] == [5, 5]


@pytest.mark.parametrize(("labels", "fields", "says"), [
    ([f"label {i}" for i in range(257)], {}, "labels has 257 items; at most 256"),
    ([f"label {i}" for i in range(100)], {"texts": ["a text"] * 41}, "texts x labels is 41 x 100 = 4100"),
    (["sports", "politics", "sports"], {}, "labels[2].name 'sports' appears twice"),
    (["sports", "  "], {}, "labels[1].name is empty"),
    (["sports", "politics"], {"hypothesis_template": "This is about"}, "hypothesis_template has no `{}`"),
])
async def test_bad_labels_are_refused_naming_the_field(classifier, labels, fields, says):
    texts = fields.pop("texts", ["a text"])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await by_labels(classifier, texts, labels, **fields)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in refused.value.details()


async def test_info_names_the_method_and_its_limits(classifier):
    async with worker_channel(classifier.port) as channel:
        info = await classifier_pb2_grpc.ClassifierServiceStub(channel).Info(common_pb2.InfoRequest())
    assert (info.zero_shot, info.max_labels, info.max_label_pairs) == ("similarity", 256, 4096)


async def test_an_nli_checkpoint_scores_labels_by_entailment_as_hugging_face_does(tiny_bert_dir, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    directory = save_sequence_classifier(tiny_bert_dir, tmp_path, ["CONTRADICTION", "NEUTRAL", "ENTAILMENT"], 3)
    worker = await serve(backend="checkpoint", model=str(directory))
    texts = ["the match ended in a draw", "parliament passed the budget"]
    labels = ["sports", "politics", "cooking"]
    template = "The topic is {}."
    single = await by_labels(worker, texts, labels, hypothesis_template=template)
    multi = await by_labels(worker, texts, labels, hypothesis_template=template, multi_label=True)
    async with worker_channel(worker.port) as channel:
        info = await classifier_pb2_grpc.ClassifierServiceStub(channel).Info(common_pb2.InfoRequest())
    await worker.stop(0)

    model = BertForSequenceClassification.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    pairs = [(text, template.format(label)) for text in texts for label in labels]
    features = tokenizer([p for p, _ in pairs], [h for _, h in pairs], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**features).logits.reshape(len(texts), len(labels), 3)
    expected_single = torch.softmax(logits[..., 2], dim=1).numpy()
    expected_multi = torch.softmax(logits[..., [0, 2]], dim=-1)[..., 1].numpy()
    assert info.zero_shot == "entailment"
    np.testing.assert_allclose(scores_of(single, labels), expected_single, atol=1e-4)
    np.testing.assert_allclose(scores_of(multi, labels), expected_multi, atol=1e-4)
    assert single.usage.total_tokens == int(features["attention_mask"].sum())


async def test_a_checkpoint_that_is_no_nli_model_refuses_labels(tiny_bert_dir, tmp_path):
    directory = save_sequence_classifier(tiny_bert_dir, tmp_path, ["billing", "technical"], 3)
    worker = await serve(backend="checkpoint", model=str(directory))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await by_labels(worker, ["my invoice is wrong"], ["money", "software"])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not classify by labels" in refused.value.details()
        plain = await by_labels(worker, ["my invoice is wrong"], [])
        assert {t.intent for t in plain.results[0].top} == {"billing", "technical"}
    finally:
        await worker.stop(0)
