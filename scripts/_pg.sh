# Sourced by scripts/test.sh: install Debian's PostgreSQL if it is missing, start a
# throw-away cluster on a Unix socket (no TCP port), create the test database, and export
# TRACEMARK_TEST_PG_URL for the tests that run the stores against PostgreSQL.
# Defines tracemark_pg_stop (a no-op when the server was running already).
# TRACEMARK_SKIP_PG=1 skips all of this (those tests are then skipped, with the reason).
if [ "${TRACEMARK_SKIP_PG:-0}" = "1" ]; then
  echo "TRACEMARK_SKIP_PG=1: PostgreSQL tests will be skipped" >&2
  return 0
fi
pg_bin=""
find_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
pg_bin="$(find_pg_bin)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  echo "installing PostgreSQL (Debian package postgresql)..." >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >/dev/null
  pg_bin="$(find_pg_bin)"
fi
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL's initdb not found after installing" >&2; exit 1; }

pg_dir="${TRACEMARK_PG_DIR:-/tmp/tracemark-pg-$(id -u)}"
pg_port=55432
run_as() {  # initdb and postgres refuse to run as root: use the postgres user then
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ -f "$pg_dir/data/postmaster.pid" ] && run_as "$pg_bin/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; then
  :  # already running (a previous run in this session): reused and left running
else
  # stops the server this script started (scripts/test.sh calls it on exit)
  tracemark_pg_stop() { run_as "$pg_bin/pg_ctl" -D "$pg_dir/data" stop -m fast >/dev/null 2>&1 || true; }
  rm -rf "$pg_dir"
  mkdir -p "$pg_dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$pg_dir"
  run_as "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  run_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-k $pg_dir -p $pg_port -c listen_addresses= -c fsync=off -c max_connections=200" start >/dev/null
fi
run_as "$pg_bin/psql" -h "$pg_dir" -p "$pg_port" -U postgres -qtAc \
  "SELECT 1 FROM pg_database WHERE datname = 'tracemark_test'" | grep -q 1 \
  || run_as "$pg_bin/createdb" -h "$pg_dir" -p "$pg_port" -U postgres tracemark_test
export TRACEMARK_TEST_PG_URL="postgresql+psycopg://postgres@/tracemark_test?host=$pg_dir&port=$pg_port"
echo "PostgreSQL test server: $TRACEMARK_TEST_PG_URL" >&2
