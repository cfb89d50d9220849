#!/usr/bin/env bash
# Referdesk load test: a million customers, every page and API scenario of BENCHMARKS.md.
#
#   benches/loadtest.sh
#
# It builds the release binary; starts a private PostgreSQL under .referdesk/bench/ (or uses
# DATABASE_URL, which should name a database of its own, e.g. .../referdesk_bench); seeds
# 1,000,000 customers with `referdesk seed` unless the program already holds them (so reruns
# start in seconds); starts the release server on a free port; creates an admin and an API
# token; signs in with curl; then drives each scenario with wrk from this process (fixed
# concurrency: 8 connections, 2 threads) and prints requests/s, p50/p99 latency, errors,
# the database time per request (planning and execution, from pg_stat_statements when
# available), the server's own CPU
# time per request, and the server's peak memory (VmHWM). Needs: cargo, curl, psql, wrk (Debian: apt-get install wrk), and for the
# private cluster the PostgreSQL server binaries (initdb, pg_ctl) with pg_trgm.
#
# Settings (environment):
#   DATABASE_URL        use this database instead of the private cluster
#   BENCH_DIR           where the private cluster and the logs live (.referdesk/bench)
#   BENCH_DURATION      seconds per scenario (10)
#   BENCH_RUNS          run every scenario this many times and print the medians too (1)
#   BENCH_CUSTOMERS     customers to seed (1000000)
#   BENCH_SEED          the seed's --seed, so that every fresh seed holds the same data (1)
#   BENCH_ONLY          run only the scenarios whose name contains this text
#   BENCH_BIN           benchmark this binary instead of building one (e.g. an older build)
#   BENCH_REWARDS       rewards in the review queue (300000), inserted set-based once
#   BENCH_RELEASE       due rewards the hold release credits, timed (100000; 0 skips it)
#   BENCH_WEBHOOKS      webhook deliveries to a local receiver, timed (20000; 0 skips the
#                       webhook scenarios); needs python3 for the receiver
#   BENCH_TRANSPORT     how the server reaches the private cluster: socket (the default,
#                       as Referdesk's embedded cluster) or tcp (127.0.0.1)
#   REFERDESK_POOL_SIZE, REFERDESK_WORKERS   passed to the server as usual
#
# Remove the seeded data with: rm -rf .referdesk/bench

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$ROOT/.referdesk/bench}
# Absolute: PostgreSQL resolves its socket directory from its own data directory.
mkdir -p "$BENCH_DIR" && BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DURATION=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-1}
CUSTOMERS=${BENCH_CUSTOMERS:-1000000}
SEED=${BENCH_SEED:-1}
ONLY=${BENCH_ONLY:-}
CONNECTIONS=8
THREADS=2
RUN_ID=$(date +%Y%m%d%H%M%S)-$$
LOG_DIR=$BENCH_DIR/runs/$RUN_ID
export BENCH_LUA_DIR=$ROOT/benches/wrk

for tool in cargo curl psql wrk; do
    command -v "$tool" >/dev/null || { echo "loadtest: $tool is required (wrk: apt-get install wrk)" >&2; exit 1; }
done
mkdir -p "$LOG_DIR"
say() { echo "loadtest: $*" >&2; }

SERVER_PID=
PG_STARTED=
PG_DIR=$BENCH_DIR/pg
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
RECEIVER_PID=
cleanup() {
    if [ -n "$RECEIVER_PID" ] && kill -0 "$RECEIVER_PID" 2>/dev/null; then
        kill "$RECEIVER_PID" 2>/dev/null || true
        wait "$RECEIVER_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "$PG_STARTED" ]; then
        as_postgres "$PG_BIN/pg_ctl" stop -m fast -w -D "$PG_DIR/data" >/dev/null 2>&1 || true
        say "private PostgreSQL stopped (data kept in $PG_DIR; rm -rf $BENCH_DIR to remove it)"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every byte but letters and digits as %XX (a socket directory as a URL's host).
percent_encode() {
    local LC_ALL=C text=$1 out= char i
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        case $char in
            [A-Za-z0-9]) out+=$char ;;
            *) printf -v char '%%%02X' "'$char"; out+=$char ;;
        esac
    done
    echo "$out"
}
port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 20000))
        if port_is_free "$port"; then echo "$port"; return; fi
    done
}

# --- 1. the release binary ------------------------------------------------------------
if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    say "building the release binary"
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/referdesk
fi

