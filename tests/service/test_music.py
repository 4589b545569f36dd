"""POST /generate-music and /generate-music/midi against the committed model."""

from __future__ import annotations

import json

import pytest
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
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.parametrize("how", ["body", "accept"])
def test_streaming_sends_chunks_then_the_final_answer(client, how):
    body, headers = {"max_length": 200, "seed": 4}, {}
    if how == "body":
        body["stream"] = True
    else:
        headers["accept"] = "text/event-stream"
    with client.stream("POST", "/generate-music", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events("".join(response.iter_text()))
    chunks = [data["text"] for name, data in events if name == "chunk"]
    assert len(chunks) >= 3
    assert events[-1][0] == "result"
    final = events[-1][1]
    assert final["abc"] == "X:1\n" + "".join(chunks)
    assert final == generate(client, max_length=200, seed=4)


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
