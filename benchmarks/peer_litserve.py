"""LitServe's side of `benchmarks.peer_servers` (a module of its own: LitServe pickles the API
class into its worker process, and it is only installed in .peers-venv)."""

from __future__ import annotations

from pathlib import Path

import litserve as ls

from benchmarks.peer_servers import BATCH, BATCH_TIMEOUT_S, Classifier


class SentimentAPI(ls.LitAPI):
    def __init__(self, models_dir: Path, precision: str):
        super().__init__(max_batch_size=BATCH, batch_timeout=BATCH_TIMEOUT_S, api_path="/predict")
        self.models_dir, self.precision = models_dir, precision

    def setup(self, device):
        self.classifier = Classifier(self.models_dir, self.precision)

    def decode_request(self, request):
        return request["text"]

    def batch(self, inputs):
        return list(inputs)

    def predict(self, texts):
        return self.classifier(texts)

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output


def serve(models_dir: Path, precision: str, port: int) -> None:
    server = ls.LitServer(SentimentAPI(models_dir, precision), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)