# --- 2. the database --------------------------------------------------------------------
if [ -z "${DATABASE_URL:-}" ]; then
    PG_BIN=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
    mkdir -p "$PG_DIR"
    if [ "$(id -u)" = 0 ]; then chown -R postgres: "$PG_DIR"; fi
    if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
        say "initialising a private PostgreSQL in $PG_DIR"
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PG_DIR/password"
        chmod 600 "$PG_DIR/password"
        if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR/password"; fi
        as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -E UTF8 --locale=C \
            --auth=scram-sha-256 --pwfile="$PG_DIR/password" >"$PG_DIR/initdb.log"
    fi
    if as_postgres "$PG_BIN/pg_ctl" status -D "$PG_DIR/data" >/dev/null 2>&1; then
        # Left running (by hand, or by a run that was killed): use it, leave it running.
        PG_PORT=$(sed -n 4p "$PG_DIR/data/postmaster.pid")
        say "using the private PostgreSQL already running on port $PG_PORT"
    else
        PG_PORT=$(free_port)
        # The settings of Referdesk's own embedded cluster, plus pg_stat_statements so the
        # benchmark can show how much of each request is database time.
        as_postgres "$PG_BIN/pg_ctl" start -w -t 60 -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" \
            -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR -c max_connections=200 \
                -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on" >/dev/null
        PG_STARTED=1
    fi
    if [ "${BENCH_TRANSPORT:-socket}" = tcp ]; then
        DATABASE_URL="postgres://postgres:$(cat "$PG_DIR/password")@127.0.0.1:$PG_PORT/referdesk_bench"
    else
        # Over the Unix-domain socket, as Referdesk's embedded cluster is reached.
        DATABASE_URL="postgres://postgres:$(cat "$PG_DIR/password")@$(percent_encode "$PG_DIR"):$PG_PORT/referdesk_bench"
    fi
