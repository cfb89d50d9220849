-- POST /v1/customers/{id}/balance/credit for a random seeded customer, each request with
-- its own Idempotency-Key (so every one books).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Idempotency-Key"] = "bench-" .. unique()
  local path = "/v1/customers/" .. seeded_customer() .. "/balance/credit"
  return wrk.format(nil, path, headers, '{"amount":5,"amount_units":"points","is_currency":false}')
end
