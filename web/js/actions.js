// QC decision buttons with a required reason. Shown to everyone; disabled, with the reason
// why, for roles that may not record them. A release or reject is signed: the signer
// re-enters their password with it (never kept: the field is cleared after each try).
import { api, enc, may, CAN, role } from "./api.js";
import { el } from "./dom.js";

export function qcActions(lotCode, { onDone, decisions = ["hold", "release", "reject"], label = "" }) {
  const allowed = may("qc");
  const id = `reason-${Math.random().toString(36).slice(2)}`;
  const reason = el("textarea", { id, placeholder: "Reason (required)", disabled: !allowed, "aria-label": `Reason for ${lotCode}` });
  const message = el("p", { role: "status" });
  const SIGNED = ["release", "reject"];
  const signs = decisions.some((d) => SIGNED.includes(d));
  const password = signs
    ? el("input", { type: "password", autocomplete: "current-password", disabled: !allowed, placeholder: "Your password, to sign a release or reject", "aria-label": `Password to sign a decision for ${lotCode}` })
    : null;
  const buttons = decisions.map((d) =>
    el("button", {
      type: "button",
      class: d === "hold" ? "danger" : "",
      disabled: !allowed,
      title: allowed ? "" : CAN.qc.why,
      dataset: { decision: d },
      text: label && d === "hold" ? label : d[0].toUpperCase() + d.slice(1),
      onclick: async (event) => {
        const button = event.currentTarget;
        if (!reason.value.trim()) {
          message.className = "error";
          message.textContent = "A reason is required.";
          reason.setAttribute("aria-invalid", "true");
          reason.focus();
          return;
        }
        reason.removeAttribute("aria-invalid");
        if (SIGNED.includes(d) && !password.value) {
          message.className = "error";
          message.textContent = `Re-enter your password to sign this ${d}.`;
          password.setAttribute("aria-invalid", "true");
          password.focus();
          return;
        }
        const body = { decision: d, reason: reason.value.trim() };
        if (password && password.value) body.password = password.value;
        if (password) {
          password.value = "";
          password.removeAttribute("aria-invalid");
        }
        for (const b of buttons) b.disabled = true;
        try {
          await api(`/api/lots/${enc(lotCode)}/qc-decisions`, { method: "POST", body });
          message.className = "ok";
          message.textContent = `${button.textContent} recorded for ${lotCode}.`;
          reason.value = "";
          await onDone(d);
        } catch (err) {
          message.className = "error";
          message.textContent = err.message;
        } finally {
          for (const b of buttons) b.disabled = false;
        }
      },
    }));
  const why = allowed ? null : el("p", { class: "why", text: `Disabled: ${CAN.qc.why} (you are ${role() || "signed out"}).` });
  return el("div", { class: "actions" }, reason, password, el("div", { class: "row" }, buttons), why, message);
}
