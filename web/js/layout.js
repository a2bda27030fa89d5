// A layered left-to-right layout in linear time (plus the sorts of a few ordering sweeps):
// longest-path layering over a topological order (edges that close a cycle in bad data are
// set aside, not followed), then barycentre sweeps to reduce crossings, then coordinates.
// Stock layered layouts (dagre, ELK) take seconds to minutes at thousands of nodes.

export function layout(n, src, dst, { dx = 260, dy = 46, sweeps = 4 } = {}) {
  const m = src.length;
  // Adjacency in compressed rows, both ways.
  const outStart = new Int32Array(n + 1);
  const inStart = new Int32Array(n + 1);
  for (let e = 0; e < m; e++) {
    outStart[src[e] + 1]++;
    inStart[dst[e] + 1]++;
  }
  for (let i = 0; i < n; i++) {
    outStart[i + 1] += outStart[i];
    inStart[i + 1] += inStart[i];
  }
  const outAdj = new Int32Array(m);
  const inAdj = new Int32Array(m);
  const oFill = outStart.slice(0, n);
  const iFill = inStart.slice(0, n);
  for (let e = 0; e < m; e++) {
    outAdj[oFill[src[e]]++] = dst[e];
    inAdj[iFill[dst[e]]++] = src[e];
  }

  // Kahn's order; when only cycles are left, the lowest unplaced node is taken as if free.
  const indeg = new Int32Array(n);
  for (let e = 0; e < m; e++) indeg[dst[e]]++;
  const order = new Int32Array(n);
  const rank = new Int32Array(n).fill(-1);
  let head = 0;
  let tail = 0;
  let scan = 0;
  for (let v = 0; v < n; v++) if (indeg[v] === 0) order[tail++] = v;
  for (let v = 0; v < n; v++) if (indeg[v] === 0) rank[v] = -2; // queued
  while (head < n) {
    if (head === tail) {
      while (rank[scan] !== -1) scan++;
      order[tail++] = scan;
      rank[scan] = -2;
    }
    const v = order[head];
    rank[v] = head++;
    for (let k = outStart[v]; k < outStart[v + 1]; k++) {
      const w = outAdj[k];
      if (rank[w] === -1 && --indeg[w] === 0) {
        order[tail++] = w;
        rank[w] = -2;
      }
    }
  }

  // Longest path from the sources, following forward edges only.
  const layer = new Int32Array(n);
  let layers = 1;
  let backEdges = 0;
  for (let i = 0; i < n; i++) {
    const v = order[i];
    for (let k = inStart[v]; k < inStart[v + 1]; k++) {
      const u = inAdj[k];
      if (rank[u] < rank[v]) layer[v] = Math.max(layer[v], layer[u] + 1);
      else backEdges++;
    }
    layers = Math.max(layers, layer[v] + 1);
  }

  // Nodes of each layer, first in topological order.
  const size = new Int32Array(layers);
  for (let v = 0; v < n; v++) size[layer[v]]++;
  const start = new Int32Array(layers + 1);
  for (let l = 0; l < layers; l++) start[l + 1] = start[l] + size[l];
  const slots = new Int32Array(n);
  const fill = start.slice(0, layers);
  for (let i = 0; i < n; i++) {
    const v = order[i];
    slots[fill[layer[v]]++] = v;
  }
  const pos = new Float64Array(n); // position within its layer, scaled to 0..1
  const place = (l) => {
    const s = size[l];
    for (let k = 0; k < s; k++) pos[slots[start[l] + k]] = s > 1 ? k / (s - 1) : 0.5;
  };
  for (let l = 0; l < layers; l++) place(l);

  // Barycentre sweeps: left to right by parents, right to left by children.
  const key = new Float64Array(n);
  const sortLayer = (l, adjStart, adj) => {
    const a = start[l];
    const b = start[l + 1];
    if (b - a < 2) return;
    for (let k = a; k < b; k++) {
      const v = slots[k];
      let sum = 0;
      let count = 0;
      for (let j = adjStart[v]; j < adjStart[v + 1]; j++) {
        sum += pos[adj[j]];
        count++;
      }
      key[v] = count ? sum / count : pos[v];
    }
    const part = Array.from(slots.subarray(a, b));
    part.sort((x, y) => key[x] - key[y] || pos[x] - pos[y]);
    slots.set(part, a);
    place(l);
  };
  for (let s = 0; s < sweeps; s++) {
    if (s % 2 === 0) for (let l = 1; l < layers; l++) sortLayer(l, inStart, inAdj);
    else for (let l = layers - 2; l >= 0; l--) sortLayer(l, outStart, outAdj);
  }

  // Coordinates. A layer taller than `rows` wraps into side-by-side sub-columns (filled row
  // by row, so the order stays top to bottom), which keeps a 10,000-lot fan-out readable.
  const rows = Math.max(40, Math.ceil(Math.sqrt(n) * 1.5));
  const x = new Float64Array(n);
  const y = new Float64Array(n);
  let left = 0;
  for (let l = 0; l < layers; l++) {
    const s = size[l];
    const cols = Math.max(1, Math.ceil(s / rows));
    const height = Math.ceil(s / cols);
    for (let k = 0; k < s; k++) {
      const v = slots[start[l] + k];
      x[v] = left + (k % cols) * dx * 0.8;
      y[v] = (Math.floor(k / cols) - (height - 1) / 2) * dy;
    }
    left += dx + (cols - 1) * dx * 0.8;
  }
  return { x, y, layer, layers, backEdges };
}
