// voxline's web console: one JavaScript module, no build step, no dependencies. Each view is
// a function of the URL's hash (#/live, #/history, #/history/ID, #/analytics, #/agents,
// #/agents/NAME, #/campaigns, #/campaigns/ID) that draws into <main id="view"> from the HTTP
// API, with the session cookie (and its CSRF token on requests that change something).
//
// Every value from the API goes into the page as text (textContent), never as HTML.

const secured = document.body.dataset.secured === "true";
let csrf = null;

// ---------------------------------------------------------------------------------------
// Helpers

/** An element: h("a", {href: "#"}, "text", child...). `on*` attributes are listeners. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  let value;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") value = v;
    else if (k === "checked" || k === "disabled" || k === "hidden" || k === "selected") el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  if (value !== undefined) el.value = value;
  return el;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API; resolves to the JSON answer (null for 204), rejects with an ApiError. */
async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-Voxline-CSRF"] = csrf;
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (r.status === 401 && secured) {
    // The session ended (idle, logged out elsewhere, voxline restarted): log in again.
    location.replace("/" + location.hash);
    throw new ApiError(401, "the session has ended");
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!r.ok) {
    const msg = data && data.error ? data.error : `HTTP ${r.status}`;
    throw new ApiError(r.status, msg);
  }
  return data;
}

/** A query string from the set values of `params`. */
function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

let flashTimer = null;
/** A message under the header: `kind` is "ok" or "error". */
function flash(kind, text) {
  const el = document.getElementById("flash");
  el.className = `flash ${kind}`;
  el.textContent = text;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => {
    el.className = "flash";
    el.textContent = "";
  }, kind === "error" ? 10000 : 4000);
}

/** Runs `f`, showing its error as a flash message. */
async function attempt(f) {
  try {
    return await f();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) flash("error", e.message);
    return undefined;
  }
}

const pad = (n) => String(n).padStart(2, "0");

/** Seconds as h:mm:ss or m:ss. */
function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "";
  s = Math.max(0, Math.round(s));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  return hh ? `${hh}:${pad(mm)}:${pad(ss)}` : `${mm}:${pad(ss)}`;
}

