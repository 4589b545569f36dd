"""POST /generate-music and /generate-music/midi against the committed model."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from seqserve.abc import complete_tunes
from service.api.routes.music import prefers_event_stream, with_keepalive
from service.tasks.music import TuneEnd
from tests.conftest import served


def generate(client, **body):
    response = client.post("/generate-music", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_default_request_writes_tunes(client):
    body = generate(client, max_length=700, seed=11)
    assert body["abc"].startswith("X:1\n")
    assert len(body["abc"]) == len("X:1\n") + 700
    assert body["model"] == f"music/{served('music').name}" and body["seed"] == 11 and body["ignored_characters"] == []
    for tune in body["tunes"]:
        assert tune["abc"].startswith("X:") and isinstance(tune["valid"], bool)
        assert tune["abc"] in body["abc"]


def test_a_seed_is_chosen_and_returned_when_none_is_given(client):
    body = generate(client, max_length=20)
    again = generate(client, max_length=20, seed=body["seed"])
    assert again["abc"] == body["abc"]


def test_same_seed_same_output_and_different_seeds_differ(client):
    first = generate(client, max_length=300, seed=5, temperature=0.9, top_k=20)
    second = generate(client, max_length=300, seed=5, temperature=0.9, top_k=20)
    other = generate(client, max_length=300, seed=6, temperature=0.9, top_k=20)
    assert first["abc"] == second["abc"]
    assert other["abc"] != first["abc"]


def test_continuing_a_prompt(client):
    prompt = "X:1\nT:The Kesh\nM:6/8\nL:1/8\nK:G\n"
    body = generate(client, prompt=prompt, max_length=200, seed=2)
    assert body["abc"].startswith(prompt) and len(body["abc"]) == len(prompt) + 200


def test_prompt_characters_outside_the_vocabulary_are_folded_or_dropped(client):
    body = generate(client, prompt="X:1\nT:Über den Fluss ☃🎻\nM:4/4\n", max_length=10, seed=1)
    assert body["abc"].startswith("X:1\nT:Uber den Fluss \nM:4/4\n")
    assert set(body["ignored_characters"]) == {"☃", "🎻"}


def test_a_prompt_of_only_unknown_characters_starts_a_new_tune(client):
    body = generate(client, prompt="☃☃", max_length=5, seed=1)
    assert body["abc"].startswith("X:1\n") and body["ignored_characters"] == ["☃"]


@pytest.mark.parametrize("body, field", [
    ({"temperature": 0}, "temperature"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": 2.01}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 10_000}, "top_k"),
    ({"max_length": 0}, "max_length"),
    ({"max_length": 5001}, "max_length"),
    ({"seed": -1}, "seed"),
    ({"prompt": "x" * 5001}, "prompt"),
    ({"max_length": "long"}, "max_length"),
    ({"unknown": 1}, "unknown"),
])
def test_bad_parameters_are_422_naming_the_field(client, body, field):
    response = client.post("/generate-music", json=body)
    assert response.status_code == 422
    assert ["body", field] in [f["loc"] for f in response.json()["fields"]]


def test_bounds_themselves_are_accepted(client):
    assert len(generate(client, max_length=1, temperature=2, top_k=1, seed=0)["abc"]) == len("X:1\n") + 1


def read_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) of each Server-Sent Event; every event has the next id, comments are skipped."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        assert fields["id"] == str(len(events)), block
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def stream(client, body: dict, headers: dict | None = None) -> tuple[str, str]:
    with client.stream("POST", "/generate-music", json=body, headers=headers or {}) as response:
        assert response.status_code == 200
        return response.headers["content-type"], "".join(response.iter_text())


@pytest.mark.parametrize("how", ["body", "accept"])
def test_streaming_sends_chunks_then_the_final_answer(client, how):
    body, headers = {"max_length": 200, "seed": 4}, {}
    if how == "body":
        body["stream"] = True
    else:
        headers["accept"] = "text/event-stream"
    content_type, text = stream(client, body, headers)
    assert content_type.startswith("text/event-stream")
    events = read_events(text)
    chunks = [data["text"] for name, data in events if name == "chunk"]
    assert len(chunks) >= 3 and chunks[0] == "X:1\n", "the first chunk is the prompt as the model reads it"
    assert [name for name, _ in events] == ["chunk"] * len(chunks) + ["result"]
    final = events[-1][1]
    assert final["abc"] == "".join(chunks), "the chunks joined are the answer's abc"
    assert final["finish_reason"] == "length"
    assert final == generate(client, max_length=200, seed=4)


def test_the_prompt_chunk_is_the_prompt_as_the_model_reads_it(client):
    _, text = stream(client, {"prompt": "X:1\nT:Über\n", "max_length": 40, "seed": 1, "stream": True})
    events = read_events(text)
    assert events[0] == ("chunk", {"text": "X:1\nT:Uber\n"})
    assert "".join(data["text"] for name, data in events if name == "chunk") == events[-1][1]["abc"]


@pytest.mark.parametrize("accept, streamed", [
    ("text/event-stream", True),
    ("text/event-stream; charset=utf-8", True),
    ("application/json, text/event-stream", False),  # a tie: JSON, the default
    ("text/event-stream, application/json;q=0.5", True),
    ("application/json;q=0.9, text/event-stream", True),
    ("text/event-stream;q=0", False),
    ("text/event-stream;q=0, */*", False),
    ("*/*", False),
    ("text/*", True),  # matches only the stream
    ("application/*, text/*;q=0.5", False),
    ("application/x-not-text/event-stream", False),  # no substring match
    ("TEXT/EVENT-STREAM", True),
    ("text/event-stream;q=oops", False),
    ("", False),
    (None, False),
])
def test_the_accept_header_is_negotiated_not_matched(accept, streamed):
    assert prefers_event_stream(accept) is streamed


@pytest.mark.parametrize("stream_field, accept, streamed", [
    (True, "application/json", True),
    (False, "text/event-stream", False),  # the body says so: it wins
    (None, "application/json;q=0.2, text/event-stream", True),
    (None, "application/json, text/event-stream;q=0.9", False),
])
def test_the_body_field_wins_over_the_accept_header(client, stream_field, accept, streamed):
    body = {"max_length": 20, "seed": 1} | ({} if stream_field is None else {"stream": stream_field})
    content_type, _ = stream(client, body, {"accept": accept})
    assert content_type.startswith("text/event-stream" if streamed else "application/json")


def test_stop_at_end_of_tune_ends_with_the_first_complete_tune(client):
    request = {"max_length": 2000, "seed": 7, "temperature": 0.9}
    whole = generate(client, **request)
    stopped = generate(client, **request, stop_at_end_of_tune=True)
    assert stopped["finish_reason"] == "end_of_tune" and whole["finish_reason"] == "length"
    assert stopped["abc"].endswith("\n\n") and len(stopped["abc"]) < len(whole["abc"])
    # the same seed samples the same characters: the stopped answer is where the first tune ends
    assert whole["abc"].startswith(stopped["abc"])
    assert complete_tunes(stopped["abc"]) == complete_tunes(whole["abc"])[:1]
    assert [t["abc"] for t in stopped["tunes"]] == complete_tunes(stopped["abc"])
    _, text = stream(client, {**request, "stop_at_end_of_tune": True, "stream": True})
    events = read_events(text)
    assert events[-1] == ("result", stopped)
    assert "".join(data["text"] for name, data in events if name == "chunk") == stopped["abc"]


def test_stop_at_end_of_tune_still_stops_at_max_length(client):
    body = generate(client, max_length=30, seed=7, stop_at_end_of_tune=True)
    assert body["finish_reason"] == "length" and len(body["abc"]) == len("X:1\n") + 30 and body["tunes"] == []


def test_a_prompt_that_ends_a_tune_stops_after_the_next_one(client):
    first = generate(client, max_length=2000, seed=7, temperature=0.9, stop_at_end_of_tune=True)["abc"]
    body = generate(client, prompt=first, max_length=2000, seed=8, temperature=0.9, stop_at_end_of_tune=True)
    assert body["finish_reason"] == "end_of_tune" and len(complete_tunes(body["abc"])) == 2


def test_tune_end_reads_text_as_complete_tunes_splits_it():
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice("\n\nX:a1") for _ in range(rng.randint(0, 30)))
        watcher = TuneEnd()
        ends = [i for i, character in enumerate(text) if watcher.feed(character)]
        assert len(ends) == len(complete_tunes(text)), repr(text)
        assert TuneEnd(text).ended == (bool(ends) and ends[-1] == len(text) - 1)


def test_a_stream_with_nothing_to_say_sends_keep_alive_comments(client, monkeypatch):
    from service.api.routes import music as music_routes

    monkeypatch.setattr(music_routes, "KEEPALIVE_S", 0.0005)
    _, text = stream(client, {"max_length": 300, "seed": 4, "stream": True})
    assert ": keep-alive\n\n" in text
    events = read_events(text)
    assert events[-1] == ("result", generate(client, max_length=300, seed=4))


def test_with_keepalive_yields_none_while_waiting_and_every_item_in_order():
    async def slow():
        for item in range(3):
            await asyncio.sleep(0.05)
            yield item

    async def collect():
        return [item async for item in with_keepalive(slow(), 0.01)]

    seen = asyncio.run(collect())
    assert [item for item in seen if item is not None] == [0, 1, 2]
    assert seen.count(None) >= 6


def test_midi_of_a_generated_tune_opens_in_a_midi_reader(client, tmp_path):
    from music21 import midi

    valid = [t for seed in range(1, 6) for t in generate(client, max_length=1000, seed=seed, temperature=0.8)["tunes"]
             if t["valid"]]
    assert valid, "expected a valid tune among five samples of 1,000 characters"
    response = client.post("/generate-music/midi", json={"abc": valid[0]["abc"]})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/midi"
    path = tmp_path / "tune.mid"
    path.write_bytes(response.content)
    reader = midi.MidiFile()
    reader.open(str(path))
    reader.read()
    reader.close()
    assert reader.tracks and sum(len(track.events) for track in reader.tracks) > 10


def test_midi_of_text_that_is_not_abc_is_422(client):
    response = client.post("/generate-music/midi", json={"abc": "(((( not music"})
    assert response.status_code == 422
