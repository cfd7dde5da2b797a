#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests (Dagster storage via dagster-postgres),
# unless one already answers at $DOCPLATFORM_PG_HOST:$DOCPLATFORM_PG_PORT.
set -euo pipefail
PGHOST_="${DOCPLATFORM_PG_HOST:-127.0.0.1}"
PGPORT_="${DOCPLATFORM_PG_PORT:-55432}"
PGDATA_="${DOCPLATFORM_PG_DATA:-/tmp/docplatform-pg}"

if pg_isready -q -h "$PGHOST_" -p "$PGPORT_"; then
  echo "postgres already running on $PGHOST_:$PGPORT_"
  exit 0
fi
if ! command -v initdb >/dev/null && [ -d /usr/lib/postgresql ]; then
  export PATH="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1):$PATH"
fi
if ! command -v initdb >/dev/null; then
  apt-get install -y -q postgresql >/dev/null
  export PATH="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1):$PATH"
fi
RUNAS=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home "$PGDATA_" postgres
  RUNAS=(runuser -u postgres --)
fi
if [ ! -s "$PGDATA_/PG_VERSION" ]; then
  mkdir -p "$PGDATA_"
  [ "$(id -u)" = 0 ] && chown postgres "$PGDATA_"
  "${RUNAS[@]}" initdb -D "$PGDATA_" -U postgres --auth=trust >/dev/null
fi
"${RUNAS[@]}" pg_ctl -D "$PGDATA_" -l "$PGDATA_/server.log" -w -t 60 \
  -o "-c listen_addresses=$PGHOST_ -p $PGPORT_ -k /tmp" start >/dev/null
pg_isready -h "$PGHOST_" -p "$PGPORT_"
