#!/usr/bin/env bash
# tidewal in one command: a throwaway PostgreSQL 15 cluster archives through `tidewal
# wal-push` into an encrypted local repository while `tidewal daemon` uploads ahead of the
# archiver, takes the first base backup, and serves /metrics and /healthz. pgbench writes;
# you watch. Then the payoff: a table is dropped under a steady insert load, `tidewal
# restore` brings back a copy as of the moment before, and the rows are counted there.
# Ctrl-C (or the end) stops everything and removes it, unless KEEP=1.
#
# On a fresh machine it installs what is missing (as root, where apt-get exists: Debian's
# postgresql-15, as .ci/run does) or prints the one command that does. It builds tidewal
# with cargo, or runs the binary TIDEWAL_BIN names.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-20}
SCALE=${SCALE:-10}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
# runuser and useradd live in sbin, which a plain user's PATH may lack.
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"
missing=()
[ -x "$PGBIN/initdb" ] || missing+=(postgresql-15)
command -v runuser >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
command -v pkill >/dev/null || missing+=(procps)
# Building needs a C compiler (the TLS library's crypto is C).
[ -n "${TIDEWAL_BIN:-}" ] || command -v cc >/dev/null || missing+=(gcc libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    elif command -v apt-get >/dev/null; then
        echo "missing ${missing[*]}: run  sudo apt-get install ${missing[*]}  (or run this script as root), then run it again" >&2
        exit 2
    else
        echo "missing ${missing[*]}: install them with your package manager (PostgreSQL 15's server binaries: set PGBIN to their directory), then run this again" >&2
        exit 2
    fi
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
if [ -z "${TIDEWAL_BIN:-}" ] && ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust with  curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y  (or set TIDEWAL_BIN to a tidewal binary), then run this again" >&2
    exit 2
fi
. ./lib.sh

make_workdir demo
daemon=
COPY_DIR=
cleanup() {
    if [ -n "$daemon" ]; then
        # SIGTERM to the daemon itself (runuser in between does not pass it on).
        pkill -TERM -f "^$TIDEWAL --config $WORK/tidewal.toml daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    [ -n "$COPY_DIR" ] && as_pg "$PGBIN/pg_ctl" -D "$COPY_DIR" -m fast -w stop >/dev/null 2>&1 || true
    stop_cluster
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# GET PATH from the daemon's endpoint (bash alone: no curl needed).
http_get() {
    exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$1" >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}

if [ -n "${TIDEWAL_BIN:-}" ]; then echo "== tidewal: $TIDEWAL_BIN"; else echo "== building tidewal (release; the first build takes several minutes and prints nothing)"; fi
build_tidewal
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key"
mkdir -p "$WORK/repo" && give_pg "$WORK/repo"

echo "== starting a throwaway PostgreSQL 15 cluster"
# track_commit_timestamp: to count the rows committed by a moment, as recovery decides.
start_cluster "$WORK/cluster" "archive_timeout = 60
synchronous_commit = off
track_commit_timestamp = on"
METRICS_PORT=$(free_port)
write_tidewal_config "$WORK/tidewal.toml" "file://$WORK/repo" "
[daemon]
pgdata = \"$PGDATA_DIR\"
listen = \"127.0.0.1:$METRICS_PORT\"
socket = \"$WORK/tidewal.sock\"
spool = \"$WORK/spool\""
tw() { as_pg "$TIDEWAL" --config "$WORK/tidewal.toml" "$@"; }

echo "== tidewal init"
tw init
psql_c "ALTER SYSTEM SET archive_command = '$TIDEWAL --config $WORK/tidewal.toml wal-push %p'" >/dev/null
psql_c "SELECT pg_reload_conf()" >/dev/null

echo "== tidewal check"
tw check

echo "== tidewal daemon (log: $WORK/daemon.log)"
tw daemon >"$WORK/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 100); do http_get /healthz >/dev/null 2>&1 && break; sleep 0.2; done
echo "   waiting for the first base backup, which the daemon takes at start"
for _ in $(seq 1 600); do
    http_get /metrics 2>/dev/null | grep -q '^tidewal_repo_backups 1' && break
    sleep 0.2
done

echo "== pgbench for ${SECONDS_OF_LOAD}s; archiving progress below"
pgbench_c -i -s "$SCALE" -q >/dev/null 2>&1
pgbench_c -c 4 -j 2 -T "$SECONDS_OF_LOAD" -n >/dev/null 2>&1 &
load=$!
while kill -0 "$load" 2>/dev/null; do
    sleep 3
    lag=$(http_get /metrics 2>/dev/null | awk '$1 == "tidewal_wal_archive_lag_seconds" {printf "%.1f", $2}')
    psql_c "SELECT format('  archived: %s files, last %s, failures %s; backup lag ${lag:-?}s', archived_count, last_archived_wal, failed_count) FROM pg_stat_archiver"
done
last=$(psql_c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 100); do
    [ "$(psql_c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ] && break
    sleep 0.2
done
sleep 2

echo "== tidewal list"
tw list
echo "== tidewal status (the daemon answers on daemon.socket)"
tw status
echo "== http://127.0.0.1:$METRICS_PORT/metrics (tidewal_* values)"
http_get /metrics | grep '^tidewal_' | grep -v '_bucket' | sed 's/^/  /'
echo "== http://127.0.0.1:$METRICS_PORT/healthz"
http_get /healthz | sed 's/^/  /'
raw=$(find "$PGDATA_DIR/pg_wal" -maxdepth 1 -name '0000*' -newer "$WORK/tidewal.toml" | head -n1)
echo "== round trip: tidewal wal-fetch $(basename "$raw")"
tw wal-fetch "$(basename "$raw")" "$WORK/fetched"
cmp "$raw" "$WORK/fetched" && echo "  identical to PostgreSQL's copy"

# wait_archived: switch to a new WAL segment and wait until PostgreSQL has archived the one
# just finished (through tidewal), rather than up to archive_timeout.
wait_archived() {
    local last
    last=$(psql_c "SELECT pg_walfile_name(pg_switch_wal())")
    for _ in $(seq 1 300); do
        [ "$(psql_c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ] && return 0
        sleep 0.2
    done
    echo "WAL segment $last was not archived: see $WORK/cluster/postgres.log" >&2
    return 1
}
echo "== the payoff: DROP TABLE under load, then a restore to the moment before"
echo "   (below, tidewal is $TIDEWAL --config $WORK/tidewal.toml, and psql reaches the demo cluster)"
shown() { echo "+ $*"; }
sql() { shown "psql -c \"$1\""; psql_c "$1"; }
sql "CREATE TABLE orders (id bigserial PRIMARY KEY, note text NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp())"
echo "INSERT INTO orders (note) VALUES ('order');" >"$WORK/insert.sql"
give_pg "$WORK/insert.sql"
shown "pgbench -n -c 2 -R 50 -T 600 -f insert.sql &   # a steady 50 orders a second"
pgbench_c -n -c 2 -R 50 -T 600 -f "$WORK/insert.sql" >"$WORK/insert.log" 2>&1 &
orders=$!
sleep 3
target=$(psql_c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
echo "   the time now, just before the accident: $target"
# Commits stamped up to $target are visible once they finish, a moment later.
sleep 1
count="SELECT count(*) FROM orders WHERE pg_xact_commit_timestamp(xmin) <= '$target'"
shown "psql -c \"$count\""
before=$(psql_c "$count")
echo "$before"
echo "   $before orders were committed by then"
sql "DROP TABLE orders"
# The application's inserts fail from now on: stop it.
pkill -f "$WORK/insert.sql" 2>/dev/null || true
wait "$orders" 2>/dev/null || true
wait_archived
COPY_DIR="$WORK/copy"
shown "tidewal restore --to $COPY_DIR --target-time $target --target-action promote"
tw restore --to "$COPY_DIR" --target-time "$target" --target-action promote | sed 's/^/  /'
COPY_PORT=$(free_port)
shown "pg_ctl -D $COPY_DIR -o '-p $COPY_PORT' -l $WORK/copy.log start"
as_pg "$PGBIN/pg_ctl" -D "$COPY_DIR" -o "-p $COPY_PORT" -l "$WORK/copy.log" -w -t 120 start >/dev/null
copy_sql() { as_pg "$PGBIN/psql" -X -At -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$COPY_PORT" -U postgres -d postgres -c "$1"; }
for _ in $(seq 1 600); do
    [ "$(copy_sql "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
    sleep 0.2
done
shown "psql -p $COPY_PORT -c \"SELECT count(*) FROM orders\"   # the restored copy"
after=$(copy_sql "SELECT count(*) FROM orders")
echo "$after"
if [ "$before" = "$after" ]; then
    echo "== the rows came back: $before orders before the DROP, $after in the restored copy"
else
    echo "== MISMATCH: $before orders before the DROP, $after in the restored copy (logs: KEEP=1)" >&2
    exit 1
fi
echo "== done: every object above is compressed, encrypted and authenticated"