/** Unix ms as local date and time. */
function when(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The user part of a SIP URI (or the URI). */
function who(uri) {
  const m = /^(?:.*<)?sips?:([^@;>]+)@/.exec(uri || "");
  return m ? m[1] : uri || "";
}

function fixed(x, digits) {
  return x === null || x === undefined ? "" : Number(x).toFixed(digits);
}

/**
 * Adds a transcript line to `lines` as a reader should see it: an interim line is replaced
 * by the next line of the same role and item, and a correction (`corrects`) replaces the
 * line it corrects.
 */
function mergeLine(lines, line) {
  if (line.item_id) {
    const i = lines.findIndex(
      (l) => l.item_id === line.item_id && l.role === line.role && (!l.final || line.corrects),
    );
    if (i >= 0) {
      lines[i] = line;
      return;
    }
  }
  lines.push(line);
}

function transcriptLines(entries) {
  const lines = [];
  for (const e of entries) mergeLine(lines, e);
  return lines;
}

function renderTranscript(box, lines, empty = "No lines yet.") {
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  box.replaceChildren(
    ...lines
      .filter((l) => l.role !== "system" || l.text)
      .map((l) =>
        h(
          "div",
          { class: `line ${l.role}${l.final ? "" : " interim"}`, "data-role": l.role },
          h("span", { class: "who" }, `${l.role} · ${duration(l.t_ms / 1000)}`),
          h("span", { class: "text" }, l.text),
        ),
      ),
  );
  if (!lines.length) box.append(h("p", { class: "muted" }, empty));
  if (atEnd) box.scrollTop = box.scrollHeight;
}

function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

function table(headers, rows, attrs) {
  return h(
    "table",
    { class: "grid", ...(attrs || {}) },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { class: t.endsWith("#") ? "num" : "" }, t.replace(/#$/, ""))))),
    h("tbody", {}, rows),
  );
}

function quality(media) {
  if (!media) return "";
  const parts = [`MOS ${fixed(media.mos, 1)}`, `loss ${fixed(media.fraction_lost * 100, 1)} %`, `jitter ${fixed(media.jitter_ms, 0)} ms`];
  if (media.rtt_ms !== null && media.rtt_ms !== undefined) parts.push(`RTT ${fixed(media.rtt_ms, 0)} ms`);
  return parts.join(" · ");
}

// ---------------------------------------------------------------------------------------
// Live calls: GET /events (SSE) with the calls and their transcript lines.

function viewLive(main, arg, ctx) {
  const calls = new Map();
  const lines = new Map();
  let selected = arg ? Number(arg) : null;
  const status = h("span", { id: "live-status", class: "muted" }, "connecting…");
  const body = h("tbody", { id: "live-calls" });
  const title = h("h3", { id: "live-title" }, "Transcript");
  const box = h("div", { id: "live-transcript", class: "transcript" });
  const actions = h("div", { id: "live-actions", class: "toolbar" });
  main.append(
    h("h2", {}, "Live calls ", status),
    h(
      "table",
      { class: "grid" },
      h("thead", {}, h("tr", {}, ["Call", "State", "Direction", "From", "To", "Agent", "Duration", "Codec", "Quality", "Barge-ins"].map((t) => h("th", {}, t)))),
      body,
    ),
    h("section", { class: "panel" }, title, actions, box),
  );

  function callDuration(c) {
    const since = c.answered_at ?? c.started_at;
    return duration(Date.now() / 1000 - since);
  }

  function drawCalls() {
    if (!calls.size) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No calls in progress.")));
    } else {
      body.replaceChildren(
        ...[...calls.values()].map((c) =>
          h(
            "tr",
            {
              class: `clickable${c.id === selected ? " selected" : ""}`,
              "data-call": c.id,
              "data-record": c.record_id,
              onclick: () => select(c.id),
            },
            h("td", {}, c.record_id),
            h("td", {}, h("span", { class: `state ${c.state}` }, c.on_hold ? `${c.state} (held)` : c.state)),
            h("td", {}, c.direction),
            h("td", {}, who(c.from)),
            h("td", {}, who(c.to)),
            h("td", {}, c.agent_version ? `${c.agent} v${c.agent_version}` : c.agent),
            h("td", { class: "duration" }, callDuration(c)),
            h("td", {}, c.codec || ""),
            h("td", {}, quality(c.media)),
            h("td", { class: "num" }, c.barge_ins),
          ),
        ),
      );
    }
    drawSelected();
  }

  function drawSelected() {
    const c = calls.get(selected);
    if (selected === null) {
      title.textContent = "Transcript";
      actions.replaceChildren();
      renderTranscript(box, []);
      return;
    }
    title.textContent = c ? `Transcript of ${c.record_id}` : `Transcript of call ${selected} (ended)`;
    if (c && !actions.dataset.call) {
      actions.dataset.call = String(c.id);
      const target = h("input", { id: "transfer-target", placeholder: "sip:200@pbx.example or a number" });
      actions.replaceChildren(
        h("button", { id: "hangup", class: "danger", type: "button", onclick: () => hangup(c.id) }, "Hang up"),
        target,
        h("button", { id: "transfer", type: "button", onclick: () => transfer(c.id, target.value.trim()) }, "Transfer"),
      );
    } else if (!c) {
      delete actions.dataset.call;
      actions.replaceChildren();
    }
    renderTranscript(box, lines.get(selected) || []);
  }

  function select(id) {
    if (selected !== id) {
      selected = id;
      delete actions.dataset.call;
      history.replaceState(null, "", `#/live/${id}`);
    }
    drawCalls();
  }

  async function hangup(id) {
    await attempt(async () => {
      await api("POST", `/calls/${id}/hangup`);
      flash("ok", `call ${id}: hung up`);
    });
  }

  async function transfer(id, target) {
    if (!target) {
      flash("error", "give a transfer target");
      return;
    }
    await attempt(async () => {
      const r = await api("POST", `/calls/${id}/transfer`, { target });
      flash("ok", `call ${id}: transferred to ${r.target || target}`);
    });
  }

  const es = new EventSource("/events");
  ctx.onLeave.push(() => es.close());
  es.addEventListener("open", () => {
    status.textContent = "live";
  });
  es.addEventListener("error", () => {
    status.textContent = "reconnecting…";
    // An ended session shows as a failing stream: ask, and log in again if so.
    if (secured) api("GET", "/console/session").catch(() => {});
  });
  es.addEventListener("calls", (ev) => {
    const list = JSON.parse(ev.data);
    calls.clear();
    for (const c of list) calls.set(c.id, c);
    if (selected === null && list.length) selected = list[list.length - 1].id;
    drawCalls();
  });
  es.addEventListener("transcript", (ev) => {
    const { call, line } = JSON.parse(ev.data);
    if (!lines.has(call)) lines.set(call, []);
    mergeLine(lines.get(call), line);
    if (call === selected) renderTranscript(box, lines.get(call));
  });
  const tick = setInterval(() => {
    for (const c of calls.values()) {
      const cell = body.querySelector(`tr[data-call="${c.id}"] td.duration`);
      if (cell) cell.textContent = callDuration(c);
    }
  }, 1000);
  ctx.onLeave.push(() => clearInterval(tick));
  drawCalls();
}

// ---------------------------------------------------------------------------------------
// History: GET /records (search, filters, pages), GET /calls/{id} (a record with its
// transcript), GET /records/{id}/recording (played by the page's <audio>).

const PAGE = 50;
const historyFilter = { q: "", agent: "", direction: "", answered: "", since: "", until: "", offset: 0 };

/** Unix ms of the start of a yyyy-mm-dd date (local time), or undefined. */
function dayStart(date, plusDays = 0) {
  if (!date) return undefined;
  const [y, m, d] = date.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).getTime();
}

async function agentNames() {
  const r = await api("GET", "/agents").catch(() => ({ agents: [] }));
  return r.agents.map((a) => a.name);
}

