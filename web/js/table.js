// The table view of the explorer's lots: sortable, in step with the graph's selection, and the
// way in for keyboard and screen-reader users.
import { el, clear, fmtQty, statusText } from "./dom.js";

const COLUMNS = [
  ["lot_code", "Lot"],
  ["kind", "Kind"],
  ["product", "Product"],
  ["quantity", "Quantity", true],
  ["uom", "Unit"],
  ["effective", "Status"],
  ["blockedBy", "Held because of"],
  ["side", "Side"],
  ["depth", "Depth", true],
];
const MAX_ROWS = 1000;

export function statusCell(n) {
  const cls = n.inherited ? "inherited" : n.effective;
  const text = n.inherited ? `${statusText(n.effective)} (ancestor)` : statusText(n.effective);
  return el("span", { class: `status ${cls}`, text });
}

export class LotTable {
  constructor(container, { onSelect }) {
    this.container = container;
    this.onSelect = onSelect;
    this.sort = { key: "depth", dir: 1 };
    this.selected = "";
  }

  render(nodes) {
    this.nodes = nodes;
    const { key, dir } = this.sort;
    const rows = [...nodes].sort((a, b) => {
      const x = key === "blockedBy" ? a.blockedBy.join() : a[key];
      const y = key === "blockedBy" ? b.blockedBy.join() : b[key];
      return (typeof x === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""))) * dir || a.lot_code.localeCompare(b.lot_code);
    });
    const head = el("tr", {}, COLUMNS.map(([k, label, num]) =>
      el("th", { class: num ? "num" : "", scope: "col", "aria-sort": k === key ? (dir > 0 ? "ascending" : "descending") : "none" },
        el("button", { type: "button", text: label, onclick: () => this.sortBy(k) }))));
    const body = el("tbody");
    for (const n of rows.slice(0, MAX_ROWS)) {
      const tr = el("tr", { class: n.lot_code === this.selected ? "selected" : "", dataset: { lot: n.lot_code } },
        el("td", {}, el("button", { type: "button", class: "link", text: n.lot_code, onclick: () => this.onSelect(n.lot_code) })),
        el("td", { text: n.kind }),
        el("td", { text: n.product }),
        el("td", { class: "num", text: fmtQty(n.quantity) }),
        el("td", { text: n.uom }),
        el("td", {}, statusCell(n)),
        el("td", { text: n.blockedBy.join(", ") }),
        el("td", { text: n.side || "" }),
        el("td", { class: "num", text: n.depth ?? "" }));
      tr.addEventListener("click", (e) => e.target.tagName !== "BUTTON" && this.onSelect(n.lot_code));
      body.append(tr);
    }
    const note = rows.length > MAX_ROWS ? el("p", { class: "muted", text: `First ${MAX_ROWS.toLocaleString("en")} of ${rows.length.toLocaleString("en")} lots; the CSV has them all.` }) : null;
    clear(this.container, el("table", { "aria-label": "Lots of this trace" }, el("thead", {}, head), body), note);
  }

  sortBy(key) {
    this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
    this.render(this.nodes);
  }

  select(code) {
    this.selected = code;
    for (const tr of this.container.querySelectorAll("tr.selected")) tr.classList.remove("selected");
    for (const tr of this.container.querySelectorAll("tbody tr")) if (tr.dataset.lot === code) tr.classList.add("selected");
  }
}
