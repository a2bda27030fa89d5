// Lays out off the main thread: the page stays responsive while thousands of lots are placed.
import { layout } from "./layout.js";

self.onmessage = (event) => {
  const { id, n, src, dst, options } = event.data;
  const t0 = performance.now();
  const { x, y, layers, backEdges } = layout(n, src, dst, options);
  self.postMessage({ id, x, y, layers, backEdges, ms: performance.now() - t0 }, [x.buffer, y.buffer]);
};
