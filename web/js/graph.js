// The genealogy graph: positions from our own layered layout (in a Web Worker), drawn by
// cytoscape.js with its layout off ("preset") below CANVAS_FROM lots, and from there on by our
// own canvas renderer (canvas-graph.js): cytoscape's per-element styling and label measuring
// holds the main thread for a quarter of a second at 100 lots here, and seconds at thousands.
import { yieldTask } from "./dom.js";
import { CanvasGraph } from "./canvas-graph.js";
import { edgeLabel } from "./model.js";

const SMALL = 150; // up to here, layers leave room for edge labels
const CANVAS_FROM = 60;
let worker = null;
let cytoscapeModule = null; // loaded on first use: a large graph never needs it
const loadCytoscape = () => (cytoscapeModule ??= import("/web/vendor/cytoscape/dist/cytoscape.esm.min.mjs").then((m) => m.default));
let jobs = 0;

function layoutOffThread(n, src, dst, options) {
  worker ??= new Worker("/web/js/layout-worker.js", { type: "module" });
  const id = ++jobs;
  return new Promise((resolve) => {
    const onMessage = (event) => {
      if (event.data.id !== id) return;
      worker.removeEventListener("message", onMessage);
      resolve(event.data);
    };
    worker.addEventListener("message", onMessage);
    worker.postMessage({ id, n, src, dst, options }, [src.buffer, dst.buffer]);
  });
}

const nextFrame = () => new Promise((r) => requestAnimationFrame(() => r()));

// cytoscape draws the small graphs only: curved edges with their labels, wrapped node labels.
function style() {
  const node = {
    label: "data(label)",
    "text-wrap": "wrap",
    "text-valign": "center",
    "font-size": 12,
    "text-max-width": 206,
    "min-zoomed-font-size": 7,
    shape: "round-rectangle",
    width: 210,
    height: 46,
    "background-color": "#e5e7eb",
    "border-width": 2,
    "border-color": "#6b7280",
  };
  const edge = {
    "curve-style": "bezier",
    width: 1.5,
    "line-color": "#9ca3af",
    "target-arrow-shape": "triangle",
    "target-arrow-color": "#9ca3af",
    label: "data(label)",
    "font-size": 9,
    "min-zoomed-font-size": 7,
    color: "#374151",
    "text-background-color": "#fff",
    "text-background-opacity": 0.85,
    "text-background-padding": 1,
    "text-rotation": "autorotate",
  };
  return [
    { selector: "node", style: node },
    { selector: "node.passed", style: { "background-color": "#bbf7d0", "border-color": "#15803d" } },
    { selector: "node.on_hold", style: { "background-color": "#fcd34d", "border-color": "#b45309" } },
    { selector: "node.rejected", style: { "background-color": "#fca5a5", "border-color": "#b91c1c" } },
    { selector: "node.inherited", style: { "background-color": "#fef3c7", "border-style": "dashed", "border-color": "#b45309" } },
    { selector: "node.blocker", style: { "border-width": 6, "border-style": "double", "border-color": "#7f1d1d" } },
    { selector: "node.partner", style: { shape: "cut-rectangle", "background-color": "#dbeafe", "border-color": "#1d4ed8", "border-style": "solid" } },
    { selector: "edge.partner", style: { "line-style": "dashed", "line-color": "#60a5fa", "target-arrow-color": "#60a5fa" } },
    { selector: "node.root", style: { "font-weight": "bold", "border-width": 4 } },
    { selector: "node:selected", style: { "overlay-color": "#1d4ed8", "overlay-opacity": 0.18, "overlay-padding": 6 } },
    { selector: "edge", style: edge },
    { selector: ".faded", style: { opacity: 0.15 } },
    { selector: "edge.path", style: { "line-color": "#1d4ed8", "target-arrow-color": "#1d4ed8", width: 2.5 } },
  ];
}

function nodeClasses(n, root) {
  if (n.partner) return `partner ${n.partner}`;
  const c = [n.inherited ? "inherited" : n.effective];
  if (n.blocker) c.push("blocker");
  if (n.lot_code === root) c.push("root");
  return c.join(" ");
}

function nodeLabel(n, hidden) {
  if (n.partner) return `${n.title}\n${n.product}`;
  const more = hidden ? `  +${hidden}` : "";
  const held = n.inherited && n.blockedBy.length ? `\nheld: ${n.blockedBy[0]}` : "";
  return `${n.lot_code}${more}\n${n.product}${held}`;
}

export class GraphView {
  constructor(container, { onSelect, onRecentre }) {
    this.container = container;
    this.onSelect = onSelect;
    this.onRecentre = onRecentre;
    this.cy = null;
  }

