#!/usr/bin/env bash
# Base backup and restore benchmark on one pgbench database (SCALE, default 100: about
# 1.5 GB), one tool after the other on the same cluster, printing wall time and peak RSS:
#   tidewal backup / restore        file:// repository, lz4 + XChaCha20-Poly1305, fsync on
#   pgbackrest backup --type=full / restore   local repository, lz4, process-max 2, aes-256-cbc
#   pg_basebackup -Ft --compress=client-lz4, and lz4 -d | tar -x to restore it
# Needs: PostgreSQL 15, pgbackrest, lz4, python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

SCALE=${SCALE:-100}
make_workdir bench-backup
cleanup() {
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT

build_tidewal
start_cluster "$WORK/cluster" "archive_timeout = 60
synchronous_commit = off
max_wal_size = 4GB"
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key" 2>/dev/null
mkdir -p "$WORK/repo" && give_pg "$WORK/repo"
write_tidewal_config "$WORK/tidewal.toml" "file://$WORK/repo"
tw() { as_pg "$TIDEWAL" --config "$WORK/tidewal.toml" -q "$@"; }
tw init
psql_c "ALTER SYSTEM SET archive_command = '$TIDEWAL --config $WORK/tidewal.toml -q wal-push %p'" >/dev/null
psql_c "SELECT pg_reload_conf()" >/dev/null

echo "loading pgbench scale $SCALE ..." >&2
pgbench_c -i -s "$SCALE" -q >/dev/null 2>&1
psql_c "CHECKPOINT" >/dev/null
size=$(psql_c "SELECT pg_database_size('postgres')")

pgbackrest_stanza "$WORK/pgbr" "repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=benchmarkpassphrase0123456789
process-max=2
start-fast=y
archive-check=n"

results="$WORK/results.txt"
# measure LABEL CMD...: wall time (ms) and peak RSS (kB) of CMD, run as postgres.
measure() {
    local label=$1 t0 t1
    shift
    sync
    t0=$(date +%s%N)
    as_pg /usr/bin/time -f '%M' -o "$WORK/time.out" "$@" >/dev/null
    t1=$(date +%s%N)
    echo "$label $(((t1 - t0) / 1000000)) $(tail -n1 "$WORK/time.out")" >>"$results"
}

measure "backup tidewal" "$TIDEWAL" --config "$WORK/tidewal.toml" -q backup
measure "backup pgbackrest" pgbackrest --config="$WORK/pgbr/pgbackrest.conf" --stanza=bench --type=full backup
mkdir -p "$WORK/pgbb" && give_pg "$WORK/pgbb"
measure "backup pg_basebackup" "$PGBIN/pg_basebackup" -h "$PGSOCK" -p "$PGPORT_NUM" -U postgres -D "$WORK/pgbb/out" -Ft --compress=client-lz4 -X none -c fast

mkdir -p "$WORK/r" && give_pg "$WORK/r"
measure "restore tidewal" "$TIDEWAL" --config "$WORK/tidewal.toml" -q restore --to "$WORK/r/tidewal"
measure "restore pgbackrest" pgbackrest --config="$WORK/pgbr/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/r/pgbackrest" restore
as_pg mkdir -p "$WORK/r/pgbb"
measure "restore pg_basebackup" sh -c "lz4 -dc '$WORK/pgbb/out/base.tar.lz4' | tar -xf - -C '$WORK/r/pgbb' && sync -f '$WORK/r/pgbb'"

tw_bytes=$(du -sb "$WORK/repo/backups" | cut -f1)
br_bytes=$(du -sb "$WORK/pgbr/repo/backup" | cut -f1)
bb_bytes=$(du -sb "$WORK/pgbb/out" | cut -f1)
echo
echo "pgbench scale $SCALE, database $((size / 1048576)) MiB, $(nproc) cores"
python3 - "$results" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
base = {}
print(f"{'step':<10}{'tool':<16}{'wall s':>8}{'peak RSS MB':>13}{'vs tidewal':>12}")
for step, tool, ms, rss in rows:
    if tool == "tidewal":
        base[step] = int(ms)
    ratio = int(ms) / base[step] if step in base else float("nan")
    print(f"{step:<10}{tool:<16}{int(ms) / 1000:>8.1f}{int(rss) / 1024:>13.1f}{ratio:>11.2f}x")
PY
echo "stored: tidewal $((tw_bytes / 1048576)) MiB, pgbackrest $((br_bytes / 1048576)) MiB, pg_basebackup $((bb_bytes / 1048576)) MiB"
