"""/healthz, /readyz, /v1/models, /metrics, and readiness when a model cannot be served."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from seqserve.manifest import Manifest, sha256_file
from service.app import create_app
from service.config import Settings
from tests.conftest import MODELS_DIR, REPO_ROOT, served


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_when_all_models_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "models": {"sentiment": "ready", "music": "ready",
                                                             "translate": "ready"}}


def test_models_report_provider_signature_hashes_and_metrics(client, models_dir):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    sentiment = models["sentiment"]
    version = served("sentiment", models_dir)
    manifest = Manifest.load(version)
    assert sentiment["version"] == version.name and sentiment["ready"]
    assert sentiment["provider"] == "CPUExecutionProvider"  # the fixture asks for device=cpu
    assert sentiment["providers"]["classifier"][0] == sentiment["provider"]
    assert sentiment["files"]["model.onnx"] == sha256_file(version / "model.onnx")
    inputs = sentiment["graphs"]["classifier"]["inputs"]
    assert [(i["name"], i["shape"]) for i in inputs] == [("input_ids", ["batch", "sequence"]), ("lengths", ["batch"])]
    assert sentiment["metrics"]["test_imdb"] == manifest.metrics["test_imdb"]


def test_metrics_exposition(client):
    client.post("/sentiment", json={"text": "fine"})
    client.post("/sentiment", json={"text": ""})
    text = client.get("/metrics").text
    for name in ("seqserve_requests_total", "seqserve_request_duration_seconds_bucket",
                 "seqserve_in_flight_requests", "seqserve_queue_wait_seconds_bucket",
                 "seqserve_batch_size_bucket", "seqserve_inference_seconds_bucket",
                 "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        assert name in text, name
    assert 'seqserve_requests_total{endpoint="/sentiment",outcome="ok",status="200"}' in text
    assert 'seqserve_requests_total{endpoint="/sentiment",outcome="validation_error",status="422"}' in text
    version = served("sentiment").name
    assert f'seqserve_batch_size_count{{model="sentiment",version="{version}"}}' in text
    assert f'seqserve_model_ready{{model="sentiment",version="{version}"}} 1.0' in text
    assert "_created" not in text


def test_warm_up_is_not_counted_in_the_model_metrics(models_dir):
    settings = Settings(models_dir=models_dir, device="cpu", expected_models=["sentiment"])
    with TestClient(create_app(settings)) as fresh:
        model = fresh.app.state.registry.get("sentiment")
        labels = {"model": "sentiment", "version": model.manifest.version}
        count = lambda: model.metrics.registry.get_sample_value("seqserve_batch_size_count", labels)  # noqa: E731
        assert count() == 0
        fresh.post("/sentiment", json={"text": "fine"})
        assert count() == 1


def test_openapi_documents_every_endpoint_with_examples(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def has_example(content: dict) -> bool:
        media = next(iter(content.values()))
        if "example" in media or "examples" in media:
            return True
        refs = [media["schema"]] + media["schema"].get("anyOf", [])
        return all(schemas[r["$ref"].split("/")[-1]].get("examples") for r in refs if "$ref" in r)

    for path in ("/sentiment", "/translate", "/generate-music", "/generate-music/midi", "/healthz", "/readyz",
                 "/v1/models", "/metrics"):
        for operation in spec["paths"][path].values():
            content = operation["responses"]["200"]["content"]
            # A binary body (the MIDI file) has its example on the request side only.
            assert all(has_example({media: spec}) for media, spec in content.items()
                       if not media.startswith("audio/")), path
            if "requestBody" in operation:
                assert has_example(operation["requestBody"]["content"]), path
    assert len(schemas["SentimentRequest"]["examples"]) == 2


def test_unknown_route_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.fixture()
def corrupt_models_dir(tmp_path, models_dir):
    target = tmp_path / "models"
    shutil.copytree(models_dir / "sentiment", target / "sentiment")
    graph = served("sentiment", target) / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-100] + b"\0" * 100)
    return target


def test_model_whose_hash_mismatches_is_not_ready(corrupt_models_dir):
    with TestClient(create_app(Settings(models_dir=corrupt_models_dir, device="cpu"))) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert "sha256" in response.json()["models"]["sentiment"]
        answer = client.post("/sentiment", json={"text": "fine"})
        assert answer.status_code == 503
        assert answer.json()["error"] == "not_ready"
        assert answer.headers["retry-after"]


def test_empty_models_dir_is_not_ready(tmp_path):
    with TestClient(create_app(Settings(models_dir=tmp_path, device="cpu"))) as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_device_cuda_without_cuda_keeps_model_not_ready(models_dir):
    """With device=cuda a model whose session is not really on CUDA must not serve."""
    with TestClient(create_app(Settings(models_dir=models_dir, device="cuda"))) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        if models["sentiment"]["ready"]:
            pytest.skip("this host runs the model on CUDA")
        assert client.get("/readyz").status_code == 503
        assert "cuda" in models["sentiment"]["error"].lower()


@pytest.fixture()
def sentiment_only(tmp_path, models_dir):
    target = tmp_path / "models"
    shutil.copytree(models_dir / "sentiment", target / "sentiment")
    return target


def test_readyz_names_each_expected_model_that_is_missing_without_absolute_paths(sentiment_only):
    with TestClient(create_app(Settings(models_dir=sentiment_only, device="cpu"))) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        models = response.json()["models"]
        assert models["sentiment"] == "ready"
        assert set(models) == {"sentiment", "translate", "music"}
        assert str(sentiment_only) not in response.text and "/" not in models["translate"]
    settings = Settings(models_dir=sentiment_only, device="cpu", expected_models=["sentiment"])
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200


def test_a_queue_smaller_than_the_warm_up_batches_still_gets_ready(models_dir):
    """Warm-up does not go through admission, so a small max_queue_size cannot keep a model cold."""
    settings = Settings(models_dir=models_dir, device="cpu", max_queue_size=2)
    assert settings.client_max_queue_size == 2  # the default follows the smaller queue
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        response = client.post("/translate", json={"texts": ["One.", "Two.", "Three."]})
        assert response.status_code == 503 and response.json()["error"] == "overloaded"


def test_settings_that_cannot_work_together_are_refused_by_name():
    with pytest.raises(ValueError, match="client_max_queue_size"):
        Settings(max_queue_size=2, client_max_queue_size=5)
    with pytest.raises(ValueError, match="poetry"):
        Settings(expected_models=["sentiment", "poetry"])


def test_a_refused_cors_preflight_is_json(models_dir):
    settings = Settings(models_dir=models_dir, device="cpu", cors_origins=["https://app.example"],
                        expected_models=["sentiment"])
    with TestClient(create_app(settings)) as client:
        response = client.options("/sentiment", headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
        assert response.status_code == 400 and response.json()["error"] == "cors_refused"
        assert "origin" in response.json()["message"].lower()


def test_validation_of_a_body_full_of_unknown_keys_is_quick_small_and_names_a_few(client):
    import json
    import time

    body = json.dumps({"text": "fine"} | {f"key{i}" + "x" * 5: 1 for i in range(400)})
    response = client.post("/sentiment", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and len(response.content) < 2_000
    assert len(response.json()["fields"]) == 3 and response.json()["fields"][0]["loc"] == ["body", "key0xxxxx"]
    bomb = json.dumps({"text": "fine"} | {f"key{i}": 1 for i in range(200_000)})  # 2.4 MB
    started = time.perf_counter()
    response = client.post("/sentiment", content=bomb, headers={"content-type": "application/json"})
    took = time.perf_counter() - started
    assert response.status_code == 422 and "JSON strings" in response.json()["message"], response.text[:300]
    assert took < 0.2, f"refusing took {took:.2f} s: the body was parsed"
    response = client.post("/sentiment", json={"texts": [1] * 500_000})
    assert response.status_code == 422 and len(response.json()["fields"]) == 1


def test_text_limits_count_the_normalised_text(client):
    expanding = "\u33af" * 5_000  # one character, six after NFKC: 30,000
    response = client.post("/generate-music", json={"prompt": expanding})
    assert response.status_code == 422 and "NFKC" in response.json()["message"]
    assert client.post("/sentiment", json={"text": "\u33af" * 3_000}).status_code == 200


OPERATIONS = {("/sentiment", "post"): ("classify_sentiment", "sentiment"),
              ("/translate", "post"): ("translate", "translation"),
              ("/generate-music", "post"): ("generate_music", "music"),
              ("/generate-music/midi", "post"): ("music_to_midi", "music"),
              ("/healthz", "get"): ("health", "operations"),
              ("/readyz", "get"): ("readiness", "operations"),
              ("/v1/models", "get"): ("list_models", "operations"),
              ("/metrics", "get"): ("metrics", "operations")}
TASK_ERRORS = {"401": {"unauthorized"}, "408": {"request_timeout"}, "413": {"payload_too_large"},
               "422": {"validation_error", "too_much_work"}, "429": {"client_busy", "rate_limited"},
               "500": {"inference_failed", "internal_error"},
               "503": {"overloaded", "timeout", "shutting_down", "not_ready"}}


def _offline_spec(**settings) -> dict:
    """The OpenAPI document of an app with these settings (no model needs to load for it)."""
    return create_app(Settings(models_dir=MODELS_DIR, device="cpu", **settings)).openapi()


def test_openapi_operation_ids_and_a_tag_per_task(client):
    spec = client.get("/openapi.json").json()
    for (path, method), (operation_id, tag) in OPERATIONS.items():
        operation = spec["paths"][path][method]
        assert (operation["operationId"], operation["tags"]) == (operation_id, [tag]), path
    assert [t["name"] for t in spec["tags"]][:4] == ["sentiment", "translation", "music", "operations"]
    assert all(t.get("description") for t in spec["tags"][:4])
    ids = [op["operationId"] for operations in spec["paths"].values() for op in operations.values()]
    assert len(ids) == len(set(ids)), "operation ids are unique"
    assert not {"/", "/docs", "/redoc"} & set(spec["paths"]), "the pages are not API operations"


def test_openapi_documents_every_error_of_every_route_with_the_one_error_schema(client):
    from service.api.errors import ERRORS, ErrorCode

    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["ErrorBody"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorCode",
                                                           "description": schemas["ErrorBody"]["properties"]["error"]["description"]}
    assert set(schemas["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}
    expected = {"/sentiment": TASK_ERRORS, "/translate": TASK_ERRORS, "/generate-music": TASK_ERRORS,
                "/generate-music/midi": {"401": {"unauthorized"}, "408": {"request_timeout"},
                                         "413": {"payload_too_large"}, "422": {"validation_error", "too_complex"},
                                         "429": {"rate_limited"}, "500": {"internal_error"},
                                         "503": {"timeout", "shutting_down", "not_ready"}},
                "/v1/models": {"401": {"unauthorized"}, "429": {"rate_limited"}, "500": {"internal_error"}},
                "/metrics": {"401": {"unauthorized"}, "429": {"rate_limited"}, "500": {"internal_error"}},
                "/healthz": {"500": {"internal_error"}}, "/readyz": {"500": {"internal_error"}}}
    for path, statuses in expected.items():
        (operation,) = spec["paths"][path].values()
        documented = {status: set(response["content"]["application/json"]["examples"])
                      for status, response in operation["responses"].items()
                      if status[0] in "45" and "examples" in response.get("content", {}).get("application/json", {})}
        assert documented == statuses, path
        for status, codes in statuses.items():
            response = operation["responses"][status]
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
            assert all(f"`{code}`" in response["description"] for code in codes)
            assert all(ERRORS[ErrorCode(code)][0] == int(status) for code in codes)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (path, status)
    readiness = spec["paths"]["/readyz"]["get"]["responses"]["503"]
    assert readiness["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ReadinessResponse"}


def test_the_error_codes_are_one_list_for_the_code_the_docs_and_the_server():
    """ErrorCode is the list: docs/api.md's table has exactly its codes at the same statuses, the
    server's own refusals (service/http.py) use only them, and error_response refuses any other."""
    import re

    from service.api.errors import ERRORS, ErrorCode, error_response

    table = re.findall(r"^\| (\d{3})[^|]*\| `(\w+)` \|", (REPO_ROOT / "docs" / "api.md").read_text(), re.M)
    assert {code: int(status) for status, code in table} == {code.value: ERRORS[code][0] for code in ErrorCode}
    refusals = re.findall(r'refuse\(\s*(\d+),\s*"(\w+)"', (REPO_ROOT / "service" / "http.py").read_text())
    assert refusals and all(ERRORS[ErrorCode(code)][0] == int(status) for status, code in refusals)
    with pytest.raises(ValueError):
        error_response(400, "some_new_code", "a code outside the enum is a bug")


