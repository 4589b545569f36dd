"""POST /translate against the committed model, and its continuous batching of beam searches."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.conftest import served


def translate(client, **body):
    response = client.post("/translate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_single_text(client, models_dir):
    body = translate(client, text="I love you.")
    assert body["model"] == f"translate/{served('translate', models_dir).name}"
    assert body["translation"] and body["attention"] is None and body["source_truncated"] is False
    assert body["source_tokens"][0] == "▁I" and body["target_tokens"]


def test_a_batch_answers_in_order_and_like_single_requests(client, models_dir):
    texts = ["Good morning.", "Where do you live?", "The cat is sleeping on the sofa."]
    batch = translate(client, texts=texts, beam_size=2)
    assert len(batch["results"]) == 3 and batch["model"] == f"translate/{served('translate', models_dir).name}"
    for text, result in zip(texts, batch["results"]):
        assert translate(client, text=text, beam_size=2)["translation"] == result["translation"]


@pytest.mark.parametrize("beam_size", range(1, 9))
def test_every_beam_size(client, beam_size):
    body = translate(client, text="We should leave before it gets dark.", beam_size=beam_size)
    assert body["translation"]


def test_attention_matrix_is_aligned_with_the_tokens(client):
    body = translate(client, text="My brother doesn't like coffee.", return_attention=True, beam_size=4)
    attention = np.array(body["attention"])
    assert attention.shape == (len(body["target_tokens"]), len(body["source_tokens"]))
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, atol=1e-3)
    assert (attention >= 0).all()


def test_max_length_bounds_the_output(client):
    body = translate(client, text="She told me that she would come back before nine o'clock tonight.", max_length=3)
    assert len(body["target_tokens"]) == 3


def test_a_long_text_is_cut_and_says_so(client):
    body = translate(client, text=" ".join(["I see a dog and a cat."] * 40), max_length=8)
    assert body["source_truncated"] is True


@pytest.mark.parametrize("body, field", [
    ({"text": ""}, "text"), ({"text": "   "}, "text"), ({"text": "a" * 1001}, "text"),
    ({"text": "Hi.", "beam_size": 0}, "beam_size"), ({"text": "Hi.", "beam_size": 9}, "beam_size"),
    ({"text": "Hi.", "max_length": 0}, "max_length"), ({"text": "Hi.", "max_length": 257}, "max_length"),
    ({"texts": []}, "texts"), ({"texts": ["Hi."] * 33}, "texts"), ({"texts": ["Hi.", ""]}, "texts"),
    ({"text": "Hi.", "return_attention": "maybe"}, "return_attention"), ({"text": "Hi.", "beam": 2}, "beam"),
    ({"text": 5}, "text"),
])
def test_bad_requests_get_422_naming_the_field(client, body, field):
    response = client.post("/translate", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["message"]


def test_both_or_neither_text_field_is_422(client):
    for body in ({}, {"text": "Hi.", "texts": ["Hi."]}):
        response = client.post("/translate", json=body)
        assert response.status_code == 422 and "exactly one" in response.json()["message"]


@pytest.mark.parametrize("text", [
    "I love you 😀🎉", "Él está en el café, ¿no?", "שלום, how are you?", "مرحبا my friend",
    "tab\there\x00null\x1bescape\u202ereversed", "\u200b\u200d\ufeff", "𝕳𝖊𝖑𝖑𝖔 ｗｏｒｌｄ", "😀",
])
def test_any_unicode_gets_an_answer(client, text):
    body = translate(client, texts=[text], beam_size=3, return_attention=True)
    result = body["results"][0]
    assert result["source_tokens"], "every text is read as at least one token ([UNK] if nothing else)"
    assert len(result["attention"]) == len(result["target_tokens"])
    assert all(len(row) == len(result["source_tokens"]) and abs(sum(row) - 1) < 1e-3 for row in result["attention"])


def test_concurrent_requests_with_different_settings_share_the_batcher(client):
    requests = [{"text": "The weather is nice today.", "beam_size": b, "max_length": m}
                for b in (1, 4) for m in (5, 60)] * 3

    async def run_all():
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as async_client:
            return await asyncio.gather(*(async_client.post("/translate", json=body) for body in requests))

    answers = client.portal.call(run_all)
    for body, answer in zip(requests, answers):
        assert answer.status_code == 200
        assert answer.json()["translation"] == translate(client, **body)["translation"]


def test_the_model_translates(client):
    assert translate(client, text="Where is the station?")["translation"] == "¿Dónde está la estación?"
    assert translate(client, text="I have never been to Spain.")["translation"] == "Nunca he estado en España."


@pytest.mark.parametrize("text, kept", [
    ("Zebulon bought 1,234 apples.", ["Zebulon", "1,234"]),
    ("Call me at 555-0199 tomorrow.", ["555-0199"]),
    ("Kwabena and Siobhan went to Reykjavik.", ["Kwabena", "Siobhan", "Reykjavik"]),
    # the verb after the names looked at them; the copies must not take its place
    ("Kwame Nkrumah died in 1972.", ["Kwame", "Nkrumah", "murió", "1972"]),
])
def test_unknown_names_and_numbers_are_copied_not_garbled(client, text, kept):
    translation = translate(client, text=text, beam_size=4)["translation"]
    for word in kept:
        assert word in translation, translation


@pytest.mark.parametrize("text, translated, not_copied", [
    # days and months the model translates: the English names must not replace them (issue 19)
    ("The museum is closed on Mondays, so we will go on Tuesday instead.", ["lunes", "martes"], ["Mondays", "Tuesday"]),
    ("My birthday is in January.", ["enero"], ["January"]),
    ("The shop opens on Saturdays.", ["sábados"], ["Saturdays"]),
    # languages and nationalities: Spanish writes them in lower case, as the model does
    ("We speak French and Spanish at home.", ["francés", "español"], ["French", "Spanish"]),
    ("She is German.", ["alemán"], ["German"]),
    # names the vocabulary knows stay the model's, with its accent
    ("Tom and Mary went to Berlin.", ["Tom", "Mary", "Berlín"], ["Berlin"]),
])
def test_a_word_the_model_translated_is_never_overwritten_by_a_copy(client, text, translated, not_copied):
    translation = translate(client, text=text, beam_size=4)["translation"]
    for word in translated:
        assert word in translation, translation
    for word in not_copied:
        assert word not in translation.split(), translation


def test_a_name_the_model_spells_back_in_pieces_is_copied(client):
    """The model writes "Kowal" for Kowalczyk and "Saskon" for Saskatoon: copied from the source."""
    translation = translate(client, text="I met Kowalczyk in Saskatoon last Friday.", beam_size=4)["translation"]
    assert "Kowalczyk" in translation and "Saskatoon" in translation and "viernes" in translation, translation


def test_characters_never_seen_are_set_aside_and_put_back(client):
    body = translate(client, text="I love you 😀", beam_size=4)
    assert body["translation"].endswith("😀") and body["translation"].startswith("Te ")
    assert "[UNK]" not in body["source_tokens"]
    leading = translate(client, text="🎉 Happy birthday!")["translation"]
    assert leading.startswith("🎉 ") and "cumpleaños" in leading


LONG = "She told me that she would come back before nine o'clock tonight, but she did not come back until the next morning."


@pytest.fixture(scope="module")
def translator(client):
    return client.app.state.registry.get("translate").translator


def test_a_request_joins_a_running_search_and_does_not_wait_for_it(client, translator):
    """Continuous batching: a short request arriving mid-search is answered while the long
    search is still running, and both get what they get alone."""
    long_alone = translate(client, text=LONG, beam_size=8, max_length=100)["translation"]
    short_alone = translate(client, text="Hello!", beam_size=1)["translation"]

    async def run():
        long = asyncio.create_task(translator.translate([LONG], 8, 100))
        while not translator.batch.searches or translator.batch.searches[0].steps < 3:
            await asyncio.sleep(0.001)
        short = await translator.translate(["Hello!"], 1, 100)
        long_running = not long.done()
        return short[0].translation, long_running, (await long)[0].translation

    short, long_was_running, long = client.portal.call(run)
    assert long_was_running, "the short request should not have waited for the long search"
    assert (short, long) == (short_alone, long_alone)


def test_a_cancelled_request_leaves_the_batch(client, translator):
    async def run():
        task = asyncio.create_task(translator.translate([LONG, LONG], 8, 100))
        while len(translator.batch) < 2:
            await asyncio.sleep(0.001)
        task.cancel()
        for _ in range(1000):
            if translator.in_flight == 0 and not translator.batch:
                return True
            await asyncio.sleep(0.005)
        return False

    assert client.portal.call(run)


def test_a_failing_step_fails_only_its_requests(client, translator):
    graph = translator.batch.step_graph

    class Failing:
        def run(self, *args, **kwargs):
            translator.batch.step_graph = graph  # fail once
            raise RuntimeError("device lost")

    async def run():
        translator.batch.step_graph = Failing()
        failed = None
        try:
            await translator.translate(["Hello!"], 1, 20)
        except RuntimeError as error:
            failed = str(error)
        after = await translator.translate(["Hello!"], 1, 20)
        return failed, after[0].translation

    failed, after = client.portal.call(run)
    assert failed == "device lost"
    assert after == translate(client, text="Hello!", beam_size=1)["translation"]
