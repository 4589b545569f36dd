"""The sentiment graph behind other servers, for `python -m benchmarks --peers`.

    python -m benchmarks.peer_servers fastapi  --port 8101 --models-dir models --precision int8
    python -m benchmarks.peer_servers litserve --port 8102 --models-dir models --precision int8

Each serves POST /predict {"text": ...} -> {"label", "probabilities"} with exactly seqserve's
preprocessing (seqserve.sentiment: the tokenizer, truncation, softmax) and the same graph file
in the same precision, on an ONNX Runtime session with its default options, and each batches
the way its framework does:

- fastapi: plain FastAPI + uvicorn, one text per graph run (the run in a thread, as a
  blocking call in an async app must be);
- litserve: LitServe's own batching (max_batch_size 32, batch_timeout 5 ms), one worker;
- bentoml: BentoML's adaptive batching (benchmarks/peer_bentoml.py, served by `bentoml serve`).

LitServe and BentoML run in their own virtual environment (benchmarks.peers makes it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pydantic import BaseModel

from seqserve.manifest import Manifest, newest_version_dir
from seqserve.sentiment import decode, load_encoder

BATCH = 32
BATCH_TIMEOUT_S = 0.005


class Review(BaseModel):
    text: str


class Classifier:
    """seqserve's preprocessing and graph, without seqserve's service."""

    def __init__(self, models_dir: Path, precision: str):
        model_dir = newest_version_dir(models_dir / "sentiment")
        manifest = Manifest.load(model_dir)
        self.encoder = load_encoder(model_dir, manifest)
        self.session = ort.InferenceSession(str(model_dir / manifest.graph_files(precision)["classifier"]),
                                            providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str]) -> list[dict]:
        ids, lengths = self.encoder.encode(texts)
        logits = self.session.run(["logits"], {"input_ids": ids, "lengths": np.asarray(lengths)})[0]
        return [{"label": p.label, "probabilities": p.probabilities} for p in decode(logits)]


def serve_fastapi(classifier: Classifier, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    app = FastAPI()

    @app.post("/predict")
    async def predict(review: Review) -> dict:
        return (await run_in_threadpool(classifier, [review.text]))[0]

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=["fastapi", "litserve"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    if args.server == "fastapi":
        serve_fastapi(Classifier(args.models_dir, args.precision), args.port)
    else:
        from benchmarks.peer_litserve import serve

        serve(args.models_dir, args.precision, args.port)


if __name__ == "__main__":
    main()
