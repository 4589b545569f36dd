// The playground: one small module, no framework. It calls the same API as any client
// (docs/api.md), with the API key of this tab when the service asks for one, and draws the
// answers: a probability bar, the attention heatmap, the tune as it streams, its sheet music
// (abcjs) and its sound (abcjs's synth, piano samples served from static/soundfont/).

const byId = (id) => document.querySelector(`[data-testid="${id}"]`);
const SOUND_FONT = new URL("soundfont/", import.meta.url).href;  // never abcjs's default (another host)
const KEY_STORAGE = "seqserve-api-key";

// ---- API key (sessionStorage: this tab only) and requests ----------------------------------

const keysOn = document.body.dataset.apiKeys === "on";
const keyInput = byId("api-key");
if (keysOn) {
  document.getElementById("key-panel").hidden = false;
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, keyInput.value.trim()));
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function post(path, body, accept = "application/json") {
  const headers = {"Content-Type": "application/json", "Accept": accept};
  const key = keyInput.value.trim();
  if (keysOn && key) headers["X-API-Key"] = key;
  const response = await fetch(path, {method: "POST", headers, body: JSON.stringify(body)});
  if (!response.ok) {
    let error = {};
    try { error = await response.json(); } catch { /* not JSON: keep the status */ }
    throw new ApiError(response.status, error.error || "http_" + response.status,
                       error.message || response.statusText);
  }
  return response;
}

function showError(element, error) {
  element.replaceChildren();
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = error instanceof ApiError ? `${error.status} ${error.code}: ${error.message}` : String(error);
  if (error.status === 401) p.textContent += keysOn ? " (enter the API key above)" : "";
  element.append(p);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function busy(form, on) {
  for (const control of form.querySelectorAll("button, input, textarea")) control.disabled = on;
}

// ---- Sentiment ----------------------------------------------------------------------------

const sentimentForm = document.querySelector('[data-form="sentiment"]');
const sentimentResult = byId("sentiment-result");

sentimentForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  busy(sentimentForm, true);
  sentimentResult.setAttribute("aria-busy", "true");
  try {
    const answer = await (await post("sentiment", {text: byId("sentiment-input").value})).json();
    const positive = answer.probabilities.positive;
    sentimentResult.replaceChildren(
      el("p", {className: `label ${answer.label}`}, answer.label,
         el("span", {className: "score"}, ` ${(100 * answer.score).toFixed(1)}%`)),
      el("div", {className: "bar", role: "img", dataset: {positive: positive.toFixed(4)},
                 "aria-label": `probability positive ${(100 * positive).toFixed(1)}%`},
         el("div", {className: "negative", style: `width: ${100 * (1 - positive)}%`}),
         el("div", {className: "positive", style: `width: ${100 * positive}%`})),
      el("p", {className: "legend"}, el("span", {}, `negative ${(100 * (1 - positive)).toFixed(1)}%`),
         el("span", {}, `positive ${(100 * positive).toFixed(1)}%`)),
      el("p", {className: "model"}, answer.model));
    sentimentResult.dataset.label = answer.label;
  } catch (error) {
    showError(sentimentResult, error);
  } finally {
    busy(sentimentForm, false);
    sentimentResult.removeAttribute("aria-busy");
  }
});

// ---- Translation and its attention heatmap -------------------------------------------------

const translateForm = document.querySelector('[data-form="translate"]');
const translateOutput = byId("translate-output");
const heatmap = byId("attention-heatmap");
const readout = byId("attention-readout");
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Rows: the Spanish subwords; columns: the English ones; black is weight 1 (as docs/translation_attention.png). */
function drawHeatmap(result) {
  const {source_tokens: source, target_tokens: target, attention} = result;
  const cell = 30, left = 14 + 7.5 * Math.max(...target.map((t) => t.length), 1);
  const bottom = 16 + 6.5 * Math.max(...source.map((t) => t.length), 1);
  const width = left + cell * source.length + 4, height = cell * target.length + bottom;
  const root = svg("svg", {viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
                           "aria-label": `attention of ${target.length} Spanish subwords over ${source.length} English ones`});
  attention.forEach((row, i) => {
    root.append(svg("text", {x: left - 6, y: cell * i + cell / 2 + 4, "text-anchor": "end", class: "token"}, target[i]));
    row.forEach((weight, j) => {
      const shade = Math.round(255 * (1 - weight));
      const rect = svg("rect", {x: left + cell * j, y: cell * i, width: cell, height: cell,
                                fill: `rgb(${shade},${shade},${shade})`, "data-weight": weight.toFixed(5),
                                "data-row": i, "data-col": j, class: "cell"});
      rect.append(svg("title", {}, `${target[i]} ← ${source[j]}: ${weight.toFixed(3)}`));
      rect.addEventListener("mouseenter", () => {
        readout.textContent = `${target[i]} ← ${source[j]}: weight ${weight.toFixed(3)}`;
      });
      root.append(rect);
    });
  });
  source.forEach((token, j) => {
    const x = left + cell * j + cell / 2, y = cell * target.length + 8;
    root.append(svg("text", {x, y, transform: `rotate(60 ${x} ${y})`, class: "token"}, token));
  });
  root.append(svg("rect", {x: left, y: 0, width: cell * source.length, height: cell * target.length, class: "frame"}));
  heatmap.replaceChildren(root);
  heatmap.dataset.rows = target.length;
  heatmap.dataset.cols = source.length;
}

translateForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  busy(translateForm, true);
  try {
    const answer = await (await post("translate", {
      text: byId("translate-input").value, beam_size: Number(byId("translate-beam").value),
      return_attention: true})).json();
    translateOutput.textContent = answer.translation;
    translateOutput.classList.remove("error");
    if (answer.source_truncated) translateOutput.append(el("small", {}, " (only the start was translated)"));
    drawHeatmap(answer);
    readout.textContent = "Hover over a cell for its weight.";
  } catch (error) {
    showError(translateOutput, error);
    heatmap.replaceChildren();
  } finally {
    busy(translateForm, false);
  }
});

// ---- Music: the stream, the tunes, the sheet, the sound and the MIDI file --------------------

const musicForm = document.querySelector('[data-form="music"]');
const abcView = byId("music-abc");
const tunesList = byId("music-tunes");
const progress = byId("music-progress");
const sheet = byId("music-sheet");
const playButton = byId("music-play");
const playStatus = byId("music-status");
const midiButton = byId("music-midi");

const music = {tune: null, visual: null, synth: null, audio: null, playing: false, generation: 0};

/** The complete tunes of a text, as the service splits them (seqserve.abc.complete_tunes). */
function completeTunes(text) {
  return text.split("\n\n").slice(0, -1).map((piece) => piece.replace(/^\n+|\n+$/g, ""))
    .filter((piece) => piece.startsWith("X:"));
}

function titleOf(abc) {
  return (abc.match(/^T:(.*)$/m) || [])[1]?.trim() || null;
}

/** Server-Sent Events from a fetch body (EventSource cannot POST): {id, event, data} per event. */
async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = {event: "message", data: []};
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;  // a comment: the keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(value);
        else if (field === "event" || field === "id") event[field] = value;
      }
      if (event.data.length) yield {...event, data: JSON.parse(event.data.join("\n"))};
    }
  }
}

function setPlayStatus(text) {
  playStatus.textContent = text;
  playStatus.dataset.state = text;
}

function stopSound() {
  if (music.synth && music.playing) music.synth.stop();
  music.playing = false;
}

/** Lines abcjs would turn into other instruments or drums: the page plays its one piano. */
function forPiano(abc) {
  return abc.split("\n").filter((line) => !/^(%%MIDI|I:\s*MIDI)/.test(line)).join("\n");
}

function drawTune(tune) {
  stopSound();
  music.tune = tune;
  music.synth = null;
  sheet.replaceChildren();
  const [visual] = ABCJS.renderAbc(sheet, forPiano(tune.abc), {responsive: "resize", add_classes: true,
                                                                paddingtop: 4, paddingbottom: 4});
  music.visual = visual;
  sheet.dataset.title = tune.title || "";
  playButton.disabled = false;
  playButton.textContent = "Play";
  midiButton.disabled = false;
  setPlayStatus("ready");
  for (const item of tunesList.children) item.classList.toggle("selected", item.tuneAbc === tune.abc);
}

function listTunes(tunes, checked) {
  tunesList.replaceChildren(...tunes.map((tune, index) => {
    const verdict = !checked ? el("span", {className: "pending"}, "checking…")
      : tune.valid ? el("span", {className: "valid"}, "✓ valid")
      : el("span", {className: "invalid"}, `✗ not valid: ${tune.reason}`);
    const item = el("li", {dataset: {valid: checked ? String(tune.valid) : "pending"}},
      el("button", {type: "button", className: "link", onclick: () => drawTune(tune)},
         tune.title || `tune ${index + 1}`), " ", verdict);
    item.tuneAbc = tune.abc;
    item.classList.toggle("selected", music.tune?.abc === tune.abc);
    return item;
  }));
}

musicForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const generation = ++music.generation;
  busy(musicForm, true);
  stopSound();
  Object.assign(music, {tune: null, visual: null, synth: null});
  sheet.replaceChildren(el("p", {className: "empty"}, "A tune is drawn here once it is complete."));
  playButton.disabled = midiButton.disabled = true;
  setPlayStatus("no tune yet");
  abcView.textContent = "";
  tunesList.replaceChildren();
  progress.textContent = "writing…";
  progress.classList.remove("error");
  const body = {max_length: Number(byId("music-length").value),
                temperature: Number(byId("music-temperature").value),
                stop_at_end_of_tune: byId("music-stop-at-end").checked, stream: true};
  const prompt = byId("music-prompt").value;
  if (prompt.trim()) body.prompt = prompt;
  if (byId("music-seed").value !== "") body.seed = Number(byId("music-seed").value);
  let text = "", drawn = 0;
  try {
    const response = await post("generate-music", body, "text/event-stream");
    for await (const {event: name, data} of readEvents(response)) {
      if (generation !== music.generation) return;
      if (name === "chunk") {
        text += data.text;
        abcView.textContent = text;
        abcView.scrollTop = abcView.scrollHeight;
        const tunes = completeTunes(text);
        if (tunes.length > drawn) {  // a tune is complete: draw it now, its check comes with the result
          const found = tunes.map((abc) => ({abc, title: titleOf(abc)}));
          listTunes(found, false);
          if (!drawn) drawTune(found[0]);
          drawn = tunes.length;
        }
        progress.textContent = `writing… ${text.length} characters`;
      } else if (name === "result") {
        abcView.textContent = data.abc;
        listTunes(data.tunes, true);
        const valid = data.tunes.filter((t) => t.valid).length;
        progress.textContent = `done: ${data.abc.length} characters, ${data.tunes.length} complete tune(s), ${valid} valid; `
          + `stopped at ${data.finish_reason === "end_of_tune" ? "the end of the tune" : "the length"}; seed ${data.seed}`;
        progress.dataset.finishReason = data.finish_reason;
        if (!data.tunes.length) progress.textContent += " (no complete tune: try a longer length)";
        else if (!music.tune || !data.tunes.some((t) => t.abc === music.tune.abc)) drawTune(data.tunes[0]);
      } else if (name === "error") {
        throw new ApiError(200, data.error, data.message);
      }
    }
  } catch (error) {
    progress.textContent = error instanceof ApiError ? `${error.code}: ${error.message}` : String(error);
    progress.classList.add("error");
  } finally {
    if (generation === music.generation) busy(musicForm, false);
  }
});

playButton.addEventListener("click", async () => {
  if (music.playing) {
    stopSound();
    setPlayStatus("stopped");
    playButton.textContent = "Play";
    return;
  }
  const visual = music.visual;
  try {
    setPlayStatus("loading sound…");
    music.audio ??= new AudioContext();  // created on a click: browsers allow sound from here
    await music.audio.resume();
    if (!music.synth) {
      const synth = new ABCJS.synth.CreateSynth();
      await synth.init({visualObj: visual, audioContext: music.audio, options: {
        soundFontUrl: SOUND_FONT,
        onEnded: () => {
          if (music.synth !== synth) return;
          music.playing = false;
          setPlayStatus("stopped");
          playButton.textContent = "Play";
        }}});
      await synth.prime();
      if (visual !== music.visual) return;  // another tune was drawn meanwhile
      music.synth = synth;
    }
    music.synth.start();
    music.playing = true;
    playButton.textContent = "Stop";
    setPlayStatus("playing");
  } catch (error) {
    setPlayStatus(`cannot play: ${error.message || error}`);
  }
});

midiButton.addEventListener("click", async () => {
  if (!music.tune) return;
  try {
    const blob = await (await post("generate-music/midi", {abc: music.tune.abc}, "audio/midi")).blob();
    const link = el("a", {href: URL.createObjectURL(blob), download: `${(music.tune.title || "tune").replace(/[^\w -]+/g, "").trim() || "tune"}.mid`});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (error) {
    setPlayStatus(`no MIDI: ${error instanceof ApiError ? `${error.code}: ${error.message}` : error}`);
  }
});

// For the browser tests and the curious: the audio state, read-only.
window.seqservePlayground = {
  audio: () => ({state: music.audio?.state ?? null, time: music.audio?.currentTime ?? 0, playing: music.playing,
                 running: Boolean(music.synth?.getIsRunning?.())}),
};
