"""Out-of-scope detection with the real embedder: a made-up intent file, texts the head never saw."""

from pathlib import Path

import grpc
import pytest
import yaml

from services.classifier.servicer import build
from services.classifier.settings import ClassifierSettings
from tests.network import worker_channel
from tests.workers import started
from torchgate.v1 import classifier_pb2, classifier_pb2_grpc

DATA = Path(__file__).resolve().parents[1] / "data"
EVAL = yaml.safe_load((DATA / "banking_eval.yaml").read_text())
IN_SCOPE = [(text, intent) for intent, texts in EVAL["in_scope"].items() for text in texts]
OUT_OF_SCOPE = EVAL["out_of_scope"]


async def serve(examples: Path, **fields):
    settings = ClassifierSettings(port=0, metrics_port=0, examples=examples, grace_period_s=1, **fields)
    return await started(build(settings))


@pytest.fixture(scope="module")
async def banking():
    worker = await serve(DATA / "banking_intents.yaml")
    async with worker_channel(worker.port) as channel:
        yield worker, classifier_pb2_grpc.ClassifierServiceStub(channel)
    await worker.stop(0)


async def intents(stub, texts: list[str], **fields) -> list[str]:
    reply = await stub.Classify(classifier_pb2.ClassifyRequest(texts=texts, **fields))
    return [result.intent for result in reply.results]


async def test_texts_outside_every_intent_are_out_of_scope_and_the_others_keep_their_intent(banking):
    _, stub = banking
    in_scope = await intents(stub, [text for text, _ in IN_SCOPE])
    outside = await intents(stub, OUT_OF_SCOPE)
    in_scope_accuracy = sum(got == want for got, (_, want) in zip(in_scope, IN_SCOPE, strict=True)) / len(IN_SCOPE)
    recall = outside.count("out_of_scope") / len(OUT_OF_SCOPE)
    overall = (in_scope_accuracy * len(IN_SCOPE) + recall * len(OUT_OF_SCOPE)) / (len(IN_SCOPE) + len(OUT_OF_SCOPE))
    print(f"\nOUT_OF_SCOPE in-scope accuracy {in_scope_accuracy:.3f}, out-of-scope recall {recall:.3f}, "
          f"overall {overall:.3f} ({len(IN_SCOPE)} in scope, {len(OUT_OF_SCOPE)} outside)")
    assert in_scope_accuracy >= 0.9 and recall >= 0.8, (in_scope, outside)


async def test_forcing_an_intent_returns_a_real_one_and_top_lists_only_real_intents(banking):
    _, stub = banking
    reply = await stub.Classify(classifier_pb2.ClassifyRequest(texts=OUT_OF_SCOPE[:5], force_intent=True, top_k=6))
    assert all(result.intent in EVAL["in_scope"] for result in reply.results)
    assert all("out_of_scope" not in [t.intent for t in result.top] for result in reply.results)
    listed = await stub.ListIntents(classifier_pb2.ListIntentsRequest())
    assert [intent.name for intent in listed.intents][-1] == "out_of_scope"


async def test_the_threshold_comes_from_the_file_alone_reproducibly(banking, tmp_path):
    worker, _ = banking
    first = worker.servicer.adapter.state.scope
    again = await serve(DATA / "banking_intents.yaml")
    try:
        assert again.servicer.adapter.state.scope == first
    finally:
        await again.stop(0)
    assert 0 < first.threshold < 1 and first.in_scope_accuracy >= 0.95, first


async def test_labelled_out_of_scope_examples_train_a_class_and_the_feature_can_be_switched_off(tmp_path):
    examples = yaml.safe_load((DATA / "banking_intents.yaml").read_text())
    examples["intents"]["out_of_scope"] = {"description": "anything else", "examples": OUT_OF_SCOPE[10:]}
    with_examples = tmp_path / "with-out-of-scope.yaml"
    with_examples.write_text(yaml.safe_dump(examples))
    worker = await serve(with_examples)
    off = await serve(DATA / "banking_intents.yaml", out_of_scope=False)
    try:
        async with worker_channel(worker.port) as channel, worker_channel(off.port) as off_channel:
            stub, off_stub = (classifier_pb2_grpc.ClassifierServiceStub(c) for c in (channel, off_channel))
            outside = await intents(stub, OUT_OF_SCOPE[:10])
            assert outside.count("out_of_scope") >= 8, outside
            assert "out_of_scope" not in await intents(off_stub, OUT_OF_SCOPE[:10])
            listed = await off_stub.ListIntents(classifier_pb2.ListIntentsRequest())
            assert "out_of_scope" not in [intent.name for intent in listed.intents]
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Classify(classifier_pb2.ClassifyRequest(texts=[" "]))
    finally:
        await worker.stop(0)
        await off.stop(0)
