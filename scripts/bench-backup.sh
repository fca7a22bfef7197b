#!/usr/bin/env bash
# Base backup and restore benchmark on one pgbench database (SCALE, default 100: about
# 1.5 GB), one tool after the other on the same cluster, printing wall time and peak RSS:
#   tidewal backup / restore        file:// repository, lz4 + XChaCha20-Poly1305, fsync on
#   tidewal-aes                     the same with a repository made by init --cipher aes-256-gcm
#   pgbackrest backup --type=full / restore   local repository, lz4, process-max = the cores (PROCESS_MAX), aes-256-cbc
#   pg_basebackup -Ft --compress=client-lz4 (WAL streamed too), and lz4 -d | tar -x to restore it
#   tidewal verify                       read the whole repository back (every backup, all WAL)
#   tidewal verify --restore-test        once: restore, recover, amcheck (no peer has one)
# Each step runs REPS times (default 3), the tools taking turns; the median is reported.
# BASELINE_BIN=path adds rows for another tidewal build (tidewal-base) on the same
# repository, to compare two versions in one run; VERIFY=0 leaves out the two verify steps.
# Needs: PostgreSQL 15, pgbackrest, lz4, python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

SCALE=${SCALE:-100}
make_workdir bench-backup
cleanup() {
    stop_cluster
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

build_tidewal
BASE=
if [ -n "${BASELINE_BIN:-}" ]; then
    install -m 755 "$BASELINE_BIN" "$WORK/tidewal-base"
    BASE="$WORK/tidewal-base"
fi
start_cluster "$WORK/cluster" "archive_timeout = 60
synchronous_commit = off
max_wal_size = 4GB"
init_file_repo
mkdir -p "$WORK/repo-aes" && give_pg "$WORK/repo-aes"
write_tidewal_config "$WORK/aes.toml" "file://$WORK/repo-aes"
as_pg "$TIDEWAL" --config "$WORK/aes.toml" -q init --cipher aes-256-gcm
# Each repository waits for its backups' WAL: archive into both.
psql_c "ALTER SYSTEM SET archive_command = '$TIDEWAL --config $WORK/tidewal.toml -q wal-push %p && $TIDEWAL --config $WORK/aes.toml -q wal-push %p'" >/dev/null
psql_c "SELECT pg_reload_conf()" >/dev/null

echo "loading pgbench scale $SCALE ..." >&2
pgbench_c -i -s "$SCALE" -q >/dev/null 2>&1
psql_c "CHECKPOINT" >/dev/null
size=$(psql_c "SELECT pg_database_size('postgres')")

pgbackrest_stanza "$WORK/pgbr" "repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=benchmarkpassphrase0123456789
process-max=$PROCESS_MAX
start-fast=y
archive-check=n"

results="$WORK/results.txt"
REPS=${REPS:-3}
# measure STEP TOOL CMD...: wall time (ms) and peak RSS (kB) of CMD, run as postgres.
measure() {
    local step=$1 tool=$2 t0 t1
    shift 2
    sync
    t0=$(date +%s%N)
    as_pg /usr/bin/time -f '%M' -o "$WORK/time.out" "$@" >/dev/null
    t1=$(date +%s%N)
    echo "$step $tool $(((t1 - t0) / 1000000)) $(tail -n1 "$WORK/time.out")" >>"$results"
}

# The tools take turns, REPS rounds, so a noisy moment hits all of them alike.
mkdir -p "$WORK/pgbb" "$WORK/r" && give_pg "$WORK/pgbb" "$WORK/r"
for i in $(seq "$REPS"); do
    measure backup tidewal "$TIDEWAL" --config "$WORK/tidewal.toml" -q backup
    measure backup tidewal-aes "$TIDEWAL" --config "$WORK/aes.toml" -q backup
    [ -z "$BASE" ] || measure backup tidewal-base "$BASE" --config "$WORK/tidewal.toml" -q backup
    measure backup pgbackrest pgbackrest --config="$WORK/pgbr/pgbackrest.conf" --stanza=bench --type=full backup
    rm -rf "$WORK/pgbb/out"
    # The issue's command: WAL streamed alongside (-X stream, the default) into pg_wal.tar.
    measure backup pg_basebackup "$PGBIN/pg_basebackup" -h "$PGSOCK" -p "$PGPORT_NUM" -U postgres -D "$WORK/pgbb/out" -Ft --compress=client-lz4 -c fast
done
for i in $(seq "$REPS"); do
    measure restore tidewal "$TIDEWAL" --config "$WORK/tidewal.toml" -q restore --to "$WORK/r/tidewal"
    rm -rf "$WORK/r/tidewal"
    measure restore tidewal-aes "$TIDEWAL" --config "$WORK/aes.toml" -q restore --to "$WORK/r/tidewal-aes"
    rm -rf "$WORK/r/tidewal-aes"
    if [ -n "$BASE" ]; then
        measure restore tidewal-base "$BASE" --config "$WORK/tidewal.toml" -q restore --to "$WORK/r/tidewal-base"
        rm -rf "$WORK/r/tidewal-base"
    fi
    measure restore pgbackrest pgbackrest --config="$WORK/pgbr/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/r/pgbackrest" restore
    rm -rf "$WORK/r/pgbackrest"
    as_pg mkdir -p "$WORK/r/pgbb/pg_wal"
    measure restore pg_basebackup sh -c "lz4 -dc '$WORK/pgbb/out/base.tar.lz4' | tar -xf - -C '$WORK/r/pgbb' && tar -xf '$WORK/pgbb/out/pg_wal.tar' -C '$WORK/r/pgbb/pg_wal' && sync -f '$WORK/r/pgbb'"
    rm -rf "$WORK/r/pgbb"
done

# Reading the whole repository back: every backup and all the WAL. pgBackRest's `verify`
# (2.45) is left out: with no WAL in its own archive it checks nothing ("no archives exist
# in the repo"), and even with WAL archived it finished in a quarter second without reading
# the backup files, so its time would not compare like for like.
for i in $(seq "$REPS"); do
    [ "${VERIFY:-1}" = 0 ] && break
    measure verify tidewal "$TIDEWAL" --config "$WORK/tidewal.toml" -q verify
done

# A restore test of the newest backup: restore, recover, amcheck every index and table.
[ "${VERIFY:-1}" = 0 ] || measure restore-test tidewal "$TIDEWAL" --config "$WORK/tidewal.toml" -q verify --restore-test

tw_repo=$(du -sb "$WORK/repo" | cut -f1)
per=$REPS; [ -z "$BASE" ] || per=$((2 * REPS))
tw_bytes=$(($(du -sb "$WORK/repo/backups" | cut -f1) / per))
br_bytes=$(($(du -sb "$WORK/pgbr/repo/backup" | cut -f1) / REPS))
bb_bytes=$(du -sb "$WORK/pgbb/out" | cut -f1)
echo
echo "pgbench scale $SCALE, database $((size / 1048576)) MiB, $(nproc) cores"
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for step, tool, ms, rss in (l.split() for l in open(sys.argv[1])):
    runs.setdefault((step, tool), []).append((int(ms) / 1000, int(rss) / 1024))
print(f"{'step':<13}{'tool':<15}{'median s':>9}{'min-max s':>13}{'peak RSS MB':>13}{'vs tidewal':>12}")
for (step, tool), r in runs.items():
    med = statistics.median(t for t, _ in r)
    base = statistics.median(t for t, _ in runs[(step, "tidewal")])
    span = f"{min(t for t, _ in r):.1f}-{max(t for t, _ in r):.1f}"
    print(f"{step:<13}{tool:<15}{med:>9.2f}{span:>13}{max(m for _, m in r):>13.1f}{med / base:>11.2f}x")
PY
[ "${VERIFY:-1}" = 0 ] || python3 - "$results" "$tw_repo" <<'PY'
import statistics, sys
secs = [int(ms) / 1000 for step, tool, ms, _ in (l.split() for l in open(sys.argv[1])) if (step, tool) == ("verify", "tidewal")]
mib = int(sys.argv[2]) / 1048576
print(f"tidewal verify: {mib:.0f} MiB repository in {statistics.median(secs):.1f} s, {mib / statistics.median(secs):.0f} MiB/s")
PY
echo "stored: tidewal $((tw_bytes / 1048576)) MiB, pgbackrest $((br_bytes / 1048576)) MiB, pg_basebackup $((bb_bytes / 1048576)) MiB"
