#!/usr/bin/env bash
# tidewal in one command: a throwaway PostgreSQL 15 cluster archives its WAL through
# `tidewal wal-push` into an encrypted local repository while pgbench writes, and you watch
# the segments arrive. Ctrl-C (or the end) stops the cluster and removes everything,
# unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-20}
make_workdir demo
cleanup() {
    stop_cluster
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building tidewal (release)"
build_tidewal
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key"
mkdir -p "$WORK/repo" && give_pg "$WORK/repo"

echo "== starting a throwaway PostgreSQL 15 cluster"
start_cluster "$WORK/cluster" "archive_timeout = 60
synchronous_commit = off"
write_tidewal_config "$WORK/tidewal.toml" "file://$WORK/repo"
tw() { as_pg "$TIDEWAL" --config "$WORK/tidewal.toml" "$@"; }

echo "== tidewal init"
tw init
psql_c "ALTER SYSTEM SET archive_command = '$TIDEWAL --config $WORK/tidewal.toml wal-push %p'" >/dev/null
psql_c "SELECT pg_reload_conf()" >/dev/null

echo "== tidewal check"
tw check

echo "== pgbench for ${SECONDS_OF_LOAD}s; archived segments appear below"
pgbench_c -i -s 10 -q >/dev/null 2>&1
pgbench_c -c 4 -j 2 -T "$SECONDS_OF_LOAD" -n >/dev/null 2>&1 &
load=$!
while kill -0 "$load" 2>/dev/null; do
    sleep 2
    psql_c "SELECT format('  archived: %s segments, last %s at %s, failures %s', archived_count, last_archived_wal, to_char(last_archived_time, 'HH24:MI:SS'), failed_count) FROM pg_stat_archiver"
done
last=$(psql_c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 100); do
    [ "$(psql_c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ] && break
    sleep 0.2
done

echo "== the repository"
find "$WORK/repo" -type f -printf '%P\t%s bytes\n' | sort | tail -n 8
raw=$(find "$PGDATA_DIR/pg_wal" -maxdepth 1 -name '0000*' -newer "$WORK/tidewal.toml" | head -n1)
echo "== round trip: tidewal wal-fetch $(basename "$raw")"
tw wal-fetch "$(basename "$raw")" "$WORK/fetched"
cmp "$raw" "$WORK/fetched" && echo "  identical to PostgreSQL's copy"
echo "== done: every segment above is compressed, encrypted and authenticated"