async function viewHistory(main, arg, ctx) {
  if (arg) return viewRecord(main, arg, ctx);
  const f = historyFilter;
  const input = (name, attrs) => h("input", { name, value: f[name], ...attrs });
  const agentSelect = h("select", { name: "agent" }, h("option", { value: "" }, "any"));
  const form = h(
    "form",
    { class: "filters", id: "history-filters" },
    h("label", {}, "Search", input("q", { id: "history-q", type: "search", placeholder: "number, Call-ID, outcome…", size: 28 })),
    h("label", {}, "Agent", agentSelect),
    h(
      "label",
      {},
      "Direction",
      h("select", { name: "direction", value: f.direction }, h("option", { value: "" }, "any"), h("option", { value: "inbound" }, "inbound"), h("option", { value: "outbound" }, "outbound")),
    ),
    h(
      "label",
      {},
      "Answered",
      h("select", { name: "answered", value: f.answered }, h("option", { value: "" }, "any"), h("option", { value: "true" }, "answered"), h("option", { value: "false" }, "not answered")),
    ),
    h("label", {}, "From", input("since", { type: "date" })),
    h("label", {}, "To", input("until", { type: "date" })),
    h("button", { type: "submit", class: "primary" }, "Search"),
  );
  const body = h("tbody", { id: "history-rows" });
  const older = h("button", { type: "button", id: "history-older" }, "Older");
  const newer = h("button", { type: "button", id: "history-newer" }, "Newer");
  const where = h("span", { class: "muted" });
  main.append(
    h("h2", {}, "Call history"),
    form,
    h(
      "table",
      { class: "grid" },
      h("thead", {}, h("tr", {}, ["Started", "From", "To", "Agent", "Direction", "Duration", "Ended", "Outcome"].map((t) => h("th", {}, t)))),
      body,
    ),
    h("div", { class: "toolbar" }, newer, older, where),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    for (const k of ["q", "agent", "direction", "answered", "since", "until"]) f[k] = String(data.get(k) || "");
    f.offset = 0;
    load();
  });
  older.addEventListener("click", () => {
    f.offset += PAGE;
    load();
  });
  newer.addEventListener("click", () => {
    f.offset = Math.max(0, f.offset - PAGE);
    load();
  });

  async function load() {
    const query = qs({
      limit: PAGE,
      offset: f.offset,
      q: f.q,
      agent: f.agent,
      direction: f.direction,
      answered: f.answered,
      since: dayStart(f.since),
      until: dayStart(f.until, 1),
    });
    const records = await attempt(() => api("GET", `/records${query}`));
    if (!ctx.alive || !records) return;
    body.replaceChildren(
      ...records.map((r) =>
        h(
          "tr",
          { class: "clickable", "data-record": r.id, onclick: () => (location.hash = `#/history/${encodeURIComponent(r.id)}`) },
          h("td", {}, when(r.started_at)),
          h("td", {}, who(r.from)),
          h("td", {}, who(r.to)),
          h("td", {}, r.agent_version ? `${r.agent} v${r.agent_version}` : r.agent),
          h("td", {}, r.direction),
          h("td", {}, r.answered_at && r.ended_at ? duration((r.ended_at - r.answered_at) / 1000) : "not answered"),
          h("td", {}, r.end_reason || ""),
          h("td", {}, r.analysis && r.analysis.summary ? r.analysis.summary : ""),
        ),
      ),
    );
    if (!records.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No calls match.")));
    newer.disabled = f.offset === 0;
    older.disabled = records.length < PAGE;
    where.textContent = records.length ? `calls ${f.offset + 1}–${f.offset + records.length}` : "";
  }

  const names = await agentNames();
  if (!ctx.alive) return;
  agentSelect.append(...names.map((n) => h("option", { value: n }, n)));
  agentSelect.value = f.agent;
  await load();
}

async function viewRecord(main, id, ctx) {
  main.append(h("p", {}, h("a", { href: "#/history" }, "← History")));
  const r = await attempt(() => api("GET", `/calls/${encodeURIComponent(id)}`));
  if (!ctx.alive || !r) return;
  const talk = r.answered_at && r.ended_at ? duration((r.ended_at - r.answered_at) / 1000) : "not answered";
  main.append(
    h("h2", { id: "record-title" }, `Call ${r.id}`),
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "panel" },
        facts([
          ["From", r.from],
          ["To", r.to],
          ["Direction", r.direction],
          ["Agent", r.agent_version ? `${r.agent} version ${r.agent_version}` : r.agent],
          ["Trunk", r.trunk],
          ["Started", when(r.started_at)],
          ["Answered", when(r.answered_at)],
          ["Ended", r.ended_at ? `${when(r.ended_at)} (${r.end_reason || ""})` : "in progress"],
          ["Talk time", talk],
          ["SIP status", r.sip_code],
          ["Codec", r.codec],
          ["Quality", r.mos ? `MOS ${fixed(r.mos, 1)} · loss ${fixed(r.loss_percent, 1)} % · jitter ${fixed(r.jitter_ms, 0)} ms` : ""],
          ["Barge-ins", String(r.barge_ins ?? 0)],
          ["Transfer", r.transfer],
          ["Call-ID", r.call_id],
          ["Unfinished", r.unfinished ? "voxline stopped during the call" : ""],
        ]),
        h("h3", {}, "Recording"),
        r.recording_path
          ? h("audio", { id: "record-audio", controls: true, preload: "metadata", src: `/records/${encodeURIComponent(r.id)}/recording` })
          : h("p", { class: "muted", id: "record-no-audio" }, r.media_deleted_at ? `Deleted by retention on ${when(r.media_deleted_at)}.` : "Not recorded."),
        r.recording_path ? h("p", { class: "muted" }, "Left: the caller. Right: the agent.") : null,
        analysisPanel(r.analysis),
        latencyPanel(r.turn_latencies || []),
        toolPanel(r.tool_calls || []),
        switchPanel(r.backend_switches || []),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, "Transcript"),
        r.transcript_error ? h("p", { class: "error" }, r.transcript_error) : null,
        (() => {
          const box = h("div", { id: "record-transcript", class: "transcript" });
          renderTranscript(box, transcriptLines(r.transcript || []), r.transcript_path ? "No lines." : r.media_deleted_at ? "Deleted by retention." : "No transcript: the agent writes none.");
          return box;
        })(),
      ),
    ),
  );
}

