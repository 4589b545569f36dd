"""The int8 graphs the CPU serves by default (SEQSERVE_PRECISION=auto): chosen from the
manifest's verdicts, reported, and close to fp32. Their activations are quantized per batch, so
a result may differ slightly with the company it keeps; what is promised is measured here."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from tests.service.test_sentiment import REVIEWS


@pytest.fixture(scope="module")
def int8_client(models_dir):
    from service.app import create_app
    from service.config import Settings

    with TestClient(create_app(Settings(models_dir=models_dir, device="cpu", precision="auto"))) as client:
        yield client


def test_auto_serves_int8_on_the_cpu_where_the_manifest_allows_it(int8_client):
    models = {m["task"]: m for m in int8_client.get("/v1/models").json()["models"]}
    assert set(models) == {"sentiment", "music", "translate"}
    for task, model in models.items():
        assert model["precision"] == "int8", (task, model["precision_reason"])
        assert model["precisions"]["int8"]["servable"]
        assert model["metrics"]["evaluated_with"].endswith("int8)"), "the metrics of the graphs served"


def test_sentiment_in_a_batch_keeps_every_label_and_stays_near_its_answer_alone(int8_client):
    batch = int8_client.post("/sentiment", json={"texts": REVIEWS}).json()["results"]
    for text, result in zip(REVIEWS, batch):
        alone = int8_client.post("/sentiment", json={"text": text}).json()
        assert alone["label"] == result["label"]
        assert alone["probabilities"]["positive"] == pytest.approx(result["probabilities"]["positive"], abs=0.05)


def test_music_alone_is_reproducible_by_seed_and_batched_streams_complete(int8_client):
    music = int8_client.app.state.registry.get("music")

    async def collect(**request) -> str:
        return "".join([chunk async for chunk in music.generate("X:1\n", **request)])

    request = {"max_length": 200, "temperature": 1.0, "top_k": None, "seed": 4}
    first, second = (int8_client.portal.call(lambda: collect(**request)) for _ in range(2))
    assert first == second and len(first) == 200

    async def together():
        return await asyncio.gather(*(collect(**(request | {"seed": 40 + i})) for i in range(8)))

    assert [len(text) for text in int8_client.portal.call(together)] == [200] * 8


def test_translation_in_int8(int8_client):
    answer = int8_client.post("/translate", json={"text": "Where is the nearest train station?"}).json()
    assert "estación" in answer["translation"]
