"""The pages as HTTP sees them (no browser): served by the service with every asset local,
open without a key, outside the rate limit and the models' admission."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings

PAGES = ["/", "/docs", "/redoc", "/docs/oauth2-redirect"]
ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'|spec-url="([^"]+)\"""")


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """No model at all: the pages need none."""
    with TestClient(create_app(Settings(models_dir=tmp_path_factory.mktemp("empty"), device="cpu"))) as client:
        yield client


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    settings = Settings(models_dir=tmp_path_factory.mktemp("empty"), device="cpu", api_keys=["k1"],
                        rate_limit_per_minute=2, metrics_open=False)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("path", PAGES)
def test_every_page_loads_its_assets_from_the_service(bare, path):
    response = bare.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assets = [next(filter(None, match)) for match in ASSET.findall(response.text)]
    for asset in assets:
        assert not re.match(r"^(https?:)?//", asset), f"{path} loads {asset} from another host"
        if asset.startswith("#") or asset.startswith("data:"):
            continue
        url = asset if asset.startswith("/") else "/" + asset
        assert bare.get(url).status_code == 200, f"{path}: {asset}"
    assert "cdn." not in response.text and "fonts.googleapis" not in response.text


@pytest.mark.parametrize("path", PAGES)
def test_the_browser_is_told_to_load_nothing_from_another_host(bare, path):
    policy = dict(part.strip().split(" ", 1) for part in bare.get(path).headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["connect-src"] == "'self'"
    for directive, sources in policy.items():
        assert not re.search(r"https?:|\*", sources), (directive, sources)
    if path == "/":
        assert policy["script-src"] == "'self'", "the playground runs no inline script"


def test_fastapi_s_cdn_docs_are_not_there(bare):
    html = bare.get("/docs").text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html and "jsdelivr" not in html
    assert '"validatorUrl": null' in html
    assert "/static/vendor/redoc/redoc.standalone.js" in bare.get("/redoc").text


def test_the_playground_has_every_test_hook(bare):
    html = bare.get("/").text
    for hook in ("sentiment-input", "sentiment-submit", "sentiment-result", "translate-input", "translate-submit",
                 "translate-output", "attention-heatmap", "music-submit", "music-sheet", "music-abc", "music-play",
                 "music-status"):
        assert html.count(f'data-testid="{hook}"') == 1, hook
    assert 'data-api-keys="off"' in html


def test_pages_are_open_with_keys_and_outside_the_rate_limit(keyed):
    for _ in range(3):  # the rate limit is 2 a minute
        for path in PAGES + ["/openapi.json", "/static/playground.js", "/static/vendor/abcjs/abcjs-basic-min.js",
                             "/static/soundfont/acoustic_grand_piano-mp3/A4.mp3"]:
            assert keyed.get(path).status_code == 200, path
    assert 'data-api-keys="on"' in keyed.get("/").text
    assert keyed.post("/sentiment", json={"text": "fine"}).json()["error"] == "unauthorized"
    assert keyed.get("/metrics").status_code == 401
    missing = keyed.get("/static/nothing-here.js")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    escape = keyed.get("/static/%2e%2e/app.py")  # the open prefix opens the static folder only
    assert escape.status_code == 404 and "create_app" not in escape.text


def test_static_files_are_one_metrics_label(bare):
    def served() -> float:
        found = re.search(r'seqserve_requests_total\{endpoint="/static",outcome="ok",status="200"\} (\S+)',
                          bare.get("/metrics").text)
        return float(found.group(1)) if found else 0.0

    before = served()
    for name in ("playground.js", "playground.css", "favicon.svg"):
        bare.get(f"/static/{name}")
    assert served() == before + 3
    metrics = bare.get("/metrics").text
    bare.get("/")
    assert 'seqserve_requests_total{endpoint="/",outcome="ok",status="200"}' in bare.get("/metrics").text
    assert "playground.js" not in metrics


def test_the_playground_shows_the_key_field_only_with_keys(bare, keyed):
    assert 'data-api-keys="off"' in bare.get("/").text and 'data-api-keys="on"' in keyed.get("/").text
