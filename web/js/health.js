// The health badge: /api/health every few seconds, naming what is down.
import { clear } from "./dom.js";

export function watchHealth(badge, every = 10_000) {
  const check = async () => {
    let body = null;
    try {
      const r = await fetch("/api/health");
      body = await r.json();
    } catch {
      body = { status: "unavailable", failing: ["gateway"] };
    }
    const failing = body.failing || Object.entries(body.components || {}).filter(([, c]) => !c.healthy).map(([name]) => name);
    const ok = body.status === "ok" && !failing.length;
    badge.className = `badge ${ok ? "up" : "down"}`;
    clear(badge, ok ? "all systems up" : `down: ${failing.join(", ") || body.status}`);
    badge.title = ok ? "every service, the database and the cache answer" : "";
  };
  check();
  return setInterval(check, every);
}