function analysisPanel(a) {
  if (!a) return null;
  return h(
    "div",
    { id: "record-analysis" },
    h("h3", {}, "Outcome"),
    a.error ? h("p", { class: "error" }, `The analysis failed: ${a.error}`) : null,
    a.summary ? h("p", {}, a.summary) : null,
    a.outcome
      ? facts(Object.entries(a.outcome).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]))
      : null,
    h("p", { class: "muted" }, `${a.model}, ${when(a.at)}`),
  );
}

function latencyPanel(turns) {
  if (!turns.length) return null;
  const ms = (x) => (x === null || x === undefined ? "" : `${x}`);
  return [
    h("h3", {}, "Turn latencies (ms after the caller stopped)"),
    table(
      ["Turn#", "Speech end#", "Reply RTP#", "Backend audio#", "STT final#", "LLM token#", "TTS byte#"],
      turns.map((t, i) =>
        h(
          "tr",
          {},
          h("td", { class: "num" }, i + 1),
          h("td", { class: "num" }, duration(t.caller_speech_end_ms / 1000)),
          h("td", { class: "num" }, t.first_rtp_out_ms !== null && t.first_rtp_out_ms !== undefined ? t.first_rtp_out_ms - t.caller_speech_end_ms : ""),
          h("td", { class: "num" }, t.first_backend_audio_ms !== null && t.first_backend_audio_ms !== undefined ? t.first_backend_audio_ms - t.caller_speech_end_ms : ""),
          h("td", { class: "num" }, ms(t.stt_final_ms)),
          h("td", { class: "num" }, ms(t.llm_first_token_ms)),
          h("td", { class: "num" }, ms(t.tts_first_byte_ms)),
        ),
      ),
      { id: "record-latencies" },
    ),
  ];
}

function toolPanel(tools) {
  if (!tools.length) return null;
  return [
    h("h3", {}, "Tool calls"),
    table(
      ["At", "Tool", "Arguments", "Result", "Took#"],
      tools.map((t) =>
        h(
          "tr",
          {},
          h("td", {}, duration(t.started_ms / 1000)),
          h("td", {}, t.name),
          h("td", {}, h("pre", {}, t.arguments)),
          h("td", {}, t.error ? h("span", { class: "error" }, t.error) : h("pre", {}, t.output || "")),
          h("td", { class: "num" }, `${t.duration_ms} ms`),
        ),
      ),
      { id: "record-tools" },
    ),
  ];
}

function switchPanel(switches) {
  if (!switches.length) return null;
  return [
    h("h3", {}, "Backend switches"),
    h("ul", {}, switches.map((s) => h("li", {}, `${duration(s.at_ms / 1000)}: ${s.from} → ${s.to}${s.reason ? ` (${s.reason})` : ""}`))),
  ];
}

// ---------------------------------------------------------------------------------------
// Analytics: GET /analytics per agent and day.

