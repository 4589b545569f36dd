"""The playground at `/` in headless Chromium, every other host blocked: each panel end to end
against the real models, as a person would use it."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.web.conftest import start_service, watched_page

pytestmark = pytest.mark.slow  # a real service process and a browser

SCREENSHOTS = os.environ.get("SEQSERVE_SCREENSHOTS") == "1"
DOCS = REPO_ROOT / "docs"
HOOKS = ["sentiment-input", "sentiment-submit", "sentiment-result", "translate-input", "translate-submit",
         "translate-output", "attention-heatmap", "music-submit", "music-sheet", "music-abc", "music-play",
         "music-status"]


def hook(page, name: str):
    return page.get_by_test_id(name)


def test_the_page_loads_every_asset_from_the_service(page, service):
    response = page.goto(service.url + "/")
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    page.wait_for_function("() => window.ABCJS && window.seqservePlayground")
    for name in HOOKS:
        assert hook(page, name).count() == 1, name
    assert not page.locator("#key-panel").is_visible(), "no key field while the service has no keys"
    loaded = {url.removeprefix(service.url) for url in page.watch.requests}
    assert {"/", "/static/playground.js", "/static/playground.css", "/static/vendor/abcjs/abcjs-basic-min.js"} <= loaded


def test_sentiment_panel_classifies_a_review(page, service):
    page.goto(service.url + "/")
    hook(page, "sentiment-input").fill("What a waste of two hours. The plot is a mess and the acting is wooden.")
    hook(page, "sentiment-submit").click()
    result = hook(page, "sentiment-result")
    page.wait_for_function("() => document.querySelector('[data-testid=sentiment-result]').dataset.label")
    assert result.get_attribute("data-label") == "negative"
    assert result.locator(".label").inner_text().lower().startswith("negative")
    positive = float(result.locator(".bar").get_attribute("data-positive"))
    expected = httpx.post(service.url + "/sentiment", json={"text": hook(page, "sentiment-input").input_value()},
                          timeout=30).json()["probabilities"]["positive"]
    assert positive == pytest.approx(expected, abs=1e-4)
    # the bar shows the probabilities: the negative part is as wide as its probability
    widths = page.evaluate("""() => [...document.querySelectorAll('[data-testid=sentiment-result] .bar > div')]
                                    .map(d => d.getBoundingClientRect().width)""")
    assert widths[0] / sum(widths) == pytest.approx(1 - expected, abs=0.01)


def test_translation_panel_translates_and_draws_the_attention_heatmap(page, service):
    page.goto(service.url + "/")
    sentence = "I have never been to Spain."
    hook(page, "translate-input").fill(sentence)
    hook(page, "translate-beam").fill("4")
    hook(page, "translate-submit").click()
    cells = hook(page, "attention-heatmap").locator("rect[data-weight]")
    cells.first.wait_for()
    expected = httpx.post(service.url + "/translate", json={"text": sentence, "beam_size": 4,
                                                            "return_attention": True}, timeout=30).json()
    assert hook(page, "translate-output").inner_text() == expected["translation"] == "Nunca he estado en España."
    rows, cols = len(expected["target_tokens"]), len(expected["source_tokens"])
    assert cells.count() == rows * cols
    weights = page.evaluate("""() => [...document.querySelectorAll('[data-testid=attention-heatmap] rect[data-weight]')]
                                     .map(r => [+r.dataset.row, +r.dataset.col, +r.dataset.weight])""")
    for row, col, weight in weights:
        assert weight == pytest.approx(expected["attention"][row][col], abs=1e-5)
    # rows are the Spanish subwords, columns the English ones: each labelled
    labels = hook(page, "attention-heatmap").locator("text.token").all_text_contents()
    assert labels == expected["target_tokens"] + expected["source_tokens"]
    # the weight on hover, as the matrix has it: "España" reads "Spain" as much as any word
    # (translate/2's two members split it between "to" and "Spain", 0.499 each)
    row, col = expected["target_tokens"].index("▁España"), expected["source_tokens"].index("▁Spain")
    hook(page, "attention-heatmap").locator(f'rect[data-row="{row}"][data-col="{col}"]').hover()
    readout = hook(page, "attention-readout").inner_text()
    assert readout.startswith("▁España ← ▁Spain: weight 0.")
    assert float(readout.rsplit(" ", 1)[1]) == pytest.approx(expected["attention"][row][col], abs=1e-3)
    assert expected["attention"][row][col] >= max(expected["attention"][row]) - 1e-3 > 0.4
    if SCREENSHOTS:
        hook(page, "sentiment-submit").click()
        page.wait_for_function("() => document.querySelector('[data-testid=sentiment-result]').dataset.label")
        page.locator("#sentiment").evaluate("n => n.parentElement.style.alignItems = 'start'")
        page.screenshot(path=str(DOCS / "playground.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 640})


MUSIC = {"seed": 7, "temperature": 0.9, "max_length": 1500}


def test_music_panel_streams_a_tune_then_draws_and_plays_it(page, service):
    page.goto(service.url + "/")
    page.wait_for_function("() => window.ABCJS")
    hook(page, "music-seed").fill(str(MUSIC["seed"]))
    hook(page, "music-temperature").fill(str(MUSIC["temperature"]))
    hook(page, "music-length").fill(str(MUSIC["max_length"]))
    assert hook(page, "music-stop-at-end").is_checked()
    hook(page, "music-submit").click()
    page.wait_for_function("() => document.querySelector('[data-testid=music-progress]').dataset.finishReason",
                           timeout=120_000)
    # the same request through the API: the page showed exactly its answer, streamed
    expected = httpx.post(service.url + "/generate-music", json={**MUSIC, "stop_at_end_of_tune": True},
                          timeout=120).json()
    assert hook(page, "music-abc").inner_text() == expected["abc"]
    assert expected["finish_reason"] == "end_of_tune" and len(expected["tunes"]) == 1
    tune = expected["tunes"][0]
    item = hook(page, "music-tunes").locator("li")
    assert item.count() == 1 and item.get_attribute("data-valid") == str(tune["valid"]).lower()
    assert ("✓ valid" if tune["valid"] else f"not valid: {tune['reason']}") in item.inner_text()

    # drawn as sheet music: an SVG with notes
    sheet = hook(page, "music-sheet")
    assert sheet.locator("svg").count() >= 1
    assert sheet.locator("svg .abcjs-note").count() > 20
    assert sheet.get_attribute("data-title") == tune["title"]

    # played in the browser: the samples come from the service, the audio clock runs
    hook(page, "music-play").click()
    page.wait_for_function("() => document.querySelector('[data-testid=music-status]').textContent === 'playing'",
                           timeout=60_000)
    first = page.evaluate("() => window.seqservePlayground.audio()")
    page.wait_for_timeout(500)
    later = page.evaluate("() => window.seqservePlayground.audio()")
    assert first["state"] == "running" and first["running"] and later["playing"]
    assert later["time"] > first["time"] + 0.3, "the audio clock advances while the tune plays"
    samples = [u for u in page.watch.requests if "/static/soundfont/acoustic_grand_piano-mp3/" in u]
    assert len(samples) >= 5, "each pitch of the tune is a sample from the service"
    if SCREENSHOTS:
        page.locator("#music").screenshot(path=str(DOCS / "playground_music.png"))
    hook(page, "music-play").click()
    assert hook(page, "music-status").inner_text() == "stopped"

    # the MIDI download is the service's MIDI of that tune
    with page.expect_download() as download:
        hook(page, "music-midi").click()
    path = download.value.path()
    midi = Path(path).read_bytes()
    assert midi[:4] == b"MThd"
    assert midi == httpx.post(service.url + "/generate-music/midi", json={"abc": tune["abc"]}, timeout=60).content


def test_an_invalid_tune_says_why(page, service):
    """A prompt without M: and L: cannot make a valid tune: the list says so, with the reason."""
    prompt, request = "X:1\nT:No Metre\nK:D\n", {"max_length": 800, "temperature": 1.0, "stop_at_end_of_tune": True}
    seed = next(seed for seed in range(1, 20) if httpx.post(
        service.url + "/generate-music", json={"prompt": prompt, "seed": seed, **request}, timeout=60).json()["tunes"])
    page.goto(service.url + "/")
    hook(page, "music-prompt").fill(prompt)
    hook(page, "music-seed").fill(str(seed))
    hook(page, "music-temperature").fill("1")
    hook(page, "music-length").fill("800")
    hook(page, "music-submit").click()
    page.wait_for_function("() => document.querySelector('[data-testid=music-progress]').dataset.finishReason",
                           timeout=120_000)
    item = hook(page, "music-tunes").locator("li").first
    assert item.get_attribute("data-valid") == "false"
    assert "not valid: headers: missing M, L" in item.inner_text()


def test_with_api_keys_the_page_asks_for_a_key_and_keeps_it_for_the_tab(browser, tmp_path):
    keyed = start_service(tmp_path / "service.log", env={"SEQSERVE_API_KEYS": "secret-key",
                                                          "SEQSERVE_EXPECTED_MODELS": "sentiment"})
    try:
        context, page, watch = watched_page(browser, keyed.url)
        watch.allowed_errors.append("401")  # the request sent without the key, on purpose
        page.goto(keyed.url + "/")
        key = hook(page, "api-key")
        assert key.is_visible()
        hook(page, "sentiment-submit").click()
        page.wait_for_function("() => /^401 unauthorized: missing API key/.test("
                               "document.querySelector('[data-testid=sentiment-result]').textContent)")
        key.fill("secret-key")
        hook(page, "sentiment-submit").click()
        page.wait_for_function("() => document.querySelector('[data-testid=sentiment-result]').dataset.label")
        assert hook(page, "sentiment-result").get_attribute("data-label") == "positive"
        page.reload()
        assert hook(page, "api-key").input_value() == "secret-key", "kept for the tab"
        other = context.new_page()
        other.goto(keyed.url + "/")
        assert hook(other, "api-key").input_value() == "", "another tab does not get it"
        context.close()
        watch.check()
    finally:
        keyed.stop()
