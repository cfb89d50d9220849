#!/usr/bin/env bash
# Times `referdesk import customers` on a generated CSV file of a million rows.
#
#   benches/import.sh
#
# It builds the release binary, generates IMPORT_ROWS rows (key, id, email, name, surname,
# date of birth, referrer, created at; about 30% referred, by the key or the email of an
# earlier row or, for one referral in ten, of a later one; no cycles) into $IMPORT_DIR/customers-$IMPORT_ROWS.csv,
# creates the database named by IMPORT_DATABASE_URL afresh (it drops it first!), migrates
# it, and runs the import twice: a dry run, then the import itself, printing each wall
# time and the checks' figures (referral counts compared with the rows). Needs: cargo,
# psql, awk, a PostgreSQL server the URL's user may create databases on.
#
# Settings (environment):
#   IMPORT_DATABASE_URL  postgres://postgres@127.0.0.1:5432/referdesk_import_bench
#   IMPORT_ROWS          1000000
#   IMPORT_DIR           .referdesk/bench-import (the generated file)
#   BENCH_BIN            time this binary instead of building one

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
URL=${IMPORT_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/referdesk_import_bench}
ROWS=${IMPORT_ROWS:-1000000}
DIR=${IMPORT_DIR:-$ROOT/.referdesk/bench-import}
say() { echo "import bench: $*" >&2; }
mkdir -p "$DIR"

if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    say "building the release binary"
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=$ROOT/target/release/referdesk
fi

FILE=$DIR/customers-$ROWS.csv
if [ ! -s "$FILE" ]; then
    say "generating $ROWS rows into $FILE"
    awk -v rows="$ROWS" 'BEGIN {
        srand(1);
        print "key,id,email,name,surname,date_of_birth,referrer,created_at";
        split("Ada Bob Cy Dee Eve Finn Gus Hana Ivo Jun", names, " ");
        for (i = 1; i <= rows; i++) {
            referrer = "";
            r = rand();
            # Every tenth row refers nobody; forward references go to those rows only, so
            # the file has no cycle.
            if (i % 10 == 0) {
            } else if (i > 1 && r < 0.27) {
                j = int(rand() * (i - 1)) + 1;
                referrer = (rand() < 0.5) ? "k" j : "user." j "@example.com";
            } else if (r < 0.30 && i < rows - 10) {
                referrer = "k" (10 * int((i + 10 + int(rand() * (rows - i - 10))) / 10));
            }
            printf "k%d,ext-%d,user.%d@example.com,%s,Tester,19%02d-%02d-%02d,%s,2025-%02d-%02dT12:00:00Z\n",
                i, i, i, names[i % 10 + 1], 50 + i % 50, i % 12 + 1, i % 28 + 1, referrer, i % 12 + 1, i % 28 + 1;
        }
    }' > "$FILE"
fi
say "$(wc -l < "$FILE") lines, $(du -h "$FILE" | cut -f1)"

# The commands' own data directory (secret, mail) inside the bench's: left to the default
# `.referdesk`, their start would tighten it to 0700 and shut the load test's private
# cluster, which runs as `postgres` under `.referdesk/bench/`, out of its directory.
export REFERDESK_DATA_DIR=$IMPORT_DIR/data
ADMIN_URL=${URL%/*}/postgres
DB=${URL##*/}
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
DATABASE_URL=$URL "$BIN" migrate 2>/dev/null
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

run() {
    local started ended
    started=$(date +%s.%N)
    set +e
    DATABASE_URL=$URL "$BIN" import customers "$FILE" --program default "$@" 2>/dev/null | head -1
    set -e
    ended=$(date +%s.%N)
    say "$* took $(echo "$ended - $started" | bc) s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
}
run --dry-run
run

psql -qAt "$URL" -c "SELECT 'customers: ' || count(*) FROM customers" \
    -c "SELECT 'referral counts off: ' || count(*) FROM customers c WHERE c.referrals_count <>
            (SELECT count(*) FROM customers r WHERE r.referrer_id = c.id AND r.status = 'active')" \
    -c "SELECT 'tallied: ' || sum(customers) FROM customer_tallies"
