// The soak: a fixed arrival rate (RATE, default 200/s) over at most VUS connections (50),
// READ_SHARE (0.9) reads / the rest production-run writes. Reads: uniformly random lots
// (trace; the graph trace too when GRAPH=1), the hot lot, and the health route.
// Env (besides lib.js): BASE, TOKEN, TAG, LOTS, HOT (FG-DONER-X1), GRAPH (1 when the route exists),
// SLICES, SLICE_S.
import http from 'k6/http';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { baseOptions, errors, latency, ok, pick, summary } from './lib.js';

// Figures per time slice (SLICES of SLICE_S seconds) to show they stay flat: a threshold that
// always holds makes k6 report the tagged sub-metric in the summary.
const slices = parseInt(__ENV.SLICES || '5', 10);
const sliceMs = 1000 * parseInt(__ENV.SLICE_S || '60', 10);
export const options = baseOptions();
for (let i = 0; i < slices; i++) {
  options.thresholds[`lat{slice:${i}}`] = ['max>=0'];
  options.thresholds[`errors{slice:${i}}`] = ['count>=0'];
}
// And per kind, to tell the reads' tail from the writes' (a write waits for its commit's fsync).
for (const kind of ['read', 'write']) options.thresholds[`lat{kind:${kind}}`] = ['max>=0'];

function record(res, expected, kind) {
  const slice = String(Math.min(slices - 1, Math.floor((Date.now() - exec.scenario.startTime) / sliceMs)));
  latency.add(res.timings.duration, { slice, kind });
  if (res.status === expected) {
    ok.add(1, { slice });
    return true;
  }
  errors.add(1, { slice, status: String(res.status) });
  return false;
}

const base = __ENV.BASE || 'http://127.0.0.1:18000';
const tag = __ENV.TAG || `BS${Date.now()}`;
const hot = __ENV.HOT || 'FG-DONER-X1';
const readShare = parseFloat(__ENV.READ_SHARE || '0.9');
const graph = __ENV.GRAPH === '1';
const slots = parseInt(__ENV.MAX_VUS || __ENV.VUS || '50', 10);
const auth = { Authorization: `Bearer ${__ENV.TOKEN}` };
const json = { headers: { ...auth, 'Content-Type': 'application/json' } };
const created = new Counter('created');
const reads = new Counter('reads');
const writes = new Counter('writes');

const input = (vu, i) => `${tag}-IN-${vu}-${i}`;

export function setup() {
  const requests = [];
  for (let vu = 1; vu <= slots; vu++) {
    for (let i = 0; i < 3; i++) {
      const body = { lot_code: input(vu, i), kind: 'RAW', product: 'Bench input', quantity: 1000000, uom: 'kg' };
      requests.push(['POST', `${base}/api/lots`, JSON.stringify(body), json]);
    }
  }
  for (let start = 0; start < requests.length; start += 30) {
    for (const res of http.batch(requests.slice(start, start + 30))) {
      if (res.status !== 201) {
        throw new Error(`creating input lots: HTTP ${res.status} ${res.body}`);
      }
    }
  }
}

function read() {
  reads.add(1);
  const r = Math.random();
  let path;
  if (r < 0.6) path = `/api/traceability/${encodeURIComponent(pick())}`;
  else if (r < 0.8) path = `/api/traceability/${hot}`;
  else if (r < 0.9 && graph) path = `/api/traceability/${encodeURIComponent(pick())}/graph?direction=both`;
  else if (r < 0.9) path = `/api/lots/${encodeURIComponent(pick())}`;
  else path = '/api/health';
  record(http.get(base + path, { headers: auth, tags: { kind: 'read' } }), 200, 'read');
}

function write() {
  writes.add(1);
  const vu = exec.vu.idInTest;
  const code = `${tag}-R-${vu}-${exec.vu.iterationInScenario}`;
  const body = {
    run_code: code,
    inputs: [0, 1, 2].map((i) => ({ lot_code: input(vu, i), quantity: 0.01, uom: 'kg' })),
    outputs: [{ lot_code: `${tag}-O-${vu}-${exec.vu.iterationInScenario}`, kind: 'MIX', product: 'Bench mix', quantity: 0.03, uom: 'kg' }],
  };
  const res = http.post(`${base}/api/production-runs`, JSON.stringify(body), {
    headers: { ...json.headers, 'Idempotency-Key': code },
    tags: { kind: 'write' },
  });
  if (record(res, 201, 'write')) created.add(1);
}

export default function () {
  if (Math.random() < readShare) read();
  else write();
}

export function handleSummary(data) {
  return summary(data);
}
