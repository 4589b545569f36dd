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


@pytest.mark.slow
def test_a_refit_trains_on_the_validation_rows_too_with_the_training_splits_vocabulary(data_cache, tmp_path):
    """`train.refit`: the validation rows join training after the tokenizer is built (so a refit
    shares its vocabulary, and an ensemble graph, with runs that did not train on them), and
    every epoch up to max_epochs runs, the last one exported."""
    import json

    from tests.conftest import run_cli

    env = {"SEQSERVE_CACHE_DIR": str(data_cache)}
    summaries = {}
    for name, refit in (("plain", "false"), ("refit", "true")):
        run_cli("training", "train", "sentiment", "--profile", "smoke", "--run-dir", str(tmp_path / name),
                "--no-progress", "--set", "pretrain.epochs=0", "--set", "train.max_epochs=2",
                "--set", f"train.refit={refit}", env=env)
        summaries[name] = json.loads((tmp_path / name / "training.json").read_text())
    plain, refit = summaries["plain"], summaries["refit"]
    assert refit["train_examples"] == plain["train_examples"] + plain["validation_examples"]
    assert refit["refit_on_validation_too"] is True and plain["refit_on_validation_too"] is None
    assert refit["epochs_run"] == refit["best_epoch"] == 2 and refit["stopped"] == "max_epochs"
    assert (tmp_path / "plain" / "tokenizer.json").read_bytes() == (tmp_path / "refit" / "tokenizer.json").read_bytes()
