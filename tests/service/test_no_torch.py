"""The service must run without torch: importing and building the app never loads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_service_imports_no_torch():
    code = (
        "import sys\n"
        "import service.__main__, service.app\n"
        "from service.config import Settings\n"
        "from fastapi.testclient import TestClient\n"
        "with TestClient(service.app.create_app(Settings(device='cpu'))) as c:\n"
        "    assert c.post('/sentiment', json={'text': 'good'}).status_code == 200\n"
        "leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m.startswith('training'))\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_torch_import_in_service_or_shared_sources():
    for package in ("service", "seqserve"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            for line in path.read_text().splitlines():
                stripped = line.strip()
                assert not stripped.startswith(("import torch", "from torch")), f"{path}: {line}"
