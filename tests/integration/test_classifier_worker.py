import asyncio
import json

import numpy as np
import pytest

from services.classifier.servicer import build
from services.classifier.settings import ClassifierSettings
from services.runtime.worker import Worker
from tests.network import worker_channel
from tests.tiny_models import save_sequence_classifier
from tests.workers import started
from torchgate.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2


async def serve(**fields) -> Worker:
    settings = ClassifierSettings(port=0, metrics_port=0, **fields)
    return await started(build(settings))


async def classify(worker: Worker, texts: list[str], top_k: int = 0) -> classifier_pb2.ClassifyResponse:
    async with worker_channel(worker.port) as channel:
        stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        return await stub.Classify(classifier_pb2.ClassifyRequest(texts=texts, top_k=top_k))


async def info(worker: Worker) -> common_pb2.ModelInfo:
    async with worker_channel(worker.port) as channel:
        return await classifier_pb2_grpc.ClassifierServiceStub(channel).Info(common_pb2.InfoRequest())


@pytest.fixture(scope="module")
async def default_classifier():
    worker = await serve()
    yield worker
    await worker.stop(0)


async def test_the_default_intents_classify_the_documented_examples(default_classifier):
    reply = await classify(default_classifier, [
        "How do I create a REST API in Python?", "Write a poem about spring", "What is machine learning?"])
    assert [r.intent for r in reply.results] == ["code_generation", "creative_writing", "question_answering"]
    for result in reply.results:
        assert 0 < result.confidence <= 1 and len(result.top) == 3 and result.top[0].intent == result.intent
        assert result.complexity.level in ("simple", "moderate", "complex") and result.suggested_techniques
    assert reply.model == "few-shot:sentence-transformers/all-MiniLM-L6-v2" and reply.usage.total_tokens > 0


async def test_probabilities_over_all_intents_sum_to_one(default_classifier):
    reply = await classify(default_classifier, ["Translate good night into German"], top_k=10)
    assert sum(t.score for t in reply.results[0].top) == pytest.approx(1.0, abs=1e-4)
    assert reply.results[0].intent == "translation"


async def test_list_intents_reports_the_example_file(default_classifier):
    async with worker_channel(default_classifier.port) as channel:
        stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        intents = await stub.ListIntents(classifier_pb2.ListIntentsRequest())
        info = await stub.Info(common_pb2.InfoRequest())
    *learned, out_of_scope = intents.intents
    assert len(learned) == 10 and all(i.examples >= 15 for i in learned)
    assert list(info.labels) == [i.name for i in learned]
    assert (out_of_scope.name, out_of_scope.examples) == ("out_of_scope", 0)


CUSTOM_INTENTS = {
    "order_pizza": ["I want a large pepperoni pizza", "Can I get two margheritas delivered?",
                    "Order me a pizza with mushrooms", "One vegetarian pizza please",
                    "I'd like to order a pizza for dinner", "Add extra cheese to my pizza order"],
    "book_flight": ["Book a flight to Berlin next Monday", "I need a plane ticket to Tokyo",
                    "Find me a cheap flight to New York", "Reserve a seat on the morning flight to Madrid",
                    "Get me a return flight to London", "I want to fly to Rome on Friday"],
    "check_weather": ["Will it rain tomorrow?", "What's the temperature outside?", "Is it sunny in Paris today?",
                      "How cold will it be tonight?", "Weather forecast for the weekend",
                      "Do I need an umbrella today?"],
}
HELD_OUT = {
    "Please deliver a hawaiian pizza to my house": "order_pizza",
    "Book me on a flight to Lisbon": "book_flight",
    "Is it going to snow this afternoon?": "check_weather",
    "Get a pizza with olives and ham": "order_pizza",
    "I need to fly to Chicago on Sunday": "book_flight",
}


async def test_a_users_own_intents_from_a_jsonl_file(tmp_path):
    examples = tmp_path / "intents.jsonl"
    examples.write_text("\n".join(json.dumps({"text": text, "intent": intent})
                                  for intent, texts in CUSTOM_INTENTS.items() for text in texts))
    worker = await serve(examples=examples)
    reply = await classify(worker, list(HELD_OUT))
    assert [r.intent for r in reply.results] == list(HELD_OUT.values())
    # Intents the technique table does not know get its default list (short texts add nothing for complexity).
    assert all(list(r.suggested_techniques) == ["zero_shot", "few_shot"] for r in reply.results)
    first = (await info(worker)).fingerprint
    await worker.stop(0)

    # The same embedder with one more example: a result cache must not take it for the same classifier.
    with examples.open("a") as appended:
        appended.write("\n" + json.dumps({"text": "one more example", "intent": next(iter(CUSTOM_INTENTS))}))
    worker = await serve(examples=examples)
    second = (await info(worker)).fingerprint
    await worker.stop(0)
    assert len(first) == len(second) == 64 and first != second


