// Receipts and shipments (the receiving and shipping events) as the lot panel and the graph's
// partner boxes show them, and the names of locations and partners behind their codes (read
// once a session each: a receipt or shipment carries codes, the people want names).
import { api, enc } from "./api.js";
import { el, fmtQty, fmtTime, inSteps } from "./dom.js";

const names = new Map(); // "locations/CODE" or "partners/CODE" -> Promise of the record or null

function lookup(kind, code) {
  if (!code) return Promise.resolve(null);
  const key = `${kind}/${code}`;
  if (!names.has(key)) {
    const field = kind === "locations" ? "location" : "partner";
    names.set(key, api(`/api/${kind}/${enc(code)}`).then((r) => r[field] || null, () => null));
  }
  return names.get(key);
}

// "Leeds DC (LOC-7), Leeds, GB"; a record without a name of its own shows its code once.
function describe(r, code) {
  const who = r.name && r.name !== code ? `${r.name} (${code})` : code;
  return [who, r.city, r.country].filter(Boolean).join(", ");
}

// A cell that shows the code at once and the name once it is known; a short one (in a narrow
// column) shows the name alone, with the code as its tooltip.
function named(kind, code, short = false) {
  const node = el("span", { class: "named", title: short ? code : undefined, dataset: { code }, text: code || "" });
  lookup(kind, code).then((r) => {
    if (r) node.textContent = short ? r.name || code : describe(r, code);
  });
  return node;
}
export const locationCell = (code) => named("locations", code);
export const partnerCell = (code) => named("partners", code);
export const carrierCell = (code) => named("partners", code, true);

export const documentText = (x) => [x.document_type, x.document_number].filter(Boolean).join(" ");
export const partyText = (name, code) => (name && name !== code ? `${name} (${code})` : code || "");

const facts = (pairs) =>
  el("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));

// One receipt: who sent it, under which of their lot codes, from where to where, when, how much,
// on which document, and until when it keeps.
export function receiptView(r) {
  return el("div", { class: "receipt", dataset: { receipt: String(r.id) } },
    facts([
      ["supplier", partyText(r.supplier_name, r.supplier_code)],
      ["supplier's lot", r.supplier_lot_code],
      ["ship-from", locationCell(r.ship_from_location_code)],
      ["received at", locationCell(r.receiving_location_code)],
      ["date", fmtTime(r.received_at)],
      ["quantity", `${fmtQty(r.quantity)} ${r.uom}`],
      ["document", documentText(r)],
      ["expiry", r.expires_on],
      ["recorded by", r.recorded_by],
    ]));
}

// Shipments, oldest first, a step at a time, in four columns that fit the side panel: when,
// to whom and where (or which lot, for one customer's site), how much, on which document and
// with which carrier.
export function shipmentsView(shipments, { lotColumn = false } = {}) {
  const heads = ["Date", lotColumn ? "Lot" : "Customer, ship-to", "Quantity", "Document, carrier"];
  const body = el("tbody");
  const table = el("table", { class: "shipments", "aria-label": "Shipments" },
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", { scope: "col", class: h === "Quantity" ? "num" : "", text: h })))), body);
  const note = inSteps(body, shipments, (s) => el("tr", { dataset: { shipment: String(s.id), lot: s.lot_code } },
    el("td", { class: "when", text: fmtTime(s.shipped_at) }),
    lotColumn
      ? el("td", { text: s.lot_code })
      : el("td", {}, el("div", { class: "to-customer", text: partyText(s.customer_name, s.customer_code) }), el("div", { class: "ship-to-place muted" }, locationCell(s.ship_to_location_code))),
    el("td", { class: "num", text: `${fmtQty(s.quantity)} ${s.uom}` }),
    el("td", {}, el("div", { class: "document", text: documentText(s) }), s.carrier_code ? el("div", { class: "carrier muted" }, carrierCell(s.carrier_code)) : null)),
  { first: 20, step: 200, noun: "shipments" });
  return el("div", { class: "scroll-x" }, table, note);
}
