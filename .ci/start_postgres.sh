#!/usr/bin/env bash
# Start a PostgreSQL server on loopback for the Optuna storage tests (tests/test_zoo_optimize.py) and print
# its SQLAlchemy URL on stdout. Idempotent: installs Debian's `postgresql` only if missing, creates the cluster,
# role and database only if missing, starts the cluster only if it is down. Needs root (apt-get, su postgres).
# Usage: export SB3_DISTILL_TEST_POSTGRES_URL="$(sudo bash .ci/start_postgres.sh)"
set -euo pipefail
ROLE=sb3_distill
PASSWORD=sb3_distill
DATABASE=sb3_distill_test
log() { echo "start_postgres: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get install postgresql, su postgres)"
    exit 1
fi
if ! command -v pg_lsclusters >/dev/null 2>&1; then
    log "installing Debian's postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi
if [ -z "$(pg_lsclusters -h)" ]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    log "creating cluster $version/main"
    pg_createcluster "$version" main >&2
fi
read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
if [ "$status" != "online" ]; then
    log "starting cluster $version/$cluster on port $port"
    pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$port" || { log "server on port $port does not answer"; exit 1; }
psql_postgres() { su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -tAc \"$1\""; }
if [ "$(psql_postgres "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
    psql_postgres "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'" >&2
fi
if [ "$(psql_postgres "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != "1" ]; then
    psql_postgres "CREATE DATABASE $DATABASE OWNER $ROLE" >&2
fi
log "PostgreSQL $version/$cluster is up on 127.0.0.1:$port, database $DATABASE"
echo "postgresql+psycopg2://$ROLE:$PASSWORD@127.0.0.1:$port/$DATABASE"
