-- wrk script for bench/run.py: a fixed path (the URL's), or PATH with "{lot}" replaced per
-- request by a uniformly random lot code from the file LOTS; done() prints one JSON line.
local lots_file = os.getenv("LOTS")
local template = os.getenv("PATH_TEMPLATE")
local codes = {}
local n = 0

if lots_file and lots_file ~= "" and template and template ~= "" then
  for line in io.lines(lots_file) do
    if #line > 0 then
      n = n + 1
      codes[n] = line
    end
  end
end

-- Each thread its own random sequence: setup() (main state) numbers the threads, init() (the
-- thread's state) reads that number as the global thread_id.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + 7919 * (thread_id or 0))
end

if n > 0 then
  request = function()
    local code = codes[math.random(n)]
    return wrk.format("GET", (template:gsub("{lot}", code)))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
