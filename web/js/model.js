// The explorer's model: the lots of a trace answer (plus those expanded since), the edges, and
// who is held because of whom. `effective_status` and `blocking` come from the API where it
// gives them; where it does not (older servers fill them only for the root), they are derived
// from the graph itself: a lot is held when it, or an ancestor shown, is on hold or rejected.

import { fmtQty } from "./dom.js";

const BLOCKED = new Set(["on_hold", "rejected"]);
export const isBlocked = (s) => BLOCKED.has(s);
// An edge's label: quantity, unit and run; a partner edge's, what was received or shipped.
export const edgeLabel = (e) => (e.partner ? (e.label ??= partnerLabel(e.events)) : `${fmtQty(e.quantity)} ${e.uom}${e.run_code ? ` · ${e.run_code}` : ""}`);

function partnerLabel(events) {
  const first = events[0];
  const received = !!first.supplier_code;
  if (events.length === 1) return `${received ? "received" : "shipped"} ${fmtQty(first.quantity)} ${first.uom} · ${[first.document_type, first.document_number].filter(Boolean).join(" ")}`;
  const sameUnit = events.every((x) => x.uom === first.uom);
  const total = sameUnit ? ` · ${fmtQty(events.reduce((a, x) => a + x.quantity, 0))} ${first.uom}` : "";
  return `${events.length} ${received ? "receipts" : "shipments"}${total}`;
}

export class Model {
  constructor(answer) {
    this.root = answer.root;
    this.direction = answer.direction;
    this.truncated = !!answer.truncated;
    this.cycles = answer.cycles || [];
    this.nodes = new Map();
    this.edges = new Map();
    this.hidden = new Map(); // lot -> neighbours not shown yet
    this.receipts = new Map(); // id -> receipt (how a lot shown came in from a supplier)
    this.shipments = new Map(); // id -> shipment (where a lot shown went)
    this.add(answer.nodes || [], answer.edges || []);
    this.addEvents(answer.receipts, answer.shipments);
  }

  addEvents(receipts = [], shipments = []) {
    for (const r of receipts || []) this.receipts.set(r.id, r);
    for (const s of shipments || []) this.shipments.set(s.id, s);
    this.partnerCache = null;
  }

  // The graph's partner boxes: one per supplier site that sent a lot shown (upstream of the lots
  // it sent) and one per customer site that received one (downstream of the lots shipped there),
  // with one edge per lot and box, labelled on first use (a large graph labels only when zoomed
  // in). Ids start with "from:" or "to:" and are looked up in this map, never parsed; a lot
  // whose code is one of them wins (the box is left out).
  partnerGraph() {
    if (this.partnerCache) return this.partnerCache;
    const nodes = new Map();
    const edges = [];
    const add = (id, partner, party, location, name, lot, event) => {
      let node = nodes.get(id);
      if (!node) {
        if (this.nodes.has(id)) return;
        node = { lot_code: id, partner, title: `${partner === "supplier" ? "from" : "to"} ${name || party}`, product: location, party, location,
          effective: "partner", kind: partner, blockedBy: [], inherited: false, blocker: false, receipts: [], shipments: [], lots: new Map() };
        nodes.set(id, node);
      }
      (partner === "supplier" ? node.receipts : node.shipments).push(event);
      let edge = node.lots.get(lot);
      if (!edge) {
        edge = partner === "supplier" ? { parent: id, child: lot, events: [], partner: true } : { parent: lot, child: id, events: [], partner: true };
        node.lots.set(lot, edge);
        edges.push(edge);
      }
      edge.events.push(event);
    };
    for (const r of this.receipts.values()) {
      if (this.nodes.has(r.lot_code)) add(`from:${r.supplier_code}/${r.ship_from_location_code}`, "supplier", r.supplier_code, r.ship_from_location_code, r.supplier_name, r.lot_code, r);
    }
    for (const s of this.shipments.values()) {
      if (this.nodes.has(s.lot_code)) add(`to:${s.customer_code}/${s.ship_to_location_code}`, "customer", s.customer_code, s.ship_to_location_code, s.customer_name, s.lot_code, s);
    }
    this.partnerCache = { nodes: [...nodes.values()], edges, byId: nodes };
    return this.partnerCache;
  }

