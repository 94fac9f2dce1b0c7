-- wrk script of benchmarks/side_by_side.py:
--   wrk ... -s benchmarks/wrk_post.lua http://127.0.0.1:PORT/path -- tk_TOKEN
-- POSTs "{}" with the tenant token, counts the requests sent and the 2xx answers, and
-- collects the RateLimit field's remaining quota (r=) of every 2xx answer: two successful
-- calls charged once each never see the same value. Prints one line, "BENCH_JSON {...}".

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.body = "{}"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.headers["Content-Type"] = "application/json"
  prepared = wrk.format()
  sent, ok, other, repeated = 0, 0, 0, 0
  seen = {}
end

function request()
  sent = sent + 1
  return prepared
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    local field = headers["RateLimit"]
    local remaining = field and tonumber(string.match(field, ";r=(%d+)"))
    if remaining then
      if seen[remaining] then
        repeated = repeated + 1
      else
        seen[remaining] = true
      end
    end
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local sent_all, ok_all, other_all, repeated_all, charged = 0, 0, 0, 0, 0
  local least = -1
  local merged = {}
  for _, thread in ipairs(threads) do
    sent_all = sent_all + thread:get("sent")
    ok_all = ok_all + thread:get("ok")
    other_all = other_all + thread:get("other")
    repeated_all = repeated_all + thread:get("repeated")
    for remaining, _ in pairs(thread:get("seen")) do
      if merged[remaining] then
        repeated_all = repeated_all + 1
      else
        merged[remaining] = true
        charged = charged + 1
        if least < 0 or remaining < least then
          least = remaining
        end
      end
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %.0f, "responses": %.0f, "sent": %.0f, "ok": %.0f, '
      .. '"other": %.0f, "charged": %.0f, "repeated": %.0f, "least_remaining": %.0f, '
      .. '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, '
      .. '"timeout": %.0f}, "latency_us": {"mean": %.1f, "p50": %.0f, "p90": %.0f, '
      .. '"p99": %.0f, "max": %.0f}}\n',
    summary.duration, summary.requests, sent_all, ok_all, other_all, charged, repeated_all,
    least, errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