function isoDay(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

async function viewAnalytics(main, arg, ctx) {
  const today = new Date();
  const from = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 29);
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const agentSelect = h("select", { name: "agent" }, h("option", { value: "" }, "all"));
  const form = h(
    "form",
    { class: "filters", id: "analytics-filters" },
    h("label", {}, "From", h("input", { type: "date", name: "since", value: isoDay(from), required: true })),
    h("label", {}, "To", h("input", { type: "date", name: "until", value: isoDay(today), required: true })),
    h("label", {}, "Time zone", h("input", { name: "tz", value: zone, size: 18 })),
    h("label", {}, "Agent", agentSelect),
    h("button", { type: "submit", class: "primary" }, "Show"),
  );
  const out = h("div", { id: "analytics" });
  main.append(h("h2", {}, "Analytics"), form, out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });

  async function load() {
    const data = new FormData(form);
    const query = qs({
      since: dayStart(String(data.get("since"))),
      until: dayStart(String(data.get("until")), 1),
      tz: data.get("tz"),
      agent: data.get("agent"),
    });
    const a = await attempt(() => api("GET", `/analytics${query}`));
    if (!ctx.alive || !a) return;
    const cur = a.currency ? ` (${a.currency})` : "";
    const total = { calls: 0, answered: 0, talk: 0, barge: 0, fail: 0, cost: 0 };
    const rows = a.days.map((d) => {
      total.calls += d.calls;
      total.answered += d.answered;
      total.talk += d.talk_seconds;
      total.barge += d.barge_ins;
      total.fail += d.failovers;
      total.cost += d.cost || 0;
      const outcomes = Object.entries(d.outcomes || {}).flatMap(([field, values]) =>
        Object.entries(values).map(([v, n]) => `${field}=${v} ×${n}`),
      );
      return h(
        "tr",
        { "data-day": d.day, "data-agent": d.agent },
        h("td", {}, d.day),
        h("td", {}, d.agent),
        h("td", { class: "num" }, d.calls),
        h("td", { class: "num" }, `${fixed(d.answer_rate * 100, 0)} %`),
        h("td", { class: "num" }, duration(d.talk_seconds)),
        h("td", { class: "num" }, duration(d.mean_talk_seconds)),
        h("td", { class: "num" }, d.latency_p50_ms ?? ""),
        h("td", { class: "num" }, d.latency_p95_ms ?? ""),
        h("td", { class: "num" }, d.barge_ins),
        h("td", { class: "num" }, d.failovers),
        h("td", {}, outcomes.join(", ")),
        h("td", { class: "num" }, d.cost === undefined ? "" : fixed(d.cost, 2)),
      );
    });
    const totals = h(
      "tr",
      { class: "totals" },
      h("th", {}, "Total"),
      h("th", {}, ""),
      h("th", { class: "num" }, total.calls),
      h("th", { class: "num" }, total.calls ? `${fixed((total.answered / total.calls) * 100, 0)} %` : ""),
      h("th", { class: "num" }, duration(total.talk)),
      h("th", {}, ""),
      h("th", {}, ""),
      h("th", {}, ""),
      h("th", { class: "num" }, total.barge),
      h("th", { class: "num" }, total.fail),
      h("th", {}, ""),
      h("th", { class: "num" }, a.currency ? fixed(total.cost, 2) : ""),
    );
    out.replaceChildren(
      table(
        ["Day", "Agent", "Calls#", "Answered#", "Talk time#", "Mean call#", "Latency p50 ms#", "p95 ms#", "Barge-ins#", "Failovers#", "Outcomes", `Cost${cur}#`],
        rows.length ? [...rows, totals] : [h("tr", {}, h("td", { colspan: 12, class: "muted" }, "No calls in this span."))],
      ),
    );
  }

  const names = await agentNames();
  if (!ctx.alive) return;
  agentSelect.append(...names.map((n) => h("option", { value: n }, n)));
  await load();
}

// ---------------------------------------------------------------------------------------
// Agents: GET/POST /agents, GET/PUT/DELETE /agents/{name}, and the API's routes.

const NEW_AGENT = {
  kind: "realtime",
  instructions: "You are a helpful assistant for {{caller}}.",
  greeting: "Greet the caller.",
  realtime: { url: "wss://api.openai.com/v1/realtime?model=gpt-realtime", api_key_env: "OPENAI_API_KEY", voice: "marin" },
};

async function viewAgents(main, arg, ctx) {
  if (arg) return viewAgent(main, arg, ctx);
  const list = await attempt(() => api("GET", "/agents"));
  if (!ctx.alive || !list) return;
  main.append(
    h("h2", {}, "Agents"),
    h("div", { class: "toolbar" }, h("a", { class: "button", href: "#/agents/%2Bnew", id: "agent-new" }, "New agent")),
    table(
      ["Name", "Source", "Version", "Changed"],
      list.agents.map((a) =>
        h(
          "tr",
          { class: "clickable", "data-agent": a.name, onclick: () => (location.hash = `#/agents/${encodeURIComponent(a.name)}`) },
          h("td", {}, a.name),
          h("td", {}, a.read_only ? `${a.source} (read-only)` : a.source),
          h("td", { class: "num" }, a.version ?? ""),
          h("td", {}, when(a.created_at)),
        ),
      ),
      { id: "agents" },
    ),
  );
  const routes = await api("GET", "/routes").catch(() => null);
  if (!ctx.alive || !routes) return;
  const number = h("input", { id: "route-number", placeholder: "1000, 555*, or *" });
  const agent = h("select", { id: "route-agent" }, list.agents.map((a) => h("option", { value: a.name }, a.name)));
  main.append(
    h("h3", {}, "Routes set here (checked before voxline.toml's)"),
    table(
      ["Number", "Agent", ""],
      routes.routes.map((r) =>
        h(
          "tr",
          {},
          h("td", {}, r.number),
          h("td", {}, r.agent),
          h(
            "td",
            {},
            h(
              "button",
              {
                class: "danger",
                type: "button",
                onclick: () =>
                  attempt(async () => {
                    await api("DELETE", `/routes/${encodeURIComponent(r.number)}`);
                    route();
                  }),
              },
              "Remove",
            ),
          ),
        ),
      ),
    ),
    h(
      "div",
      { class: "toolbar" },
      number,
      agent,
      h(
        "button",
        {
          type: "button",
          onclick: () =>
            attempt(async () => {
              await api("PUT", `/routes/${encodeURIComponent(number.value.trim())}`, { agent: agent.value });
              flash("ok", `${number.value.trim()} now goes to ${agent.value}`);
              route();
            }),
        },
        "Add route",
      ),
    ),
  );
}

