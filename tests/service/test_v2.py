"""The Open Inference Protocol, driven by Triton's own HTTP client (tritonclient) against a
real `python -m service`: server and model readiness, metadata and configuration, and the same
answers as the typed endpoints with binary and with JSON tensors, parameters included."""

from __future__ import annotations

import signal
import subprocess

import httpx
import numpy as np
import pytest

tritonclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.conftest import RunningService  # noqa: E402

pytestmark = pytest.mark.slow  # starts a real server process for tritonclient

REVIEWS = ["A gorgeous, patient film; I loved every minute.", "What a waste of two hours."]
SENTENCES = ["Where is the station?", "Tom bought three books yesterday."]


@pytest.fixture(scope="module")
def served():
    service = RunningService({"SEQSERVE_LOG_LEVEL": "warning"}, output=subprocess.DEVNULL).wait_ready()
    url = f"127.0.0.1:{service.port}"
    try:
        yield url, tritonclient.InferenceServerClient(url=url, network_timeout=120)
    finally:
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(timeout=60)


def text(element) -> str:
    """A BYTES element as tritonclient hands it back: bytes from binary data, str from JSON."""
    return element.decode() if isinstance(element, bytes) else element


def texts_input(name: str, texts: list[str], binary: bool):
    tensor = tritonclient.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary)
    return tensor


def test_the_server_and_every_model_are_ready_and_described(served):
    _, client = served
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "seqserve"
    for name, inputs, outputs in (("sentiment", ["text"], ["label", "probabilities"]),
                                  ("translate", ["text"], ["translation", "attention"]), ("music", ["prompt"], ["abc"])):
        assert client.is_model_ready(name)
        metadata = client.get_model_metadata(name)
        assert [t["name"] for t in metadata["inputs"]] == inputs and [t["name"] for t in metadata["outputs"]] == outputs
        assert metadata["inputs"][0]["datatype"] == "BYTES" and -1 in metadata["outputs"][0]["shape"] + [-1]
        version = metadata["versions"][0]
        assert client.is_model_ready(name, model_version=version)
        assert client.get_model_config(name)["name"] == name


@pytest.mark.parametrize("binary", [True, False])
def test_sentiment_gives_the_typed_endpoint_s_answers(served, binary):
    url, client = served
    result = client.infer("sentiment", [texts_input("text", REVIEWS, binary)],
                          outputs=[tritonclient.InferRequestedOutput("label", binary_data=binary),
                                   tritonclient.InferRequestedOutput("probabilities", binary_data=binary)])
    typed = httpx.post(f"http://{url}/sentiment", json={"texts": REVIEWS}, timeout=60).json()["results"]
    assert [text(label) for label in result.as_numpy("label")] == [r["label"] for r in typed]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities[:, 1], [r["probabilities"]["positive"] for r in typed], atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_translation_with_parameters_gives_the_typed_endpoint_s_answers(served, binary):
    url, client = served
    result = client.infer("translate", [texts_input("text", SENTENCES, binary)], parameters={"beam_size": 2},
                          outputs=[tritonclient.InferRequestedOutput("translation", binary_data=binary),
                                   tritonclient.InferRequestedOutput("attention", binary_data=binary)])
    typed = httpx.post(f"http://{url}/translate", json={"texts": SENTENCES, "beam_size": 2, "return_attention": True},
                       timeout=60).json()["results"]
    assert [text(t) for t in result.as_numpy("translation")] == [r["translation"] for r in typed]
    attention = result.as_numpy("attention")
    first = np.array(typed[0]["attention"])
    np.testing.assert_allclose(attention[0, :first.shape[0], :first.shape[1]], first, atol=1e-4)


def test_music_with_a_seed_gives_the_typed_endpoint_s_tune(served):
    url, client = served
    result = client.infer("music", [texts_input("prompt", [""], True)],
                          parameters={"max_length": 120, "seed": 11, "temperature": 0.9})
    typed = httpx.post(f"http://{url}/generate-music", json={"max_length": 120, "seed": 11, "temperature": 0.9},
                       timeout=60).json()
    assert text(result.as_numpy("abc")[0]) == typed["abc"]


def test_errors_come_in_the_protocol_s_form(served):
    url, client = served
    with pytest.raises(InferenceServerException, match="unknown model 'poetry'"):
        client.infer("poetry", [texts_input("text", ["x"], False)])
    wrong = tritonclient.InferInput("text", [1], "INT64")
    wrong.set_data_from_numpy(np.array([1], dtype=np.int64))
    with pytest.raises(InferenceServerException, match="must be BYTES"):
        client.infer("sentiment", [wrong])
    with pytest.raises(InferenceServerException, match="at most 8|less than or equal to 8"):
        client.infer("translate", [texts_input("text", ["Hello."], False)], parameters={"beam_size": 9})
    response = httpx.post(f"http://{url}/v2/models/sentiment/infer", json={"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [65], "data": ["x"] * 65}]})
    assert response.status_code == 422 and set(response.json()) == {"error"}
    assert httpx.get(f"http://{url}/v2/models/sentiment/versions/999").status_code == 404


def test_statistics_count_the_inferences(served):
    _, client = served
    stats = client.get_inference_statistics("sentiment")["model_stats"][0]
    assert stats["name"] == "sentiment" and stats["inference_count"] >= 4 and stats["execution_count"] >= 1
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0
