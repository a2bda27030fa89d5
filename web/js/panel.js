// The lot panel: the lot's data, own and effective QC status with the blocking lots, its QC
// history, its mass balance, the run that made it or the receipt that brought it in, where it
// was shipped, and the QC buttons.
import { api, enc } from "./api.js";
import { el, clear, fmtQty, fmtTime, inSteps, statusText } from "./dom.js";
import { qcActions } from "./actions.js";
import { locationCell, partnerCell, receiptView, shipmentsView } from "./partners.js";
import { renderSupplierTrace } from "./supplier.js";

const facts = (pairs) => el("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));

// Each render claims the panel; an older one still loading (the previous selection) leaves it be.
const claims = new WeakMap();
function claim(container) {
  const id = (claims.get(container) || 0) + 1;
  claims.set(container, id);
  return () => claims.get(container) === id;
}

export async function renderLotPanel(container, code, { onOpen, onChanged }) {
  const mine = claim(container);
  clear(container, el("p", { class: "muted", text: `Loading ${code}…` }));
  const settle = (p) => p.then((v) => ({ ok: v }), (e) => ({ err: e }));
  const [lot, qc, decisions, balance, trace] = await Promise.all([
    settle(api(`/api/lots/${enc(code)}`)),
    settle(api(`/api/lots/${enc(code)}/qc-status`)),
    settle(api(`/api/lots/${enc(code)}/qc-decisions?page_size=100`)),
    settle(api(`/api/lots/${enc(code)}/mass-balance`)),
    settle(api(`/api/traceability/${enc(code)}`)),
  ]);
  if (!mine()) return;
  if (lot.err) {
    clear(container, el("p", { class: "error", text: `${code}: ${lot.err.message}` }));
    return;
  }
  const l = lot.ok.lot;
  const parts = [el("h2", { text: l.lot_code })];
  parts.push(facts([["kind", l.kind], ["product", l.product], ["quantity", `${fmtQty(l.quantity)} ${l.uom}`], ["produced", fmtTime(l.produced_at)]]));

  parts.push(el("h3", { text: "QC status" }));
  if (qc.ok) {
    const s = qc.ok;
    const others = (s.blocking || []).filter((b) => b.lot_code !== code);
    const own = (s.blocking || []).find((b) => b.lot_code === code);
    const held = others.length;
    parts.push(facts([["own", statusText(s.status)], ["effective", el("span", { class: `status ${s.effective_status !== s.status && held ? "inherited" : s.effective_status}`, text: statusText(s.effective_status) })]]));
    if (own) parts.push(el("p", { class: "own-block" }, `${statusText(own.status).replace(/^./, (c) => c.toUpperCase())} itself`, own.reason ? `: ${own.reason}` : ""));
    if (held) {
      parts.push(el("p", { text: "Held because of:" }));
      parts.push(el("ul", { class: "blocking" }, others.map((b) =>
        el("li", {}, el("button", { type: "button", class: "link", text: b.lot_code, onclick: () => onOpen(b.lot_code) }),
          ` ${statusText(b.status)}${b.reason ? ": " : ""}`, b.reason || ""))));
    }
  } else parts.push(el("p", { class: "error", text: qc.err.message }));
  parts.push(qcActions(code, { onDone: onChanged }));

  parts.push(el("h3", { text: "QC history" }));
  const ds = decisions.ok ? decisions.ok.decisions : [];
  parts.push(ds.length
    ? el("table", {}, el("tbody", {}, ds.map((d) => el("tr", {}, el("td", { text: fmtTime(d.decided_at) }), el("td", { text: String(d.decision).toLowerCase() }), el("td", { text: d.decided_by }), el("td", { text: d.reason }), d.signature ? el("td", { class: "signature", title: `electronic signature of ${d.signature.signer}, ${fmtTime(d.signature.signed_at)}`, text: `signed by ${d.signature.signer_name}: ${d.signature.meaning}` }) : el("td")))))
    : el("p", { class: "muted", text: decisions.err ? decisions.err.message : "No decisions yet." }));

  parts.push(el("h3", { text: "Mass balance" }));
  if (balance.ok) {
    const b = balance.ok;
    parts.push(facts([["inputs", `${fmtQty(b.inputs)} ${b.unit}`], ["consumed by children", `${fmtQty(b.consumed_by_children)} ${b.unit}`],
      b.shipments ? ["shipped", `${fmtQty(b.shipped)} ${b.unit} in ${b.shipments} shipment${b.shipments === 1 ? "" : "s"}`] : [], ["remaining", `${fmtQty(b.remaining)} ${b.unit}`], ["flags", (b.flags || []).join(", ") || "none"]]));
  } else parts.push(el("p", { class: "error", text: balance.err.message }));

  const receipts = trace.ok ? trace.ok.receipts || [] : [];
  const shipments = trace.ok ? trace.ok.shipments || [] : [];
  if (receipts.length) {
    parts.push(el("h3", { text: "Received" }));
    parts.push(el("div", { class: "receipts" }, receipts.map((r) => {
      const traced = el("div", { class: "supplier-traced" });
      return el("div", {}, receiptView(r), el("p", {}, el("button", { type: "button", class: "link", text: `Every lot received under ${r.supplier_lot_code}`,
        onclick: () => renderSupplierTrace(traced, r.supplier_code, r.supplier_lot_code, { onOpen }) })), traced);
    })));
  }
  parts.push(el("h3", { text: "Made by" }));
  const runs = trace.ok ? [...new Set((trace.ok.parents || []).map((p) => p.run_code).filter(Boolean))] : [];
  if (!runs.length) parts.push(el("p", { class: "muted", text: receipts.length ? "No production run (received from a supplier)." : "No production run (a received or raw lot)." }));
  for (const runCode of runs) {
    const run = await api(`/api/production-runs/${enc(runCode)}`).then((r) => r.run, () => null);
    if (!run) {
      parts.push(el("p", { text: runCode }));
      continue;
    }
    parts.push(facts([["run", run.run_code], ["recorded by", run.recorded_by], ["at", fmtTime(run.created_at)],
      ["inputs", (run.inputs || []).map((i) => `${i.lot_code} ${fmtQty(i.quantity)} ${i.uom}`).join("; ")],
      ["outputs", (run.outputs || []).map((o) => `${o.lot_code} ${fmtQty(o.quantity)} ${o.uom}`).join("; ")]]));
  }
  parts.push(el("h3", { text: "Shipped" }));
  if (trace.err) parts.push(el("p", { class: "error", text: trace.err.message }));
  else if (!shipments.length) parts.push(el("p", { class: "muted", text: "Not shipped." }));
  else {
    const byUom = new Map();
    for (const x of shipments) byUom.set(x.uom, (byUom.get(x.uom) || 0) + x.quantity);
    const total = [...byUom].map(([u, q]) => `${fmtQty(q)} ${u}`).join(" + ");
    const customers = new Set(shipments.map((x) => x.customer_code)).size;
    parts.push(el("p", { class: "shipped-total", text: `${shipments.length} shipment${shipments.length === 1 ? "" : "s"} to ${customers} customer${customers === 1 ? "" : "s"}: ${total}.` }));
    parts.push(shipmentsView(shipments));
  }
  parts.push(el("p", {}, el("button", { type: "button", text: "Re-centre the graph on this lot", onclick: () => onOpen(code) })));
  if (mine()) clear(container, ...parts);
}

// A supplier's or customer's site in the graph: who it is, and the receipts from it or the
// shipments to it of the lots shown.
export function renderPartnerPanel(container, node, { onOpen }) {
  claim(container);
  const supplier = node.partner === "supplier";
  const events = supplier ? node.receipts : node.shipments;
  const parts = [el("h2", { text: node.title.replace(/^./, (c) => c.toUpperCase()) })];
  parts.push(facts([[supplier ? "supplier" : "customer", partnerCell(node.party)], [supplier ? "ship-from" : "ship-to", locationCell(node.location)]]));
  parts.push(el("h3", { text: supplier ? "Received from here" : "Shipped here" }));
  const lots = [...new Set(events.map((x) => x.lot_code))];
  parts.push(el("p", {}, `${events.length} ${supplier ? "receipt" : "shipment"}${events.length === 1 ? "" : "s"} of `,
    lots.slice(0, 20).flatMap((c, i) => [i ? ", " : "", el("button", { type: "button", class: "link", text: c, onclick: () => onOpen(c) })]),
    lots.length > 20 ? ` and ${lots.length - 20} more lots` : "", "."));
  if (supplier) {
    const list = el("div", { class: "receipts" });
    parts.push(list, inSteps(list, events, receiptView, { first: 10, step: 100, noun: "receipts" }));
  } else parts.push(shipmentsView(events, { lotColumn: true }));
  clear(container, ...parts);
}
