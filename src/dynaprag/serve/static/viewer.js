// dynaprag trace viewer: asks the server's OpenAI-compatible endpoint (streaming) and draws the
// answer's trace: each kept token shaded by a signal, a marker where retrieval fired followed by
// the draft that retrieval discarded (struck through, shaded by the scores that made the trigger
// fire, the firing sentence underlined), and the query and passages behind each marker.
// Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, trace: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function init() {
  try {
    const [models, methods] = await Promise.all([
      fetch("/v1/models").then((r) => r.json()),
      fetch("/v1/methods").then((r) => r.json()),
    ]);
    state.model = models.data[0].id;
    const select = $("method");
    for (const name of methods.data) {
      select.append(el("option", { value: name, text: name }));
    }
    select.value = methods.default;
    $("server-info").textContent = `model ${state.model} · default method ${methods.default}`;
  } catch (err) {
    showError(`cannot reach the server: ${err}`);
  }
  $("ask-form").addEventListener("submit", (ev) => { ev.preventDefault(); ask(); });
  $("shade").addEventListener("change", () => { if (state.trace) render(state.trace); });
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function setStatus(text) { $("status").textContent = text; }

async function ask() {
  const question = $("question").value.trim();
  if (!question) return;
  let options = {};
  const raw = $("options").value.trim();
  if (raw) {
    try { options = JSON.parse(raw); } catch (err) { showError(`options are not valid JSON: ${err.message}`); return; }
  }
  $("error").hidden = true;
  $("answer-box").hidden = false;
  $("retrievals-box").hidden = true;
  $("answer").replaceChildren();
  $("retrievals").replaceChildren();
  $("live").textContent = "";
  $("short").textContent = "";
  $("stats").textContent = "";
  $("ask").disabled = true;
  state.trace = null;
  setStatus("waiting for the model…");
  const body = {
    model: state.model,
    messages: [{ role: "user", content: question }],
    max_tokens: Number($("max-tokens").value) || 64,
    stream: true,
    dynaprag: { method: $("method").value, options, include_tokens: true },
  };
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({}));
      throw new Error(`${resp.status}: ${(err.error && err.error.message) || resp.statusText}`);
    }
    await readStream(resp);
  } catch (err) {
    showError(String(err.message || err));
    setStatus("");
  } finally {
    $("ask").disabled = false;
  }
}

async function readStream(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let retrievals = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data || data === "[DONE]") continue;
      const msg = JSON.parse(data);
      if (msg.error) throw new Error(msg.error.message);
      const choice = (msg.choices || [])[0];
      if (choice && choice.delta && choice.delta.content) $("live").textContent += choice.delta.content;
      const ext = msg.dynaprag;
      if (ext && ext.event && ext.event.type === "retrieval") {
        retrievals += 1;
        setStatus(`retrieval ${retrievals}: “${ext.event.query}”…`);
      }
      if (ext && ext.trace) {
        state.trace = ext;
        render(ext);
      }
    }
  }
}

function shadeValue(tok, mode, maxes) {
  if (mode === "prob") return 1 - Math.exp(tok.logprob);
  if (mode === "entropy") return maxes.entropy > 0 ? tok.entropy / maxes.entropy : 0;
  if (tok.score === null || tok.score === undefined) return 0;
  return maxes.score > 0 ? Math.max(0, tok.score) / maxes.score : 0;
}

const scored = (t) => t.score !== null && t.score !== undefined;

function tokenSpan(tok, label, mode, maxes, cls = "tok") {
  const v = Math.min(1, Math.max(0, shadeValue(tok, mode, maxes)));
  const span = el("span", { class: cls, text: tok.text });
  span.style.background = `rgba(220, 38, 38, ${(0.85 * v).toFixed(3)})`;
  span.dataset.info = [
    `${label}: ${JSON.stringify(tok.text)}`,
    `p = ${Math.exp(tok.logprob).toFixed(3)}   logprob = ${tok.logprob.toFixed(3)}`,
    `entropy = ${tok.entropy.toFixed(3)}`,
    `trigger score = ${scored(tok) ? tok.score.toFixed(3) : "–"}`,
  ].join("\n");
  span.addEventListener("mouseenter", showTip);
  span.addEventListener("mousemove", showTip);
  span.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  return span;
}

// The draft retrieval i cut away, struck through after its marker; the firing sentence underlined.
function discardedSpan(r, i, mode, maxes) {
  const box = el("span", { class: "discarded", "data-retrieval": String(i) });
  const [start, end] = r.fired && r.fired.length === 2 ? r.fired : [0, 0];
  let fired = null;
  r.discarded.forEach((tok, j) => {
    const span = tokenSpan(tok, `discarded at R${i + 1}, token ${j}${j >= start && j < end ? " (firing sentence)" : ""}`,
      mode, maxes, "tok dropped");
    if (j >= start && j < end) {
      if (!fired) { fired = el("span", { class: "fired", title: "the sentence that made the trigger fire" }); box.append(fired); }
      fired.append(span);
    } else {
      box.append(span);
    }
  });
  return box;
}

