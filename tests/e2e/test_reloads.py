"""Changes without a restart, as an operator makes them: SIGHUP to a classifier worker process after its
example file changed (a new intent, no failed request meanwhile), and SIGHUP to the gateway after its routing
file changed (the new alias at once, the old one gone)."""

import asyncio
import json
import signal
import time

import httpx
import yaml

from tests.e2e.processes import start_gateway, start_worker, wait_serving
from tests.network import refusing_port

INTENTS = {
    "order_pizza": ["I want a large pepperoni pizza", "Can I get two margheritas delivered?",
                    "Order me a pizza with mushrooms", "One vegetarian pizza please"],
    "check_weather": ["Will it rain tomorrow?", "What's the temperature outside?", "Is it sunny in Paris today?",
                      "Do I need an umbrella today?"],
}
NEW_INTENT = {"book_flight": ["Book a flight to Berlin next Monday", "I need a plane ticket to Tokyo",
                              "Find me a cheap flight to New York", "Get me a return flight to London"]}
FLIGHT = "Book me on a flight to Lisbon"


def write_examples(path, intents: dict[str, list[str]]) -> None:
    path.write_text("\n".join(json.dumps({"text": text, "intent": intent})
                              for intent, texts in intents.items() for text in texts))


# The few-shot classifier's id is derived from its embedder's: it answers to that id in full only.
CLASSIFIER = "few-shot:sentence-transformers/all-MiniLM-L6-v2"


def write_routes(path, alias: str) -> None:
    path.write_text(yaml.safe_dump({"aliases": {alias: {"versions": [{"model": CLASSIFIER, "weight": 1}]}}}))


async def test_sighup_reloads_the_example_file_and_the_routing_file(tmp_path):
    examples, routes = tmp_path / "intents.jsonl", tmp_path / "routes.yaml"
    write_examples(examples, INTENTS)
    write_routes(routes, "intents")
    worker, port = start_worker(tmp_path, kind="classifier", examples=str(examples), out_of_scope="false")
    gateway = None
    try:
        wait_serving(port, service="torchgate.v1.ClassifierService")
        gateway, url = start_gateway([refusing_port()], tmp_path, env={
            "TORCHGATE_GATEWAY_CLASSIFIER__ADDRESSES": f"127.0.0.1:{port}",
            "TORCHGATE_GATEWAY_ROUTES_FILE": str(routes)})
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async def intent(model: str = "intents") -> tuple[int, str]:
                reply = await client.post("/v1/classify", json={"text": FLIGHT, "model": model})
                return reply.status_code, reply.json()["results"][0]["intent"] if reply.status_code == 200 else ""

            give_up = time.monotonic() + 30
            while (await intent())[0] != 200:  # the gateway learns the worker's names
                assert time.monotonic() < give_up, "the alias never routed"
                await asyncio.sleep(0.2)
            statuses: list[int] = []
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    statuses.append((await client.post("/v1/classify", json={"texts": ["Pizza please", "Rain?"]},
                                                       headers={"Cache-Control": "no-cache"})).status_code)

            loading = asyncio.create_task(load())
            write_examples(examples, INTENTS | NEW_INTENT)
            worker.signal(signal.SIGHUP)
            give_up = time.monotonic() + 60
            while (await intent())[1] != "book_flight":
                assert time.monotonic() < give_up, "the new intent was never served"
                await asyncio.sleep(0.2)
            write_routes(routes, "intents-v2")
            gateway.signal(signal.SIGHUP)
            await asyncio.sleep(0.2)
            assert await intent("intents-v2") == (200, "book_flight")
            assert (await intent("intents"))[0] == 404
            stop.set()
            await loading
            assert statuses and set(statuses) == {200}, "no request fails during either reload"
    finally:
        if gateway:
            gateway.stop()
        worker.stop()
