// Cairn's dashboard: one node (served at / of its HTTP API) or a whole
// devnet (served by `cairn-node devnet`, which lists its nodes in
// /network.json). Plain JavaScript, no build step; charts by uPlot.
"use strict";

const POLL_MS = 1000;
const WINDOW_S = 300; // the charts' span
const $ = (sel) => document.querySelector(sel);

const state = {
  nodes: [],          // {name, rpc, up, status, consensus}
  blocks: new Map(),  // hash -> head event
  txs: new Map(),     // hash -> {status, height}
  heads: [],          // [{t, height, txs}] of the last WINDOW_S, by height
  stream: null,
  streamNode: null,
};

// Everything a node sends goes into the page escaped (the page may be
// pointed at nodes its reader does not run).
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function short(h) { return h ? esc(String(h).slice(0, 12)) + "…" : ""; }
function clock(ms) { return new Date(ms).toLocaleTimeString(); }

async function getJson(url, timeoutMs = 1500) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const r = await fetch(url, {signal: ctl.signal, cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return await r.json();
  } finally {
    clearTimeout(timer);
  }
}

async function discover() {
  try {
    const net = await getJson("/network.json");
    $("#chain").textContent = net.chain_id || "";
    return net.nodes.map((n) => ({name: n.name, rpc: n.rpc.replace(/\/$/, "")}));
  } catch (_) {
    const s = await getJson("/status");
    $("#chain").textContent = s.chain_id;
    return [{name: s.name, rpc: location.origin}];
  }
}

// ----- nodes -----

async function pollNode(n) {
  try {
    const [s, c] = await Promise.all([getJson(n.rpc + "/status"), getJson(n.rpc + "/consensus")]);
    if (!n.up && n.seen) addEvent(Date.now(), `${n.name} is back`, "up");
    n.up = true;
    n.seen = true;
    n.status = s;
    n.consensus = c;
    if (!$("#chain").textContent) $("#chain").textContent = s.chain_id;
  } catch (_) {
    if (n.up) addEvent(Date.now(), `${n.name} is down`, "down");
    n.up = false;
  }
}

function renderNodes() {
  const rows = state.nodes.map((n) => {
    const s = n.status || {}, c = n.consensus || {};
    const turn = c.engine === "pbft" ? `view ${c.view}` : c.engine === "raft" ? `term ${c.term}` : "";
    const role = n.up ? (c.engine === "pow" && c.hash_rate ? `${s.role} · ${c.hash_rate} H/s` : s.role) : "";
    return `<tr data-node="${esc(n.name)}">
      <td>${esc(n.name)}</td>
      <td class="state state-${n.up ? "up" : "down"}">${n.up ? "up" : "down"}</td>
      <td class="height">${n.up ? esc(s.height) : ""}</td>
      <td>${esc(role || "")}</td>
      <td>${esc(turn)}</td>
      <td>${n.up ? esc(s.peers) : ""}</td>
      <td class="mempool">${n.up ? esc(s.mempool) : ""}</td>
      <td>${n.up ? esc(s.engine) : ""}</td></tr>`;
  });
  $("#nodes tbody").innerHTML = rows.join("");
  const up = state.nodes.find((n) => n.up);
  if (up) $("#engine").textContent = up.status.engine;
}

// ----- blocks, transactions, events -----

function onHead(h) {
  if (state.blocks.has(h.hash)) return;
  state.blocks.set(h.hash, h);
  if (state.blocks.size > 200) state.blocks.delete(state.blocks.keys().next().value);
  state.heads = state.heads.filter((x) => x.height < h.height);
  state.heads.push({t: h.time_ms / 1000, height: h.height, txs: h.transactions});
  const cutoff = h.time_ms / 1000 - WINDOW_S;
  state.heads = state.heads.filter((x) => x.t >= cutoff);
  renderBlocks();
}

function renderBlocks() {
  const latest = [...state.blocks.values()].sort((a, b) => b.height - a.height).slice(0, 12);
  $("#blocks tbody").innerHTML = latest.map((b) => `<tr class="clickable" data-block="${esc(b.hash)}">
      <td>${esc(b.height)}</td><td class="hash">${short(b.hash)}</td>
      <td class="hash"><a href="#" data-address="${esc(b.proposer)}">${short(b.proposer)}</a></td><td>${esc(b.transactions)}</td>
      <td>${clock(b.time_ms)}</td></tr>`).join("");
}

const RANK = {pending: 0, dropped: 1, committed: 2, confirmed: 3};
function onTx(t) {
  const prev = state.txs.get(t.hash);
  if (prev && RANK[prev.status] > RANK[t.status]) return;
  if (prev && t.height === undefined) t.height = prev.height;
  state.txs.set(t.hash, t);
  if (state.txs.size > 50) state.txs.delete(state.txs.keys().next().value);
  renderTxs();
}

function renderTxs() {
  const items = [...state.txs.values()].reverse().slice(0, 12);
  $("#txs tbody").innerHTML = items.map((t) => `<tr class="clickable" data-tx="${esc(t.hash)}">
      <td class="hash">${short(t.hash)}</td><td class="status">${esc(t.status)}</td>
      <td>${esc(t.height ?? "")}</td></tr>`).join("");
}

function addEvent(ms, text, kind) {
  const li = document.createElement("li");
  li.dataset.kind = kind;
  li.innerHTML = `<time>${clock(ms)}</time>${esc(text)}`;
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > 100) list.lastChild.remove();
}

function describe(kind, e) {
  switch (kind) {
    case "leader": return `raft: ${e.leader === null ? "no leader" : "leader " + e.leader} (term ${e.term})`;
    case "primary": return `pbft: primary ${e.primary} (view ${e.view})`;
    case "view_change": return `pbft: view change (view ${e.view})`;
    case "reorg": return `reorganisation of ${e.depth} blocks (head ${e.height})`;
    case "switch": return `consensus switches to ${e.engine} at height ${e.height} (${e.validators} validators)`;
    default: return `${kind} ${JSON.stringify(e)}`;
  }
}

