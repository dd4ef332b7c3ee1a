-- wrk script: POSTs the JSON bodies of a file (one per line) in turn; prints a JSON summary at the end.
-- Usage: wrk -s bench/wrk.lua URL -- BODIES_FILE PATH ["Header: value" ...]
local bodies, path, next_body = {}, "/", 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  path = args[2]
  for i = 3, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", path, headers, bodies[next_body])
end

function done(summary, latency, requests)
  local e = summary.errors
  -- status errors are the non-2xx answers (e.g. 429s when a rate limit is measured)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_s": %.3f, "errors": %d, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
