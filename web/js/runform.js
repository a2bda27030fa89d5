// Record a production run: inputs (lot, quantity, unit) and outputs (new lots). The API's
// validation errors are shown beside the field they name. Each submission carries a fresh
// Idempotency-Key, kept across retries of the same submission, so a double click records one run.
import { api, may, CAN, role } from "./api.js";
import { el, clear } from "./dom.js";

const UNITS = ["kg", "g", "lb", "t", "l", "ml", "ea"];
const unitSelect = (name, value = "kg") => el("select", { name, "aria-label": "unit" }, UNITS.map((u) => el("option", { value: u, selected: u === value, text: u })));

export function renderRunForm(container, { inputs = [], onRecorded }) {
  const allowed = may("run");
  const inputsBox = el("fieldset", {}, el("legend", { text: "Inputs (existing lots consumed)" }));
  const outputsBox = el("fieldset", {}, el("legend", { text: "Outputs (new lots)" }));
  const line = (box, kind, value = {}) => {
    const i = box.querySelectorAll(".line").length;
    const p = `${kind}[${i}]`;
    const fields = kind === "inputs"
      ? [el("input", { name: `${p}.lot_code`, class: "wide", placeholder: "lot code", "aria-label": "input lot code", value: value.lot_code || "" })]
      : [el("input", { name: `${p}.lot_code`, class: "wide", placeholder: "new lot code", "aria-label": "output lot code" }),
         el("select", { name: `${p}.kind`, "aria-label": "kind" }, ["MIX", "FG", "RAW"].map((k) => el("option", { text: k }))),
         el("input", { name: `${p}.product`, class: "wide", placeholder: "product", "aria-label": "product" })];
    box.append(el("div", { class: "line", dataset: { prefix: p } }, fields,
      el("input", { name: `${p}.quantity`, type: "text", inputmode: "decimal", placeholder: "quantity", "aria-label": "quantity" }),
      unitSelect(`${p}.uom`)));
  };
  (inputs.length ? inputs : [""]).forEach((code) => line(inputsBox, "inputs", { lot_code: code }));
  line(outputsBox, "outputs");
  const runCode = el("input", { name: "run_code", placeholder: "RUN-…", "aria-label": "run code", value: `RUN-${Date.now().toString(36).toUpperCase()}` });
  const message = el("p", { role: "status" });
  const submit = el("button", { type: "submit", class: "primary", disabled: !allowed, title: allowed ? "" : CAN.run.why, text: "Record run" });
  const form = el("form", { class: "run-form", novalidate: true },
    el("label", {}, "Run code ", runCode),
    inputsBox, el("button", { type: "button", text: "+ input", onclick: () => line(inputsBox, "inputs") }),
    outputsBox, el("button", { type: "button", text: "+ output", onclick: () => line(outputsBox, "outputs") }),
    el("p", {}, submit), allowed ? null : el("p", { class: "why", text: `Disabled: ${CAN.run.why} (you are ${role()}).` }), message);

  let key = crypto.randomUUID();
  let lastBody = "";
  const clearErrors = () => {
    for (const e of form.querySelectorAll(".field-error")) e.remove();
    for (const e of form.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
  };
  const showError = (err) => {
    const d = err.details || {};
    let target = d.field ? form.querySelector(`[name="${CSS.escape(d.field)}"]`) || form.querySelector(`[name^="${CSS.escape(d.field)}."]`) : null;
    if (!target && d.lot_code) target = [...form.querySelectorAll('[name$=".lot_code"]')].find((i) => i.value.trim() === d.lot_code);
    if (!target && d.field === "run_code") target = runCode;
    if (target) {
      target.setAttribute("aria-invalid", "true");
      const holder = target.closest(".line") || target.parentElement;
      holder.append(el("span", { class: "field-error", role: "alert", text: err.message }));
      target.focus();
    }
    message.className = "error";
    message.textContent = target ? "The run was not recorded: see the field marked." : `The run was not recorded: ${err.message}`;
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return;
    clearErrors();
    const read = (box, kind) => [...box.querySelectorAll(".line")].map((row) => {
      const get = (f) => row.querySelector(`[name="${row.dataset.prefix}.${f}"]`)?.value.trim();
      const q = get("quantity");
      const out = { lot_code: get("lot_code"), quantity: q === "" || Number.isNaN(Number(q)) ? q : Number(q), uom: get("uom") };
      if (kind === "outputs") Object.assign(out, { kind: get("kind"), product: get("product") });
      return out;
    }).filter((r) => r.lot_code || r.quantity);
    const body = { run_code: runCode.value.trim(), inputs: read(inputsBox, "inputs"), outputs: read(outputsBox, "outputs") };
    const text = JSON.stringify(body);
    if (text !== lastBody) key = crypto.randomUUID(); // a changed form is a new submission
    lastBody = text;
    submit.disabled = true;
    message.className = "muted";
    message.textContent = "Recording…";
    try {
      const reply = await api("/api/production-runs", { method: "POST", body, headers: { "idempotency-key": key } });
      const run = reply.run || reply;
      message.className = "ok";
      message.textContent = `Run ${run.run_code} recorded: ${(run.outputs || []).map((o) => o.lot_code).join(", ")}.`;
      key = crypto.randomUUID();
      lastBody = "";
      await onRecorded(run);
    } catch (err) {
      showError(err);
    } finally {
      submit.disabled = !allowed;
    }
  });
  clear(container, el("h2", { text: "Record a production run" }), form);
}
