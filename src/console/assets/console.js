// The partlog console: a single page over partlog's console API (/api/).
// No framework and nothing fetched from elsewhere: partlog serves this file.
// The token lives in this tab's sessionStorage only and goes to the API as
// `Authorization: Bearer …`; never in a cookie, localStorage or a URL.
"use strict";

const TOKEN_KEY = "partlog.token";
// Pages refresh their data this often (milliseconds).
const REFRESH_MS = 3000;
// Rows a live tail keeps on the page; older ones go.
const TAIL_ROWS = 500;
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

// ------------------------------------------------------------------ helpers

// An element with attributes (`on…` are listeners) and children (strings
// become text: data never reaches innerHTML).
function el(tag, attrs, ...children) {
  const svg = ["svg", "polyline", "line", "text", "g", "circle"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);
const show = (value) => (value === undefined || value === null ? "–" : String(value));
const rate = (value) => (value === undefined || value === null ? "–" : value.toFixed(1));
const time = (ms) => (ms === undefined || ms === null ? "–" : new Date(ms).toLocaleString());
const path = (...names) => names.map(encodeURIComponent).join("/");

class Refused extends Error {
  constructor(error) {
    super(error.message);
    this.error = error;
  }
}

// Calls the console API; a refusal throws Refused with {code, message, reason}.
async function api(method, url, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method, headers, cache: "no-store", credentials: "omit",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch (_) { /* not JSON: reported below */ }
  if (!response.ok) {
    throw new Refused(data && data.code ? data : { code: "HTTP " + response.status, message: text });
  }
  return data;
}

function showError(error) {
  const box = $("#error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  const e = error instanceof Refused ? error.error : { code: "ERROR", message: String(error.message || error) };
  box.textContent = "refused: " + e.code + " — " + e.message + (e.reason ? " (" + e.reason + ")" : "");
  box.hidden = false;
}

// Runs `load`; a refusal is shown above the page and empties `region`.
async function guarded(region, load) {
  try {
    await load();
    showError(null);
  } catch (error) {
    showError(error);
    if (region) region.replaceChildren();
  }
}

// Asks before a careful action; with `typed`, the operator must type it.
function confirmAction(text, typed) {
  return new Promise((resolve) => {
    const dialog = $("#confirm");
    const input = $("#confirm-input");
    $("#confirm-text").textContent = text;
    $("#confirm-typed").hidden = !typed;
    $("#confirm-expected").textContent = typed || "";
    input.value = "";
    const ok = $("#confirm-ok");
    ok.disabled = Boolean(typed);
    input.oninput = () => { ok.disabled = input.value !== typed; };
    const close = (answer) => {
      dialog.hidden = true;
      $("#confirm-form").onsubmit = null;
      $("#confirm-cancel").onclick = null;
      resolve(answer);
    };
    $("#confirm-form").onsubmit = (event) => { event.preventDefault(); close(!typed || input.value === typed); };
    $("#confirm-cancel").onclick = () => close(false);
    dialog.hidden = false;
    (typed ? input : ok).focus();
  });
}

function table(id, headings, rows) {
  return el("div", { class: "scroll" },
    el("table", { id },
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
}

function crumbs(...links) {
  $("#crumbs").replaceChildren(...links.map(([text, href]) =>
    href ? el("a", { href }, text) : el("span", {}, text)));
}

// --------------------------------------------------------------------- pages

// The current page's timers and tail, stopped when the route changes.
let current = { timers: [], stop: [] };

function every(ms, task) {
  task();
  current.timers.push(setInterval(task, ms));
}

function leavePage() {
  current.timers.forEach(clearInterval);
  current.stop.forEach((stop) => stop());
  current = { timers: [], stop: [] };
}

function streamsPage() {
  crumbs(["Streams"]);
  const region = el("div", { id: "streams" });
  const prefix = el("input", { id: "streams-prefix", type: "search", placeholder: "names starting with…", "aria-label": "Only streams whose name starts with" });
  const name = el("input", { id: "create-name", placeholder: "name", required: true });
  const partitions = el("input", { id: "create-partitions", type: "number", min: 1, max: 256, value: 3, required: true });
  const create = el("form", {
    id: "create-form", class: "actions",
    onsubmit: async (event) => {
      event.preventDefault();
      const stream = name.value.trim();
      const count = Number(partitions.value);
      if (!(await confirmAction("Create stream " + stream + " with " + count + " partitions?"))) return;
      await guarded(null, async () => {
        await api("POST", "/api/streams", { stream, partitions: count });
        location.hash = "#/streams/" + path(stream);
      });
    },
  }, el("strong", {}, "Create a stream"), name, partitions, el("button", { id: "create-submit", type: "submit" }, "Create…"));
  const refresh = () => guarded(region, async () => {
    const answer = await api("GET", "/api/streams?" + new URLSearchParams({ prefix: prefix.value }));
    const rows = answer.streams.map((s) => el("tr", { "data-stream": s.stream },
      el("td", {}, el("a", { href: "#/streams/" + path(s.stream) }, s.stream)),
      el("td", { class: "partitions num" }, s.partitions),
      el("td", { class: "rate-in num" }, rate(s.rates && s.rates.records_in)),
      el("td", { class: "rate-out num" }, rate(s.rates && s.rates.records_out))));
    region.replaceChildren(
      table("streams-table", ["Stream", "Partitions", "Records/s in", "Records/s out"], rows),
      el("p", { class: "note" }, "Records/s through this partlog instance, over its last sample.",
        answer.more ? " Only the first 1000 streams are listed." : ""));
  });
  prefix.addEventListener("input", refresh);
  $("#page").replaceChildren(el("h1", {}, "Streams"), el("p", { class: "actions" }, prefix), region, create);
  every(REFRESH_MS, refresh);
}

function streamPage(stream) {
  crumbs(["Streams", "#/streams"], [stream]);
  const region = el("div", { id: "stream" });
  const remove = el("button", {
    id: "delete-stream", class: "danger",
    onclick: async () => {
      if (!(await confirmAction("Delete stream " + stream + " and every record of its partitions? This cannot be undone.", stream))) return;
      await guarded(null, async () => {
        await api("DELETE", "/api/streams/" + path(stream) + "?confirm=" + encodeURIComponent(stream));
        location.hash = "#/streams";
      });
    },
  }, "Delete stream…");
  const grown = el("input", { id: "grow-partitions", type: "number", min: 2, max: 256, required: true, "aria-label": "Partitions after growing" });
  const grow = el("form", {
    id: "grow-form", class: "actions",
    onsubmit: async (event) => {
      event.preventDefault();
      const count = Number(grown.value);
      if (!(await confirmAction("Grow stream " + stream + " to " + count + " partitions? Publishing pauses for a few seconds; every key keeps its order; streams cannot shrink."))) return;
      await guarded(null, async () => {
        const answer = await api("POST", "/api/streams/" + path(stream) + "/resize", { partitions: count });
        $("#grow-done").textContent = "Grown to " + answer.stream.partitions.length + " partitions.";
      });
    },
  }, el("strong", {}, "Grow the stream"), grown, el("button", { id: "grow-submit", type: "submit" }, "Grow…"), el("span", { id: "grow-done", class: "note" }));
  $("#page").replaceChildren(el("h1", {}, stream), region,
    el("p", { class: "actions" }, el("a", { href: "#/streams/" + path(stream) + "/records", id: "records-link" }, "Records"), remove), grow);
  every(REFRESH_MS, () => guarded(region, async () => {
    const answer = await api("GET", "/api/streams/" + path(stream));
    const last = answer.rates[answer.rates.length - 1];
    const partitions = answer.stream.partitions.map((p) => el("tr", { "data-partition": p.index },
      el("td", { class: "num" }, el("a", { href: "#/streams/" + path(stream) + "/records/" + p.index }, p.index)),
      el("td", {}, p.partition_stream), el("td", {}, p.leader), el("td", {}, p.replicas.join(", ") || "–"),
      el("td", { class: "first num" }, show(p.first)), el("td", { class: "tail num" }, show(p.tail))));
    const groups = answer.groups.map((g) => el("li", {}, el("a", { href: "#/streams/" + path(stream) + "/groups/" + path(g), "data-group": g }, g)));
    region.replaceChildren(
      el("p", { class: "rates" }, "Records/s in ", el("strong", { id: "rate-in" }, rate(last && last.records_in)),
        " · out ", el("strong", { id: "rate-out" }, rate(last && last.records_out)), " (through this instance)"),
      table("partitions-table", ["#", "Partition stream", "Leader", "Replicas", "First", "Tail"], partitions),
      ...(answer.stream.epochs.length ? [el("h2", {}, "Growths"),
        table("epochs-table", ["Grew", "When", "Epoch markers (per old partition)"], answer.stream.epochs.map((e) =>
          el("tr", {}, el("td", { class: "grew" }, e.from_partitions + " → " + e.to_partitions), el("td", {}, time(e.resized_at_ms)),
            el("td", {}, e.marker_offsets.join(", ")))))] : []),
      el("h2", {}, "Consumer groups"),
      groups.length ? el("ul", { id: "groups-list" }, groups)
        : el("p", { class: "note", id: "groups-list" }, "No group has offsets or members on this instance."));
  }));
}

// A line per partition of lag over time, drawn from the console's history.
function lagChart(samples) {
  const width = 640, height = 220, left = 48, right = 12, top = 12, bottom = 28;
  const chart = el("svg", { id: "lag-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Lag per partition over the last hour", "data-points": samples.length });
  if (samples.length === 0) {
    chart.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "muted" }, "No samples yet"));
    return chart;
  }
  const t0 = samples[0].at_ms, t1 = Math.max(samples[samples.length - 1].at_ms, t0 + 1);
  const partitions = Math.max(...samples.map((s) => s.lag.length));
  const most = Math.max(1, ...samples.flatMap((s) => s.lag));
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - v / most) * (height - top - bottom);
  chart.append(
    el("line", { x1: left, y1: y(0), x2: width - right, y2: y(0), class: "axis" }),
    el("line", { x1: left, y1: top, x2: left, y2: y(0), class: "axis" }),
    el("text", { x: left - 4, y: top + 4, "text-anchor": "end", class: "muted" }, most),
    el("text", { x: left - 4, y: y(0), "text-anchor": "end", class: "muted" }, 0),
    el("text", { x: left, y: height - 8, class: "muted" }, new Date(t0).toLocaleTimeString()),
    el("text", { x: width - right, y: height - 8, "text-anchor": "end", class: "muted" }, new Date(t1).toLocaleTimeString()));
  for (let p = 0; p < partitions; p++) {
    const points = samples.filter((s) => p < s.lag.length).map((s) => `${x(s.at_ms).toFixed(1)},${y(s.lag[p]).toFixed(1)}`);
    chart.append(el("polyline", { points: points.join(" "), fill: "none", stroke: COLOURS[p % COLOURS.length], "stroke-width": 2, "data-partition": p }));
  }
  return chart;
}

