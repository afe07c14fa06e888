#!/bin/sh
# Runs once when the compose Postgres volume is created: the runtime role
# Konstruct connects as. Not superuser, no BYPASSRLS; `konstruct migrate`
# grants it exactly what it needs.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$APP_DB_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE konstruct_app LOGIN PASSWORD :'pw' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
SQL