async function viewAgent(main, name, ctx) {
  main.append(h("p", {}, h("a", { href: "#/agents" }, "← Agents")));
  const creating = name === "+new";
  let agent = null;
  if (!creating) {
    agent = await attempt(() => api("GET", `/agents/${encodeURIComponent(name)}`));
    if (!ctx.alive || !agent) return;
    if (agent.read_only) {
      main.append(
        h("h2", {}, agent.name),
        h("p", { id: "agent-read-only" }, "This agent is defined in voxline.toml (or built in): change it there. It is read-only here."),
      );
      return;
    }
  }
  const definition = creating ? NEW_AGENT : agent.definition;
  const nameInput = h("input", { id: "agent-name", value: creating ? "" : agent.name, disabled: !creating, required: true });
  const instructions = h("textarea", { id: "agent-instructions", rows: 8, value: definition.instructions || "" });
  const greeting = h("textarea", { id: "agent-greeting", rows: 2, value: definition.greeting || "" });
  const json = h("textarea", { id: "agent-definition", rows: 18, spellcheck: "false", value: JSON.stringify(definition, null, 2) });
  const saved = h("span", { id: "agent-saved", class: "muted" });

  // The two text fields edit the JSON's keys of the same name; the JSON is what is saved.
  function fromFields() {
    let d;
    try {
      d = JSON.parse(json.value);
    } catch {
      return;
    }
    for (const [key, el] of [["instructions", instructions], ["greeting", greeting]]) {
      if (el.value) d[key] = el.value;
      else delete d[key];
    }
    json.value = JSON.stringify(d, null, 2);
  }
  function fromJson() {
    try {
      const d = JSON.parse(json.value);
      instructions.value = d.instructions || "";
      greeting.value = d.greeting || "";
      json.classList.remove("invalid");
    } catch {
      json.classList.add("invalid");
    }
  }
  instructions.addEventListener("input", fromFields);
  greeting.addEventListener("input", fromFields);
  json.addEventListener("change", fromJson);

  async function save() {
    let body;
    try {
      body = JSON.parse(json.value);
    } catch (e) {
      flash("error", `the definition is not JSON: ${e.message}`);
      return;
    }
    await attempt(async () => {
      if (creating) {
        const n = nameInput.value.trim();
        const v = await api("POST", "/agents", { ...body, name: n });
        flash("ok", `agent ${v.name} created (version ${v.version})`);
        location.hash = `#/agents/${encodeURIComponent(v.name)}`;
      } else {
        const v = await api("PUT", `/agents/${encodeURIComponent(agent.name)}`, body);
        saved.textContent = `Saved as version ${v.version}.`;
        saved.dataset.version = String(v.version);
        flash("ok", `agent ${v.name}: version ${v.version} answers the next call`);
        drawVersions(await api("GET", `/agents/${encodeURIComponent(agent.name)}`));
      }
    });
  }

  const versions = h("div", { id: "agent-versions" });
  function drawVersions(a) {
    versions.replaceChildren(
      h("h3", {}, "Versions"),
      table(
        ["Version#", "Written", ""],
        (a.versions || [])
          .slice()
          .reverse()
          .map((v) =>
            h(
              "tr",
              { "data-version": v.version },
              h("td", { class: "num" }, v.version),
              h("td", {}, when(v.created_at)),
              h(
                "td",
                {},
                v.deleted
                  ? "deleted"
                  : h(
                      "button",
                      {
                        type: "button",
                        onclick: () => {
                          json.value = JSON.stringify(v.definition, null, 2);
                          fromJson();
                          flash("ok", `version ${v.version} loaded: save to make it current`);
                        },
                      },
                      "Load",
                    ),
              ),
            ),
          ),
      ),
    );
  }

  main.append(
    h("h2", {}, creating ? "New agent" : `Agent ${agent.name}`, " ", creating ? "" : h("span", { class: "muted", id: "agent-version" }, `version ${agent.version}`)),
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "panel" },
        h("label", { class: "field" }, "Name", nameInput),
        h("label", { class: "field" }, "Instructions (a template: {{caller}}, {{called}}, {{memory}}, {{var.NAME}}…)", instructions),
        h("label", { class: "field" }, "Greeting", greeting),
        h("label", { class: "field" }, "Definition: the [[agent]] table as JSON (see docs/configuration.md)", json),
        h(
          "div",
          { class: "toolbar" },
          h("button", { id: "agent-save", class: "primary", type: "button", onclick: save }, creating ? "Create" : "Save"),
          creating
            ? null
            : h(
                "button",
                {
                  id: "agent-delete",
                  class: "danger",
                  type: "button",
                  onclick: () =>
                    attempt(async () => {
                      await api("DELETE", `/agents/${encodeURIComponent(agent.name)}`);
                      flash("ok", `agent ${agent.name} deleted`);
                      location.hash = "#/agents";
                    }),
                },
                "Delete",
              ),
          saved,
        ),
      ),
      h("section", { class: "panel" }, versions),
    ),
  );
  if (!creating) drawVersions(agent);
}

// ---------------------------------------------------------------------------------------
// Campaigns: GET/POST /campaigns, GET /campaigns/{id}, pause, resume, cancel.

function progress(c) {
  const n = c.counts;
  const total = n.pending + n.dialing + n.done + n.failed + n.cancelled;
  const finished = n.done + n.failed + n.cancelled;
  const pct = total ? (finished / total) * 100 : 0;
  // Through the CSSOM: the page's CSP allows no inline style attributes.
  const bar = h("span", {});
  bar.style.width = `${pct.toFixed(1)}%`;
  return h(
    "div",
    {},
    h("div", { class: "progress", title: `${finished} of ${total}` }, bar),
    h("span", { class: "muted" }, `${n.done} done · ${n.failed} failed · ${n.dialing} dialing · ${n.pending} pending${n.cancelled ? ` · ${n.cancelled} cancelled` : ""}`),
  );
}

