// The trace from the supplier's side: a supplier calls about one of *their* lot codes; which of
// our lots came in under it, what each reached and whom it went to (POST /api/supplier-trace).
import { api } from "./api.js";
import { el, clear, fmtQty, fmtTime, inSteps } from "./dom.js";
import { documentText } from "./partners.js";

const kg = (v) => `${fmtQty(v || 0)} kg`;
const plural = (n, word) => `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;

export async function renderSupplierTrace(container, supplierCode, supplierLotCode, { onOpen }) {
  clear(container, el("p", { class: "muted", text: `Tracing ${supplierLotCode} of ${supplierCode}…` }));
  let answer;
  try {
    answer = await api("/api/supplier-trace", { method: "POST", body: { supplier_code: supplierCode, supplier_lot_code: supplierLotCode } });
  } catch (err) {
    clear(container, el("p", { class: "error", text: err.message }));
    return;
  }
  const receipts = answer.receipts || [];
  if (!receipts.length) {
    clear(container, el("p", { class: "muted", text: `Nothing was received under ${supplierLotCode} from ${supplierCode}.` }));
    return;
  }
  const list = el("ul", { class: "supplier-lots" });
  const note = inSteps(list, receipts, (r, i) => {
    const down = (answer.downstream || [])[i] || {};
    const notified = (answer.notifications || [])[i] || {};
    const reached = (down.nodes || []).filter((n) => (n.lot || n).lot_code !== r.lot_code).length; // nodes carry their lot here (not flattened)
    const customers = (notified.customers || []).length;
    return el("li", { dataset: { lot: r.lot_code } },
      el("button", { type: "button", class: "link", text: r.lot_code, onclick: () => onOpen(r.lot_code) }),
      ` ${fmtQty(r.quantity)} ${r.uom}, received ${fmtTime(r.received_at)} on ${documentText(r)}. `,
      el("span", { class: "reach", text: `It reached ${plural(reached, "lot")}${down.truncated ? " (cut at the limit)" : ""}; ${plural(notified.shipments || 0, "shipment")} to ${plural(customers, "customer")}, ${kg(notified.root_shipped_kg)} of it shipped, ${kg(notified.root_in_plant_kg)} still in the plant.` }),
      " ",
      el("button", { type: "button", class: "link", text: "Recall", onclick: () => onOpen(r.lot_code, { tab: "recall" }) }));
  }, { first: 20, step: 200, noun: "lots" });
  const first = receipts[0];
  clear(container,
    el("p", { class: "supplier-summary", text: `${plural(receipts.length, "lot")} received under ${supplierLotCode} from ${first.supplier_name || supplierCode}:` }),
    list, note);
}

// The supplier codes for the form's suggestions (a datalist: any code may still be typed).
export async function fillSuppliers(datalist) {
  const answer = await api(`/api/partners?role=supplier&page_size=500`).catch(() => null);
  if (!answer) return;
  clear(datalist, (answer.partners || []).map((p) => el("option", { value: p.code, text: p.name })));
}
