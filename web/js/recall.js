// The recall workbench: what the lot reached and how much of it each lot contains, one action
// that holds the root (and so everything made from it), whom to notify (the customers who
// received affected lots) and what is still in the plant, mock-recall drills, and the exports.
import { api, apiBlob, enc, may, CAN } from "./api.js";
import { el, clear, download, fmtQty, fmtTime, statusText } from "./dom.js";
import { qcActions } from "./actions.js";
import { isBlocked } from "./model.js";
import { notificationsView } from "./notifications.js";

export async function renderRecall(container, code, { onOpen, onChanged, onShow }) {
  clear(container, el("p", { class: "muted", text: `Loading the recall of ${code}…` }));
  let answer;
  // The notification list is built on the same recall impact; both are asked for at once.
  const notified = api(`/api/recall/${enc(code)}/notifications`).then((ok) => ({ ok }), (err) => ({ err }));
  try {
    answer = await api(`/api/recall/${enc(code)}`);
  } catch (err) {
    clear(container, el("p", { class: "error", text: err.message }));
    return;
  }
  const notifications = await notified;
  const root = answer.root;
  const rootHeld = isBlocked(root.effective_status || root.status);
  const rows = answer.downstream.map((d) => {
    // Older servers fill effective_status for the root only: every descendant of a held root is held.
    const eff = d.effective_status || (rootHeld ? root.effective_status || root.status : d.status);
    return { ...d, eff, inherited: isBlocked(eff) && !isBlocked(d.status) };
  });
  const parts = [el("h2", {}, `Recall of ${root.lot_code}`)];
  parts.push(el("p", {}, `${root.product}: ${fmtQty(root.quantity)} ${root.uom}, `,
    el("span", { class: `status ${root.effective_status || root.status}`, text: statusText(root.effective_status || root.status) }),
    `. It reached ${rows.length} lot${rows.length === 1 ? "" : "s"}.`));
  if (answer.truncated) parts.push(el("p", { class: "banner", text: "The answer was cut at the API's limit: more lots may be affected." }));

  parts.push(el("h3", { text: "Totals by kind" }));
  parts.push(el("table", {}, el("thead", {}, el("tr", {}, ["Kind", "Lots", "Quantity kg", `of ${root.lot_code} kg`].map((h, i) => el("th", { class: i ? "num" : "", text: h })))),
    el("tbody", {}, (answer.totals || []).map((t) => el("tr", {}, el("td", { text: t.kind }), el("td", { class: "num", text: t.lots }), el("td", { class: "num", text: fmtQty(t.quantity_kg) }), el("td", { class: "num", text: fmtQty(t.root_quantity_kg) }))))));

  parts.push(el("h3", { text: "Put it all on hold" }));
  parts.push(el("p", { class: "muted", text: `A hold on ${root.lot_code} holds every lot made from it.` }));
  parts.push(qcActions(root.lot_code, { decisions: ["hold"], label: `Hold ${root.lot_code} and everything made from it`, onDone: onChanged }));

  if (notifications.ok) parts.push(notificationsView(notifications.ok, { rootCode: root.lot_code, rootUom: root.uom, onOpen }));
  else parts.push(el("h3", { text: "Whom to notify" }), el("p", { class: "error", text: notifications.err.message }));

  parts.push(el("h3", { text: "Affected lots" }));
  const table = el("div", { class: "recall-table" });
  parts.push(el("p", {}, el("button", { type: "button", text: "Show on the graph", onclick: () => onShow(root.lot_code) })), table);
  let sort = { key: "depth", dir: 1 };
  const cols = [["lot_code", "Lot"], ["kind", "Kind"], ["product", "Product"], ["root_quantity", `${root.lot_code} in it`, true], ["root_share", "Share", true], ["depth", "Depth", true], ["eff", "Status"]];
  const drawTable = () => {
    const sorted = [...rows].sort((a, b) => {
      const x = a[sort.key];
      const y = b[sort.key];
      return (typeof x === "number" ? x - y : String(x).localeCompare(String(y))) * sort.dir;
    });
    clear(table, el("table", { "aria-label": "Affected lots" },
      el("thead", {}, el("tr", {}, cols.map(([k, label, num]) => el("th", { class: num ? "num" : "", "aria-sort": k === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none" },
        el("button", { type: "button", text: label, onclick: () => { sort = { key: k, dir: sort.key === k ? -sort.dir : 1 }; drawTable(); } }))))),
      el("tbody", {}, sorted.slice(0, 1000).map((d) => el("tr", { dataset: { lot: d.lot_code } },
        el("td", {}, el("button", { type: "button", class: "link", text: d.lot_code, onclick: () => onOpen(d.lot_code) })),
        el("td", { text: d.kind }), el("td", { text: d.product }),
        el("td", { class: "num", text: `${fmtQty(d.root_quantity)} ${root.uom}` }),
        el("td", { class: "num", text: `${fmtQty(d.root_share * 100)}%` }),
        el("td", { class: "num", text: d.depth }),
        el("td", {}, el("span", { class: `status ${d.inherited ? "inherited" : d.eff}`, text: d.inherited ? `${statusText(d.eff)} because of ${root.lot_code}` : statusText(d.eff) })))))));
  };
  drawTable();

  parts.push(el("h3", { text: "Exports" }));
  const exportButton = (ext) => el("button", { type: "button", text: ext === "csv" ? "FSMA 204 CSV" : "EPCIS JSON-LD",
    onclick: async () => download(await apiBlob(`/api/traceability/${enc(code)}/export.${ext}`), `${code}.${ext}`) });
  parts.push(el("p", { class: "row" }, exportButton("csv"), " ", exportButton("jsonld")));

  parts.push(el("h3", { text: "Mock-recall drills" }));
  const drills = el("div");
  const report = el("div");
  const allowed = may("drill");
  const drillMsg = el("p", { role: "status" });
  parts.push(el("p", {}, el("button", { type: "button", disabled: !allowed, title: allowed ? "" : CAN.drill.why, text: `Run a drill from ${code}`,
    onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      try {
        const s = await api("/api/scenarios", { method: "POST", body: { name: `Drill ${code} ${new Date().toISOString().slice(0, 16)}`, lot_code: code } });
        drillMsg.className = "ok";
        drillMsg.textContent = `Drill done in ${fmtQty((s.scenario || s).duration_ms)} ms.`;
        clear(report, accountabilityView((s.scenario || s).accountability));
        await listDrills();
      } catch (err) {
        drillMsg.className = "error";
        drillMsg.textContent = err.message;
      } finally {
        button.disabled = !allowed;
      }
    } })), allowed ? null : el("p", { class: "why", text: `Disabled: ${CAN.drill.why}.` }), drillMsg, report, drills);
  const listDrills = async () => {
    const list = await api("/api/scenarios?page_size=50").then((r) => r.scenarios || [], () => []);
    const mine = list.filter((s) => s.root_lot_code === code);
    clear(drills, mine.length ? el("ul", {}, mine.map((s) => el("li", {}, `${s.name}: ${fmtTime(s.created_at)}, ${fmtQty(s.duration_ms)} ms `,
      el("button", { type: "button", class: "link", text: "snapshot", onclick: async (ev) => {
        const button = ev.currentTarget;
        const full = await api(`/api/scenarios/${enc(s.id)}`);
        const sc = full.scenario || full;
        const snap = sc.snapshot ?? sc.snapshot_json;
        button.replaceWith(el("div", {}, accountabilityView(sc.accountability),
          el("pre", { class: "snapshot", text: typeof snap === "string" ? snap : JSON.stringify(snap, null, 2) })));
      } })))) : el("p", { class: "muted", text: "No drills from this lot yet." }));
  };
  clear(container, ...parts);
  await listDrills();
}

