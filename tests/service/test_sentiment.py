"""POST /sentiment against the committed model."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.conftest import served

REVIEWS = [
    "An absolute joy from start to finish. I loved it.",
    "the plot is thin and the acting is wooden .",
    "Boring, predictable and far too long.<br /><br />I checked my watch every ten minutes.",
    "A moving, beautifully shot film with a brilliant lead performance.",
    "Worst movie I have seen in years!!! Avoid.",
]


def post(client, body):
    return client.post("/sentiment", json=body)


def check_result(result: dict) -> None:
    probabilities = result["probabilities"]
    assert set(probabilities) == {"negative", "positive"}
    assert math.isclose(probabilities["negative"] + probabilities["positive"], 1.0, abs_tol=1e-9)
    assert result["label"] in probabilities
    assert result["score"] == probabilities[result["label"]] >= 0.5


def test_single_text(client):
    response = post(client, {"text": "A wonderful, heartfelt film. The cast is superb."})
    assert response.status_code == 200
    body = response.json()
    check_result(body)
    assert body["label"] == "positive"
    assert body["model"] == f"sentiment/{served('sentiment').name}"
    assert response.headers["x-request-id"]


def test_negative_text(client):
    body = post(client, {"text": "Dull, lifeless and a complete waste of time."}).json()
    assert body["label"] == "negative"


def test_batch_keeps_order_and_matches_single_answers(client):
    response = post(client, {"texts": REVIEWS})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == f"sentiment/{served('sentiment').name}"
    assert [r["label"] for r in body["results"]] == ["positive", "negative", "negative", "positive", "negative"]
    for text, result in zip(REVIEWS, body["results"]):
        check_result(result)
        alone = post(client, {"text": text}).json()
        assert alone["probabilities"]["positive"] == pytest.approx(result["probabilities"]["positive"], abs=1e-5)


def test_concurrent_requests_get_their_own_answers(client):
    """Requests that share batches still get the answer for their own text."""
    texts = REVIEWS * 8
    expected = {text: post(client, {"text": text}).json()["probabilities"]["positive"] for text in REVIEWS}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: post(client, {"text": t}).json(), texts))
    for text, answer in zip(texts, answers):
        assert answer["probabilities"]["positive"] == pytest.approx(expected[text], abs=1e-5)


def test_64_texts_accepted(client):
    response = post(client, {"texts": [f"Review number {i}: quite good." for i in range(64)]})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 64


def test_long_paragraphs_and_unicode(client):
    text = ("Honestly? I wasn't sure going in. " * 200 + "😍 Das war großartig — très bien! ") * 2
    assert len(text) <= 20_000
    response = post(client, {"text": text})
    assert response.status_code == 200
    check_result(response.json())


def test_text_of_only_symbols_still_answers(client):
    response = post(client, {"text": "🙂🙂🙂 ..."})
    assert response.status_code == 200
    check_result(response.json())


def error_fields(response) -> list[list]:
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["message"]
    return [f["loc"] for f in body["fields"]]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"text": ""}, ["body", "text"]),
        ({"text": "   \n\t "}, ["body", "text"]),
        ({"texts": []}, ["body", "texts"]),
        ({"texts": ["fine", ""]}, ["body", "texts", 1]),
        ({"texts": ["x"] * 65}, ["body", "texts"]),
        ({"text": "x" * 20_001}, ["body", "text"]),
        ({"texts": ["ok", "x" * 20_001]}, ["body", "texts", 1]),
        ({"text": 42}, ["body", "text"]),
        ({"text": ["a list"]}, ["body", "text"]),
        ({"texts": "not a list"}, ["body", "texts"]),
        ({"texts": [1, 2]}, ["body", "texts", 0]),
        ({"text": "ok", "extra": 1}, ["body", "extra"]),
    ],
)
def test_schema_errors_are_422_naming_the_field(client, body, field):
    response = post(client, body)
    assert response.status_code == 422
    assert field in error_fields(response)


@pytest.mark.parametrize("body", [{}, {"text": "a", "texts": ["b"]}])
def test_exactly_one_of_text_and_texts(client, body):
    response = post(client, body)
    assert response.status_code == 422
    assert "exactly one of 'text' or 'texts'" in response.json()["message"]


def test_null_is_not_a_text(client):
    response = post(client, {"text": None, "texts": None})
    assert response.status_code == 422
    assert ["body", "text"] in error_fields(response) and ["body", "texts"] in error_fields(response)


def test_limits_are_counted_after_trimming(client):
    assert post(client, {"text": "  " + "x" * 20_000 + "  "}).status_code == 200
    assert post(client, {"text": " \n\t "}).status_code == 422


def test_the_schema_states_the_limits_as_the_api_counts_them(client):
    # maxLength would count the text as sent: the schema would then reject what the API takes.
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SentimentRequest"]["properties"]
    for text in (schema["text"], schema["texts"]["items"]):
        assert "maxLength" not in text and text["x-max-length-after-trimming"] == 20_000
        assert text["pattern"] == r"\S"


def test_malformed_json_is_422(client):
    response = client.post("/sentiment", content=b'{"text": ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


def test_oversized_body_is_413(client):
    body = b'{"text": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    response = client.post("/sentiment", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_oversized_chunked_body_is_413(client):
    def chunks():
        yield b'{"text": "'
        for _ in range(5):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    response = client.post("/sentiment", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
