// metal6 fleet dashboard: the fleet table, the fleet timeline (one bar per phase per node on a
// shared time axis) and one node's Gantt chart with its events, kept live by the server's
// event stream (/v1/events/stream) and the orchestrator's wait reasons (/v1/fleet, polled).
// No library, no build step: served as is by `metal6 serve`.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
// The phases in the order a node goes through them (others follow in order of appearance).
const ORDER = ["firmware-dhcp", "dhcp", "netboot", "ipxe", "installer-kernel", "installer-initramfs", "installer",
  "plan", "writing-image", "image-written", "configuring", "rebooting", "booting", "ready", "cluster", "cluster-joined"];
// The same palette as metal6_render::timeline::color (the SVG of `metal6 status --timeline`).
const COLORS = { "firmware-dhcp": "#8fb3e0", "dhcp": "#6a9bd6", "netboot": "#4f86c6", "ipxe": "#3b6fb0",
  "installer-kernel": "#b3a0e0", "installer-initramfs": "#a793dc", "installer": "#9c86d6",
  "writing-image": "#e0a35c", "image-written": "#d08a3c", "configured": "#7fb8c4", "installed": "#5aa0a8",
  "rebooting": "#c9c24f", "ready": "#4caf6a", "cluster-joined": "#2e8b57", "waiting": "#c0c6ce",
  "failed": "#d9534f", "tls-rejected": "#d9534f", "address-conflict": "#d9534f", "identity-conflict": "#d9534f" };
const POINTS = new Set(["ready", "cluster-joined", "failed", "tls-rejected"]);

// As the server keeps (events::MAX_PER_NODE): a chatty node cannot grow the page without bound.
const MAX_EVENTS_PER_NODE = 10000;
// Distinct phases named in the legend and the filter; a node inventing phases gets no more.
const MAX_PHASES = 64;

const st = { nodes: [], timelines: new Map(), site: "", selected: null, seenPhases: new Set(), emulation: false,
  applyAlive: null };

function seePhase(p) {
  if (st.seenPhases.size < MAX_PHASES) st.seenPhases.add(p);
}

