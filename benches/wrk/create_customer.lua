-- POST /v1/customers: a new customer per request (unique id and email), referred by a
-- random seeded customer (so requests do not all queue on one referrer's row).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  local id = "bench-" .. unique()
  local body = string.format(
    '{"id":"%s","email":"%s@bench.example.com","name":"Bench","surname":"Load","referring_customer":{"id":"%s"}}',
    id, id, seeded_customer())
  return wrk.format(nil, "/v1/customers", nil, body)
end