function groupPage(stream, group) {
  const streamHref = "#/streams/" + path(stream);
  crumbs(["Streams", "#/streams"], [stream, streamHref], ["group " + group]);
  const region = el("div", { id: "group" });
  const to = el("select", { id: "reset-to" },
    ["first", "last", "offset", "timestamp"].map((v) => el("option", { value: v }, v)));
  const value = el("input", { id: "reset-value", placeholder: "offset, or time like 2026-01-31T12:00", hidden: true });
  to.addEventListener("change", () => { value.hidden = !["offset", "timestamp"].includes(to.value); });
  const reset = el("form", {
    id: "reset-form", class: "actions",
    onsubmit: async (event) => {
      event.preventDefault();
      const body = { to: to.value };
      if (to.value === "offset") body.value = Number(value.value);
      if (to.value === "timestamp") body.value = new Date(value.value).getTime();
      if (body.value !== undefined && !(body.value >= 0)) { showError(new Error("give a number or a time for the reset")); return; }
      const where = to.value + (body.value !== undefined ? " " + value.value : "");
      if (!(await confirmAction("Reset group " + group + " of " + stream + " to " + where + " on every partition? Its members resume there.", null))) return;
      await guarded(null, async () => {
        await api("POST", "/api/streams/" + path(stream) + "/groups/" + path(group) + "/reset", body);
        $("#reset-done").textContent = "Reset to " + where + ".";
        refresh();
      });
    },
  }, el("strong", {}, "Reset offsets to"), to, value, el("button", { id: "reset-submit", type: "submit", class: "danger" }, "Reset…"), el("span", { id: "reset-done", class: "note" }));
  $("#page").replaceChildren(el("h1", {}, "Group " + group), region, reset);
  const refresh = () => guarded(region, async () => {
    const answer = await api("GET", "/api/streams/" + path(stream) + "/groups/" + path(group));
    // Members from DescribeGroup (every instance and native client); only
    // this instance's active member when the broker cannot list them.
    const held = (p) => p.members ? p.members.some((m) => m.active) : !!p.active_member;
    const members = (p) => !p.members ? (p.active_member || "–")
      : p.members.length === 0 ? "–"
      : p.members.map((m) => el("div", { class: m.active ? "active-member" : "waiting-member" },
          (m.active ? "● " : "○ ") + (m.member || "native client") + (m.connection ? " (" + m.connection + ")" : "")));
    const rows = answer.partitions.map((p) => el("tr", { "data-partition": p.partition, class: p.lag > 0 && !held(p) ? "stuck" : null },
      el("td", { class: "num" }, p.partition),
      el("td", { class: "committed num" }, show(p.committed)),
      el("td", {}, p.committed_source.toLowerCase()),
      el("td", { class: "tail num" }, show(p.tail)),
      el("td", { class: "lag num" }, p.lag),
      el("td", { class: "member" }, members(p))));
    const legend = answer.partitions.map((p) => el("span", { class: "key" },
      el("svg", { viewBox: "0 0 10 10", width: 10, height: 10 }, el("line", { x1: 0, y1: 5, x2: 10, y2: 5, stroke: COLOURS[p.partition % COLOURS.length], "stroke-width": 4 })),
      " partition " + p.partition));
    region.replaceChildren(
      table("offsets-table", ["Partition", "Committed", "Source", "Tail", "Lag", "Members (● active)"], rows),
      answer.members_error ? el("p", { class: "note" }, "Members of other instances unknown: " + answer.members_error) : "",
      el("h2", {}, "Lag over the last hour"),
      el("div", { class: "chart" }, lagChart(answer.lag_history)),
      el("p", { class: "legend" }, legend),
      el("p", { class: "note" }, "A sample every " + answer.sample_interval_ms / 1000 + " s, kept in memory by this partlog instance."));
  });
  every(REFRESH_MS, refresh);
}