function colorOf(phase) {
  if (COLORS[phase]) return COLORS[phase];
  let h = 0;
  for (const c of phase) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 45%, 62%)`;
}

// The phase an event puts a node in (as the server's events::phase_of).
function phaseOf(e) {
  if (typeof e.phase === "string") return e.phase;
  switch (e.kind) {
    case "leased":
      if (e.stage === "firmware-http" || e.stage === "firmware-pxe") return "firmware-dhcp";
      return e.stage === "ipxe" ? "ipxe" : "dhcp";
    case "boot-fetch": return "netboot";
    case "declined": return "address-conflict";
    case "identity-conflict": return "identity-conflict";
    default: return null;
  }
}

// [{phase, start, end}] from a node's events.
function segments(events, now) {
  const out = [];
  const sorted = [...events].sort((a, b) => a.ts_ms - b.ts_ms);
  for (const e of sorted) {
    const p = phaseOf(e);
    if (!p) continue;
    const last = out[out.length - 1];
    if (last && last.phase === p) continue;
    if (last) last.end = e.ts_ms;
    out.push({ phase: p, start: e.ts_ms, end: null });
  }
  for (const s of out) {
    if (s.end === null) s.end = POINTS.has(s.phase) ? s.start : now;
  }
  return out;
}

function el(tag, attrs = {}, text) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function svg(tag, attrs = {}) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  return n;
}

// Tick spacing: the smallest "round" step that gives at most six ticks over `span` ms.
function tickStep(span) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];
  for (const s of steps) if (span / (s * 1000) <= 6) return s * 1000;
  return 86400000;
}

function dur(ms) {
  if (ms == null || ms < 0) return "";
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  return m < 120 ? `${m}m ${s % 60}s` : `${Math.floor(m / 60)}h ${m % 60}m`;
}

function hms(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}

function visible() {
  const phase = document.getElementById("phase-filter").value;
  const label = document.getElementById("label-filter").value.trim();
  return st.nodes.filter((n) => {
    if (phase && n.phase !== phase) return false;
    if (!label) return true;
    const at = label.indexOf("=");
    const [k, v] = at >= 0 ? [label.slice(0, at), label.slice(at + 1)] : [null, label];
    if (k !== null) return n.labels && n.labels[k] === v;
    return Object.entries(n.labels || {}).some(([a, b]) => `${a}=${b}`.includes(label)) || n.name.includes(label);
  });
}

function stuck(n) {
  return n.apply && (n.apply.sla_missed || n.apply.state === "needs-attention");
}

function renderTable(nodes, now) {
  const body = document.querySelector("#fleet tbody");
  body.replaceChildren();
  for (const n of nodes) {
    const tr = el("tr", { "data-node": n.name });
    if (stuck(n)) tr.classList.add("stuck");
    const name = el("td", { class: "node" });
    const b = el("button", { type: "button" }, n.name);
    b.addEventListener("click", () => openNode(n.name));
    name.append(b);
    const phase = el("td", { class: "phase-cell" });
    phase.append(el("span", { class: "phase", "data-phase": n.phase }, n.phase));
    const a = n.apply || {};
    tr.append(name, el("td", { class: "address" }, n.address), phase,
      el("td", { class: "elapsed" }, n.since_ms ? dur(now - n.since_ms) : ""),
      el("td", { class: "apply" }, a.state || ""),
      el("td", { class: "wait" }, a.wait || ""),
      el("td", { class: "sla" + (a.sla_missed ? " missed" : "") }, a.state ? (a.sla_missed ? "MISSED" : "ok") : ""));
    body.append(tr);
  }
  const phases = new Map();
  for (const n of st.nodes) phases.set(n.phase, (phases.get(n.phase) || 0) + 1);
  const apply = st.applyAlive === null ? "" : st.applyAlive ? " · apply running" : " · apply not running (its last states)";
  document.getElementById("counts").textContent =
    `${nodes.length}/${st.nodes.length} nodes · ` + [...phases].map(([p, c]) => `${p}: ${c}`).join(", ") + apply;
}

// One row per node, its phases as bars on a shared time axis.
function renderFleetChart(nodes, now) {
  const box = document.getElementById("fleet-chart");
  const rows = nodes.map((n) => ({ n, segs: segments(st.timelines.get(n.name) || [], now) }));
  let t0 = Infinity;
  for (const r of rows) for (const s of r.segs) if (s.start < t0) t0 = s.start;
  if (t0 === Infinity) t0 = now - 60000;
  const span = Math.max(now - t0, 1000);
  const left = 150, width = 900, rowH = Math.max(6, Math.min(18, Math.floor(600 / Math.max(rows.length, 1)))), top = 22;
  const h = top + rows.length * rowH + 8;
  const root = svg("svg", { width: left + width + 20, height: h, role: "img", "aria-label": "fleet timeline" });
  const x = (t) => left + ((t - t0) / span) * width;
  const step = tickStep(span);
  for (let t = t0; t <= t0 + span; t += step) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: top - 4, y2: h - 4, class: "axis" }));
    const label = svg("text", { x: x(t) + 2, y: 12 });
    label.textContent = `+${dur(t - t0) || "0s"}`;
    root.append(label);
  }
  rows.forEach(({ n, segs }, i) => {
    const y = top + i * rowH;
    if (rowH >= 10) {
      const label = svg("text", { x: 4, y: y + rowH - 4 });
      label.textContent = n.name;
      root.append(label);
    }
    for (const s of segs) {
      const r = svg("rect", { x: x(s.start), y: y + 1, width: Math.max(2, x(s.end) - x(s.start)), height: rowH - 2,
        fill: colorOf(s.phase), class: "bar", "data-node": n.name, "data-phase": s.phase });
      const tip = svg("title");
      tip.textContent = `${n.name}: ${s.phase} ${dur(s.end - s.start)}`;
      r.append(tip);
      root.append(r);
    }
  });
  root.append(svg("line", { x1: x(now), x2: x(now), y1: top - 4, y2: h - 4, class: "now" }));
  box.replaceChildren(root);
  const legend = document.getElementById("legend");
  legend.replaceChildren(...[...st.seenPhases].sort(phaseSort).map((p) => {
    const s = el("span");
    const sw = svg("svg", { width: 12, height: 12 });
    sw.append(svg("rect", { width: 12, height: 12, fill: colorOf(p) }));
    s.append(sw, document.createTextNode(p));
    return s;
  }));
}

function phaseSort(a, b) {
  const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
  return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
}

// One node: a Gantt row per phase, then its events, newest last.
function renderNode(now) {
  const view = document.getElementById("node-view");
  if (!st.selected) { view.hidden = true; return; }
  view.hidden = false;
  const events = st.timelines.get(st.selected) || [];
  const segs = segments(events, now);
  const node = st.nodes.find((n) => n.name === st.selected) || {};
  const wait = node.apply && node.apply.wait ? ` · waiting for: ${node.apply.wait}` : "";
  document.getElementById("node-title").textContent = `${st.selected} · ${node.phase || ""}${wait}`;
  const phases = [...new Set(segs.map((s) => s.phase))];
  const t0 = segs.length ? segs[0].start : now;
  const span = Math.max(now - t0, 1000);
  const left = 150, width = 800, rowH = 20, top = 22;
  const root = svg("svg", { width: left + width + 20, height: top + phases.length * rowH + 8, role: "img",
    "aria-label": `${st.selected} timeline` });
  const x = (t) => left + ((t - t0) / span) * width;
  phases.forEach((p, i) => {
    const label = svg("text", { x: 4, y: top + i * rowH + 14 });
    label.textContent = p;
    root.append(label);
  });
  for (const s of segs) {
    const i = phases.indexOf(s.phase);
    const r = svg("rect", { x: x(s.start), y: top + i * rowH + 2, width: Math.max(2, x(s.end) - x(s.start)),
      height: rowH - 4, fill: colorOf(s.phase), class: "bar", "data-phase": s.phase });
    const tip = svg("title");
    tip.textContent = `${s.phase}: ${hms(s.start)}, ${dur(s.end - s.start)}`;
    r.append(tip);
    root.append(r);
    const d = svg("text", { x: x(s.end) + 3, y: top + i * rowH + 14 });
    d.textContent = dur(s.end - s.start);
    root.append(d);
  }
  document.getElementById("node-chart").replaceChildren(root);
  const body = document.querySelector("#node-events tbody");
  body.replaceChildren();
  for (const e of [...events].sort((a, b) => a.ts_ms - b.ts_ms)) {
    const rest = Object.entries(e).filter(([k]) => !["ts_ms", "source", "kind", "phase", "node"].includes(k))
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    const tr = el("tr", { class: "event" });
    tr.append(el("td", {}, hms(e.ts_ms)), el("td", {}, e.source || ""), el("td", {}, e.kind || ""),
      el("td", {}, phaseOf(e) || ""), el("td", {}, rest));
    body.append(tr);
  }
}

let queued = false;
function render() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    const now = Date.now();
    const nodes = visible();
    renderTable(nodes, now);
    renderFleetChart(nodes, now);
    renderNode(now);
    const sel = document.getElementById("phase-filter");
    const have = new Set([...sel.options].map((o) => o.value));
    for (const p of [...st.seenPhases].sort(phaseSort)) if (!have.has(p)) sel.append(el("option", { value: p }, p));
  });
}

async function loadFleet() {
  const r = await fetch("/v1/fleet", { cache: "no-store" });
  if (!r.ok) return;
  const f = await r.json();
  st.site = f.site;
  document.getElementById("site").textContent = f.site;
  st.nodes = f.nodes;
  const hasApply = f.nodes.some((n) => n.apply);
  // apply rewrites its board at least every 5 s while it runs.
  st.applyAlive = !hasApply ? null : f.apply_board_ms != null && f.now_ms - f.apply_board_ms < 15000;
  for (const n of f.nodes) if (n.phase) seePhase(n.phase);
  if (f.emulation && !st.emulation) {
    st.emulation = true;
    document.getElementById("emulation").hidden = false;
  }
  if (st.emulation) document.getElementById("emulation-img").src = `/v1/emulation.svg?t=${Date.now()}`;
  render();
}

async function loadTimeline(name) {
  const r = await fetch(`/v1/nodes/${encodeURIComponent(name)}/timeline`, { cache: "no-store" });
  if (!r.ok) return;
  const events = await r.json();
  st.timelines.set(name, events.slice(-MAX_EVENTS_PER_NODE));
  for (const e of events) { const p = phaseOf(e); if (p) seePhase(p); }
}

async function loadAll() {
  await loadFleet();
  await Promise.all(st.nodes.map((n) => loadTimeline(n.name)));
  render();
}

function openNode(name) {
  st.selected = name;
  render();
  document.getElementById("node-view").scrollIntoView();
}

function onEvent(e) {
  if (!e.node) return;
  const n = st.nodes.find((x) => x.name === e.node);
  if (!n) return;
  const list = st.timelines.get(e.node) || [];
  list.push(e);
  if (list.length > MAX_EVENTS_PER_NODE) list.splice(0, list.length - MAX_EVENTS_PER_NODE);
  st.timelines.set(e.node, list);
  const p = phaseOf(e);
  if (p) {
    seePhase(p);
    if (n && n.phase !== p) { n.phase = p; n.since_ms = e.ts_ms; }
  }
  if (n) n.last_event_ms = e.ts_ms;
  render();
  // A node moved: apply's view of it (wait reason, state) has likely moved too.
  if (!fleetSoon) fleetSoon = setTimeout(() => { fleetSoon = null; loadFleet(); }, 1200);
}
let fleetSoon = null;

// Subscribe first, then load: an event between the two is in both (a timeline gets it twice
// at worst), never in neither. After a reconnect, what happened in the gap is reloaded.
function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/v1/events/stream");
  let opened = false;
  es.onopen = () => {
    live.textContent = "live";
    live.className = "live on";
    if (opened) loadAll();
    opened = true;
  };
  es.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  es.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (_) { /* not an event */ } };
  es.addEventListener("resync", () => { loadAll(); });
}

document.getElementById("phase-filter").addEventListener("change", render);
document.getElementById("label-filter").addEventListener("input", render);
document.getElementById("node-close").addEventListener("click", () => { st.selected = null; render(); });
connect();
loadAll();
// Wait reasons and SLA come from the orchestrator's board, not from events: poll them, and
// redraw so elapsed times and the "now" line move.
setInterval(loadFleet, 3000);
