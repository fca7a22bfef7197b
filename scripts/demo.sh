#!/usr/bin/env bash
# tidewal in one command: a throwaway PostgreSQL 15 cluster archives through `tidewal
# wal-push` into an encrypted local repository while `tidewal daemon` uploads ahead of the
# archiver, takes the first base backup, and serves /metrics and /healthz. pgbench writes;
# you watch. Ctrl-C (or the end) stops everything and removes it, unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-20}
make_workdir demo
daemon=
cleanup() {
    if [ -n "$daemon" ]; then
        # SIGTERM to the daemon itself (runuser in between does not pass it on).
        pkill -TERM -f "^$TIDEWAL --config $WORK/tidewal.toml daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
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

echo "== building tidewal (release)"
build_tidewal
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key"
mkdir -p "$WORK/repo" && give_pg "$WORK/repo"

echo "== starting a throwaway PostgreSQL 15 cluster"
start_cluster "$WORK/cluster" "archive_timeout = 60
synchronous_commit = off"
METRICS_PORT=$(free_port)
write_tidewal_config "$WORK/tidewal.toml" "file://$WORK/repo" "
[daemon]
pgdata = \"$PGDATA_DIR\"
listen = \"127.0.0.1:$METRICS_PORT\""
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
pgbench_c -i -s 10 -q >/dev/null 2>&1
pgbench_c -c 4 -j 2 -T "$SECONDS_OF_LOAD" -n >/dev/null 2>&1 &
load=$!
while kill -0 "$load" 2>/dev/null; do
    sleep 3
    lag=$(http_get /metrics 2>/dev/null | awk '$1 == "tidewal_wal_archive_lag_seconds" {print $2}')
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
echo "== http://127.0.0.1:$METRICS_PORT/metrics (tidewal_* values)"
http_get /metrics | grep '^tidewal_' | grep -v '_bucket' | sed 's/^/  /'
echo "== http://127.0.0.1:$METRICS_PORT/healthz"
http_get /healthz | sed 's/^/  /'
raw=$(find "$PGDATA_DIR/pg_wal" -maxdepth 1 -name '0000*' -newer "$WORK/tidewal.toml" | head -n1)
echo "== round trip: tidewal wal-fetch $(basename "$raw")"
tw wal-fetch "$(basename "$raw")" "$WORK/fetched"
cmp "$raw" "$WORK/fetched" && echo "  identical to PostgreSQL's copy"
echo "== done: every object above is compressed, encrypted and authenticated"
