// The renderer for large graphs: one canvas, nodes as boxes and edges as lines, drawn in a few
// batched paths (one per colour), labels only when zoomed in far enough to read them and only
// for boxes on screen. Pan by dragging, zoom with the wheel, click to select, double-click to
// re-centre. cytoscape.js spends seconds styling and measuring thousands of elements on this
// machine; this draws 10,000 lots in a few tens of milliseconds.

import { edgeLabel } from "./model.js";

const W = 210;
const H = 46;
const COLOURS = {
  passed: ["#bbf7d0", "#15803d"],
  pending: ["#e5e7eb", "#6b7280"],
  on_hold: ["#fcd34d", "#b45309"],
  rejected: ["#fca5a5", "#b91c1c"],
  inherited: ["#fef3c7", "#b45309"],
  partner: ["#dbeafe", "#1d4ed8"], // a supplier's or customer's site (receipts and shipments)
};

export class CanvasGraph {
  constructor(container, { onSelect, onRecentre }) {
    this.container = container;
    this.onSelect = onSelect;
    this.onRecentre = onRecentre;
    this.canvas = document.createElement("canvas");
    this.canvas.setAttribute("aria-hidden", "true");
    this.canvas.className = "big-graph";
    container.append(this.canvas);
    this.ctx = this.canvas.getContext("2d");
    this.view = { scale: 1, tx: 0, ty: 0 };
    this.lit = null; // Uint8Array: 1 for the selected lot's lineage, null when nothing is selected
    this.selected = -1;
    this.frame = 0;
    this.listen();
  }

