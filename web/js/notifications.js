// The recall's notification list (whom to call): per customer and ship-to location every
// shipment of an affected lot with how much of the recalled lot it carried, the totals per
// customer, then what is still in the plant per lot and location; and its CSV download.
import { apiBlob, enc } from "./api.js";
import { el, download, fmtQty, fmtTime, inSteps } from "./dom.js";
import { carrierCell, documentText, locationCell } from "./partners.js";

const kg = (v) => `${fmtQty(v || 0)} kg`;
const plural = (n, word) => `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;
const OPEN_UP_TO = 5; // customers whose lists are open at first; the others open on a click

export function notificationsView(answer, { rootCode, rootUom, onOpen }) {
  const customers = answer.customers || [];
  const inPlant = answer.in_plant || [];
  const shipments = answer.shipments || 0;
  const message = el("span", { class: "error", role: "status" });
  const csv = el("button", { type: "button", class: "download-csv", text: "Download CSV",
    onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      try {
        download(await apiBlob(`/api/recall/${enc(rootCode)}/notifications.csv`), `notifications-${rootCode}.csv`);
        message.textContent = "";
      } catch (err) {
        message.textContent = err.message;
      } finally {
        button.disabled = false;
      }
    } });
  const parts = [el("h3", { text: "Whom to notify" })];
  parts.push(el("p", { class: "notify-summary" },
    customers.length
      ? `${plural(shipments, "shipment")} of affected lots to ${plural(customers.length, "customer")}: ${kg(answer.shipped_kg)} shipped, ${kg(answer.root_shipped_kg)} of it ${rootCode}.`
      : `No affected lot has been shipped.`));
  parts.push(el("p", { class: "row" }, csv, " ", message));
  if (answer.truncated) parts.push(el("p", { class: "banner", text: "The recall was cut at the API's limit: shipments of lots past it are missing from this list." }));

  const list = el("div", { class: "customers" });
  parts.push(list);
  if (customers.length) {
    parts.push(inSteps(list, customers, (c, i) => customerView(c, { open: customers.length <= OPEN_UP_TO || i < OPEN_UP_TO, rootCode, onOpen }),
      { first: 50, step: 200, noun: "customers" }));
  }

  parts.push(el("h3", { text: "Still in the plant" }));
  if (!inPlant.length) parts.push(el("p", { class: "muted", text: "Nothing affected is left in the plant." }));
  else {
    parts.push(el("p", { class: "plant-summary", text: `${plural(inPlant.length, "lot")}: ${kg(answer.in_plant_kg)}, ${kg(answer.root_in_plant_kg)} of it ${rootCode}.` }));
    const body = el("tbody");
    const table = el("table", { class: "in-plant", "aria-label": "Still in the plant" },
      el("thead", {}, el("tr", {}, ["Lot", "Location", "Remaining", `${rootCode} in it`].map((h, i) => el("th", { scope: "col", class: i >= 2 ? "num" : "", text: h })))), body);
    const note = inSteps(body, inPlant, (s) => {
      const lot = s.lot || {};
      return el("tr", { dataset: { lot: lot.lot_code } },
        el("td", {}, el("button", { type: "button", class: "link", text: lot.lot_code, onclick: () => onOpen(lot.lot_code) })),
        el("td", {}, s.location_code ? locationCell(s.location_code) : "plant"),
        el("td", { class: "num", text: `${fmtQty(s.remaining)} ${lot.uom || ""}` }),
        el("td", { class: "num", text: s.root_quantity === null || s.root_quantity === undefined ? "?" : `${fmtQty(s.root_quantity)} ${lot.uom || rootUom}` }));
    }, { first: 50, step: 500, noun: "lots" });
    parts.push(el("div", { class: "scroll-x" }, table, note));
  }
  return el("section", { class: "notifications", "aria-label": "Notification list" }, parts);
}

function customerView(c, { open, rootCode, onOpen }) {
  const contact = [c.contact_name, c.contact_email, c.contact_phone].filter(Boolean).join(", ");
  const totals = `${plural(c.shipments || 0, "shipment")}, ${kg(c.quantity_kg)}, ${kg(c.root_quantity_kg)} of ${rootCode}` +
    (c.shipments_not_in_kg ? ` (${c.shipments_not_in_kg} not in kg, left out of the sums)` : "");
  const details = el("details", { class: "customer", open: open || undefined, dataset: { customer: c.customer_code } },
    el("summary", {}, el("strong", { text: c.name || c.customer_code }), ` (${c.customer_code}): `, el("span", { class: "customer-total", text: totals })),
    contact ? el("p", { class: "contact", text: `Contact: ${contact}` }) : null,
    c.gln ? el("p", { class: "muted", text: `GLN ${c.gln}` }) : null,
    (c.locations || []).map((l) => locationView(l, { rootCode, onOpen })));
  return details;
}

function locationView(l, { rootCode, onOpen }) {
  const address = [l.address, [l.postal_code, l.city].filter(Boolean).join(" "), l.country].filter(Boolean).join(", ");
  const body = el("tbody");
  const table = el("table", { class: "notified", "aria-label": `Shipments to ${l.location_code}` },
    el("thead", {}, el("tr", {}, ["Date", "Lot", "Document", "Qty", "Of recalled"].map((h, i) => el("th", { scope: "col", class: i >= 3 ? "num" : "", title: i === 4 ? `How much of ${rootCode} the shipment carried` : undefined, text: h })))), body);
  const note = inSteps(body, l.shipments || [], (n) => {
    const s = n.shipment || {};
    return el("tr", { dataset: { shipment: String(s.id), lot: s.lot_code } },
      el("td", { class: "when", text: fmtTime(s.shipped_at) }),
      el("td", {}, el("button", { type: "button", class: "link", text: s.lot_code, onclick: () => onOpen(s.lot_code) })),
      el("td", {}, el("div", { class: "document", text: documentText(s) }), s.carrier_code ? el("div", { class: "carrier muted" }, carrierCell(s.carrier_code)) : null),
      el("td", { class: "num quantity", text: `${fmtQty(s.quantity)} ${s.uom}` }),
      el("td", { class: "num root-qty", text: n.root_quantity === null || n.root_quantity === undefined ? "?" : `${fmtQty(n.root_quantity)} ${s.uom}` }));
  }, { first: 20, step: 200, noun: "shipments" });
  return el("div", { class: "ship-to", dataset: { location: l.location_code } },
    el("h4", {}, `Ship-to ${l.name || l.location_code}`, l.name && l.name !== l.location_code ? ` (${l.location_code})` : ""),
    address || l.gln ? el("p", { class: "muted", text: [address, l.gln ? `GLN ${l.gln}` : ""].filter(Boolean).join(" · ") }) : null,
    el("p", { class: "muted", text: `${kg(l.quantity_kg)} shipped here, ${kg(l.root_quantity_kg)} of ${rootCode}.` }),
    el("div", { class: "scroll-x" }, table, note));
}
