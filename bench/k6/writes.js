// POST /api/production-runs: each run consumes 0.01 kg from each of 3 input lots and makes
// one new output lot. Setup creates 3 fresh input lots per VU (POST /api/lots), so VUs never
// wait on each other's row locks; run codes and output lots are unique per VU and iteration.
// Env (besides lib.js): BASE, TOKEN, TAG (unique per bench run: codes are <TAG>-R-<vu>-<iter>).
// The `created` counter (201s) is compared by run.py with the runs found in PostgreSQL.
import http from 'k6/http';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { baseOptions, record, summary } from './lib.js';

export const options = baseOptions();

const base = __ENV.BASE || 'http://127.0.0.1:18000';
const tag = __ENV.TAG || `BW${Date.now()}`;
const slots = parseInt(__ENV.MAX_VUS || __ENV.VUS || '50', 10);
const json = { headers: { Authorization: `Bearer ${__ENV.TOKEN}`, 'Content-Type': 'application/json' } };
const created = new Counter('created');
const replayed = new Counter('replayed');

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

export default function () {
  const vu = exec.vu.idInTest;
  const code = `${tag}-R-${vu}-${exec.vu.iterationInScenario}`;
  const body = {
    run_code: code,
    inputs: [0, 1, 2].map((i) => ({ lot_code: input(vu, i), quantity: 0.01, uom: 'kg' })),
    outputs: [{ lot_code: `${tag}-O-${vu}-${exec.vu.iterationInScenario}`, kind: 'MIX', product: 'Bench mix', quantity: 0.03, uom: 'kg' }],
  };
  const res = http.post(`${base}/api/production-runs`, JSON.stringify(body), {
    headers: { ...json.headers, 'Idempotency-Key': code },
  });
  if (res.status === 200) replayed.add(1);
  if (record(res, 201)) created.add(1);
}

export function handleSummary(data) {
  return summary(data);
}
