"""The peer comparison serves the same thing: the plain-FastAPI peer answers exactly what
seqserve answers for the same text, precision and graph (LitServe and BentoML need
.peers-venv, made by `python -m benchmarks --peers`, and are not started here)."""

from __future__ import annotations

import httpx
import pytest

from benchmarks import peers
from benchmarks.server import free_port

pytestmark = pytest.mark.slow  # starts a server process


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_fastapi_peer_answers_what_seqserve_answers(client, models_dir, precision):
    texts = ["A gorgeous, patient film.", "Dull, and far too long. I left early."]
    port = free_port()
    process = peers.start("fastapi", port, models_dir, precision)
    try:
        theirs = [httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": t}, timeout=10).json() for t in texts]
    finally:
        peers.stop(process)
    model = client.app.state.registry.get("sentiment")
    session = model.session if precision == "fp32" else None
    if session is None:  # the int8 graph, run the way the service runs it
        from service import runtime

        session = runtime.create_session(model.model_dir / model.manifest.graph_files("int8")["classifier"],
                                         model.settings)
    ours = [model.predict_batch([text], session)[0] for text in texts]  # one text a run, as the peer runs them
    for mine, peer in zip(ours, theirs):
        assert peer["label"] == mine.label
        assert peer["probabilities"]["positive"] == pytest.approx(mine.probabilities["positive"], abs=1e-5)
