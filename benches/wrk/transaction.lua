-- POST /v1/transactions: a sale with its own key per request by a random seeded customer
-- (referred or not, as the seed made them), so the program's sale rules fire for many
-- different friends and referrers.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  local body = string.format(
    '{"customer":{"id":"%s"},"key":"bench-%s","amount":49.99,"action":"sale","product_type":"plan"}',
    seeded_customer(), unique())
  return wrk.format(nil, "/v1/transactions", nil, body)
end