fi
export DATABASE_URL
export REFERDESK_DATA_DIR=$BENCH_DIR/data
sql() { psql "$DATABASE_URL" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"; }

"$BIN" migrate 2>"$LOG_DIR/migrate.log"
PROGRAM_ID=$(sql "SELECT id FROM programs WHERE slug = 'default'")
SEEDED=$(sql "SELECT count(*) FROM customers WHERE program_id = $PROGRAM_ID AND external_id LIKE 'seed-%'")
if [ "$SEEDED" -eq 0 ]; then
    say "seeding $CUSTOMERS customers (once; later runs reuse them)"
    "$BIN" seed --program default --customers "$CUSTOMERS" --seed "$SEED" 2>&1 | tail -n 2 >&2
    SEEDED=$CUSTOMERS
elif [ "$SEEDED" -lt "$CUSTOMERS" ]; then
    say "the database holds $SEEDED seeded customers, not $CUSTOMERS; remove $BENCH_DIR (or set BENCH_CUSTOMERS=$SEEDED)"
    exit 1
fi
export BENCH_SEEDED=$SEEDED
# The demo data deletes about 1% of its customers; API creates and credits name active ones
# only (a deleted referrer or customer is a 422), so their numbers are handed to wrk to skip.
export BENCH_DELETED_FILE=$LOG_DIR/deleted-seed-numbers.txt
sql "SELECT substr(external_id, 6) FROM customers WHERE program_id = $PROGRAM_ID
     AND external_id LIKE 'seed-%' AND status <> 'active'" >"$BENCH_DELETED_FILE"
# Each API create run adds ~10,000 customers for good; the program grows, and with it every
# index a signup writes to. Say so, so that runs are compared at a similar size.
HELD=$(sql "SELECT count(*) FROM customers WHERE program_id = $PROGRAM_ID")
ADDED=$((HELD - SEEDED))
if [ "$ADDED" -gt $((SEEDED / 10)) ]; then
    say "the program holds $ADDED customers from earlier API create runs besides the $SEEDED seeded ones: for figures comparable with a fresh seed, rm -rf $BENCH_DIR"
fi
# Earlier runs' writes leave pages that autovacuum has not reached yet; vacuum them so each
# run starts from the same settled state (quick when little changed).
sql "VACUUM (ANALYZE) customers" 2>/dev/null || say "could not VACUUM customers (not the owner?)"
sql "VACUUM (ANALYZE) referral_standings" 2>/dev/null || true
# Seeding, vacuuming and each run's writes end with PostgreSQL writing their pages out (a
# checkpoint, spread over minutes); a CHECKPOINT before each run writes them out first, so
# that no run measures the setup's or an earlier run's writing. (The writes of a run's own
# create and credit scenarios still reach the scenarios after them, as in production: the
# "ckpt" column shows how much checkpoint writing each scenario shared the machine with.)
CHECKPOINTS=1
checkpoint() {
    if [ "$CHECKPOINTS" = 1 ] && ! sql "CHECKPOINT" 2>/dev/null; then
        say "could not CHECKPOINT (needs a superuser or pg_checkpoint); runs may measure earlier writes"
        CHECKPOINTS=0
    fi
}
checkpoint_pages() { sql "SELECT buffers_checkpoint FROM pg_stat_bgwriter"; }
STATEMENTS=$(sql "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
if [ "$STATEMENTS" = 1 ] && sql "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>/dev/null \
    && sql "SELECT pg_stat_statements_reset()" >/dev/null 2>&1; then
    STATEMENTS=1
else
    STATEMENTS=0
    say "pg_stat_statements is not loaded: the database-time column stays empty"
fi

# The statements of the scenario, the costliest first; with a request count, first how many
# statements each request ran (calls / requests).
statement_report() {
    [ "$STATEMENTS" = 1 ] || return 0
    if [ -n "${1:-}" ]; then
        sql "SELECT round(sum(s.calls)::numeric / $1, 1) || ' statements per request (' || sum(s.calls) || ' calls, $1 requests)'
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database()
             WHERE s.query NOT ILIKE '%pg_stat_statements%'"
    fi
    sql "SELECT round((s.total_exec_time + s.total_plan_time)::numeric, 1) || ' ms total ('
                || round(s.total_plan_time::numeric, 1) || ' planning), ' || s.calls || ' calls, '
                || round(s.mean_exec_time::numeric, 3) || ' ms mean run: ' || left(regexp_replace(s.query, '\s+', ' ', 'g'), 400)
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database()
         WHERE s.query NOT ILIKE '%pg_stat_statements%'
         ORDER BY s.total_exec_time + s.total_plan_time DESC LIMIT 30"
}

# --- 3. the server, a member and a token ------------------------------------------------
PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
# Webhooks may go to the local receiver (http, loopback) of the webhook scenarios.
REFERDESK_BIND=127.0.0.1:$PORT REFERDESK_PUBLIC_URL=$BASE REFERDESK_API_RATE=1000000000 \
    REFERDESK_REWARD_RELEASE_SECS=${REFERDESK_REWARD_RELEASE_SECS:-1} \
    REFERDESK_WEBHOOK_ALLOW_HTTP=1 REFERDESK_WEBHOOK_ALLOW_PRIVATE=1 \
    "$BIN" serve >"$LOG_DIR/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { say "the server did not start; see $LOG_DIR/server.log"; exit 1; }
    sleep 0.2
done

EMAIL="bench-$RUN_ID@bench.example.com"
PASSWORD="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
REFERDESK_PASSWORD=$PASSWORD "$BIN" user create --email "$EMAIL" --name "Load test" --role admin \
    >/dev/null 2>>"$LOG_DIR/cli.log"
TOKEN=$("$BIN" token create --program default --name "loadtest $RUN_ID" 2>>"$LOG_DIR/cli.log")

JAR=$LOG_DIR/cookies.txt
CSRF=$(curl -fsS -c "$JAR" -b "$JAR" "$BASE/login" | sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' | head -1)
STATUS=$(curl -sS -o /dev/null -w '%{http_code}' -c "$JAR" -b "$JAR" \
    --data-urlencode "csrf_token=$CSRF" --data-urlencode "email=$EMAIL" \
    --data-urlencode "password=$PASSWORD" --data-urlencode "next=/" "$BASE/login")
SESSION=$(awk '$6 == "referdesk_session" { print $7 }' "$JAR")
if [ "$STATUS" != 303 ] || [ -z "$SESSION" ]; then
    say "signing in failed (HTTP $STATUS)"
    exit 1
fi
export BENCH_COOKIE="referdesk_session=$SESSION" BENCH_TOKEN=$TOKEN
curl -fsS -o /dev/null -H "Cookie: $BENCH_COOKIE" "$BASE/customers" \
    || { say "the signed-in list page failed"; exit 1; }

# --- 4. what the scenarios look at ------------------------------------------------------
# (From the referral order's own table; a build older than it has the order on customers.)
TOP_KEY=$(sql "SELECT c.key FROM referral_standings s JOIN customers c ON c.id = s.customer_id
               WHERE s.program_id = $PROGRAM_ID AND s.status = 'active'
               ORDER BY s.referrals_count DESC, s.customer_id DESC LIMIT 1" 2>/dev/null \
    || sql "SELECT key FROM customers WHERE program_id = $PROGRAM_ID AND status = 'active'
            ORDER BY referrals_count DESC, id DESC LIMIT 1")
TYPICAL_KEY=$(sql "SELECT key FROM customers WHERE program_id = $PROGRAM_ID AND external_id = 'seed-$((SEEDED / 2 + 7))'")
EMAIL_EXACT=$(sql "SELECT email FROM customers WHERE program_id = $PROGRAM_ID AND external_id = 'seed-$((SEEDED / 3 + 1))'")
# Part of someone's address as staff would type it ("ada.12345"), matching a handful.
EMAIL_PART=$(sql "SELECT left(email, position('@' in email) - 2) FROM customers
                  WHERE program_id = $PROGRAM_ID AND external_id = 'seed-$((SEEDED / 4 + 3))'")
# A creation-date range holding about 100,000 customers, for the export.
read -r EXPORT_FROM EXPORT_TO < <(sql "SELECT to_char(d, 'YYYY-MM-DD'), to_char(d + 36, 'YYYY-MM-DD')
    FROM (SELECT (min(created_at) AT TIME ZONE 'UTC')::date + 120 AS d FROM customers
          WHERE program_id = $PROGRAM_ID AND external_id LIKE 'seed-%') first_day" | tr '|' ' ')
# Page 5,000 as the pager's links reach it: the Next link of page 4,999 (keyset cursor).
PAGE_5000_NEXT=$(curl -fsS -H "Cookie: $BENCH_COOKIE" "$BASE/customers?page=4999" \
    | sed -n 's/.*<a href="\([^"]*\)" rel="next".*/\1/p' | head -1 | sed 's/&#38;/\&/g')
PAGE_5000_NEXT=${PAGE_5000_NEXT:-/customers?page=5000}
enc() { local value; value=$(printf '%s' "$1" | od -An -tx1 | tr -d ' \n' | sed 's/../%&/g'); echo "$value"; }

# --- 4b. rewards: the review queue and the hold release --------------------------------
# BENCH_REWARDS rewards of one rule for the seeded referrals (several per friend when there
# are fewer referred friends), inserted set-based once: 70% pending (5% of them flagged),
# 15% denied, 15% voided, created over the last 100 days.
REWARDS_WANTED=${BENCH_REWARDS:-300000}
RELEASE_COUNT=${BENCH_RELEASE:-100000}
bench_rule() {
    sql "INSERT INTO reward_rules (program_id, name, trigger, amount_kind, referrer_amount, amount_units,
                                   is_currency, hold_days, needs_approval)
         SELECT $PROGRAM_ID, '$1', 'customer_created', 'fixed', 10, 'USD', true, 14, true
         WHERE NOT EXISTS (SELECT 1 FROM reward_rules WHERE program_id = $PROGRAM_ID AND name = '$1')" >/dev/null
    sql "SELECT id FROM reward_rules WHERE program_id = $PROGRAM_ID AND name = '$1'"
}
QUEUE_RULE=$(bench_rule "Bench: 10 USD per referral")
HAVE_REWARDS=$(sql "SELECT count(*) FROM rewards WHERE rule_id = $QUEUE_RULE")
if [ "$HAVE_REWARDS" -lt "$REWARDS_WANTED" ]; then
    say "inserting $((REWARDS_WANTED - HAVE_REWARDS)) rewards for the review queue"
    started=$(date +%s.%N)
    sql "WITH friends AS (
             SELECT id, referrer_id, row_number() OVER (ORDER BY id) AS n FROM customers
             WHERE program_id = $PROGRAM_ID AND referrer_id IS NOT NULL AND status = 'active'
             LIMIT $REWARDS_WANTED),
         rounds AS (SELECT generate_series(1, ceil($REWARDS_WANTED::numeric / greatest((SELECT count(*) FROM friends), 1))::int) AS g),
         rows AS (SELECT f.id, f.referrer_id, f.n, r.g, (f.n * 7919 + r.g * 104729) % 100 AS pick
                  FROM friends f, rounds r
                  ORDER BY r.g, f.n OFFSET $HAVE_REWARDS LIMIT $((REWARDS_WANTED - HAVE_REWARDS)))
         INSERT INTO rewards (program_id, rule_id, rule_snapshot, beneficiary_id, role, referrer_id, friend_id,
                              event_key, amount, amount_units, is_currency, status, hold_until, needs_approval,
                              flags, deny_reason, void_reason, created_at)
         SELECT $PROGRAM_ID, $QUEUE_RULE, jsonb_build_object('id', $QUEUE_RULE, 'name', 'Bench: 10 USD per referral', 'version', 1),
                referrer_id, 'referrer', referrer_id, id, 'bench:' || id || ':' || g, 10, 'USD', true,
                CASE WHEN pick < 70 THEN 'pending' WHEN pick < 85 THEN 'denied' ELSE 'voided' END,
                now() + interval '14 days' - (pick % 20) * interval '1 day', true,
                CASE WHEN pick < 70 AND pick % 20 = 3 THEN '{same_email}'::text[] ELSE '{}' END,
                CASE WHEN pick BETWEEN 70 AND 84 THEN 'bench' END,
                CASE WHEN pick >= 85 THEN 'bench' END,
                now() - ((n * 13 + g * 7) % 8640000) * interval '1 second'
         FROM rows" >/dev/null
    sql "ANALYZE rewards" >/dev/null
    say "rewards inserted in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
fi

# The hold release: BENCH_RELEASE approved rewards fall due at once; the server's release
# thread (every second here) credits them. Timed from the insert's commit to the last
# credit; then the rewards are deleted again (their ledger entries stay) so that reruns
# see the same queue.
RELEASE_SECONDS=
if [ "$RELEASE_COUNT" -gt 0 ] && { [ -z "$ONLY" ] || [[ "rewards hold release" == *"$ONLY"* ]]; }; then
    RELEASE_RULE=$(bench_rule "Bench: hold release")
    sql "DELETE FROM rewards WHERE rule_id = $RELEASE_RULE" >/dev/null
    say "releasing $RELEASE_COUNT due rewards"
    sql "INSERT INTO rewards (program_id, rule_id, rule_snapshot, beneficiary_id, role, referrer_id, friend_id,
                              event_key, amount, amount_units, is_currency, status, hold_until, needs_approval,
                              decided_at)
         SELECT $PROGRAM_ID, $RELEASE_RULE, jsonb_build_object('id', $RELEASE_RULE, 'name', 'Bench: hold release', 'version', 1),
                referrer_id, 'referrer', referrer_id, id, 'release:$RUN_ID:' || id || ':' || g, 2.5, 'USD', true,
                'approved', now() - interval '1 minute', true, now()
         FROM (SELECT id, referrer_id FROM customers
               WHERE program_id = $PROGRAM_ID AND referrer_id IS NOT NULL AND status = 'active'
               ORDER BY id DESC LIMIT $RELEASE_COUNT) friends,
              generate_series(1, 100) AS g
         ORDER BY g, id LIMIT $RELEASE_COUNT" >/dev/null
    # From the insert's commit (the release cannot start before it; the insert itself takes
    # as long as the release on a slow machine); the rewards left are read from the kept
    # tallies, so that polling does not count the rule's rewards over and over.
    started=$(date +%s.%N)
    while [ "$(sql "SELECT coalesce(sum(rewards), 0) FROM reward_tallies WHERE rule_id = $RELEASE_RULE AND status = 'approved'")" != 0 ]; do
        sleep 0.2
    done
    RELEASE_SECONDS=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    RELEASED=$(sql "SELECT count(*) FROM rewards WHERE rule_id = $RELEASE_RULE AND status = 'credited'")
    say "hold release: $RELEASED rewards credited in $RELEASE_SECONDS s (target < 30 s)"
    sql "DELETE FROM rewards WHERE rule_id = $RELEASE_RULE" >/dev/null
fi
# Page 4,000 of the pending queue as its pager reaches it: the Next link of page 3,999.
QUEUE_FAR_NEXT=$(curl -fsS -H "Cookie: $BENCH_COOKIE" "$BASE/rewards?page=3999" \
    | sed -n 's/.*<a href="\([^"]*\)" rel="next".*/\1/p' | head -1 | sed 's/&#38;/\&/g; s/&amp;/\&/g')
QUEUE_FAR_NEXT=${QUEUE_FAR_NEXT:-/rewards?page=4000}

# Three active sale rules for the transactions scenario (created once; reruns find them):
# the friend's first sale pays the referrer 10 USD after a 14-day hold; every sale pays the
# referrer 5 % (at most 20 USD, at most 50 rewards per referrer a month); every "plan" sale
# pays the friend 2 USD. They lock the friend's row (first sale) and (rule, referrer).
if [ "$(sql "SELECT count(*) FROM reward_rules WHERE program_id = $PROGRAM_ID AND name LIKE 'bench: %'")" = 0 ]; then
    sql "INSERT INTO reward_rules (program_id, name, trigger, sale_scope, amount_kind, referrer_amount,
             friend_amount, amount_units, is_currency, max_reward, limit_per_referrer_month, product_type,
             hold_days, needs_approval)
         VALUES ($PROGRAM_ID, 'bench: first sale', 'sale', 'first', 'fixed', 10, NULL, 'USD', TRUE, NULL, NULL, NULL, 14, TRUE),
                ($PROGRAM_ID, 'bench: 5 percent', 'sale', 'every', 'percent', 5, NULL, 'USD', TRUE, 20, 50, NULL, 0, FALSE),
                ($PROGRAM_ID, 'bench: plan friend', 'sale', 'every', 'fixed', NULL, 2, 'USD', TRUE, NULL, NULL, 'plan', 0, FALSE)" >/dev/null
fi

# --- 4c. webhooks: deliveries to a local receiver -----------------------------------------
# A receiver (benches/webhook_receiver.py, answers 200 at once) and one subscription to all
# events, inactive except while a webhook scenario runs. First BENCH_WEBHOOKS deliveries are
# queued at once and timed until the server's worker has delivered the last; then the API
# create scenario runs twice back to back, with the subscription off and on (each referred
# signup then emits customer.created and referral.created, delivered while the load runs).
WEBHOOK_COUNT=${BENCH_WEBHOOKS:-20000}
HOOK_ID=
WEBHOOK_RATE=
set_hooks() { [ -z "$HOOK_ID" ] || sql "UPDATE webhook_subscriptions SET is_active = $1 WHERE id = $HOOK_ID" >/dev/null; }
delivered_count() { sql "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = $HOOK_ID AND status = 'delivered'"; }
if [ "$WEBHOOK_COUNT" -gt 0 ] && { [ -z "$ONLY" ] || [[ "webhooks" == *"$ONLY"* ]] || [[ "$ONLY" == *webhooks* ]]; }; then
    command -v python3 >/dev/null || { echo "loadtest: python3 is required for the webhook receiver" >&2; exit 1; }
    RECEIVER_PORT=$(free_port)
    python3 "$ROOT/benches/webhook_receiver.py" "$RECEIVER_PORT" 2>"$LOG_DIR/receiver.log" &
    RECEIVER_PID=$!
    for _ in $(seq 1 50); do port_is_free "$RECEIVER_PORT" || break; sleep 0.1; done
    HOOK_SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
    HOOK_ID=$(sql "INSERT INTO webhook_subscriptions (program_id, key, name, url, all_events, events, is_active, secret)
                   VALUES ($PROGRAM_ID, 'wh_bench_$RUN_ID', 'Bench receiver', 'http://127.0.0.1:$RECEIVER_PORT/hook',
                           TRUE, '{}', FALSE, '$HOOK_SECRET') RETURNING id" | head -1)
    set_hooks true
    say "delivering $WEBHOOK_COUNT webhooks to the local receiver"
    [ "$STATEMENTS" = 1 ] && sql "SELECT pg_stat_statements_reset()" >/dev/null
    started=$(date +%s.%N)
    sql "WITH ev AS (
             INSERT INTO webhook_events (id, program_id, event, data)
             SELECT gen_random_uuid(), $PROGRAM_ID, 'webhook.test', jsonb_build_object('message', 'bench', 'n', n)
             FROM generate_series(1, $WEBHOOK_COUNT) n RETURNING id)
         INSERT INTO webhook_deliveries (event_id, subscription_id, event) SELECT id, $HOOK_ID, 'webhook.test' FROM ev" >/dev/null
    while [ "$(sql "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = $HOOK_ID AND status = 'pending'")" != 0 ]; do
        sleep 0.2
    done
    seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    DELIVERED=$(delivered_count)
    WEBHOOK_RATE=$(awk -v n="$DELIVERED" -v t="$seconds" 'BEGIN { printf "%d", n / t }')
    say "webhooks: $DELIVERED delivered in $seconds s: $WEBHOOK_RATE deliveries/s (target >= 500)"
    statement_report "$DELIVERED" >"$LOG_DIR/statements-webhook-deliveries.txt"
    set_hooks false
fi

# name | kind (page/api/post/export) | path | lua script
SCENARIOS=(
    "list page 1|page|/customers|get"
    "list page 5,000|page|/customers?page=5000|get"
    "list page 5,000 (Next link)|page|$PAGE_5000_NEXT|get"
    "search exact email|page|/customers?q=$(enc "$EMAIL_EXACT")|get"
    "search partial email|page|/customers?q=$(enc "$EMAIL_PART")|get"
    "referred, by referrals|page|/customers?refer_status=referred&sort=referrals&dir=desc|get"
    "detail, top referrer|page|/customers/$TOP_KEY|get"
    "detail, typical|page|/customers/$TYPICAL_KEY|get"
    "CSV export ~100k rows|export|/customers/export.csv?from=$EXPORT_FROM&to=$EXPORT_TO|"
    "API create (referred)|post|/v1/customers|create_customer"
    "API list|api|/v1/customers|get"
    "API credit|post|/v1/customers/seed-1/balance/credit|credit"
    "rewards queue, pending p1|page|/rewards|get"
    "rewards queue, page 4,000 (Next)|page|$QUEUE_FAR_NEXT|get"
    "rewards queue, all statuses|page|/rewards?status=all|get"
    "rewards queue, flagged|page|/rewards?flagged=1|get"
    "API rewards list|api|/v1/rewards?status=pending|get"
    "API transaction (3 rules)|post|/v1/transactions|transaction"
    "API create, webhooks off|post|/v1/customers|create_customer"
    "API create, webhooks flowing|post|/v1/customers|create_customer"
)

peak_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$SERVER_PID/status"; }
TICKS=$(getconf CLK_TCK)
# CPU time the server process has used so far (user + system), in ms.
server_cpu_ms() { awk -v hz="$TICKS" '{ printf "%.0f", ($14 + $15) * 1000 / hz }' "/proc/$SERVER_PID/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status"; }
db_ms() {
    [ "$STATEMENTS" = 1 ] || { echo 0; return; }
    sql "SELECT coalesce(sum(total_exec_time + total_plan_time), 0) FROM pg_stat_statements s
         JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database()
         WHERE s.query NOT ILIKE '%pg_stat_statements%'"
}
say "server pid $SERVER_PID on $BASE; $SEEDED seeded customers (+$ADDED from earlier runs); ${DURATION}s per scenario; logs in $LOG_DIR"
# How fast this machine's cores are right now: the same machine kind has run the same build
# up to 1.8x slower on one day than on another (shared hosts), so figures of different runs
# compare only when this one is close. The median of three: ms for PostgreSQL to sum five
# million numbers (one core, no disk).
calibration_ms() {
    local times=() i start
    for i in 1 2 3; do
        start=$(date +%s%N)
        sql "SELECT sum(i) FROM generate_series(1, 5000000) i" >/dev/null
        times+=($(( ($(date +%s%N) - start) / 1000000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 2p
}
CALIBRATION_MS=$(calibration_ms)
case $DATABASE_URL in
    *@%2F* | *host=/*) TRANSPORT="Unix socket" ;;
    *) TRANSPORT=TCP ;;
esac
say "machine: $(nproc) cores, calibration ${CALIBRATION_MS} ms; load before the run: $(cut -d' ' -f1-3 /proc/loadavg); database over $TRANSPORT"

RESULTS=()
EXPORT_NOTE=
# Every run's figures, one line per scenario: run, name, throughput, p50, p99, errors, db, app.
RAW=$LOG_DIR/results.tsv
: >"$RAW"
for run in $(seq 1 "$RUNS"); do
[ "$RUNS" -gt 1 ] && say "run $run of $RUNS"
checkpoint
for scenario in "${SCENARIOS[@]}"; do
    IFS='|' read -r name kind path script <<<"$scenario"
    if [ -n "$ONLY" ] && [[ "$name" != *"$ONLY"* ]]; then continue; fi
    if [[ "$name" == *webhooks* ]]; then
        [ -n "$HOOK_ID" ] || continue
        # Deliveries left from the warm-up are drained first, so both runs start alike.
        while [ "$(sql "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = $HOOK_ID AND status = 'pending'")" != 0 ]; do sleep 0.2; done
        if [[ "$name" == *flowing* ]]; then set_hooks true; else set_hooks false; fi
    fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$kind" = export ]; then
        best_rate=0 rows=0 seconds=0 failed=0
        for attempt in 1 2 3; do
            [ "$STATEMENTS" = 1 ] && sql "SELECT pg_stat_statements_reset()" >/dev/null
            before_db=$(db_ms)
            before_cpu=$(server_cpu_ms)
            out=$(curl -sS -H "Cookie: $BENCH_COOKIE" -o "$LOG_DIR/export.csv" \
                -w '%{http_code} %{time_total}' "$BASE$path")
            read -r code took <<<"$out"
            lines=$(($(wc -l <"$LOG_DIR/export.csv") - 1))
            rate=$(awk -v r="$lines" -v t="$took" 'BEGIN { printf "%d", r / t }')
            if [ "$code" != 200 ]; then failed=$((failed + 1)); continue; fi
            if [ "$rate" -gt "$best_rate" ]; then
                best_rate=$rate rows=$lines seconds=$took
                db=$(awk -v a="$(db_ms)" -v b="$before_db" 'BEGIN { printf "%.0f", a - b }')
                app_cpu=$(( $(server_cpu_ms) - before_cpu ))
            fi
        done
        rm -f "$LOG_DIR/export.csv"
        statement_report >"$LOG_DIR/statements-export.txt"
        EXPORT_NOTE="export: $rows rows in ${seconds}s (best of 3; db time is for the whole export)"
        printf '%s\t%s\t%s\t-\t-\t%s\t%s\t%s\n' "$run" "$name" "$best_rate" "$failed" "${db:-0}" "${app_cpu:-0}" >>"$RAW"
        RESULTS+=("$(printf '%-28s %16s %9s %9s %7s %12s %13s %10s %6s %7s' "$name" \
            "$best_rate rows/s" "-" "-" "$failed" "db ${db:-0} ms" "app ${app_cpu:-0} ms" \
            "$(( $(peak_kib) / 1024 )) MiB" "$load" "-")")
        echo "${RESULTS[-1]}"
        continue
    fi
    # A short warm-up (connections, caches), then the measured run.
    slug=$(echo "$name" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '-')
    if [ "$RUNS" -gt 1 ]; then slug=$slug-run$run; fi
    # Pages send the session cookie, API calls the token (and no cookie, like a backend).
    if [ "$kind" = page ]; then cookie=$BENCH_COOKIE token=; else cookie= token=$BENCH_TOKEN; fi
    # Each wrk run gets its own BENCH_RUN, so ids and idempotency keys never repeat.
    BENCH_COOKIE=$cookie BENCH_TOKEN=$token BENCH_RUN=$RUN_ID-$slug-warm wrk -t "$THREADS" -c "$CONNECTIONS" -d 2s -s "$BENCH_LUA_DIR/$script.lua" \
        "$BASE$path" >/dev/null 2>&1 || true
    # Tables that start empty (transactions, rewards) get the statistics autovacuum would
    # give them within a minute; without, the server keeps plans made for empty tables.
    sql "ANALYZE transactions, rewards" >/dev/null 2>&1 || true
    [ "$STATEMENTS" = 1 ] && sql "SELECT pg_stat_statements_reset()" >/dev/null
    before_db=$(db_ms)
    before_cpu=$(server_cpu_ms)
    before_ckpt=$(checkpoint_pages)
    if [[ "$name" == *flowing* ]]; then hooks_before=$(delivered_count); fi
    out=$(BENCH_COOKIE=$cookie BENCH_TOKEN=$token BENCH_RUN=$RUN_ID-$slug wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency --timeout 10s \
        -s "$BENCH_LUA_DIR/$script.lua" "$BASE$path" 2>&1)
    echo "$out" >"$LOG_DIR/wrk-$slug.txt"
    result=$(grep '^RESULT' <<<"$out" || true)
    if [ -z "$result" ]; then say "wrk failed for $name:"; echo "$out" >&2; continue; fi
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$result"; }
    requests=$(field requests)
    db_per=$(awk -v a="$(db_ms)" -v b="$before_db" -v n="$requests" 'BEGIN { printf "%.2f", (n > 0 ? (a - b) / n : 0) }')
    cpu_per=$(awk -v a="$(server_cpu_ms)" -v b="$before_cpu" -v n="$requests" 'BEGIN { printf "%.2f", (n > 0 ? (a - b) / n : 0) }')
    ckpt=$(awk -v a="$(checkpoint_pages)" -v b="$before_ckpt" 'BEGIN { printf "%.0f", (a - b) * 8 / 1024 }')
    statement_report "$requests" >"$LOG_DIR/statements-$slug.txt"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$name" "$(field rps)" "$(field p50_ms)" \
        "$(field p99_ms)" "$(field errors)" "$db_per" "$cpu_per" "$ckpt" >>"$RAW"
    RESULTS+=("$(printf '%-28s %16s %9s %9s %7s %12s %13s %10s %6s %7s' "$name" "$(field rps) req/s" \
        "$(field p50_ms) ms" "$(field p99_ms) ms" "$(field errors)" "db $db_per ms" "app $cpu_per ms" \
        "$(( $(peak_kib) / 1024 )) MiB" "$load" "$ckpt MiB")")
    echo "${RESULTS[-1]}"
    if [[ "$name" == *flowing* ]]; then
        set_hooks false
        FLOWING_NOTE="webhooks flowing: $(( $(delivered_count) - hooks_before )) deliveries made during the measured run (each referred signup emits two events; the warm-up's were still flowing)"
        say "$FLOWING_NOTE"
    fi
done
done

echo
echo "Referdesk load test $RUN_ID: $SEEDED customers (+$ADDED from earlier runs), wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores, calibration ${CALIBRATION_MS} ms, database over $TRANSPORT"
printf '%-28s %16s %9s %9s %7s %12s %13s %10s %6s %7s\n' "scenario" "throughput" "p50" "p99" "errors" "db time/req" "app cpu/req" "peak mem" "load" "ckpt"
printf '%s\n' "${RESULTS[@]}"
echo "server: peak memory (VmHWM) $(( $(peak_kib) / 1024 )) MiB, now (VmRSS) $(( $(rss_kib) / 1024 )) MiB"
echo "errors = non-2xx/3xx answers plus socket errors; db time/req = PostgreSQL planning and execution"
echo "time per request (pg_stat_statements; planning only where track_planning is on, as in the"
echo "private cluster); app cpu/req = the server process's CPU time per request"
echo "(user + system); load = 1-min load average when the scenario started; ckpt = what"
echo "PostgreSQL's checkpointer wrote to disk during the scenario (earlier scenarios' writes);"
echo "calibration = ms for PostgreSQL to sum 5 million numbers before the run (lower = faster cores)"
if [ -n "$EXPORT_NOTE" ]; then echo "$EXPORT_NOTE"; fi
if [ "$RUNS" -gt 1 ]; then
    # The middle value of the numbers on standard input.
    median() {
        sort -g | awk '{ v[NR] = $1 }
            END { if (v[1] == "-") print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
    }
    column_of() { awk -F'\t' -v name="$1" -v col="$2" '$2 == name { print $col }' "$RAW"; }
    echo
    echo "median of $RUNS runs (p99 range over the runs):"
    printf '%-28s %12s %9s %9s %17s %7s %12s %13s\n' "scenario" "throughput" "p50" "p99" "p99 range" "errors" "db time/req" "app cpu/req"
    cut -f2 "$RAW" | awk '!seen[$0]++' | while IFS= read -r name; do
        p99s=$(column_of "$name" 5 | sort -g)
        range="$(head -1 <<<"$p99s")-$(tail -1 <<<"$p99s")"
        if [ "$range" = "---" ]; then range=-; fi
        printf '%-28s %12s %9s %9s %17s %7s %12s %13s\n' "$name" "$(column_of "$name" 3 | median)" \
            "$(column_of "$name" 4 | median)" "$(column_of "$name" 5 | median)" "$range" \
            "$(column_of "$name" 6 | awk '{ s += $1 } END { print s }')" \
            "$(column_of "$name" 7 | median)" "$(column_of "$name" 8 | median)"
    done
    echo "(throughput in req/s, or rows/s for the export; times in ms; errors summed over the runs)"
fi
[ -n "$WEBHOOK_RATE" ] && echo "webhooks: $DELIVERED deliveries to the local receiver at $WEBHOOK_RATE/s (target >= 500)"
[ -n "${FLOWING_NOTE:-}" ] && echo "$FLOWING_NOTE"
[ -n "$RELEASE_SECONDS" ] && echo "hold release: $RELEASED due rewards credited in $RELEASE_SECONDS s (target < 30 s)"
echo "details (wrk output, top statements per scenario): $LOG_DIR"