function recordRow(r) {
  const headers = Object.entries(r.headers).map(([k, v]) => k + "=" + v).join("\n");
  return el("tr", { "data-offset": r.offset },
    el("td", { class: "num" }, r.offset), el("td", {}, time(r.timestamp_ms)), el("td", { class: "key" }, r.key || "–"),
    el("td", {}, el("pre", {}, headers || "–")),
    el("td", { class: "value " + r.value.kind }, el("span", { class: "kind" }, r.value.kind), el("pre", {}, r.value.text)));
}

// An epoch marker where it sits among the records (it is no record).
function markerRow(m) {
  return el("tr", { "data-marker": m.offset, class: "marker" },
    el("td", { class: "num" }, m.offset),
    el("td", { colspan: 4 }, "epoch marker: records before it were routed over " + m.from_partitions +
      " partitions, records after it over " + m.to_partitions));
}

// Records and markers of one answer, in offset order.
function recordRows(answer) {
  const rows = answer.records.map((r) => [r.offset, recordRow(r)])
    .concat((answer.markers || []).map((m) => [m.offset, markerRow(m)]));
  return rows.sort((a, b) => a[0] - b[0]).map(([, row]) => row);
}

const RECORD_HEADINGS = ["Offset", "Stored", "Key", "Headers", "Value"];

