// Shared by the bench's k6 scripts: the scenario from env vars, lot lists, the summary file.
//
// Env: MODE=rate (constant-arrival-rate: RATE per second, VUS pre-allocated, MAX_VUS at most)
//      or MODE=vus (constant-vus: VUS closed-loop virtual users = connections, saturation);
//      DURATION (e.g. 10s); SUMMARY (where handleSummary writes the JSON; run.py reads it).
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';

export const latency = new Trend('lat', true); // per-request latency, ms (float, sub-ms precision)
export const ok = new Counter('ok');
export const errors = new Counter('errors');

export function scenario() {
  const duration = __ENV.DURATION || '10s';
  const vus = parseInt(__ENV.VUS || '50', 10);
  if ((__ENV.MODE || 'rate') === 'vus') {
    return { executor: 'constant-vus', vus, duration, gracefulStop: '3s' };
  }
  return {
    executor: 'constant-arrival-rate',
    rate: parseInt(__ENV.RATE || '100', 10),
    timeUnit: '1s',
    duration,
    preAllocatedVUs: vus,
    maxVUs: parseInt(__ENV.MAX_VUS || String(vus), 10),
    gracefulStop: '3s',
  };
}

// Errors are counted by status (HTTP code, or grpc<code>); a threshold that always holds makes
// k6 put each tagged count in the summary, where run.py reads it.
const STATUSES = ['0', '400', '401', '403', '404', '409', '413', '422', '429', '500', '502', '503', '504'];
const GRPC_CODES = ['none', 'grpc1', 'grpc2', 'grpc3', 'grpc4', 'grpc5', 'grpc7', 'grpc8', 'grpc9', 'grpc13', 'grpc14', 'grpc16'];

export function baseOptions() {
  const thresholds = {};
  for (const status of [...STATUSES, ...GRPC_CODES]) {
    thresholds[`errors{status:${status}}`] = ['count>=0'];
  }
  return {
    scenarios: { main: scenario() },
    thresholds,
    summaryTrendStats: ['count', 'avg', 'min', 'med', 'p(50)', 'p(95)', 'p(99)', 'max'],
    discardResponseBodies: true,
    setupTimeout: '120s',
    teardownTimeout: '60s',
  };
}

// One lot code a line (run.py writes it from the generated lots.csv); empty when LOTS is unset.
export const lots = new SharedArray('lots', () =>
  __ENV.LOTS ? open(__ENV.LOTS).split('\n').filter((l) => l.length > 0) : [],
);

export function pick() {
  return lots[Math.floor(Math.random() * lots.length)];
}

export function record(res, expected) {
  latency.add(res.timings.duration);
  if (res.status === expected) {
    ok.add(1);
    return true;
  }
  errors.add(1, { status: String(res.status) });
  return false;
}

export function summary(data) {
  const out = {};
  out[__ENV.SUMMARY || 'summary.json'] = JSON.stringify(data);
  return out;
}
