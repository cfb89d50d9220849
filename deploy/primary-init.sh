#!/bin/bash
# Run by the postgres image's entrypoint on the primary's first start (empty volume), as
# the database superuser (`referdesk` here). Makes the primary ready for the streaming
# replica of compose.yaml: replication connections from the compose network with a
# password, and a physical replication slot the replica streams through.
set -euo pipefail
echo "host replication $POSTGRES_USER all scram-sha-256" >> "$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "SELECT pg_create_physical_replication_slot('referdesk_replica')"
