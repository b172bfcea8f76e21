-- One wrk script for every bench scenario (see bench/run.py).
--   wrk ... -s bench/wrk/scenario.lua URL -- MODE EXPECTED_STATUS NTHREADS [ARGS...]
-- MODE
--   get                   GET the URL path (headers from -H, e.g. the session cookie)
--   bodies FILE           POST signed webhook bodies, one "signature<TAB>json" per line;
--                         thread k sends lines k, k+n, ... once each, then wraps (counted)
--   checkout PREFIX FORM FILE
--                         POST FORM plus a unique 32-char checkout_token per request, each
--                         as the next shopper of FILE ("cookie<TAB>csrf<TAB>address" lines,
--                         split between threads like the bodies; wraps, counted)
-- Every answer whose status is not EXPECTED_STATUS is counted; done() prints one
-- machine-readable line: BENCH_JSON {...}.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

unexpected = 0
wrapped = 0
first_unexpected = ""

local mode, expected, nthreads
local prepared = nil
local bodies, nbodies, cursor = {}, 0, 0
local prefix, form, seq = "", "", 0
local shoppers, nshoppers = {}, 0

function init(args)
  mode = args[1]
  expected = tonumber(args[2])
  nthreads = tonumber(args[3])
  if mode == "bodies" then
    local file = assert(io.open(args[4], "r"))
    local line_no = 0
    for line in file:lines() do
      if line_no % nthreads == tid then
        local tab = string.find(line, "\t", 1, true)
        nbodies = nbodies + 1
        bodies[nbodies] = wrk.format("POST", wrk.path, {
          ["Content-Type"] = "application/json",
          ["Stripe-Signature"] = string.sub(line, 1, tab - 1),
        }, string.sub(line, tab + 1))
      end
      line_no = line_no + 1
    end
    file:close()
    assert(nbodies > 0, "no bodies for thread " .. tid)
  elseif mode == "checkout" then
    prefix = args[4]
    form = args[5]
    local file = assert(io.open(args[6], "r"))
    local line_no = 0
    for line in file:lines() do
      if line_no % nthreads == tid then
        local cookie, csrf, address = string.match(line, "^([^\t]+)\t([^\t]+)\t([^\t]+)$")
        nshoppers = nshoppers + 1
        shoppers[nshoppers] = {cookie = cookie, csrf = csrf, address = address}
      end
      line_no = line_no + 1
    end
    file:close()
    assert(nshoppers > 0, "no shoppers for thread " .. tid)
  else
    prepared = wrk.format("GET", wrk.path)
  end
end

function request()
  if mode == "bodies" then
    cursor = cursor + 1
    if cursor > nbodies then
      cursor = 1
      wrapped = wrapped + 1
    end
    return bodies[cursor]
  elseif mode == "checkout" then
    cursor = cursor + 1
    if cursor > nshoppers then
      cursor = 1
      wrapped = wrapped + 1
    end
    local shopper = shoppers[cursor]
    seq = seq + 1
    local token = string.format("%s%02d%010d", prefix, tid, seq)
    return wrk.format("POST", wrk.path, {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["Cookie"] = "session=" .. shopper.cookie,
      ["X-Forwarded-For"] = shopper.address,
    }, form .. "&csrf_token=" .. shopper.csrf .. "&checkout_token=" .. token)
  end
  return prepared
end

function response(status, headers, body)
  if status ~= expected then
    unexpected = unexpected + 1
    if first_unexpected == "" then
      first_unexpected = status .. " " .. string.gsub(string.sub(body or "", 1, 240), "[^%w %.,:;_/%-]", "?")
    end
  end
end

function done(summary, latency, requests)
  local total_unexpected, total_wrapped, first = 0, 0, ""
  for _, thread in ipairs(threads) do
    total_unexpected = total_unexpected + (thread:get("unexpected") or 0)
    total_wrapped = total_wrapped + (thread:get("wrapped") or 0)
    local text = thread:get("first_unexpected") or ""
    if first == "" and text ~= "" then first = text end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"unexpected":%d,"wrapped":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"first_unexpected":"%s"}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    total_unexpected, total_wrapped,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, first))
end
