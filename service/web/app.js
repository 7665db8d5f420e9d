// atri search page: plain DOM, no build step, no third-party code.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { languages: [], names: {}, query: null, offset: 0, ready: false };

// ---- helpers --------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function info(id, text, isError = false) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function busy(button, on) {
  button.disabled = on;
}

function langName(code) {
  return state.names[code] || code;
}

// ---- status and languages --------------------------------------------------------------

async function pollHealth() {
  const badge = $("status");
  try {
    const response = await fetch("/health");
    const body = await response.json();
    if (response.ok) {
      state.ready = true;
      badge.className = "status status-ok";
      badge.textContent = `ready · ${body.index_size} clips · ${body.captions_indexed} captions`;
      badge.title = body.model + (body.vocabulary ? ` · labels: ${body.vocabulary.name} vocabulary` : "");
      return;
    }
    badge.className = body.status === "failed" ? "status status-failed" : "status status-loading";
    badge.textContent = body.status === "failed" ? "failed to load" : "loading model and index…";
    badge.title = body.error || "";
    if (body.status === "failed") return;
  } catch (err) {
    badge.className = "status status-loading";
    badge.textContent = "connecting…";
  }
  setTimeout(pollHealth, 1500);
}

async function loadLanguages() {
  state.languages = await api("/languages");
  for (const lang of state.languages) state.names[lang.code] = lang.name;
  const names = state.languages.map((l) => l.name);
  $("tagline").textContent = `Search sounds in ${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
  const options = state.languages.map((l) => [l.code, `${l.name} (${l.code})`]);
  for (const [code, label] of options) {
    $("lang").append(el("option", { value: code, text: label }));
    $("audio-lang").append(el("option", { value: code, text: label }));
  }
  const grid = $("c-queries");
  for (const lang of state.languages) {
    grid.append(el("label", { for: `cq-${lang.code}`, text: lang.name }));
    grid.append(el("input", { id: `cq-${lang.code}`, "data-lang": lang.code, placeholder: `query in ${lang.name}` }));
  }
}

// ---- tabs ------------------------------------------------------------------------------

function showTab(tabId) {
  for (const tab of document.querySelectorAll(".tab")) {
    const active = tab.id === tabId;
    tab.classList.toggle("active", active);
    tab.setAttribute("aria-selected", String(active));
    $(tab.dataset.panel).hidden = !active;
  }
}

// ---- results ---------------------------------------------------------------------------

function resultItem(hit, { compact = false } = {}) {
  const node = $("result-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = hit.id;
  node.querySelector(".rank").textContent = hit.rank;
  const link = node.querySelector(".clip-id");
  link.textContent = hit.id;
  link.href = `/clips/${encodeURIComponent(hit.id)}`;
  link.target = "_blank";
  const pct = Math.max(0, Math.min(1, hit.score)) * 100;
  node.querySelector(".score-fill").style.width = `${pct.toFixed(0)}%`;
  node.querySelector(".score-num").textContent = hit.score.toFixed(3);
  const caption = node.querySelector(".caption");
  if (hit.caption) caption.textContent = hit.caption;
  else if (!compact) {
    caption.textContent = "no caption in this language";
    caption.classList.add("missing");
  } else caption.remove();
  const chips = node.querySelector(".chips");
  for (const [key, value] of Object.entries(hit.meta || {})) {
    if (["melody", "cluster", "soundfont", "snr_db"].includes(key)) continue;
    chips.append(el("li", { text: `${key}: ${value}`, title: key }));
  }
  node.querySelector("audio").src = hit.audio_url;
  node.querySelector(".similar-btn").addEventListener("click", () => similar(hit.id));
  node.querySelector(".consistency-btn").addEventListener("click", () => {
    showTab("tab-consistency");
    $("c-clip").value = hit.id;
    $("c-index").value = 0;
    consistency({ clip_id: hit.id, caption_index: 0 });
  });
  return node;
}

function describeDetection(result) {
  if (!result.lang_detected) return `in ${langName(result.lang)}`;
  const pct = Math.round((result.lang_confidence || 0) * 100);
  if (result.lang_fallback) {
    return `language unclear (${langName(result.lang_candidate)} ${pct}%), searched as ${langName(result.lang)}`;
  }
  return `detected ${langName(result.lang)} (${pct}%)`;
}

async function search({ append = false } = {}) {
  const q = $("q").value.trim();
  if (!q) return;
  const k = Number($("k").value);
  const lang = $("lang").value;
  if (!append) state.offset = 0;
  const params = new URLSearchParams({ q, k: String(k), offset: String(state.offset) });
  if (lang) params.set("lang", lang);
  busy($("search-btn"), true);
  try {
    const result = await api(`/search?${params}`);
    const list = $("results");
    if (!append) list.replaceChildren();
    for (const hit of result.results) list.append(resultItem(hit));
    state.offset += result.results.length;
    $("more-btn").hidden = result.results.length < k;
    const shown = list.children.length;
    info("search-info", `${shown} result${shown === 1 ? "" : "s"} · ${describeDetection(result)} · ${result.took_ms.toFixed(0)} ms`);
    if (!result.results.length && !append) info("search-info", "No results.");
  } catch (err) {
    info("search-info", err.message, true);
  } finally {
    busy($("search-btn"), false);
  }
}

async function similar(id) {
  const lang = $("lang").value || "eng";
  busy($("search-btn"), true);
  try {
    const result = await api(`/search/similar?${new URLSearchParams({ id, k: $("k").value, lang })}`);
    $("results").replaceChildren(...result.results.map((hit) => resultItem(hit)));
    $("more-btn").hidden = true;
    info("search-info", `${result.results.length} clips that sound like ${id} · ${result.took_ms.toFixed(0)} ms`);
    window.scrollTo({ top: 0, behavior: "smooth" });
  } catch (err) {
    info("search-info", err.message, true);
  } finally {
    busy($("search-btn"), false);
  }
}

// ---- audio to text ---------------------------------------------------------------------

let recorded = null; // a Blob from the microphone, used when no file is chosen

async function describeAudio() {
  const file = $("audio-file").files[0];
  const blob = file || recorded;
  if (!blob) {
    info("audio-info", "Choose an audio file (or record one) first.", true);
    return;
  }
  const form = new FormData();
  form.append("file", blob, file ? file.name : "recording.webm");
  form.append("lang", $("audio-lang").value);
  form.append("k", $("audio-k").value);
  busy($("audio-btn"), true);
  info("audio-info", "Listening…");
  try {
    const result = await api("/search/audio", { method: "POST", body: form });
    const captions = $("caption-results");
    captions.replaceChildren();
    for (const hit of result.captions) {
      // a vocabulary label (atri index build --vocabulary) names a sound, not an indexed clip
      const label = hit.source === "vocabulary";
      const clips = el("div", { class: "meta" }, `score ${hit.score.toFixed(3)} · `);
      if (label) clips.append(el("span", { class: "tag", text: "label" }));
      hit.clip_ids.slice(0, 5).forEach((id, i) => {
        if (i) clips.append(", ");
        clips.append(el("a", { href: `/clips/${encodeURIComponent(id)}`, target: "_blank", text: id }));
      });
      if (hit.clip_ids.length > 5) clips.append(` +${hit.clip_ids.length - 5}`);
      captions.append(el("li", { class: label ? "label" : "caption" }, el("div", { class: "text", text: hit.text }), clips));
    }
    $("similar-results").replaceChildren(
      ...result.similar_clips.map((hit) => resultItem({ ...hit, meta: {} }, { compact: true })),
    );
    info("audio-info", `${result.duration_s.toFixed(1)} s of audio · labels and captions in ${langName(result.lang)} · ${result.took_ms.toFixed(0)} ms`);
  } catch (err) {
    info("audio-info", err.message, true);
  } finally {
    busy($("audio-btn"), false);
  }
}

function setupRecording() {
  if (!(navigator.mediaDevices && window.MediaRecorder)) return;
  const button = $("record-btn");
  button.hidden = false;
  let recorder = null;
  button.addEventListener("click", async () => {
    if (recorder && recorder.state === "recording") {
      recorder.stop();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = (e) => chunks.push(e.data);
      recorder.onstop = () => {
        stream.getTracks().forEach((t) => t.stop());
        recorded = new Blob(chunks, { type: recorder.mimeType });
        $("audio-file").value = "";
        $("audio-file-label").textContent = "recording ready";
        button.classList.remove("recording");
        button.textContent = "● Record";
      };
      recorder.start();
      button.classList.add("recording");
      button.textContent = "■ Stop";
    } catch (err) {
      info("audio-info", `microphone unavailable: ${err.message}`, true);
    }
  });
}

// ---- consistency -----------------------------------------------------------------------

function rankText(rank) {
  return typeof rank === "object" && rank !== null ? `≥${rank.at_least}` : String(rank);
}

function rankCell(rank, k) {
  const value = typeof rank === "object" && rank !== null ? rank.at_least : rank;
  const td = el("td", { text: rankText(rank) });
  // green for top ranks, fading to neutral beyond 3k
  const t = Math.min(1, (value - 1) / Math.max(1, 3 * k));
  td.style.background = `hsla(${140 - 140 * t}, 55%, ${88 + 8 * t}%, 1)`;
  return td;
}

function fmt(x) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(2);
}

function renderConsistency(result) {
  const out = $("consistency-out");
  out.replaceChildren();
  const cards = el("div", { class: "summary-cards" });
  if (result.target) {
    cards.append(el("div", {}, el("b", { text: fmt(result.target.rank_std) }), el("span", { text: `rank std of ${result.target.id}` })));
  }
  cards.append(el("div", {}, el("b", { text: fmt(result.mean_rank_std) }), el("span", { text: "mean rank std (top-k union)" })));
  cards.append(el("div", {}, el("b", { text: fmt(result.mean_rank_variance) }), el("span", { text: "mean rank variance" })));
  out.append(cards);

  const head = el("tr", {}, el("th", { text: "clip" }));
  for (const lang of result.languages) head.append(el("th", { text: lang, title: langName(lang) }));
  head.append(el("th", { text: "variance" }), el("th", { text: "std" }));
  const body = el("tbody");
  const rows = result.target && !result.clips.some((c) => c.id === result.target.id)
    ? [result.target, ...result.clips] : result.clips;
  for (const clip of rows) {
    const tr = el("tr", { "data-id": clip.id });
    if (result.target && clip.id === result.target.id) tr.classList.add("target");
    tr.append(el("td", {}, el("a", { href: `/clips/${encodeURIComponent(clip.id)}`, target: "_blank", text: clip.id })));
    for (const lang of result.languages) tr.append(rankCell(clip.ranks[lang], result.k));
    tr.append(el("td", { text: fmt(clip.rank_variance) }), el("td", { text: fmt(clip.rank_std) }));
    body.append(tr);
  }
  const table = el("table", { class: "ranks", id: "consistency-table" }, el("thead", {}, head), body);
  out.append(el("div", { class: "table-wrap" }, table));

  const used = el("dl", { class: "queries-used" });
  for (const [lang, text] of Object.entries(result.queries)) {
    used.append(el("dt", { text: lang }), el("dd", { text }));
  }
  out.append(el("h2", { text: "Queries" }), used);
}

async function consistency(request) {
  busy($("consistency-btn"), true);
  info("consistency-info", "Ranking the whole index in every language…");
  try {
    const result = await api("/consistency", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ k: Number($("c-k").value), ...request }),
    });
    renderConsistency(result);
    info("consistency-info", `${result.clips.length} clips in the union of the per-language top ${result.k} · ${result.took_ms.toFixed(0)} ms`);
  } catch (err) {
    $("consistency-out").replaceChildren();
    info("consistency-info", err.message, true);
  } finally {
    busy($("consistency-btn"), false);
  }
}

// ---- wiring ----------------------------------------------------------------------------

function init() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showTab(tab.id));
  }
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    search();
  });
  $("more-btn").addEventListener("click", () => search({ append: true }));
  $("lang").addEventListener("change", () => {
    if ($("q").value.trim()) search();
  });
  $("audio-form").addEventListener("submit", (e) => {
    e.preventDefault();
    describeAudio();
  });
  $("audio-file").addEventListener("change", () => {
    const file = $("audio-file").files[0];
    $("audio-file-label").textContent = file ? file.name : "Choose an audio file…";
    recorded = null;
  });
  $("consistency-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const clip = $("c-clip").value.trim();
    if (!clip) {
      info("consistency-info", "Enter a clip id, or open the queries below.", true);
      return;
    }
    consistency({ clip_id: clip, caption_index: Number($("c-index").value) || 0 });
  });
  $("c-queries-btn").addEventListener("click", () => {
    const queries = {};
    for (const input of $("c-queries").querySelectorAll("input")) {
      if (input.value.trim()) queries[input.dataset.lang] = input.value.trim();
    }
    if (!Object.keys(queries).length) {
      info("consistency-info", "Type the query in at least one language.", true);
      return;
    }
    consistency({ queries });
  });
  setupRecording();
  loadLanguages().catch((err) => info("search-info", err.message, true));
  pollHealth();
}

document.addEventListener("DOMContentLoaded", init);
