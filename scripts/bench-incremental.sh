#!/usr/bin/env bash
# Incremental backups on a database that is mostly cold, as TimescaleDB keeps old chunks: a
# table partitioned by month, COLD (default 9) partitions that no longer change and one hot
# partition, ROWS (default 150000) rows each, so about 90% of the data is cold. Then:
#   a full backup;
#   "day 1": CHANGE percent (default 20) of the hot partition's rows updated, then
#            tidewal backup --incremental;
#   "day 2": the same again, then a second incremental backup;
# each step's wall time, the bytes the server sent (plaintext of the archives) and the bytes
# stored, as fractions of the full backup's; then restoring the full backup alone against
# restoring the chain (full + two incremental backups), REPS (default 3) times each, medians.
# PG=17 (default): PostgreSQL 17 server binaries (PG17_BIN, default /opt/tidewal-pg/17/bin,
# from scripts/install-pg-servers.sh) with summarize_wal = on: server-side increments.
# PG=15: Debian's PostgreSQL 15, which has no WAL summaries: client-side increments (the
# server sends everything; tidewal stores what changed). Client tools from PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

COLD=${COLD:-9}
ROWS=${ROWS:-150000}
CHANGE=${CHANGE:-20}
REPS=${REPS:-3}
PG=${PG:-17}
CLIENT_BIN=$PGBIN
case $PG in
    15) SUMMARIZE=off ;;
    17) PGBIN=${PG17_BIN:-/opt/tidewal-pg/17/bin} SUMMARIZE=on ;;
    *) echo "PG must be 15 or 17" >&2; exit 2 ;;
esac
[ -x "$PGBIN/postgres" ] || { echo "PostgreSQL $PG not found in $PGBIN: run scripts/install-pg-servers.sh (or set PG17_BIN)" >&2; exit 2; }
psql_c() {
    as_pg "$CLIENT_BIN/psql" -X -At -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PGPORT_NUM" -U postgres -d postgres -c "$1"
}
make_workdir bench-incremental
cleanup() {
    stop_cluster
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

build_tidewal
start_cluster "$WORK/cluster" "$([ "$SUMMARIZE" = on ] && echo "summarize_wal = on")
archive_timeout = 60
max_wal_size = 4GB"
init_file_repo
psql_c "ALTER SYSTEM SET archive_command = '$TIDEWAL --config $WORK/tidewal.toml -q wal-push %p'" >/dev/null
psql_c "SELECT pg_reload_conf()" >/dev/null

echo "loading $COLD cold partitions and one hot one, $ROWS rows each ..." >&2
psql_c "CREATE TABLE metrics (day date, device int, v double precision, note text) PARTITION BY RANGE (day)" >/dev/null
for m in $(seq 1 $((COLD + 1))); do
    from=$(printf '2026-%02d-01' "$m")
    to=$(if [ "$m" = 12 ]; then echo 2027-01-01; else printf '2026-%02d-01' $((m + 1)); fi)
    psql_c "CREATE TABLE metrics_$m PARTITION OF metrics FOR VALUES FROM ('$from') TO ('$to')" >/dev/null
    psql_c "INSERT INTO metrics SELECT '$from'::date + (g % 28), g % 1000, random() * 100, md5(g::text) FROM generate_series(1, $ROWS) g" >/dev/null
done
hot="metrics_$((COLD + 1))"
psql_c "VACUUM (FREEZE, ANALYZE)" >/dev/null
psql_c "CHECKPOINT" >/dev/null
size=$(psql_c "SELECT pg_database_size('postgres')")

results="$WORK/results.txt"
# step NAME CMD...: wall time (ms) of CMD run as postgres.
step() {
    local name=$1 t0 t1
    shift
    sync
    t0=$(date +%s%N)
    as_pg "$@" >/dev/null
    t1=$(date +%s%N)
    echo "$name $(((t1 - t0) / 1000000))" >>"$results"
}
change() {
    psql_c "UPDATE $hot SET v = v + 1 WHERE random() < $CHANGE / 100.0" >/dev/null
    psql_c "CHECKPOINT" >/dev/null
}

step full "$TIDEWAL" --config "$WORK/tidewal.toml" -q backup
change
step incremental1 "$TIDEWAL" --config "$WORK/tidewal.toml" -q backup --incremental
change
step incremental2 "$TIDEWAL" --config "$WORK/tidewal.toml" -q backup --incremental
last=$(psql_c "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$(psql_c "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 0.2; done

tw list --json >"$WORK/list.json"
full_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backups"][0]["id"])' "$WORK/list.json")
mkdir -p "$WORK/r" && give_pg "$WORK/r"
restore_full() {
    step restore-full "$TIDEWAL" --config "$WORK/tidewal.toml" -q restore --backup "$full_id" --to "$WORK/r/full"
    rm -rf "$WORK/r/full"
}
restore_chain() {
    step restore-chain "$TIDEWAL" --config "$WORK/tidewal.toml" -q restore --to "$WORK/r/chain"
    rm -rf "$WORK/r/chain"
}
# Taking turns, each first every other time, so neither always follows the other's clean-up.
for i in $(seq "$REPS"); do
    if [ $((i % 2)) = 1 ]; then restore_full; restore_chain; else restore_chain; restore_full; fi
done

echo
echo "a partitioned table, $COLD cold partitions and one hot, $ROWS rows each ($((size / 1048576)) MiB database);"
echo "$CHANGE% of the hot partition's rows updated before each incremental backup; PostgreSQL $PG, $(nproc) cores"
python3 - "$results" "$WORK/list.json" <<'PY'
import json, statistics as st, sys
times = {}
for line in open(sys.argv[1]):
    name, ms = line.split()
    times.setdefault(name, []).append(int(ms) / 1000)
backups = json.load(open(sys.argv[2]))["backups"]
full = backups[0]
# Client-side increments read everything from the server; server-side ones what it sent.
def sent(b):
    if b.get("increment") == "client":
        return sent(full)
    return sum(o["bytes"] for o in b["objects"] if o["name"].endswith(".tar"))
def stored(b): return sum(o["stored_bytes"] for o in b["objects"])
print(f"{'backup':<14}{'seconds':>9}{'vs full':>9}{'read MB':>10}{'vs full':>9}{'stored MB':>11}{'vs full':>9}")
for name, b in zip(("full", "incremental1", "incremental2"), backups):
    t = st.median(times[name])
    print(f"{name:<14}{t:>9.2f}{t / st.median(times['full']):>8.2f}x{sent(b) / 1e6:>10.1f}{sent(b) / sent(full):>8.1%}"
          f"{stored(b) / 1e6:>11.1f}{stored(b) / stored(full):>8.1%}")
f, c = st.median(times["restore-full"]), st.median(times["restore-chain"])
print(f"restore: the full backup {f:.2f} s, the chain (full + 2 incremental) {c:.2f} s: {c / f:.2f}x (medians of {len(times['restore-full'])})")
PY
