"""Access control, timeouts, abandoned work, hostile input, faults and the access log."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings

KEY, OTHER_KEY = "k-3f9c2a7e1b", "k-second-55d0"


def make_client(models_dir, raise_server_exceptions: bool = True, **overrides) -> TestClient:
    return TestClient(create_app(Settings(models_dir=models_dir, device="cpu", **overrides)),
                      raise_server_exceptions=raise_server_exceptions)


@pytest.fixture(scope="module")
def keyed(models_dir):
    with make_client(models_dir, api_keys=[KEY, OTHER_KEY]) as client:
        yield client


def test_settings_read_comma_separated_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("SEQSERVE_API_KEYS", f"{KEY}, {OTHER_KEY}")
    monkeypatch.setenv("SEQSERVE_CORS_ORIGINS", "https://a.example,https://b.example")
    settings = Settings()
    assert settings.api_keys == [KEY, OTHER_KEY] and settings.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY + "x"},
                                     {"Authorization": KEY}])
def test_missing_or_wrong_key_is_401_json(keyed, headers):
    response = keyed.post("/sentiment", json={"text": "fine"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized" and response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": OTHER_KEY},
                                     {"authorization": f"bearer {OTHER_KEY}"}])
def test_a_valid_key_passes(keyed, headers):
    assert keyed.post("/sentiment", json={"text": "fine"}, headers=headers).status_code == 200


def test_health_readiness_and_metrics_stay_open(keyed):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert keyed.get(path).status_code == 200, path


def test_metrics_can_require_a_key(models_dir):
    with make_client(models_dir, api_keys=[KEY], metrics_open=False) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200


def test_keys_and_bodies_are_never_logged(keyed, caplog):
    secret_text = "a-very-private-review-text-0417"
    with caplog.at_level(logging.DEBUG):
        keyed.post("/sentiment", json={"text": secret_text}, headers={"Authorization": f"Bearer {KEY}"})
        keyed.post("/sentiment", json={"text": secret_text}, headers={"X-API-Key": "wrong-key-value"})
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert KEY not in logged and "wrong-key-value" not in logged and secret_text not in logged


def test_one_access_line_per_request_with_id_status_latency_and_batch_size(keyed, caplog):
    with caplog.at_level(logging.INFO, logger="seqserve.access"):
        response = keyed.post("/sentiment", json={"texts": ["good", "bad"]}, headers={"X-API-Key": KEY,
                                                                                      "X-Request-ID": "req-77"})
    assert response.headers["x-request-id"] == "req-77"
    lines = [r.fields for r in caplog.records if r.name == "seqserve.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-77" and line["route"] == "/sentiment" and line["status"] == 200
    assert line["latency_ms"] > 0 and line["batch_size"] >= 2
    from service.request_log import JsonFormatter

    formatted = json.loads(JsonFormatter().format(caplog.records[-1]))
    assert formatted["request_id"] == "req-77" and formatted["logger"] == "seqserve.access"


def test_rate_limit_answers_429_with_retry_after(models_dir):
    with make_client(models_dir, api_keys=[KEY, OTHER_KEY], rate_limit_per_minute=2) as client:
        statuses = [client.post("/sentiment", json={"text": "ok"}, headers={"X-API-Key": KEY}).status_code
                    for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = client.post("/sentiment", json={"text": "ok"}, headers={"X-API-Key": KEY})
        assert limited.json()["error"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
        # Another key has its own budget.
        assert client.post("/sentiment", json={"text": "ok"}, headers={"X-API-Key": OTHER_KEY}).status_code == 200


def test_cors_is_off_by_default_and_configurable(client, models_dir):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/sentiment", headers=preflight).headers
    with make_client(models_dir, cors_origins=["https://app.example"]) as allowed:
        response = allowed.options("/sentiment", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_a_request_admission_expects_to_take_too_long_is_refused_before_any_work(models_dir):
    with make_client(models_dir, request_timeout_s=0.2) as client:
        response = client.post("/generate-music", json={"max_length": 5000, "seed": 1})
        assert response.status_code == 422 and response.json()["error"] == "too_much_work"
        assert "0.2 s request timeout" in response.json()["message"]
        assert client.app.state.registry.get("music").generator.in_flight == 0


def test_a_request_over_its_timeout_gets_503_json_and_its_work_is_dropped(models_dir, monkeypatch):
    from service.fairness import Admission

    # Admission's estimate can be wrong (a slower machine, a busier moment): the deadline holds anyway.
    monkeypatch.setattr(Admission, "check_deadline", lambda *args: None)
    with make_client(models_dir, request_timeout_s=0.2) as client:
        response = client.post("/generate-music", json={"max_length": 5000, "seed": 1})
        assert response.status_code == 503 and response.json()["error"] == "timeout"
        assert "retry-after" in response.headers
        music = client.app.state.registry.get("music")

        async def streams_left():
            import asyncio

            for _ in range(100):
                if music.generator.in_flight == 0:
                    return 0
                await asyncio.sleep(0.01)
            return music.generator.in_flight

        assert client.portal.call(streams_left) == 0
        streamed = client.post("/generate-music", json={"max_length": 5000, "seed": 1, "stream": True})
        assert streamed.status_code == 200 and '"error": "timeout"' in streamed.text.strip().splitlines()[-1]
        assert client.post("/sentiment", json={"text": "still serving"}).status_code == 200


HOSTILE = ["\x00" * 50, "\x01\x02\x03\x7f\x1b[31m", "x" * 20_000, "😀" * 5000, "\u202e\u200f" * 100,
           "a\u0301" * 3000, "\ufeff\ufffe\uffff", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " * 500]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_never_gives_a_500(client, text):
    sentiment = client.post("/sentiment", json={"text": text})
    translate = client.post("/translate", json={"text": text[:1000], "beam_size": 2, "max_length": 20})
    music = client.post("/generate-music", json={"prompt": text[:5000], "max_length": 20, "seed": 1})
    assert sentiment.status_code in (200, 422) and translate.status_code in (200, 422)
    assert music.status_code in (200, 422)
    for response in (sentiment, translate, music):
        assert response.headers["content-type"].startswith("application/json")


def test_lone_surrogates_are_422_naming_the_field(client):
    for path, field in (("/sentiment", "text"), ("/translate", "text"), ("/generate-music", "prompt")):
        response = client.post(path, content=f'{{"{field}": "\\ud800 hi"}}', headers={"content-type": "application/json"})
        assert response.status_code == 422 and field in response.json()["message"]


@pytest.fixture
def lenient(models_dir):
    """A client that gets the 500 answer instead of the server's exception re-raised."""
    with make_client(models_dir, raise_server_exceptions=False) as client:
        yield client


