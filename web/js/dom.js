// DOM helpers. Every value from the API goes in as text (textContent, attributes through
// setAttribute on a fixed list of names): never as HTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export const $ = (selector, root = document) => root.querySelector(selector);

const QTY = new Intl.NumberFormat("en", { maximumFractionDigits: 3 }); // one formatter: toLocaleString builds one a call
export function fmtQty(value) {
  if (value === undefined || value === null || value === "") return "";
  const n = Number(value);
  return Number.isFinite(n) ? QTY.format(n) : String(value);
}

export function fmtTime(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

// Save a Blob as a file without a server round trip.
export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export const STATUS_TEXT = {
  passed: "passed",
  pending: "pending",
  on_hold: "on hold",
  rejected: "rejected",
  released: "released",
};
export const statusText = (s) => STATUS_TEXT[s] || s || "unknown";

// Ends the current task so the browser can handle input and paint before the next step.
export const yieldTask = () =>
  globalThis.scheduler && scheduler.yield ? scheduler.yield() : new Promise((r) => setTimeout(r, 0));

// A long list shown a step at a time, so thousands of rows never freeze the page: the first
// `first` items go into `into` (a tbody, a ul), and the note returned says how many of how many
// are shown, with a button for the next `step`.
export function inSteps(into, items, render, { first = 20, step = 200, noun = "rows" } = {}) {
  let shown = 0;
  const count = el("span");
  const more = el("button", { type: "button", class: "link more" });
  const note = el("p", { class: "muted steps" }, count, " ", more);
  const show = (n) => {
    const next = items.slice(shown, shown + n);
    append(into, next.map((item, k) => render(item, shown + k)));
    shown += next.length;
    const left = items.length - shown;
    note.hidden = left <= 0;
    count.textContent = `Showing ${shown.toLocaleString("en")} of ${items.length.toLocaleString("en")} ${noun}.`;
    more.textContent = `Show ${Math.min(step, left).toLocaleString("en")} more`;
  };
  more.addEventListener("click", () => show(step));
  show(first);
  return note;
}