  partner(id) {
    return this.partnerGraph().byId.get(id) || null;
  }

  // Lots and edges not seen yet (an answer's own are unique; expansions may repeat them).
  add(nodes, edges) {
    for (const n of nodes) if (!this.nodes.has(n.lot_code)) this.nodes.set(n.lot_code, n);
    for (const e of edges) {
      if (!this.nodes.has(e.parent) || !this.nodes.has(e.child)) continue;
      const key = `${e.parent}>${e.child}>${e.run_code || ""}`;
      if (!this.edges.has(key)) this.edges.set(key, e);
    }
    this.partnerCache = null;
    this.derive();
  }

  // Effective status, "held because of" and the blocking lots, in one topological pass.
  derive() {
    const codes = [...this.nodes.keys()];
    const index = new Map(codes.map((c, i) => [c, i]));
    const parents = codes.map(() => []);
    const children = codes.map(() => []);
    for (const e of this.edges.values()) {
      const p = index.get(e.parent);
      const c = index.get(e.child);
      parents[c].push(p);
      children[p].push(c);
    }
    const indeg = parents.map((p) => p.length);
    const queue = [];
    indeg.forEach((d, i) => d === 0 && queue.push(i));
    const done = new Uint8Array(codes.length);
    const blockers = codes.map(() => null);
    let head = 0;
    let scan = 0;
    while (head < codes.length) {
      if (head === queue.length) {
        while (done[scan] || queue.includes(scan)) scan++; // a cycle in bad data: break it here
        queue.push(scan);
      }
      const i = queue[head++];
      done[i] = 1;
      const node = this.nodes.get(codes[i]);
      let mine = isBlocked(node.status) ? [node.lot_code] : [];
      for (const p of parents[i]) if (done[p] && blockers[p]) mine = mine.concat(blockers[p]);
      blockers[i] = mine.length ? [...new Set(mine)].slice(0, 5) : null;
      for (const c of children[i]) if (--indeg[c] === 0) queue.push(c);
    }
    for (const n of this.nodes.values()) n.blocker = false;
    codes.forEach((code, i) => {
      const n = this.nodes.get(code);
      const fromApi = Array.isArray(n.blocking) ? n.blocking.map((b) => b.lot_code) : null;
      const found = blockers[i] || [];
      n.blockedBy = (fromApi || found).filter((c) => c !== code);
      if (n.effective_status) n.effective = n.effective_status;
      else if (found.length) {
        const first = this.nodes.get(found[0]);
        n.effective = isBlocked(n.status) ? n.status : first.status;
      } else n.effective = n.status;
      n.inherited = isBlocked(n.effective) && !isBlocked(n.status);
      for (const b of n.blockedBy) if (this.nodes.has(b)) this.nodes.get(b).blocker = true;
    });
  }

  list() {
    return [...this.nodes.values()];
  }

  csv() {
    const cols = ["lot_code", "kind", "product", "quantity", "uom", "status", "effective", "held_because_of", "side", "depth"];
    // A text cell a spreadsheet would evaluate gets a leading ' (OWASP; gateway/csvcells.py).
    const q = (v) => {
      const s = typeof v === "string" && /^[=+\-@\t\r]/.test(v) ? `'${v}` : String(v ?? "");
      return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
    };
    const lines = [cols.join(",")];
    for (const n of this.list()) {
      lines.push([n.lot_code, n.kind, n.product, n.quantity, n.uom, n.status, n.effective, n.blockedBy.join(" "), n.side, n.depth].map(q).join(","));
    }
    return lines.join("\r\n") + "\r\n";
  }
}