def test_a_failing_inference_fails_its_batch_with_json_and_the_server_keeps_serving(lenient, monkeypatch):
    import onnxruntime as ort

    client = lenient
    model = client.app.state.registry.get("sentiment")
    failures = iter([True])

    def broken_once(real_run):
        def run(*args, **kwargs):
            if next(failures, False):
                raise ort.capi.onnxruntime_pybind11_state.Fail("injected: ONNX Runtime failed on this batch")
            return real_run(*args, **kwargs)
        return run

    for session in model.lane_sessions:  # whichever lane takes the batch
        monkeypatch.setattr(session, "run", broken_once(session.run), raising=False)
    broken = client.post("/sentiment", json={"text": "fine"})
    assert broken.status_code == 500 and broken.json()["error"] == "inference_failed"
    assert client.post("/sentiment", json={"text": "fine"}).status_code == 200


def test_a_client_that_disconnects_cancels_its_generation(client):
    """A non-streamed request whose client goes away: its stream leaves the batch at once."""
    import asyncio
    import json as json_module

    app, music = client.app, client.app.state.registry.get("music")
    body = json_module.dumps({"max_length": 5000, "seed": 9}).encode()

    async def call_then_leave():
        sent_body, messages = False, []

        async def receive():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(0.3)  # generation is under way; then the client hangs up
            return {"type": "http.disconnect"}

        async def send(message):
            messages.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/generate-music", "raw_path": b"/generate-music", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
        started = asyncio.get_running_loop().time()
        await app(scope, receive, send)
        elapsed = asyncio.get_running_loop().time() - started
        for _ in range(100):
            if music.generator.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        return elapsed, music.generator.in_flight, messages[0]["status"]

    elapsed, streams_left, status = client.portal.call(call_then_leave)
    assert elapsed < 2.0, "the request should end when its client leaves, not after 5,000 characters"
    assert streams_left == 0 and status == 499


def test_each_endpoint_takes_no_bigger_body_than_its_largest_legitimate_request(client):
    from service.api.schemas import ENDPOINT_BODY_BYTES

    largest = {"texts": ["\u00e9" * 1_000] * 32, "beam_size": 1, "max_length": 1}  # every character escaped: 6 bytes
    body = json.dumps(largest).encode()
    assert len(body) <= ENDPOINT_BODY_BYTES["/translate"]
    response = client.post("/translate", content=body + b" " * (ENDPOINT_BODY_BYTES["/translate"] - len(body) + 1),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    assert client.post("/generate-music", json={"prompt": "\u00e9" * 5_000, "max_length": 1}).status_code == 200
    assert len(json.dumps({"prompt": "\u00e9" * 5_000})) <= ENDPOINT_BODY_BYTES["/generate-music"]
    assert len(json.dumps({"abc": "\u00e9" * 2_000})) <= ENDPOINT_BODY_BYTES["/generate-music/midi"]
