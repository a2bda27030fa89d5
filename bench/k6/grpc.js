// One unary gRPC method straight at a service (no gateway), through k6/net/grpc.
// Env (besides lib.js): ADDR (127.0.0.1:15052), IMPORT_PATHS (comma-separated proto roots),
// PROTO (file under them), METHOD (package.Service/Method), BODY (JSON request; "{lot}" in it
// becomes a uniformly random lot of LOTS), TOKEN (sent as `authorization: Bearer` metadata).
// Each VU keeps one connection (HTTP/2 channel) for the whole test.
import grpc from 'k6/net/grpc';
import { baseOptions, errors, latency, ok, pick, summary } from './lib.js';

export const options = baseOptions();

const client = new grpc.Client();
client.load((__ENV.IMPORT_PATHS || '').split(',').filter(Boolean), __ENV.PROTO);
const addr = __ENV.ADDR || '127.0.0.1:15052';
const method = __ENV.METHOD;
const template = __ENV.BODY || '{}';
const random = template.includes('{lot}');
const params = { metadata: __ENV.TOKEN ? { authorization: `Bearer ${__ENV.TOKEN}` } : {}, timeout: '5s' };
let connected = false;

export default function () {
  if (!connected) {
    client.connect(addr, { plaintext: true, timeout: '5s' });
    connected = true;
  }
  const body = JSON.parse(random ? template.replace('{lot}', pick()) : template);
  const started = Date.now();
  const res = client.invoke(method, body, params);
  if (res && res.status === grpc.StatusOK) {
    ok.add(1);
  } else {
    errors.add(1, { status: res ? `grpc${res.status}` : 'none' });
  }
  // grpc_req_duration (k6's own, sub-ms) is the latency run.py reports; this is a fallback.
  latency.add(Date.now() - started);
}

export function teardown() {}

export function handleSummary(data) {
  return summary(data);
}