async def test_the_checkpoint_backend_uses_the_checkpoints_labels(tiny_bert_dir, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    labels = ["billing", "technical", "sales"]
    save_sequence_classifier(tiny_bert_dir, tmp_path, labels, seed=1)
    worker = await serve(backend="checkpoint", model=str(tmp_path))
    texts = ["my invoice is wrong", "the app crashes on start", "word " * 400]
    reply = await classify(worker, texts, top_k=3)
    assert len(reply.results) == 3
    for result in reply.results:
        assert {t.intent for t in result.top} == set(labels)
        assert sum(t.score for t in result.top) == pytest.approx(1.0, abs=1e-4)
    reference = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    features = AutoTokenizer.from_pretrained(tmp_path)(texts[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = torch.softmax(reference(**features).logits, dim=-1).numpy()
    served = np.array([[{t.intent: t.score for t in r.top}[label] for label in labels] for r in reply.results[:2]])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    await worker.stop(0)


async def test_concurrent_requests_get_their_own_answers(default_classifier):
    texts = ["Summarize this article in two sentences", "Hi, how are you?", "Plan a week in Rome for me"]
    replies = await asyncio.gather(*(classify(default_classifier, [t]) for t in texts * 4))
    assert [r.results[0].intent for r in replies] == ["summarization", "conversation", "task_planning"] * 4


async def test_a_reloaded_example_file_serves_its_new_intent_with_no_failed_request_on_the_way(tmp_path):
    """SIGHUP's reload (servicer.reload) under a closed loop of requests: none fails, and afterwards Info,
    ListIntents and Classify know the new intent; the fingerprint changes with the file."""
    examples = tmp_path / "intents.jsonl"

    def write(intents: dict[str, list[str]]) -> None:
        examples.write_text("\n".join(json.dumps({"text": text, "intent": intent})
                                      for intent, texts in intents.items() for text in texts))

    first_intents = {name: texts for name, texts in CUSTOM_INTENTS.items() if name != "book_flight"}
    write(first_intents)
    worker = await serve(examples=examples)
    try:
        before = await info(worker)
        assert "book_flight" not in before.labels
        write(CUSTOM_INTENTS)
        stop = asyncio.Event()
        answered: list[classifier_pb2.ClassifyResponse] = []

        async def caller() -> None:
            while not stop.is_set():
                answered.append(await classify(worker, list(HELD_OUT)))

        callers = [asyncio.create_task(caller()) for _ in range(4)]
        await asyncio.sleep(0.5)
        await worker.servicer.reload()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*callers)  # any failed call would raise here
        after = await info(worker)
        async with worker_channel(worker.port) as channel:
            listed = await classifier_pb2_grpc.ClassifierServiceStub(channel).ListIntents(
                classifier_pb2.ListIntentsRequest())
        reply = await classify(worker, list(HELD_OUT))
    finally:
        await worker.stop(0)
    assert len(answered) > 4
    assert "book_flight" in after.labels and "book_flight" in {intent.name for intent in listed.intents}
    assert after.fingerprint != before.fingerprint
    assert [r.intent for r in reply.results] == list(HELD_OUT.values())
    assert reply.fingerprint == after.fingerprint
    # Replies name the fingerprint of the head that computed them, or none when a reload fell in between.
    assert {r.fingerprint for r in answered} <= {before.fingerprint, after.fingerprint, ""}


async def test_an_example_file_that_does_not_load_keeps_the_old_intents(tmp_path, caplog):
    examples = tmp_path / "intents.jsonl"
    examples.write_text("\n".join(json.dumps({"text": text, "intent": intent})
                                  for intent, texts in CUSTOM_INTENTS.items() for text in texts))
    worker = await serve(examples=examples)
    try:
        before = await info(worker)
        examples.write_text("{not json")
        await worker.servicer.reload()
        after = await info(worker)
        reply = await classify(worker, list(HELD_OUT))
    finally:
        await worker.stop(0)
    assert after.labels == before.labels and after.fingerprint == before.fingerprint
    assert "not reloaded" in caplog.text
    assert [r.intent for r in reply.results] == list(HELD_OUT.values())
