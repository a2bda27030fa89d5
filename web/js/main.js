// The flowviz web app. The view (lot, direction, depth, selection, tab) lives in the URL's query
// string, so a link shows a colleague the same thing; Back and Forward move between views.
import { api, enc, session, setSignInHandler, signIn } from "./api.js";
import { $, el, clear, download, yieldTask } from "./dom.js";
import { GraphView } from "./graph.js";
import { Model } from "./model.js";
import { LotTable } from "./table.js";
import { renderLotPanel, renderPartnerPanel } from "./panel.js";
import { renderRecall } from "./recall.js";
import { renderRunForm } from "./runform.js";
import { setupSearch } from "./search.js";
import { watchHealth } from "./health.js";
import { fillSuppliers, renderSupplierTrace } from "./supplier.js";

const DRAW_LIMIT = 2000; // above this many lots, a summary first and "draw all" on request
const EXPAND_PROBES = 40; // lots whose hidden neighbours are counted after a draw

const state = { view: readUrl(), model: null, tableShown: false, loadId: 0 };
// A supplier's or customer's box is selected like a lot, but the graph never re-centres on one.
const isPartner = (code) => !!(state.model && state.model.partner(code));
const graph = new GraphView($("#graph"), { onSelect: (code) => select(code), onRecentre: (code) => isPartner(code) || open(code) });
const table = new LotTable($("#table-wrap"), { onSelect: (code) => select(code) });

function readUrl() {
  const p = new URLSearchParams(location.search);
  const depth = Number(p.get("depth"));
  return {
    lot: p.get("lot") || "",
    dir: ["both", "upstream", "downstream"].includes(p.get("dir")) ? p.get("dir") : "both",
    depth: depth >= 1 && depth <= 200 ? depth : 2,
    sel: p.get("sel") || "",
    tab: ["lot", "recall", "run"].includes(p.get("tab")) ? p.get("tab") : "lot",
    nodes: p.get("nodes") || "",
    all: p.get("all") === "1",
  };
}

function writeUrl(push) {
  const v = state.view;
  const p = new URLSearchParams();
  if (v.lot) {
    p.set("lot", v.lot);
    p.set("dir", v.dir);
    p.set("depth", String(v.depth));
    if (v.sel && v.sel !== v.lot) p.set("sel", v.sel);
    if (v.tab !== "lot") p.set("tab", v.tab);
    if (v.nodes) p.set("nodes", v.nodes);
    if (v.all) p.set("all", "1");
  }
  const url = `/${p.toString() ? "?" + p : ""}`;
  if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
}

// ---- signing in ----
let pendingSignIn = null;
function showSignIn(why) {
  if (pendingSignIn) return pendingSignIn;
  const dialog = $("#sign-in");
  $("#sign-in-why").textContent = why;
  $("#sign-in-error").textContent = "";
  pendingSignIn = new Promise((resolve) => {
    const form = $("#sign-in-form");
    const onSubmit = async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      try {
        await signIn(String(data.get("username")), String(data.get("password")));
        form.removeEventListener("submit", onSubmit);
        form.reset();
        dialog.close();
        pendingSignIn = null;
        showUser();
        resolve();
      } catch (err) {
        $("#sign-in-error").textContent = err.status === 401 || err.status === 400 ? "Wrong user or password." : err.message;
      }
    };
    form.addEventListener("submit", onSubmit);
  });
  dialog.addEventListener("cancel", (e) => e.preventDefault(), { once: true });
  if (!dialog.open) dialog.showModal();
  return pendingSignIn;
}
setSignInHandler(showSignIn);

function showUser() {
  const s = session.get();
  $("#who").textContent = s ? `${s.username} (${s.role})` : "";
  $("#sign-out").hidden = !s;
}

// ---- the explorer ----
async function load() {
  const v = state.view;
  const id = ++state.loadId;
  $("#welcome").hidden = !!v.lot;
  $("#explorer").hidden = !v.lot;
  if (!v.lot) {
    graph.destroy();
    return;
  }
  $("#lot-title").textContent = v.lot;
  document.title = `${v.lot}: flowviz`;
  $("#direction").value = v.dir;
  $("#depth").value = String(v.depth);
  $("#showing").textContent = "loading…";
  const q = new URLSearchParams({ direction: v.dir, max_depth: String(v.depth) });
  if (v.nodes) q.set("max_nodes", v.nodes);
  performance.mark("flowviz:request");
  let answer;
  try {
    answer = await api(`/api/traceability/${enc(v.lot)}/graph?${q}`);
  } catch (err) {
    if (id !== state.loadId) return;
    graph.destroy();
    showBanner(`${v.lot}: ${err.message}`);
    $("#showing").textContent = "";
    clear($("#panel-lot"));
    return;
  }
  if (id !== state.loadId) return;
  performance.mark("flowviz:answer", { detail: { nodes: answer.nodes.length } });
  await yieldTask(); // parsing a 10,000-lot answer is one task, building the model the next
  const model = new Model(answer);
  state.model = model;
  const notes = [];
  if (model.truncated) notes.push(`The answer was cut at the API's limit (depth ${v.depth}${v.nodes ? `, ${v.nodes} lots` : ""}): not every lot is shown.`);
  if (model.cycles.length) notes.push(`Bad data: ${model.cycles.length} cycle(s) in the genealogy (${model.cycles.slice(0, 3).map((c) => (Array.isArray(c.lot_codes) ? c.lot_codes.join(" → ") : JSON.stringify(c))).join("; ")}); shown once, not followed.`);
  showBanner(notes.join(" "));
  await drawOrSummarise();
  if (id !== state.loadId) return;
  renderPanels();
  probeHidden(model, id);
}

