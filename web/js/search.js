// Find a lot by code prefix or product (with kind and effective-status filters) over
// GET /api/lots. Servers without the search parameters ignore or refuse them: the answers
// are filtered here again, a refused parameter is not sent again, and an exact look-up of the
// typed code always runs beside them.
import { api, ApiError, enc } from "./api.js";
import { el, clear, statusText } from "./dom.js";

const unsupported = new Set();
const LOT_CODE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

async function listLots(params) {
  for (const name of Object.keys(params)) if (unsupported.has(name) || params[name] === "") delete params[name];
  const q = new URLSearchParams({ ...params, page_size: "20" });
  try {
    return (await api(`/api/lots?${q}`)).lots || [];
  } catch (err) {
    const field = err instanceof ApiError && err.status === 400 && (err.details.field || err.details.parameter || (err.message.match(/\b(lot_code_prefix|product|kind|effective_status)\b/) || [])[1]);
    if (field && field in params) {
      unsupported.add(field);
      return listLots(params);
    }
    return [];
  }
}

export async function findLots(text, { kind = "", effective = "" } = {}) {
  const q = text.trim();
  if (!q) return [];
  const lower = q.toLowerCase();
  const filters = { kind, effective_status: effective };
  const [byCode, byProduct, exact] = await Promise.all([
    listLots({ lot_code_prefix: q, ...filters }),
    listLots({ product: q, ...filters }),
    LOT_CODE.test(q) ? api(`/api/lots/${enc(q)}`).then((r) => [r.lot], () => []) : [],
  ]);
  const seen = new Map();
  for (const lot of [...exact, ...byCode, ...byProduct]) {
    const matches = lot.lot_code.toLowerCase().startsWith(lower) || (lot.product || "").toLowerCase().includes(lower);
    const filtered = (!kind || lot.kind === kind) && (!effective || lot.effective_status === effective);
    if (matches && filtered && !seen.has(lot.lot_code)) seen.set(lot.lot_code, lot);
  }
  return [...seen.values()].slice(0, 20);
}

export function setupSearch({ input, kind, status, list, onOpen }) {
  let active = -1;
  let items = [];
  let timer = 0;
  let generation = 0;
  const close = () => {
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  };
  const mark = () => {
    [...list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === active)));
    if (active >= 0 && list.children[active]) {
      input.setAttribute("aria-activedescendant", list.children[active].id);
      list.children[active].scrollIntoView({ block: "nearest" });
    }
  };
  const choose = (lot) => {
    close();
    input.value = lot.lot_code;
    onOpen(lot.lot_code);
  };
  const run = async () => {
    const mine = ++generation;
    const found = await findLots(input.value, { kind: kind.value, effective: status.value });
    if (mine !== generation) return;
    items = found;
    active = found.length ? 0 : -1;
    clear(list, found.length ? found.map((lot, i) => el("li", { id: `search-opt-${i}`, role: "option", onmousedown: (e) => { e.preventDefault(); choose(lot); } },
      el("span", { class: "code", text: lot.lot_code }), el("span", { text: lot.kind }), el("span", { text: lot.product }),
      el("span", { class: `status ${lot.effective_status}`, text: statusText(lot.effective_status) })))
      : el("li", { class: "muted", role: "option", "aria-disabled": "true", text: "No lot found" }));
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    mark();
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    if (!input.value.trim()) return close();
    timer = setTimeout(run, 150);
  });
  for (const s of [kind, status]) s.addEventListener("change", () => input.value.trim() && run());
  input.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (list.hidden) return run();
      if (!items.length) return;
      active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      mark();
    } else if (e.key === "Enter") {
      e.preventDefault();
      clearTimeout(timer);
      if (!list.hidden && items[active]) choose(items[active]);
      else run();
    } else if (e.key === "Escape") close();
  });
  input.addEventListener("blur", () => setTimeout(close, 150));
}
