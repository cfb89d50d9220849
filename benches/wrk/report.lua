-- Shared by every scenario script: the request headers from the environment, a per-thread
-- number for unique values, and one machine-readable summary line at the end.
--
--   BENCH_COOKIE   the dashboard session cookie ("referdesk_session=...")
--   BENCH_TOKEN    an API token (sent as "Authorization: Bearer ...")
--   BENCH_RUN      a string unique to this benchmark run (ids, idempotency keys)

local threads = {}
local counter = 0

function setup(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_number = thread_number or 0
  run_id = os.getenv("BENCH_RUN") or tostring(os.time())
  math.randomseed(os.time() * 1000 + thread_number)
  local cookie = os.getenv("BENCH_COOKIE")
  if cookie and cookie ~= "" then
    wrk.headers["Cookie"] = cookie
  end
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

-- A value never used before in this run: run id, thread and a counter.
function unique()
  counter = counter + 1
  return run_id .. "-" .. thread_number .. "-" .. counter
end

-- One of the seeded customers, at random (`seed-1` .. `seed-N`).
-- The numbers of seeded customers that are not active (read once per thread).
local deleted = nil
local function load_deleted()
  deleted = {}
  local path = os.getenv("BENCH_DELETED_FILE")
  local file = path and io.open(path, "r")
  if file then
    for line in file:lines() do deleted[tonumber(line)] = true end
    file:close()
  end
end

-- A random active seeded customer's id.
function seeded_customer()
  if deleted == nil then load_deleted() end
  local seeded = tonumber(os.getenv("BENCH_SEEDED") or "1000000")
  local number
  repeat number = math.random(1, seeded) until not deleted[number]
  return "seed-" .. number
end

function done(summary, latency, requests)
  local errors = summary.errors
  local failed = errors.status + errors.connect + errors.read + errors.write + errors.timeout
  io.write(string.format("RESULT requests=%d seconds=%.3f rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    failed, errors.status))
end