function showBanner(text) {
  const banner = $("#banner");
  banner.hidden = !text;
  banner.textContent = text;
}

function updateShowing() {
  const m = state.model;
  if (!m) return;
  const drawn = Number($("#graph").dataset.drawn || 0);
  const hidden = [...m.hidden.values()].reduce((a, b) => a + b, 0);
  const sites = Number($("#graph").dataset.partners || 0);
  const beside = sites ? `, with ${sites.toLocaleString("en")} supplier and customer site${sites === 1 ? "" : "s"}` : "";
  $("#showing").textContent = `showing ${drawn.toLocaleString("en")} of ${(m.nodes.size + hidden).toLocaleString("en")} lots${beside}${m.truncated ? " (answer cut)" : ""}`;
}

async function drawOrSummarise() {
  const m = state.model;
  const summary = $("#summary");
  if (m.nodes.size > DRAW_LIMIT && !state.view.all) {
    graph.destroy();
    const by = (key) => {
      const counts = new Map();
      for (const n of m.nodes.values()) counts.set(n[key], (counts.get(n[key]) || 0) + 1);
      return [...counts].sort((a, b) => b[1] - a[1]).map(([k, c]) => `${k || "?"}: ${c.toLocaleString("en")}`).join(", ");
    };
    clear(summary, el("h2", { text: `${m.nodes.size.toLocaleString("en")} lots, ${m.edges.size.toLocaleString("en")} links` }),
      el("p", { text: `By kind: ${by("kind")}.` }), el("p", { text: `By side: ${by("side")}.` }), el("p", { text: `By status: ${by("effective")}.` }),
      el("p", {}, el("button", { type: "button", class: "primary", id: "draw-all", text: `Draw all ${m.nodes.size.toLocaleString("en")} lots`, onclick: () => { state.view.all = true; writeUrl(false); drawOrSummarise(); } }),
        " or use the table, or lower the depth."));
    summary.hidden = false;
  } else {
    summary.hidden = true;
    await graph.draw(m, state.view.sel);
  }
  if (state.tableShown) table.render(m.list());
  table.select(state.view.sel);
  updateShowing();
}