function campaignActions(c, after) {
  const act = (what) =>
    attempt(async () => {
      await api("POST", `/campaigns/${encodeURIComponent(c.id)}/${what}`);
      after();
    });
  const running = c.state === "running";
  const paused = c.state === "paused";
  return [
    running ? h("button", { type: "button", class: "campaign-pause", onclick: (e) => (e.stopPropagation(), act("pause")) }, "Pause") : null,
    paused ? h("button", { type: "button", class: "campaign-resume", onclick: (e) => (e.stopPropagation(), act("resume")) }, "Resume") : null,
    running || paused ? h("button", { type: "button", class: "danger campaign-cancel", onclick: (e) => (e.stopPropagation(), act("cancel")) }, "Cancel") : null,
  ];
}

function every(ctx, ms, f) {
  const t = setInterval(f, ms);
  ctx.onLeave.push(() => clearInterval(t));
}

async function viewCampaigns(main, arg, ctx) {
  if (arg === "+new") return viewNewCampaign(main, ctx);
  if (arg) return viewCampaign(main, arg, ctx);
  const body = h("tbody", { id: "campaigns" });
  main.append(
    h("h2", {}, "Campaigns"),
    h("div", { class: "toolbar" }, h("a", { class: "button", href: "#/campaigns/%2Bnew", id: "campaign-new" }, "New campaign")),
    h("table", { class: "grid" }, h("thead", {}, h("tr", {}, ["Name", "Agent", "State", "Progress", "Created", ""].map((t) => h("th", {}, t)))), body),
  );
  async function load() {
    const r = await api("GET", "/campaigns").catch(() => null);
    if (!ctx.alive || !r) return;
    body.replaceChildren(
      ...r.campaigns.map((c) =>
        h(
          "tr",
          { class: "clickable", "data-campaign": c.id, onclick: () => (location.hash = `#/campaigns/${encodeURIComponent(c.id)}`) },
          h("td", {}, c.name),
          h("td", {}, c.agent),
          h("td", {}, h("span", { class: `state ${c.state}` }, c.state)),
          h("td", {}, progress(c)),
          h("td", {}, when(c.created_at)),
          h("td", {}, campaignActions(c, load)),
        ),
      ),
    );
    if (!r.campaigns.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No campaigns yet.")));
  }
  await load();
  every(ctx, 2000, load);
}

async function viewCampaign(main, id, ctx) {
  main.append(h("p", {}, h("a", { href: "#/campaigns" }, "← Campaigns")));
  const head = h("div", {});
  const body = h("tbody", { id: "campaign-targets" });
  main.append(
    head,
    h("h3", {}, "Targets"),
    h("table", { class: "grid" }, h("thead", {}, h("tr", {}, ["#", "Number", "Variables", "State", "Attempts", "Last result", "Calls"].map((t) => h("th", {}, t)))), body),
  );
  async function load() {
    const c = await attempt(() => api("GET", `/campaigns/${encodeURIComponent(id)}?limit=1000`));
    if (!ctx.alive || !c) return;
    const s = c.settings;
    const w = s.window;
    head.replaceChildren(
      h("h2", {}, `Campaign ${c.name} `, h("span", { class: `state ${c.state}`, id: "campaign-state" }, c.state)),
      h("div", { class: "toolbar" }, campaignActions(c, load)),
      progress(c),
      h(
        "section",
        { class: "panel" },
        facts([
          ["Id", c.id],
          ["Agent", c.agent],
          ["Trunk", s.trunk],
          ["At most", `${s.max_concurrent} calls at once, ${s.calls_per_s} a second`],
          ["Window", w ? `${w.start}–${w.end} ${w.timezone}${w.days && w.days.length ? ` (${w.days.join(", ")})` : ""}` : "any time"],
          ["Retries", `on ${s.retry.on.join(", ") || "nothing"}, ${s.retry.max_attempts} attempts, ${s.retry.backoff_s} s apart (doubling)`],
          ["Ring timeout", `${s.ring_timeout_s} s`],
          ["Created", when(c.created_at)],
        ]),
      ),
    );
    body.replaceChildren(
      ...c.targets.map((t) =>
        h(
          "tr",
          { "data-seq": t.seq },
          h("td", { class: "num" }, t.seq),
          h("td", {}, t.number),
          h("td", {}, Object.entries(t.variables).map(([k, v]) => `${k}=${v}`).join(", ")),
          h("td", {}, h("span", { class: `state ${t.state}` }, t.state)),
          h("td", { class: "num" }, t.attempts),
          h("td", {}, t.last_result || ""),
          h(
            "td",
            {},
            t.history
              .filter((a) => a.record_id)
              .map((a) => [h("a", { href: `#/history/${encodeURIComponent(a.record_id)}` }, a.result), " "]),
          ),
        ),
      ),
    );
  }
  await load();
  every(ctx, 2000, load);
}

/** Targets from text: one a line, `NUMBER` or `NUMBER, key=value, key=value`. */
function parseTargets(text) {
  const targets = [];
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const [number, ...vars] = line.split(",").map((s) => s.trim());
    const variables = {};
    for (const v of vars) {
      const eq = v.indexOf("=");
      if (eq <= 0) throw new Error(`targets, line ${i + 1}: ${JSON.stringify(v)} is not key=value`);
      variables[v.slice(0, eq).trim()] = v.slice(eq + 1).trim();
    }
    targets.push(Object.keys(variables).length ? { number, variables } : { number });
  }
  return targets;
}