// A drill's mock-recall report (what BRC, SQF and FSMA 204 audits ask for): where the root lot
// went, how much is unaccounted for, and the verdict against the configured tolerance.
function accountabilityView(a) {
  if (!a || !a.unit) return el("p", { class: "muted", text: "This drill has no accountability report (frozen before it existed)." });
  const q = (v) => `${fmtQty(v || 0)} ${a.unit}`;
  const intoChildren = (a.children || []).reduce((sum, c) => sum + (c.quantity || 0), 0);
  const tolerance = `±${fmtQty((a.tolerance || 0) * 100)}%`;
  const rows = [
    ["Root lot", q(a.root_quantity)],
    [`Into ${(a.children || []).length} direct children`, q(intoChildren)],
    ["Still in stock in the root lot", q(a.in_stock)],
    ["Held by the lots in between", q(a.downstream)],
    [`Reached ${a.end_lot_count || 0} end lots (finished goods)`, q(a.end_lots)],
    ["Unaccounted", `${q(a.unaccounted)} (${fmtQty(a.unaccounted_percent || 0)}%)`],
    ["Explained by yield losses", q(a.explained_by_losses)],
    ["Trace took", `${fmtQty(a.trace_ms || 0)} ms`],
  ];
  const verdict = a.within_tolerance ? `Accounted for within ${tolerance}` : `Not accounted for within ${tolerance}`;
  return el("div", { class: "accountability" },
    el("p", { class: a.within_tolerance ? "ok" : "error", text: verdict + (a.truncated ? " (a limit cut the recall: the figures are partial)" : "") }),
    el("table", {}, el("tbody", {}, rows.map(([label, value]) => el("tr", {}, el("th", { scope: "row", text: label }), el("td", { class: "num", text: value }))))),
    (a.runs || []).length ? el("p", { class: "muted", text: `Runs that explain it: ${(a.runs || []).map((r) => `${r.run_code || "(no run)"} → ${r.lot_code} ${r.flag}`).join("; ")}` }) : null);
}