function render(ext) {
  const trace = ext.trace;
  const mode = $("shade").value;
  const tokens = trace.tokens || [];
  const dropped = trace.retrievals.flatMap((r) => r.discarded || []);
  const all = tokens.concat(dropped);
  const maxes = {
    entropy: Math.max(0, ...all.map((t) => t.entropy || 0)),
    score: Math.max(0, ...all.map((t) => (scored(t) ? t.score : 0))),
  };
  const byPosition = new Map();
  trace.retrievals.forEach((r, i) => {
    if (!byPosition.has(r.position)) byPosition.set(r.position, []);
    byPosition.get(r.position).push(i);
  });
  const answer = $("answer");
  answer.replaceChildren();
  const addMarkers = (pos) => {
    for (const i of byPosition.get(pos) || []) {
      const r = trace.retrievals[i];
      const m = el("span", { class: "marker", "data-retrieval": String(i), title: `retrieval ${i + 1}: ${r.query}`, text: `R${i + 1}` });
      m.addEventListener("click", () => focusRetrieval(i));
      answer.append(m);
      if ((r.discarded || []).length) answer.append(discardedSpan(r, i, mode, maxes));
    }
  };
  tokens.forEach((tok, pos) => {
    addMarkers(pos);
    answer.append(tokenSpan(tok, `token ${pos}`, mode, maxes));
  });
  for (const pos of [...byPosition.keys()].filter((p) => p >= tokens.length).sort((a, b) => a - b)) addMarkers(pos);
  if (!tokens.length) answer.append(el("span", { class: "muted", text: ext.trace.tokens ? "(no tokens)" : "" }));
  $("live").textContent = "";
  $("short").textContent = ext.short ? `→ ${ext.short}` : "";
  const label = { score: "trigger score (scaled to this answer's max)", entropy: "entropy (scaled to this answer's max)", prob: "1 − p" }[mode];
  const unscored = mode === "score" && !all.some(scored);
  $("legend").replaceChildren(el("span", { text: "low" }), el("span", { class: "bar" }), el("span", { text: `high ${label}` }));
  if (dropped.length) $("legend").append(el("span", { class: "discarded-key", text: "discarded draft" }), el("span", { text: "(cut by the retrieval before it; underlined: the sentence that fired)" }));
  if (unscored) $("legend").append(el("span", { text: "· the trigger scored no token of this answer: try entropy or 1 − p" }));
  $("stats").textContent = `${ext.method} · ${trace.retrievals.length} retrieval(s) · ${tokens.length} kept / ${trace.generated_tokens} generated tokens · ${trace.forward_passes} forward passes · ${trace.seconds.toFixed(2)} s`;
  renderRetrievals(trace);
  setStatus("done");
}

function renderRetrievals(trace) {
  const list = $("retrievals");
  list.replaceChildren();
  trace.retrievals.forEach((r, i) => {
    const scores = Object.entries(r.scores || {}).map(([t, s]) => `${JSON.stringify(t)} ${Number(s).toFixed(2)}`).join(", ");
    const item = el("li", { class: "retrieval", id: `retrieval-${i}` },
      el("div", {}, el("strong", { text: `R${i + 1}` }), ` after ${r.position} tokens · query `, el("span", { class: "query", text: r.query })),
      el("div", { class: "why", text: `${r.reason}${scores ? ` · scores: ${scores}` : ""} · ${r.injection}` }));
    if ((r.discarded || []).length) {
      const [start, end] = r.fired && r.fired.length === 2 ? r.fired : [0, 0];
      const firedText = r.discarded.slice(start, end).map((t) => t.text).join("").trim();
      item.append(el("div", { class: "why", text: `discarded ${r.discarded.length} draft token(s)${firedText ? `; fired on “${firedText}”` : ""}` }));
    }
    r.hit_ids.forEach((id, j) => {
      item.append(el("div", { class: "passage" },
        el("span", { class: "title", text: (r.hit_titles || [])[j] || id }), el("span", { class: "pid", text: id }),
        el("div", { text: (r.hit_texts || [])[j] || "" })));
    });
    if ((r.skipped_ids || []).length) {
      item.append(el("div", { class: "why", text: `skipped (augmentation never parsed; the next retrieved passage was used): ${r.skipped_ids.join(", ")}` }));
    }
    list.append(item);
  });
  $("retrievals-box").hidden = trace.retrievals.length === 0;
}

function focusRetrieval(i) {
  document.querySelectorAll(".retrieval.active, .marker.active").forEach((n) => n.classList.remove("active"));
  const item = $(`retrieval-${i}`);
  item.classList.add("active");
  document.querySelectorAll(`.marker[data-retrieval="${i}"]`).forEach((n) => n.classList.add("active"));
  item.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function showTip(ev) {
  const tip = $("tooltip");
  tip.textContent = ev.currentTarget.dataset.info;
  tip.style.left = `${ev.clientX + 12}px`;
  tip.style.top = `${ev.clientY + 14}px`;
  tip.hidden = false;
}

init();
