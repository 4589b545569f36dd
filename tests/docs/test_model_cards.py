"""The model cards and README.md's status table are what docs/model_cards.py renders from the
newest manifests: regenerate them into a temporary folder and compare with the committed ones."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "docs" / "model_cards.py"
FIX = "run python docs/model_cards.py (and commit its output)"


def load_script():
    spec = importlib.util.spec_from_file_location("model_cards", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_cards_match_the_manifests(tmp_path: Path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"docs/model_cards.py failed:\n{result.stdout}\n{result.stderr}"
    cards = load_script()
    stale = []
    for task in cards.TASKS:
        committed = REPO_ROOT / "docs" / "models" / f"{task}.md"
        rendered = (tmp_path / f"{task}.md").read_text(encoding="utf-8")
        if not committed.is_file() or committed.read_text(encoding="utf-8") != rendered:
            stale.append(f"docs/models/{task}.md")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    if cards.readme_status(readme) != (tmp_path / cards.STATUS_FILE).read_text(encoding="utf-8"):
        stale.append("README.md (the status table between the model-status markers)")
    assert not stale, f"out of date with the manifests: {', '.join(stale)}: {FIX}"


def test_placeholders_are_filled_from_the_manifest():
    cards = load_script()
    from seqserve.manifest import Manifest, newest_version_dir

    manifest = Manifest.load(newest_version_dir(REPO_ROOT / "models" / "sentiment"))
    context = cards.context_of(manifest)
    assert cards.render("{{metrics[test_imdb][accuracy]:.3f}} {{id}} {a} {{training[seconds]:,.0f}}", context, "t") == \
        f"{manifest.metrics['test_imdb']['accuracy']:.3f} {manifest.id} {{a}} {manifest.training['seconds']:,.0f}"
    assert cards.render("{{metrics[parity_max_abs_diff]:.1e}}", {"metrics": {"parity_max_abs_diff": 9.5367e-07}}, "t") == "9.5e-7"
    for task in cards.TASKS:
        assert "{{" not in (REPO_ROOT / "docs" / "models" / f"{task}.md").read_text(encoding="utf-8")


def test_a_missing_field_names_the_template():
    cards = load_script()
    try:
        cards.render("{{metrics[no_such_metric]}}", {"metrics": {}}, "docs/models/templates/x.md")
    except SystemExit as error:
        assert "docs/models/templates/x.md" in str(error) and "no_such_metric" in str(error)
    else:
        raise AssertionError("a placeholder the manifest cannot fill must stop the rendering")