// Counts each probed lot's neighbours that are not shown yet ("+N"); a click expands them.
async function probeHidden(model, id) {
  const nodes = model.list();
  const maxDepth = state.view.depth;
  const probe = (nodes.length <= EXPAND_PROBES ? nodes : nodes.filter((n) => n.depth >= maxDepth)).slice(0, EXPAND_PROBES);
  const queue = [...probe];
  const worker = async () => {
    while (queue.length && id === state.loadId) {
      const n = queue.shift();
      const t = await api(`/api/traceability/${enc(n.lot_code)}`).catch(() => null);
      if (!t) continue;
      const around = [...(t.parents || []), ...(t.children || [])].filter((x) => !model.nodes.has(x.lot_code));
      if (around.length) model.hidden.set(n.lot_code, new Set(around.map((x) => x.lot_code)).size);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  if (id !== state.loadId || !model.hidden.size) return;
  graph.relabel(model);
  updateShowing();
}

async function expand(code) {
  const m = state.model;
  const t = await api(`/api/traceability/${enc(code)}`);
  const self = m.nodes.get(code);
  const lots = [];
  const edges = [];
  for (const p of t.parents || []) {
    lots.push({ ...p, side: "expanded", depth: (self.depth || 0) + 1 });
    edges.push({ parent: p.lot_code, child: code, quantity: p.edge_quantity, uom: p.edge_uom, run_code: p.run_code });
  }
  for (const c of t.children || []) {
    lots.push({ ...c, side: "expanded", depth: (self.depth || 0) + 1 });
    edges.push({ parent: code, child: c.lot_code, quantity: c.edge_quantity, uom: c.edge_uom, run_code: c.run_code });
  }
  m.add(lots, edges);
  m.addEvents(t.receipts, t.shipments);
  m.hidden.delete(code);
  await drawOrSummarise();
  probeHidden(m, state.loadId);
}

async function select(code) {
  state.view.sel = code;
  writeUrl(false);
  graph.highlight(code);
  table.select(code);
  renderPanels();
  if (code && !isPartner(code) && state.model && state.model.hidden.get(code)) await expand(code);
}

function open(code, { tab } = {}) {
  state.view = { ...state.view, lot: code, sel: "", all: false, nodes: "", tab: tab || state.view.tab };
  writeUrl(true);
  load();
}

// ---- the side panels ----
function renderPanels() {
  const v = state.view;
  for (const t of ["lot", "recall", "run"]) {
    $(`#tab-${t}`).setAttribute("aria-selected", String(t === v.tab));
    $(`#panel-${t}`).hidden = t !== v.tab;
  }
  const code = v.sel || v.lot;
  const lotCode = isPartner(code) ? v.lot : code; // the recall and the run form are a lot's
  const refresh = async () => {
    await load();
  };
  if (v.tab === "lot" && isPartner(code)) renderPartnerPanel($("#panel-lot"), state.model.partner(code), { onOpen: open });
  else if (v.tab === "lot") renderLotPanel($("#panel-lot"), code, { onOpen: open, onChanged: refresh });
  else if (v.tab === "recall")
    renderRecall($("#panel-recall"), lotCode, {
      onOpen: open,
      onChanged: refresh,
      onShow: (c) => {
        state.view = { ...state.view, lot: c, dir: "downstream", sel: c, all: false };
        writeUrl(true);
        load();
      },
    });
  else renderRunForm($("#panel-run"), { inputs: lotCode ? [lotCode] : [], onRecorded: (run) => open(run.outputs[0].lot_code, { tab: "lot" }) });
}

// ---- wiring ----
function wire() {
  setupSearch({ input: $("#search-input"), kind: $("#search-kind"), status: $("#search-status"), list: $("#search-results"), onOpen: (c) => open(c) });
  for (const b of document.querySelectorAll("[data-open]")) b.addEventListener("click", () => open(b.dataset.open, { tab: b.dataset.tab || "lot" }));
  $("#new-run").addEventListener("click", () => {
    $("#welcome").hidden = true;
    $("#explorer").hidden = false;
    state.view.tab = "run";
    renderPanels();
  });
  const traceForm = $("#supplier-trace");
  traceForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(traceForm);
    renderSupplierTrace($("#supplier-trace-result"), String(data.get("supplier_code")).trim(), String(data.get("supplier_lot_code")).trim(), { onOpen: (c, o) => open(c, o) });
  });
  traceForm.querySelector("input[name=supplier_code]").addEventListener("focus", () => fillSuppliers($("#suppliers")), { once: true });
  $("#direction").addEventListener("change", (e) => {
    state.view = { ...state.view, dir: e.target.value, all: false };
    writeUrl(true);
    load();
  });
  $("#depth").addEventListener("change", (e) => {
    const d = Math.max(1, Math.min(200, Number(e.target.value) || 2));
    state.view = { ...state.view, depth: d, all: false };
    writeUrl(true);
    load();
  });
  const setView = (tableShown) => {
    state.tableShown = tableShown;
    $("#view-table").setAttribute("aria-pressed", String(tableShown));
    $("#view-graph").setAttribute("aria-pressed", String(!tableShown));
    $("#table-wrap").hidden = !tableShown;
    if (tableShown && state.model) {
      table.render(state.model.list());
      table.select(state.view.sel);
    }
  };
  $("#view-graph").addEventListener("click", () => setView(false));
  $("#view-table").addEventListener("click", () => setView(true));
  $("#export-png").addEventListener("click", async () => graph.drawn && download(await graph.png(), `${state.view.lot}-genealogy.png`));
  $("#export-csv").addEventListener("click", () => state.model && download(new Blob([state.model.csv()], { type: "text/csv" }), `${state.view.lot}-lots.csv`));
  for (const t of ["lot", "recall", "run"]) $(`#tab-${t}`).addEventListener("click", () => {
    state.view.tab = t;
    writeUrl(false);
    renderPanels();
  });
  $("#sign-out").addEventListener("click", () => {
    session.clear();
    showUser();
    showSignIn("Signed out. Sign in again to go on.").then(load);
  });
  window.addEventListener("popstate", () => {
    state.view = readUrl();
    load();
  });
}

async function boot() {
  wire();
  watchHealth($("#health"));
  showUser();
  if (!session.get()) await showSignIn("Sign in to see lots, their genealogy and recalls.");
  await load();
}
boot();
window.flowviz = { graph, state }; // for the browser tests and the benchmark
