"""Fine-tuning from another run (`train.init_from`): it starts from that run's best weights,
and only where the network and the vocabulary are the same."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training import checkpoints  # noqa: E402
from training.sentiment.model import SentimentLSTM  # noqa: E402
from training.sentiment.train import initial_run, start_from_run  # noqa: E402


def run_with(tmp_path, tokenizer: str) -> SentimentLSTM:
    torch.manual_seed(0)
    trained = SentimentLSTM(50, 8, 6)
    (tmp_path / "from").mkdir()
    torch.save({"model": trained.state_dict()}, tmp_path / "from" / checkpoints.BEST)
    (tmp_path / "from" / "tokenizer.json").write_text(tokenizer)
    return trained


def test_a_run_starts_from_the_other_runs_best_weights(tmp_path):
    trained = run_with(tmp_path, "vocabulary")
    (tmp_path / "tokenizer.json").write_text("vocabulary")
    model = SentimentLSTM(50, 8, 6)
    start_from_run(model, initial_run(str(tmp_path / "from"), pretraining=False), tmp_path / "tokenizer.json")
    for name, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_a_missing_run_another_vocabulary_or_pretraining_first_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no best.pt and no tokenizer.json"):
        initial_run(str(tmp_path / "from"), pretraining=False)
    run_with(tmp_path, "vocabulary")
    with pytest.raises(SystemExit, match="pretraining"):
        initial_run(str(tmp_path / "from"), pretraining=True)
    (tmp_path / "tokenizer.json").write_text("another vocabulary")
    with pytest.raises(SystemExit, match="another tokenizer"):
        start_from_run(SentimentLSTM(50, 8, 6), tmp_path / "from", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text("vocabulary")
    with pytest.raises(SystemExit, match="do not fit"):  # another network
        start_from_run(SentimentLSTM(50, 8, 7), tmp_path / "from", tmp_path / "tokenizer.json")
