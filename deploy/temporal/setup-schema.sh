#!/bin/sh
# One-shot, before every start of the bundled Temporal server (compose service temporal-schema):
# creates Temporal's two databases if they are missing and brings their schemas to the version
# of this admin-tools image. Raising the server and admin-tools tags together is therefore the
# whole schema upgrade; each step is a no-op when there is nothing to do.
set -eu

: "${POSTGRES_SEEDS:?the Postgres host}"
: "${POSTGRES_USER:?the Postgres user Temporal owns its databases with}"
: "${SQL_PASSWORD:?the password of that user, which temporal-sql-tool reads from here}"
port=${DB_PORT:-5432}
schemas=/etc/temporal/schema/postgresql/v12

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" "$@"
}

setup() {
    database=$1
    schema=$2
    sql_tool --db "$database" create
    sql_tool --db "$database" setup-schema -v 0.0
    sql_tool --db "$database" update-schema -d "$schemas/$schema/versioned"
}

setup temporal temporal
setup temporal_visibility visibility
echo "temporal and temporal_visibility are at the schema of this server version"
