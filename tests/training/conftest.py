"""Training tests never write to the repository's models/: those that export pass a temporary
--model-dir or SEQSERVE_MODELS_DIR, and each test checks that the committed models are
exactly as they were."""

from __future__ import annotations

import pytest

from tests.conftest import MODELS_DIR


def committed_models() -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(MODELS_DIR)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(MODELS_DIR.rglob("*"))}


@pytest.fixture(autouse=True)
def committed_models_untouched():
    before = committed_models()
    yield
    assert committed_models() == before, "a training test changed the repository's models/"
