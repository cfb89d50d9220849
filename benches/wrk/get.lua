-- GET the URL given to wrk, with the session cookie or the API token.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
