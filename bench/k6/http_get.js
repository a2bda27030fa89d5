// GET one route: a fixed ROUTE, or ROUTE with "{lot}" replaced by a uniformly random lot of LOTS.
// Env (besides lib.js): BASE (http://127.0.0.1:18000), TOKEN (bearer; none when empty),
// ROUTE (/api/traceability/{lot}), LOTS (file, one lot code a line), EXPECT (status, 200).
import http from 'k6/http';
import { baseOptions, pick, record, summary } from './lib.js';

export const options = baseOptions();

const base = __ENV.BASE || 'http://127.0.0.1:18000';
const path = __ENV.ROUTE || '/api/health';
const expected = parseInt(__ENV.EXPECT || '200', 10);
const params = { headers: __ENV.TOKEN ? { Authorization: `Bearer ${__ENV.TOKEN}` } : {} };
const random = path.includes('{lot}');

export default function () {
  const url = base + (random ? path.replace('{lot}', encodeURIComponent(pick())) : path);
  record(http.get(url, params), expected);
}

export function handleSummary(data) {
  return summary(data);
}