  setData(model, nodes, edges, pos) {
    const n = nodes.length;
    this.model = model;
    this.nodes = nodes;
    this.x = pos.x;
    this.y = pos.y;
    this.index = new Map(nodes.map((node, i) => [node.lot_code, i]));
    this.edges = edges;
    this.edgeLabels = null; // built on first zoom-in
    this.src = new Int32Array(edges.length);
    this.dst = new Int32Array(edges.length);
    edges.forEach((e, i) => {
      this.src[i] = this.index.get(e.parent);
      this.dst[i] = this.index.get(e.child);
    });
    // Adjacency both ways, for the lineage highlight.
    const csr = (from, to) => {
      const start = new Int32Array(n + 1);
      for (const v of from) start[v + 1]++;
      for (let i = 0; i < n; i++) start[i + 1] += start[i];
      const adj = new Int32Array(from.length);
      const fill = start.slice(0, n);
      from.forEach((v, k) => (adj[fill[v]++] = to[k]));
      return { start, adj };
    };
    this.down = csr(this.src, this.dst);
    this.up = csr(this.dst, this.src);
    this.kind = nodes.map((node) => (node.inherited ? "inherited" : COLOURS[node.effective] ? node.effective : "pending"));
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      x0 = Math.min(x0, this.x[i] - W / 2);
      x1 = Math.max(x1, this.x[i] + W / 2);
      y0 = Math.min(y0, this.y[i] - H / 2);
      y1 = Math.max(y1, this.y[i] + H / 2);
    }
    this.bounds = { x0, y0, x1, y1 };
    this.resize();
    this.fit();
  }

  resize() {
    const r = this.container.getBoundingClientRect();
    this.width = Math.max(1, r.width);
    this.height = Math.max(1, r.height);
    this.dpr = Math.min(2, window.devicePixelRatio || 1);
    this.canvas.width = Math.round(this.width * this.dpr);
    this.canvas.height = Math.round(this.height * this.dpr);
    this.canvas.style.width = `${this.width}px`;
    this.canvas.style.height = `${this.height}px`;
  }

  fit() {
    const b = this.bounds;
    const pad = 30;
    const scale = Math.min((this.width - 2 * pad) / (b.x1 - b.x0), (this.height - 2 * pad) / (b.y1 - b.y0), 1.2);
    this.view = { scale, tx: this.width / 2 - ((b.x0 + b.x1) / 2) * scale, ty: this.height / 2 - ((b.y0 + b.y1) / 2) * scale };
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.paint(this.ctx, this.view, this.dpr, this.width, this.height);
    });
  }

  // Draws the graph into ctx with view {scale, tx, ty} (world -> CSS pixels) at pixel ratio dpr.
  paint(ctx, view, dpr, width, height) {
    const { scale, tx, ty } = view;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, width * dpr, height * dpr);
    ctx.setTransform(scale * dpr, 0, 0, scale * dpr, tx * dpr, ty * dpr);
    const { x, y, src, dst, lit } = this;
    const wx0 = -tx / scale, wy0 = -ty / scale, wx1 = (width - tx) / scale, wy1 = (height - ty) / scale;
    const onScreen = (i) => x[i] + W / 2 >= wx0 && x[i] - W / 2 <= wx1 && y[i] + H / 2 >= wy0 && y[i] - H / 2 <= wy1;
    const edgePass = (want, colour, widthPx) => {
      ctx.beginPath();
      for (let e = 0; e < src.length; e++) {
        const a = src[e], b = dst[e];
        if ((lit ? lit[a] && lit[b] : 1) !== want) continue;
        ctx.moveTo(x[a] + W / 2, y[a]);
        ctx.lineTo(x[b] - W / 2, y[b]);
      }
      ctx.strokeStyle = colour;
      ctx.lineWidth = widthPx / scale;
      ctx.stroke();
    };
    if (lit) {
      edgePass(0, "#e5e7eb", 1);
      edgePass(1, "#1d4ed8", 2);
    } else edgePass(1, "#9ca3af", 1);
    const visible = [];
    for (let i = 0; i < x.length; i++) if (onScreen(i)) visible.push(i);
    const borders = scale * H >= 6;
    for (const [kind, [fill, stroke]] of Object.entries(COLOURS)) {
      for (const faded of lit ? [true, false] : [false]) {
        ctx.globalAlpha = faded ? 0.2 : 1;
        ctx.fillStyle = fill;
        ctx.beginPath();
        for (const i of visible) if (this.kind[i] === kind && (!lit || !lit[i] === faded)) ctx.rect(x[i] - W / 2, y[i] - H / 2, W, H);
        ctx.fill();
        if (borders) {
          ctx.strokeStyle = stroke;
          ctx.lineWidth = 2;
          ctx.setLineDash(kind === "inherited" ? [6, 4] : []);
          ctx.stroke();
        }
      }
    }
    ctx.globalAlpha = 1;
    ctx.setLineDash([]);
    // The blocking lots, the root and the selection, over the rest.
    const mark = (i, colour, widthPx) => {
      ctx.strokeStyle = colour;
      ctx.lineWidth = widthPx / Math.min(1, scale * 4);
      ctx.strokeRect(x[i] - W / 2 - 3, y[i] - H / 2 - 3, W + 6, H + 6);
    };
    for (const i of visible) if (this.nodes[i].blocker) mark(i, "#7f1d1d", 4);
    const root = this.index.get(this.model.root);
    if (root !== undefined) mark(root, "#111827", 4);
    if (this.selected >= 0) mark(this.selected, "#1d4ed8", 5);
    if (scale >= 0.5) {
      // Quantity, unit and run on the edges whose middle is on screen.
      this.edgeLabels ??= this.edges.map(edgeLabel);
      ctx.font = "10px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "bottom";
      ctx.fillStyle = "#374151";
      for (let e = 0; e < src.length; e++) {
        const mx = (x[src[e]] + x[dst[e]]) / 2;
        const my = (y[src[e]] + y[dst[e]]) / 2;
        if (mx < wx0 || mx > wx1 || my < wy0 || my > wy1) continue;
        ctx.globalAlpha = lit && !(lit[src[e]] && lit[dst[e]]) ? 0.3 : 1;
        ctx.fillText(this.edgeLabels[e], mx, my - 2);
      }
      ctx.globalAlpha = 1;
    }
    if (scale >= 0.3) {
      ctx.fillStyle = "#111827";
      ctx.font = "600 13px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      for (const i of visible) {
        const hidden = this.model.hidden.get(this.nodes[i].lot_code);
        ctx.globalAlpha = lit && !lit[i] ? 0.3 : 1;
        const title = this.nodes[i].title || this.nodes[i].lot_code;
        ctx.fillText(hidden ? `${title}  +${hidden}` : title, x[i], y[i] - 8, W - 8);
        if (scale >= 0.6) ctx.fillText(this.nodes[i].product, x[i], y[i] + 10, W - 8);
      }
      ctx.globalAlpha = 1;
    }
  }

  highlight(code) {
    const i = code ? this.index.get(code) : undefined;
    this.selected = i ?? -1;
    if (i === undefined) this.lit = null;
    else {
      const n = this.nodes.length;
      const lit = new Uint8Array(n);
      lit[i] = 1;
      for (const { start, adj } of [this.up, this.down]) {
        const seen = new Uint8Array(n);
        seen[i] = 1;
        const stack = [i];
        while (stack.length) {
          const v = stack.pop();
          for (let k = start[v]; k < start[v + 1]; k++) {
            const w = adj[k];
            if (!seen[w]) {
              seen[w] = 1;
              lit[w] = 1;
              stack.push(w);
            }
          }
        }
      }
      this.lit = lit;
    }
    this.schedule();
  }

  hit(clientX, clientY) {
    const r = this.canvas.getBoundingClientRect();
    const wx = (clientX - r.left - this.view.tx) / this.view.scale;
    const wy = (clientY - r.top - this.view.ty) / this.view.scale;
    for (let i = 0; i < this.x.length; i++) if (Math.abs(wx - this.x[i]) <= W / 2 && Math.abs(wy - this.y[i]) <= H / 2) return this.nodes[i].lot_code;
    return "";
  }

  listen() {
    const c = this.canvas;
    let drag = null;
    this.handlers = [
      ["pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; c.setPointerCapture(e.pointerId); }],
      ["pointermove", (e) => {
        if (!drag) return;
        const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        if (!drag.moved) return;
        this.view.tx += dx;
        this.view.ty += dy;
        drag.x = e.clientX;
        drag.y = e.clientY;
        this.schedule();
      }],
      ["pointerup", (e) => {
        if (drag && !drag.moved) this.onSelect(this.hit(e.clientX, e.clientY));
        drag = null;
      }],
      ["dblclick", (e) => { const code = this.hit(e.clientX, e.clientY); if (code) this.onRecentre(code); }],
      ["wheel", (e) => {
        e.preventDefault();
        const r = c.getBoundingClientRect();
        const px = e.clientX - r.left, py = e.clientY - r.top;
        const f = Math.exp(-e.deltaY * 0.0015);
        const scale = Math.min(3, Math.max(0.005, this.view.scale * f));
        const k = scale / this.view.scale;
        this.view = { scale, tx: px - (px - this.view.tx) * k, ty: py - (py - this.view.ty) * k };
        this.schedule();
      }],
    ];
    for (const [type, fn] of this.handlers) c.addEventListener(type, fn, { passive: type !== "wheel" });
    this.observer = new ResizeObserver(() => { if (this.x) { this.resize(); this.schedule(); } });
    this.observer.observe(this.container);
  }

  // The whole graph at 2x (less when that would pass 16,000 pixels), as a PNG Blob.
  png() {
    const b = this.bounds;
    const pad = 20;
    const scale = Math.min(2, 16000 / (b.x1 - b.x0 + 2 * pad), 16000 / (b.y1 - b.y0 + 2 * pad));
    const width = Math.ceil((b.x1 - b.x0 + 2 * pad) * scale);
    const height = Math.ceil((b.y1 - b.y0 + 2 * pad) * scale);
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    this.paint(canvas.getContext("2d"), { scale, tx: (pad - b.x0) * scale, ty: (pad - b.y0) * scale }, 1, width, height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.observer.disconnect();
    this.canvas.remove();
  }
}
