#!/usr/bin/env bash
# Archive throughput: how fast each setup drains a backlog of WAL segments that PostgreSQL
# has marked .ready (built up while archive_command failed), in segments per second, and the
# daemon's resident memory while it works and once it is idle:
#   tidewal wal-push alone            archive_command, one file at a time
#   tidewal wal-push + tidewal daemon the daemon stores .ready files ahead, 4 at once, and
#                                     wal-push asks it over its Unix socket (the daemon is
#                                     started with the timer: no head start on the backlog)
#   pgbackrest archive-push           sync, lz4, aes-256-cbc
#   pgbackrest archive-push async     archive-async=y, process-max = the cores (PROCESS_MAX), lz4, aes-256-cbc
# SEGMENTS (default 40) per round. Needs: PostgreSQL 15, pgbackrest, python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

SEGMENTS=${SEGMENTS:-40}
make_workdir bench-daemon
trap cleanup_daemon_bench EXIT

build_tidewal
start_cluster "$WORK/cluster" "archive_timeout = 0
max_wal_size = 8GB
synchronous_commit = off
autovacuum = off"
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key" 2>/dev/null
mkdir -p "$WORK/repo" && give_pg "$WORK/repo"
METRICS_PORT=$(free_port)
write_tidewal_config "$WORK/tidewal.toml" "file://$WORK/repo" "
[daemon]
pgdata = \"$PGDATA_DIR\"
listen = \"127.0.0.1:$METRICS_PORT\"
socket = \"$WORK/tidewal.sock\"
backup_interval = \"1000d\""
as_pg "$TIDEWAL" --config "$WORK/tidewal.toml" -q init
pgbackrest_stanza "$WORK/pgbr" "repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=benchmarkpassphrase0123456789
process-max=$PROCESS_MAX
spool-path=$WORK/pgbr/spool
archive-async=n"
sed 's/^archive-async=n$/archive-async=y/' "$WORK/pgbr/pgbackrest.conf" >"$WORK/pgbr/async.conf"
give_pg "$WORK/pgbr"
psql_c "CREATE TABLE filler (t text)" >/dev/null

set_archive_command() {
    psql_c "ALTER SYSTEM SET archive_command = '$1'" >/dev/null
    psql_c "SELECT pg_reload_conf()" >/dev/null
}
archived() { psql_c "SELECT archived_count FROM pg_stat_archiver"; }

# backlog: SEGMENTS segments of fresh WAL that cannot be archived yet.
backlog() {
    set_archive_command "/bin/false"
    for _ in $(seq "$SEGMENTS"); do
        psql_c "INSERT INTO filler SELECT md5(random()::text) || repeat('x', 400) FROM generate_series(1, 30000)" >/dev/null
        psql_c "SELECT pg_switch_wal()" >/dev/null
    done
    psql_c "TRUNCATE filler" >/dev/null
}

results="$WORK/results.txt"
# drain LABEL COMMAND [START]: time until PostgreSQL has archived the whole backlog with
# COMMAND; START (a shell function) runs first inside the timed span (starting the daemon).
drain() {
    local label=$1 command=$2 start=${3:-} before t0 t1
    before=$(archived)
    sync
    t0=$(date +%s%N)
    [ -n "$start" ] && "$start"
    set_archive_command "$command"
    until [ "$(archived)" -ge $((before + SEGMENTS)) ]; do sleep 0.05; done
    t1=$(date +%s%N)
    echo "$label $(((t1 - t0) / 1000000))" >>"$results"
}

rss_kb() { ps -o rss= -p "$(pgrep -f "$daemon_pattern" | head -n1)" | tr -d ' '; }

echo "round 1: tidewal wal-push alone" >&2
backlog
drain "tidewal-wal-push" "$TIDEWAL --config $WORK/tidewal.toml -q wal-push %p"

echo "round 2: tidewal wal-push with the daemon" >&2
daemon_pattern="^$TIDEWAL --config $WORK/tidewal.toml daemon"
start_daemon() { as_pg "$TIDEWAL" --config "$WORK/tidewal.toml" daemon >>"$WORK/daemon.log" 2>&1 & }
# A first start takes the daemon's first base backup; it stops again before the backlog is
# made, so that it starts on the backlog with the timer, like the others (no head start).
start_daemon
for _ in $(seq 1 600); do grep -q "base backup .* complete" "$WORK/daemon.log" && break; sleep 0.2; done
pkill -TERM -f "$daemon_pattern" || true
while pgrep -f "$daemon_pattern" >/dev/null; do sleep 0.1; done
backlog
peak=0
( while sleep 0.2; do r=$(rss_kb 2>/dev/null || echo 0); echo "$r"; done ) >"$WORK/rss.txt" &
sampler=$!
drain "tidewal-with-daemon" "$TIDEWAL --config $WORK/tidewal.toml -q wal-push %p" start_daemon
kill "$sampler"
peak=$(sort -n "$WORK/rss.txt" | tail -n1)
sleep 12
idle=$(rss_kb)

echo "round 3: pgbackrest archive-push (sync)" >&2
pkill -TERM -f "$daemon_pattern" || true
daemon_pattern=
backlog
drain "pgbackrest-sync" "pgbackrest --config=$WORK/pgbr/pgbackrest.conf --stanza=bench archive-push %p"

echo "round 4: pgbackrest archive-push (async)" >&2
backlog
drain "pgbackrest-async" "pgbackrest --config=$WORK/pgbr/async.conf --stanza=bench archive-push %p"

echo
echo "$SEGMENTS segments of 16 MiB per round, $(nproc) cores"
python3 - "$results" "$SEGMENTS" <<'PY'
import sys
segs = int(sys.argv[2])
rows = [l.split() for l in open(sys.argv[1])]
base = None
print(f"{'setup':<22}{'seconds':>9}{'segments/s':>12}{'vs tidewal+daemon':>19}")
rates = {label: segs / (int(ms) / 1000) for label, ms in rows}
for label, ms in rows:
    r = rates[label]
    print(f"{label:<22}{int(ms) / 1000:>9.2f}{r:>12.1f}{r / rates['tidewal-with-daemon']:>18.2f}x")
PY
echo "tidewal daemon RSS: peak $((peak / 1024)) MB while draining, $((idle / 1024)) MB idle afterwards"