function recordsPage(stream, partition) {
  const streamHref = "#/streams/" + path(stream);
  crumbs(["Streams", "#/streams"], [stream, streamHref], ["records"]);
  const which = el("input", { id: "records-partition", type: "number", min: 0, value: partition || 0 });
  const from = el("select", { id: "records-from" }, el("option", { value: "offset" }, "from offset"), el("option", { value: "time" }, "from time"));
  const at = el("input", { id: "records-at", value: "0", placeholder: "offset, or time like 2026-01-31T12:00" });
  const region = el("div", { id: "records" });
  let next = null;
  const more = el("button", { id: "records-more", type: "button", hidden: true, onclick: () => read({ offset: next }, true) }, "Next page");
  const read = (query, append) => guarded(append ? null : region, async () => {
    const params = new URLSearchParams(query);
    const answer = await api("GET", "/api/streams/" + path(stream) + "/partitions/" + Number(which.value) + "/records?" + params);
    const rows = recordRows(answer);
    if (append && $("#records-table")) $("#records-table tbody").append(...rows);
    else region.replaceChildren(rows.length ? table("records-table", RECORD_HEADINGS, rows)
      : el("p", { class: "note", id: "records-table" }, "No records there (yet)."));
    next = answer.next_offset;
    more.hidden = !rows.length;
  });
  const form = el("form", {
    id: "records-form", class: "actions",
    onsubmit: (event) => {
      event.preventDefault();
      read(from.value === "time" ? { time: new Date(at.value).getTime() } : { offset: Number(at.value) }, false);
    },
  }, el("label", {}, "Partition ", which), from, at, el("button", { id: "records-read", type: "submit" }, "Read"));

  // The live tail: a Subscribe streamed as lines of JSON, read with fetch()
  // (EventSource cannot send the Authorization header). Pause ends the call;
  // Resume starts again after the last record shown.
  const tailRows = el("tbody", {});
  const tailState = el("span", { id: "tail-state", class: "note" }, "stopped");
  let tail = null;
  let lastOffset = null;
  const stopTail = () => { if (tail) tail.abort(); tail = null; };
  current.stop.push(stopTail);
  const startTail = async () => {
    stopTail();
    const controller = new AbortController();
    tail = controller;
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const query = lastOffset === null ? "" : "?offset=" + (lastOffset + 1);
    toggle.textContent = "Pause";
    try {
      const response = await fetch("/api/streams/" + path(stream) + "/partitions/" + Number(which.value) + "/tail" + query,
        { headers, cache: "no-store", credentials: "omit", signal: controller.signal });
      if (!response.ok) throw new Refused(await response.json());
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        const lines = buffered.split("\n");
        buffered = lines.pop();
        for (const line of lines) {
          const event = JSON.parse(line);
          if (event.tailing) { tailState.textContent = "tailing"; showError(null); }
          if (event.error) throw new Refused(event.error);
          const row = event.record ? recordRow(event.record) : event.marker ? markerRow(event.marker) : null;
          if (row) {
            lastOffset = (event.record || event.marker).offset;
            tailRows.prepend(row);
            while (tailRows.children.length > TAIL_ROWS) tailRows.lastChild.remove();
          }
        }
      }
      tailState.textContent = "ended";
    } catch (error) {
      if (controller.signal.aborted) return;
      showError(error);
      tailState.textContent = "stopped";
    }
    if (tail === controller) { tail = null; toggle.textContent = "Resume"; }
  };
  const toggle = el("button", {
    id: "tail-toggle", type: "button",
    onclick: () => {
      if (tail) { stopTail(); tailState.textContent = "paused"; toggle.textContent = "Resume"; }
      else startTail();
    },
  }, "Start");
  $("#page").replaceChildren(el("h1", {}, "Records of " + stream), form, region, el("p", {}, more),
    el("h2", {}, "Live tail"), el("p", { class: "actions" }, toggle, tailState),
    table("tail-table", RECORD_HEADINGS, [tailRows]));
  read({ offset: 0 }, false);
}

// -------------------------------------------------------------------- routes

function route() {
  leavePage();
  showError(null);
  const names = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (names[0] !== "streams" || names.length === 1) return streamsPage();
  const stream = names[1];
  if (names.length === 2) return streamPage(stream);
  if (names[2] === "groups" && names.length === 4) return groupPage(stream, names[3]);
  if (names[2] === "records") return recordsPage(stream, names[3]);
  location.hash = "#/streams";
}

function tokenState() {
  const held = sessionStorage.getItem(TOKEN_KEY) !== null;
  $("#token-state").textContent = held ? "token set (this tab only)" : "no token";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#token-input");
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    tokenState();
    route();
  });
  $("#token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    tokenState();
    route();
  });
  window.addEventListener("hashchange", route);
  tokenState();
  route();
});
