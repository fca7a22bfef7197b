#!/usr/bin/env bash
# Streaming catch-up: a backlog of SEGMENTS segments of WAL is held by a physical slot while
# nothing reads it; then the receiver starts, and the clock runs until the slot's
# restart_lsn reaches the end of the backlog (the server then knows all of it is durable).
#   tidewal daemon, streaming mode   lz4 + XChaCha20-Poly1305 into a local repository;
#                                    confirms a segment only once it is stored
#   pg_receivewal --synchronous      lz4 (-Z lz4), no encryption, fsync of every write
# ROUNDS (default 3) rounds, each on a fresh backlog; medians. SPOOL_DIR sets the daemon's
# spool (a directory of the postgres user's, mode 0700). Needs PostgreSQL 15, python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

SEGMENTS=${SEGMENTS:-40}
ROUNDS=${ROUNDS:-3}
make_workdir bench-stream
daemon_pattern=
receivewal=
# runuser does not pass signals on to pg_receivewal: find it by its command line.
stop_receivewal() {
    pkill -TERM -f "pg_receivewal -D $WORK/receivewal" 2>/dev/null || true
    while pgrep -f "pg_receivewal -D $WORK/receivewal" >/dev/null; do sleep 0.1; done
    receivewal=
}
cleanup() {
    [ -n "$daemon_pattern" ] && pkill -TERM -f "$daemon_pattern" 2>/dev/null || true
    [ -n "$receivewal" ] && stop_receivewal
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT

build_tidewal
start_cluster "$WORK/cluster" "archive_timeout = 0
archive_command = '/bin/true'
max_wal_size = 8GB
synchronous_commit = off
autovacuum = off"
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key" 2>/dev/null
mkdir -p "$WORK/repo" "$WORK/spool" "$WORK/receivewal" && give_pg "$WORK/repo" "$WORK/spool" "$WORK/receivewal"
METRICS_PORT=$(free_port)
write_tidewal_config "$WORK/tidewal.toml" "file://$WORK/repo" "
[daemon]
archive = false
stream = true
slot = \"tidewal_bench\"
flush_interval = \"1s\"
spool = \"${SPOOL_DIR:-$WORK/spool}\"
listen = \"127.0.0.1:$METRICS_PORT\"
backup_interval = \"1000d\""
as_pg "$TIDEWAL" --config "$WORK/tidewal.toml" -q init
psql_c "CREATE TABLE filler (t text)" >/dev/null
psql_c "SELECT pg_create_physical_replication_slot('receivewal_bench', true)" >/dev/null

daemon_pattern="^$TIDEWAL --config $WORK/tidewal.toml daemon"
start_daemon() {
    as_pg "$TIDEWAL" --config "$WORK/tidewal.toml" daemon >>"$WORK/daemon.log" 2>&1 &
}
stop_daemon() {
    pkill -TERM -f "$daemon_pattern" || true
    while pgrep -f "$daemon_pattern" >/dev/null; do sleep 0.1; done
}
# The daemon takes the first base backup (and creates its slot) before anything is timed.
start_daemon
for _ in $(seq 1 600); do grep -q "base backup .* complete" "$WORK/daemon.log" && break; sleep 0.2; done
stop_daemon

# backlog: SEGMENTS segments the slots hold; prints the LSN where the last one's WAL ends
# (so both receivers are done once they have whole segments, with no flush interval in it).
backlog() {
    for _ in $(seq $((SEGMENTS - 1))); do
        psql_c "INSERT INTO filler SELECT md5(random()::text) || repeat('x', 400) FROM generate_series(1, 30000)" >/dev/null
        psql_c "SELECT pg_switch_wal()" >/dev/null
    done
    psql_c "TRUNCATE filler" >/dev/null
    psql_c "SELECT pg_switch_wal()"
}
caught_up() { [ "$(psql_c "SELECT restart_lsn >= '$2' FROM pg_replication_slots WHERE slot_name = '$1'")" = t ]; }
rss_kb() { ps -o rss= -p "$(pgrep -f "$daemon_pattern" | head -n1)" 2>/dev/null | tr -d ' '; }

results="$WORK/results.txt"
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS: a backlog of $SEGMENTS segments" >&2
    target=$(backlog)
    sync

    t0=$(date +%s%N)
    start_daemon
    ( while sleep 0.2; do rss_kb || true; done ) >"$WORK/rss.txt" &
    sampler=$!
    until caught_up tidewal_bench "$target"; do
        pgrep -f "$daemon_pattern" >/dev/null || { tail "$WORK/daemon.log" >&2; exit 1; }
        sleep 0.05
    done
    t1=$(date +%s%N)
    kill "$sampler"
    echo "tidewal $(((t1 - t0) / 1000000)) $(sort -n "$WORK/rss.txt" | tail -n1)" >>"$results"
    if [ "$round" = "$ROUNDS" ]; then
        sleep 12 # past the monitor's periodic release of freed memory
        echo "idle $(rss_kb)" >"$WORK/idle.txt"
    fi
    stop_daemon

    t0=$(date +%s%N)
    as_pg "$PGBIN/pg_receivewal" -D "$WORK/receivewal" -h "$PGSOCK" -p "$PGPORT_NUM" -U postgres \
        --slot receivewal_bench --synchronous --compress=lz4 -n 2>>"$WORK/receivewal.log" &
    receivewal=$!
    until caught_up receivewal_bench "$target"; do
        kill -0 "$receivewal" 2>/dev/null || { cat "$WORK/receivewal.log" >&2; exit 1; }
        sleep 0.05
    done
    t1=$(date +%s%N)
    stop_receivewal
    echo "pg_receivewal $(((t1 - t0) / 1000000)) 0" >>"$results"
done

echo
echo "$SEGMENTS segments of 16 MiB per round, $ROUNDS rounds, $(nproc) cores; medians (range)"
python3 - "$results" "$SEGMENTS" "$(cut -d' ' -f2 "$WORK/idle.txt")" <<'PY'
import statistics, sys
segs = int(sys.argv[2])
runs = {}
for line in open(sys.argv[1]):
    label, ms, rss = line.split()
    runs.setdefault(label, []).append((int(ms) / 1000, int(rss)))
print(f"{'receiver':<16}{'seconds':>9}{'segments/s':>12}{'vs tidewal':>12}   range (s)")
base = statistics.median(s for s, _ in runs["tidewal"])
for label, rs in runs.items():
    secs = [s for s, _ in rs]
    med = statistics.median(secs)
    print(f"{label:<16}{med:>9.2f}{segs / med:>12.1f}{med / base:>11.2f}x   {min(secs):.2f}-{max(secs):.2f}")
peaks = [r for _, r in runs["tidewal"]]
print(f"tidewal daemon RSS: peak {max(peaks) // 1024} MB while catching up, {int(sys.argv[3]) // 1024} MB idle afterwards")
PY