  // Lays out and draws the model; resolves once the graph is drawn and answers to input.
  async draw(model, selected) {
    const t0 = performance.now();
    if (model.nodes.size > 2000) await yieldTask();
    // Lots, then the supplier and customer boxes of the receipts and shipments shown.
    const partners = model.partnerGraph();
    const lots = model.nodes.size;
    const nodes = partners.nodes.length ? [...model.list(), ...partners.nodes] : model.list();
    const index = new Map(nodes.map((n, i) => [n.lot_code, i]));
    const edges = partners.edges.length ? [...model.edges.values(), ...partners.edges] : [...model.edges.values()];
    const src = new Int32Array(edges.length);
    const dst = new Int32Array(edges.length);
    edges.forEach((e, i) => {
      src[i] = index.get(e.parent);
      dst[i] = index.get(e.child);
    });
    // Small graphs leave room between layers for the edge labels (quantity, unit, run).
    const [pos, cytoscape] = await Promise.all([
      layoutOffThread(nodes.length, src, dst, { dx: nodes.length <= SMALL ? 400 : 280 }),
      nodes.length < CANVAS_FROM ? loadCytoscape() : null,
    ]);
    performance.mark("flowviz:layout-done", { detail: { ms: pos.ms, nodes: nodes.length } });
    this.destroy();
    if (nodes.length >= CANVAS_FROM) {
      if (nodes.length > 2000) await yieldTask();
      this.canvas = new CanvasGraph(this.container, { onSelect: this.onSelect, onRecentre: this.onRecentre });
      this.canvas.setData(model, nodes, edges, pos);
      if (selected) this.canvas.highlight(selected);
      else this.canvas.schedule();
      await nextFrame();
      performance.mark("flowviz:first-frame", { detail: { nodes: nodes.length, edges: edges.length, since: t0 } });
      await nextFrame();
      this.done(model, lots, partners.nodes.length);
      return;
    }
    const cy = cytoscape({
      container: this.container,
      style: style(),
      layout: { name: "preset" },
      minZoom: 0.02,
      maxZoom: 3,
      wheelSensitivity: 0.4,
      boxSelectionEnabled: false,
    });
    this.cy = cy;
    const els = [];
    nodes.forEach((n, i) => {
      els.push({
        group: "nodes",
        data: { id: n.lot_code, label: nodeLabel(n, model.hidden.get(n.lot_code)) },
        position: { x: pos.x[i], y: pos.y[i] },
        classes: nodeClasses(n, model.root),
      });
    });
    edges.forEach((e, i) => {
      els.push({ group: "edges", data: { id: `e${i}`, source: e.parent, target: e.child, label: edgeLabel(e) }, classes: e.partner ? "partner" : "" });
    });
    cy.batch(() => cy.add(els));
    cy.fit(undefined, 30);
    if (nodes.length <= 60 && cy.zoom() > 1.1) cy.zoom({ level: 1.1, position: cy.getElementById(model.root).position() });
    if (nodes.length <= 60) cy.center();
    await nextFrame();
    performance.mark("flowviz:first-frame", { detail: { nodes: nodes.length, edges: edges.length, since: t0 } });
    cy.on("tap", "node", (e) => this.onSelect(e.target.id()));
    cy.on("tap", (e) => e.target === cy && this.onSelect(""));
    cy.on("dbltap", "node", (e) => this.onRecentre(e.target.id()));
    if (selected) this.highlight(selected);
    await nextFrame();
    this.done(model, lots, partners.nodes.length);
  }

  // data-drawn counts the lots drawn, data-partners the supplier and customer boxes beside them.
  done(model, count, partners) {
    this.container.dataset.drawn = String(count);
    this.container.dataset.partners = String(partners);
    this.container.dataset.root = model.root;
    performance.mark("flowviz:interactive", { detail: { nodes: count } });
  }

  get drawn() {
    return !!(this.cy || this.canvas);
  }

  // Every ancestor and descendant of the lot stays lit; the rest dims.
  highlight(code) {
    if (this.canvas) return this.canvas.highlight(code);
    const cy = this.cy;
    if (!cy) return;
    cy.batch(() => {
      cy.elements().removeClass("faded path").unselect();
      const node = cy.getElementById(code);
      if (!code || node.empty()) return;
      const lineage = node.predecessors().union(node.successors()).union(node);
      cy.elements().not(lineage).addClass("faded");
      lineage.addClass("path");
      node.select();
    });
  }

  relabel(model) {
    if (this.canvas) return this.canvas.schedule();
    if (!this.cy) return;
    this.cy.batch(() => {
      for (const n of model.list()) {
        const node = this.cy.getElementById(n.lot_code);
        if (node.nonempty()) node.data("label", nodeLabel(n, model.hidden.get(n.lot_code)));
      }
      for (const n of model.partnerGraph().nodes) {
        const node = this.cy.getElementById(n.lot_code);
        if (node.nonempty()) node.data("label", nodeLabel(n));
      }
    });
  }

  async png() {
    if (this.canvas) return this.canvas.png();
    return this.cy.png({ output: "blob", full: true, scale: 2, bg: "#ffffff", maxWidth: 16000, maxHeight: 16000 });
  }

  destroy() {
    if (this.cy) this.cy.destroy();
    if (this.canvas) this.canvas.destroy();
    this.cy = null;
    this.canvas = null;
    delete this.container.dataset.drawn;
    delete this.container.dataset.partners;
    delete this.container.dataset.root;
  }
}
