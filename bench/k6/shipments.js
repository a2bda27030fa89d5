// POST /api/shipments (issue 13): each shipment sends 0.01 kg of a received lot to a customer's
// site. Setup records a supplier, a customer with a site, our plant and one received lot per VU,
// so VUs never wait on each other's row locks (the lot is locked while its shipment is checked).
// Env (besides lib.js): BASE, TOKEN, TAG (unique per bench run: documents are <TAG>-S-<vu>-<iter>).
// The `created` counter (201s) is compared by run.py with the shipments found in PostgreSQL.
import http from 'k6/http';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { baseOptions, record, summary } from './lib.js';

export const options = baseOptions();

const base = __ENV.BASE || 'http://127.0.0.1:18000';
const tag = __ENV.TAG || `BS${Date.now()}`;
const slots = parseInt(__ENV.MAX_VUS || __ENV.VUS || '50', 10);
const json = { headers: { Authorization: `Bearer ${__ENV.TOKEN}`, 'Content-Type': 'application/json' } };
const created = new Counter('created');
const replayed = new Counter('replayed');

const lot = (vu) => `${tag}-L-${vu}`;

function post(path, body) {
  const res = http.post(`${base}${path}`, JSON.stringify(body), json);
  if (res.status !== 201) {
    throw new Error(`POST ${path}: HTTP ${res.status} ${res.body}`);
  }
}

export function setup() {
  post('/api/partners', { code: `${tag}-SUP`, name: 'Bench supplier', roles: ['supplier'] });
  post('/api/partners', { code: `${tag}-CUS`, name: 'Bench customer', roles: ['customer'] });
  post('/api/locations', { code: `${tag}-SUP-SITE`, name: 'Bench supplier site', partner_code: `${tag}-SUP` });
  post('/api/locations', { code: `${tag}-CUS-DC`, name: 'Bench customer DC', partner_code: `${tag}-CUS` });
  post('/api/locations', { code: `${tag}-PLANT`, name: 'Bench plant', partner_code: '' });
  const requests = [];
  for (let vu = 1; vu <= slots; vu++) {
    const body = {
      lot_code: lot(vu), product: 'Bench salt', quantity: 1000000, uom: 'kg', supplier_code: `${tag}-SUP`,
      ship_from_location_code: `${tag}-SUP-SITE`, receiving_location_code: `${tag}-PLANT`,
      received_at: '2026-12-01T06:00:00Z', supplier_lot_code: lot(vu), document_type: 'PO',
      document_number: `PO-${lot(vu)}`,
    };
    requests.push(['POST', `${base}/api/receipts`, JSON.stringify(body), json]);
  }
  for (let start = 0; start < requests.length; start += 25) {
    for (const res of http.batch(requests.slice(start, start + 25))) {
      if (res.status !== 201) {
        throw new Error(`recording the received lots: HTTP ${res.status} ${res.body}`);
      }
    }
  }
}

export default function () {
  const vu = exec.vu.idInTest;
  const code = `${tag}-S-${vu}-${exec.vu.iterationInScenario}`;
  const body = {
    lot_code: lot(vu), quantity: 0.01, uom: 'kg', customer_code: `${tag}-CUS`,
    ship_to_location_code: `${tag}-CUS-DC`, ship_from_location_code: `${tag}-PLANT`,
    shipped_at: '2026-12-02T06:00:00Z', document_type: 'ASN', document_number: code,
  };
  const res = http.post(`${base}/api/shipments`, JSON.stringify(body), {
    headers: { ...json.headers, 'Idempotency-Key': code },
  });
  if (res.status === 200) replayed.add(1);
  if (record(res, 201)) created.add(1);
}

export function handleSummary(data) {
  return summary(data);
}