def test_openapi_security_schemes_and_what_each_route_asks_for():
    spec = _offline_spec()
    assert spec["components"]["securitySchemes"] == {
        "Bearer": {"type": "http", "scheme": "bearer", "description": ANY_TEXT},
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": ANY_TEXT}}
    keyed = [path for path in ("/sentiment", "/translate", "/generate-music", "/generate-music/midi", "/v1/models",
                               "/metrics")]
    for path in keyed:  # without keys configured, a key is welcome but not needed
        (operation,) = spec["paths"][path].values()
        assert operation["security"] == [{"Bearer": []}, {"ApiKey": []}, {}], path
    for path in ("/healthz", "/readyz"):
        assert "security" not in spec["paths"][path]["get"]
    spec = _offline_spec(api_keys=["k"], metrics_open=False)
    for path in keyed:
        (operation,) = spec["paths"][path].values()
        assert operation["security"] == [{"Bearer": []}, {"ApiKey": []}], path
    spec = _offline_spec(api_keys=["k"])  # METRICS_OPEN: /metrics needs no key
    assert spec["paths"]["/metrics"]["get"]["security"][-1] == {}


class _AnyText:
    def __eq__(self, other) -> bool:
        return isinstance(other, str) and len(other) > 10


ANY_TEXT = _AnyText()


def test_openapi_describes_the_event_stream(client):
    spec = client.get("/openapi.json").json()
    answer = spec["paths"]["/generate-music"]["post"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/MusicResponse"}
    events = answer["content"]["text/event-stream"]
    kinds = {event["properties"]["event"]["const"]: event["properties"]["data"]
             for event in events["schema"]["oneOf"]}
    assert {name: data["contentSchema"]["$ref"].split("/")[-1] for name, data in kinds.items()} == {
        "chunk": "MusicChunk", "result": "MusicResponse", "error": "MusicStreamError"}
    assert all(data["contentMediaType"] == "application/json" for data in kinds.values())
    for name in ("MusicChunk", "MusicResponse", "MusicStreamError"):
        assert name in spec["components"]["schemas"]
    assert "id: 0\nevent: chunk" in events["example"] and ": keep-alive" in events["example"]
    assert "keep-alive" in answer["description"] and "`id:`" in answer["description"]
    request = spec["components"]["schemas"]["MusicRequest"]["properties"]
    assert request["stop_at_end_of_tune"]["default"] is False
    assert spec["components"]["schemas"]["MusicResponse"]["properties"]["finish_reason"]["enum"] == ["length",
                                                                                                   "end_of_tune"]