function subscribe() {
  const n = state.nodes.find((x) => x.up);
  if (!n) { setTimeout(subscribe, 2000); return; }
  const es = new EventSource(n.rpc + "/events");
  state.stream = es;
  state.streamNode = n;
  $("#stream").textContent = `connected to ${n.name}`;
  $("#source").textContent = state.nodes.length > 1 ? `${state.nodes.length} nodes` : n.name;
  es.addEventListener("head", (m) => onHead(JSON.parse(m.data)));
  es.addEventListener("tx", (m) => onTx(JSON.parse(m.data)));
  for (const kind of ["leader", "primary", "view_change", "reorg", "switch"]) {
    es.addEventListener(kind, (m) => addEvent(Date.now(), describe(kind, JSON.parse(m.data)), kind));
  }
  const retry = () => {
    es.close();
    if (state.stream !== es) return;
    state.stream = null;
    $("#stream").textContent = `lost ${n.name}, reconnecting`;
    setTimeout(subscribe, 2000);
  };
  es.addEventListener("dropped", retry);
  es.onerror = retry;
}

// The chain's recent blocks, before the stream brings new ones.
async function backfill() {
  const n = state.nodes.find((x) => x.up);
  if (!n) return;
  try {
    const top = await getJson(n.rpc + "/blocks/latest");
    const heights = [];
    for (let h = top.height; h > 0 && h > top.height - 30; h--) heights.push(h);
    const blocks = await Promise.all(heights.map((h) => getJson(`${n.rpc}/blocks/${h}`).catch(() => null)));
    for (const b of blocks.filter(Boolean).reverse()) {
      onHead({height: b.height, hash: b.hash, proposer: b.proposer, time_ms: b.timestamp_ms,
        transactions: b.transactions.length});
    }
  } catch (_) { /* the stream fills in */ }
}

// ----- charts -----

let tpsPlot, intervalPlot;
function makePlot(el, label, color) {
  const width = Math.max(300, el.clientWidth || 420);
  return new uPlot({
    width, height: 180,
    series: [{}, {label, stroke: color, width: 2, fill: color + "22"}],
    axes: [{}, {size: 50}],
    legend: {show: false},
  }, [[], []], el);
}

function renderCharts() {
  const now = Date.now() / 1000;
  const buckets = new Map();
  for (const h of state.heads) {
    const b = Math.floor(h.t / 5) * 5;
    buckets.set(b, (buckets.get(b) || 0) + h.txs);
  }
  const xs = [], ys = [];
  for (let b = Math.floor((now - WINDOW_S) / 5) * 5; b <= now; b += 5) {
    xs.push(b);
    ys.push((buckets.get(b) || 0) / 5);
  }
  tpsPlot.setData([xs, ys]);
  const ix = [], iy = [];
  for (let i = 1; i < state.heads.length; i++) {
    const a = state.heads[i - 1], b = state.heads[i];
    if (b.height === a.height + 1) {
      ix.push(b.t);
      iy.push(Math.max(0, b.t - a.t));
    }
  }
  intervalPlot.setData([ix, iy]);
}

// ----- details and search -----

async function show(title, path) {
  const n = state.nodes.find((x) => x.up);
  if (!n) return;
  $("#details-section").hidden = false;
  $("#details-title").textContent = title;
  try {
    const v = await getJson(n.rpc + path, 4000);
    $("#details").textContent = JSON.stringify(v, null, 2);
  } catch (e) {
    $("#details").textContent = `${path}: ${e.message}`;
  }
}

async function search(q) {
  q = q.trim();
  if (/^\d+$/.test(q)) return show(`Block ${q}`, `/blocks/${q}`);
  if (/^[0-9a-fA-F]{64}$/.test(q)) {
    const n = state.nodes.find((x) => x.up);
    try {
      await getJson(`${n.rpc}/blocks/hash/${q}`);
      return show(`Block ${short(q)}`, `/blocks/hash/${q}`);
    } catch (_) {
      return show(`Transaction ${short(q)}`, `/transactions/${q}`);
    }
  }
  return show(`Account ${short(q)}`, `/accounts/${encodeURIComponent(q)}`);
}

document.addEventListener("click", (ev) => {
  const addr = ev.target.closest("[data-address]");
  if (addr) {
    ev.preventDefault();
    show(`Account ${short(addr.dataset.address)}`, `/accounts/${encodeURIComponent(addr.dataset.address)}`);
    return;
  }
  const row = ev.target.closest("tr[data-block], tr[data-tx]");
  if (!row) return;
  if (row.dataset.block) show(`Block ${short(row.dataset.block)}`, `/blocks/hash/${row.dataset.block}`);
  else show(`Transaction ${short(row.dataset.tx)}`, `/transactions/${row.dataset.tx}`);
});
$("#search").addEventListener("submit", (ev) => { ev.preventDefault(); search($("#query").value); });

// ----- main loop -----

async function tick() {
  await Promise.all(state.nodes.map(pollNode));
  renderNodes();
  renderCharts();
  if (state.streamNode && !state.streamNode.up && state.stream) state.stream.onerror();
}

(async function main() {
  state.nodes = (await discover()).map((n) => ({...n, up: false, seen: false}));
  tpsPlot = makePlot($("#tps"), "transfers/s", "#8250df");
  intervalPlot = makePlot($("#blocktime"), "seconds", "#1a7f37");
  await tick();
  await backfill();
  subscribe();
  setInterval(tick, POLL_MS);
})();
