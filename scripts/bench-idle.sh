#!/usr/bin/env bash
# What the daemon costs when there is little to do: its CPU seconds per minute on an idle
# cluster and under a steady light load (one small INSERT every 100 ms, pgbench -R 10), and
# its resident memory, in three setups, each with its own repository:
#   archive         the defaults: the archiver uploads .ready files ahead of PostgreSQL
#   stream          daemon.stream = true, daemon.archive = false
#   archive-stream  daemon.stream = true with the archiver on as well
#   archive-copy    the defaults plus one [[repository.copy]] on the local disk (a round a minute)
# Each daemon first takes its base backup at start; measuring begins once that is done.
# PHASE (default 60) seconds per measurement; TIDEWAL_BIN=path measures that binary instead
# of building this tree. Needs: PostgreSQL 15 (pgbench), python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

PHASE=${PHASE:-60}
make_workdir bench-idle
trap cleanup_daemon_bench EXIT

build_tidewal
start_cluster "$WORK/cluster" "max_replication_slots = 4"
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key" 2>/dev/null
psql_c "CREATE TABLE ticks (at timestamptz)" >/dev/null
echo "INSERT INTO ticks VALUES (now());" >"$WORK/tick.sql"
give_pg "$WORK/tick.sql"
TICK=$(getconf CLK_TCK)

# cpu_ticks PID: user + system time of the process so far, in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
rss_mb() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# per_minute TICKS: CPU seconds per minute over a PHASE-second measurement.
per_minute() { python3 -c "print(f'{$1 / $TICK * 60 / $PHASE:.2f}')"; }

results="$WORK/results.txt"
# measure LABEL DAEMON_SECTION: start a daemon with its own repository, wait for its first
# base backup, then measure PHASE seconds idle and PHASE seconds under the light load.
measure() {
    local label=$1 section=$2 conf="$WORK/$1.toml" pid t0 t1 t2 port
    mkdir -p "$WORK/repo-$label" && give_pg "$WORK/repo-$label"
    port=$(free_port)
    write_tidewal_config "$conf" "file://$WORK/repo-$label" "
[daemon]
pgdata = \"$PGDATA_DIR\"
listen = \"127.0.0.1:$port\"
spool = \"$WORK/spool-$label\"
slot = \"bench_idle\"
backup_interval = \"1000d\"
$section"
    as_pg "$TIDEWAL" --config "$conf" -q init
    psql_c "ALTER SYSTEM SET archive_command = '$TIDEWAL --config $conf -q wal-push %p'" >/dev/null
    psql_c "SELECT pg_reload_conf()" >/dev/null
    echo "$label: starting the daemon and waiting for its first base backup" >&2
    daemon_pattern="^$TIDEWAL --config $conf daemon"
    as_pg "$TIDEWAL" --config "$conf" daemon >"$WORK/$label.log" 2>&1 &
    for _ in $(seq 1 600); do grep -q "base backup .* complete" "$WORK/$label.log" && break; sleep 0.2; done
    grep -q "base backup .* complete" "$WORK/$label.log" || { cat "$WORK/$label.log" >&2; exit 1; }
    pid=$(pgrep -f "$daemon_pattern" | head -n1)
    sleep 5
    echo "$label: ${PHASE}s idle" >&2
    t0=$(cpu_ticks "$pid")
    sleep "$PHASE"
    t1=$(cpu_ticks "$pid")
    echo "$label: ${PHASE}s of one INSERT every 100 ms" >&2
    pgbench_c -n -c 1 -R 10 -T "$PHASE" -f "$WORK/tick.sql" >/dev/null 2>&1
    t2=$(cpu_ticks "$pid")
    echo "$label $(per_minute $((t1 - t0))) $(per_minute $((t2 - t1))) $(rss_mb "$pid")" >>"$results"
    pkill -TERM -f "$daemon_pattern" || true
    while pgrep -f "$daemon_pattern" >/dev/null; do sleep 0.2; done
    daemon_pattern=
    psql_c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'bench_idle'" >/dev/null
}

measure archive ""
measure stream "archive = false
stream = true"
measure archive-stream "stream = true"
mkdir -p "$WORK/copy" && give_pg "$WORK/copy"
measure archive-copy "
[[repository.copy]]
url = \"file://$WORK/copy\""

echo
echo "tidewal daemon, CPU seconds per minute ($PHASE s each), $(nproc) cores"
printf '%-16s%8s%14s%10s\n' setup idle "light load" "RSS MB"
while read -r label idle load rss; do
    printf '%-16s%8s%14s%10s\n' "$label" "$idle" "$load" "$rss"
done <"$results"