async function viewNewCampaign(main, ctx) {
  const names = await agentNames();
  if (!ctx.alive) return;
  const field = (label, el) => h("label", { class: "field" }, label, el);
  const el = {
    name: h("input", { id: "campaign-name", value: "campaign" }),
    agent: h("select", { id: "campaign-agent" }, names.map((n) => h("option", { value: n }, n))),
    trunk: h("input", { id: "campaign-trunk", placeholder: "a [[trunk]] name (optional)" }),
    max: h("input", { id: "campaign-max", type: "number", min: 1, value: "1" }),
    cps: h("input", { id: "campaign-cps", type: "number", min: 0.01, max: 100, step: "any", value: "1" }),
    ring: h("input", { id: "campaign-ring", type: "number", min: 1, max: 300, value: "30" }),
    start: h("input", { id: "campaign-window-start", type: "time" }),
    end: h("input", { id: "campaign-window-end", type: "time" }),
    tz: h("input", { id: "campaign-window-tz", value: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" }),
    days: h("input", { id: "campaign-window-days", placeholder: "mon,tue,wed,thu,fri (empty: every day)" }),
    retryOn: h("input", { id: "campaign-retry-on", value: "busy,no_answer" }),
    attempts: h("input", { id: "campaign-attempts", type: "number", min: 1, max: 10, value: "3" }),
    backoff: h("input", { id: "campaign-backoff", type: "number", min: 0, value: "300" }),
    targets: h("textarea", { id: "campaign-targets-text", rows: 10, placeholder: "+15551230001, customer=Ada\nsip:bob@pbx.example" }),
  };
  async function create() {
    let targets;
    try {
      targets = parseTargets(el.targets.value);
    } catch (e) {
      flash("error", e.message);
      return;
    }
    const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
    const body = {
      name: el.name.value.trim() || undefined,
      agent: el.agent.value,
      trunk: el.trunk.value.trim() || undefined,
      targets,
      max_concurrent: Number(el.max.value),
      calls_per_s: Number(el.cps.value),
      ring_timeout_s: Number(el.ring.value),
      retry: { on: list(el.retryOn.value), max_attempts: Number(el.attempts.value), backoff_s: Number(el.backoff.value) },
    };
    if (el.start.value || el.end.value) {
      body.window = { start: el.start.value, end: el.end.value, timezone: el.tz.value.trim(), days: list(el.days.value) };
    }
    await attempt(async () => {
      const c = await api("POST", "/campaigns", body);
      flash("ok", `campaign ${c.name} started with ${targets.length} targets`);
      location.hash = `#/campaigns/${encodeURIComponent(c.id)}`;
    });
  }
  main.append(
    h("p", {}, h("a", { href: "#/campaigns" }, "← Campaigns")),
    h("h2", {}, "New campaign"),
    h(
      "section",
      { class: "panel" },
      h(
        "div",
        { class: "fields" },
        field("Name", el.name),
        field("Agent", el.agent),
        field("Trunk", el.trunk),
        field("Calls at once", el.max),
        field("Calls a second", el.cps),
        field("Ring timeout (s)", el.ring),
        field("Window start", el.start),
        field("Window end", el.end),
        field("Window time zone", el.tz),
        field("Window days", el.days),
        field("Retry on (busy, no_answer, failed)", el.retryOn),
        field("Attempts", el.attempts),
        field("First retry after (s)", el.backoff),
      ),
      field("Targets: one a line, NUMBER or NUMBER, key=value, … (a number goes through the trunk; or a SIP URI)", el.targets),
      h("div", { class: "toolbar" }, h("button", { id: "campaign-create", class: "primary", type: "button", onclick: create }, "Start campaign")),
    ),
  );
}

// ---------------------------------------------------------------------------------------
// The router.

const VIEWS = { live: viewLive, history: viewHistory, analytics: viewAnalytics, agents: viewAgents, campaigns: viewCampaigns };
let current = null;

function route() {
  if (current) {
    current.alive = false;
    for (const f of current.onLeave) f();
  }
  const ctx = { alive: true, onLeave: [] };
  current = ctx;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const name = VIEWS[parts[0]] ? parts[0] : "live";
  const arg = parts.length > 1 && parts[1] !== "" ? decodeURIComponent(parts.slice(1).join("/")) : null;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === name);
  const main = document.getElementById("view");
  main.replaceChildren();
  main.dataset.view = name;
  Promise.resolve(VIEWS[name](main, arg, ctx)).catch((e) => flash("error", e.message));
}

async function start() {
  document.getElementById("open-banner").hidden = secured;
  const logout = document.getElementById("logout");
  logout.hidden = !secured;
  logout.addEventListener("click", async () => {
    await fetch("/console/logout", { method: "POST", headers: csrf ? { "X-Voxline-CSRF": csrf } : {}, credentials: "same-origin" });
    location.replace("/");
  });
  if (secured) {
    const s = await api("GET", "/console/session").catch(() => null);
    csrf = s ? s.csrf : null;
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
