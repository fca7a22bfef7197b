#!/usr/bin/env bash
# A store that is far away: tidewal against a local s3s-fs S3 server behind a TCP proxy that
# adds DELAYS milliseconds (default "0 20 50") in each direction (benches/latency_proxy.rs),
# so a request and its answer take 2 × delay more. At each delay it measures
#   wal-push      one archive_command call per segment, no daemon (SEGMENTS real segments):
#                 median wall time and segments/s
#   backup        a base backup of a pgbench database (REMOTE_SCALE, default 10: about 160 MB)
#   restore       restoring that backup
#   daemon        draining a backlog of DAEMON_SEGMENTS (default 40) .ready segments with the
#                 daemon running (started with the timer), in segments/s: above 12 it keeps
#                 up with 200 MB/s of WAL
# Prints one table; the ratios are against the same step at 0 ms.
# Needs: PostgreSQL 15, s3s-fs (see .ci/run), python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

SEGMENTS=${SEGMENTS:-10}
SCALE=${REMOTE_SCALE:-10}
DAEMON_SEGMENTS=${DAEMON_SEGMENTS:-40}
DELAYS=${DELAYS:-"0 20 50"}
make_workdir bench-remote
S3PID=
PROXYPID=
daemon_pattern=
cleanup() {
    [ -n "$daemon_pattern" ] && pkill -TERM -f "$daemon_pattern" 2>/dev/null || true
    stop_cluster
    [ -n "$PROXYPID" ] && kill "$PROXYPID" 2>/dev/null || true
    [ -n "$S3PID" ] && kill "$S3PID" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

build_tidewal
root=$(cd .. && pwd)
(cd "$root" && cargo build --release --quiet --example latency_proxy)
PROXY="${CARGO_TARGET_DIR:-$root/target}/release/examples/latency_proxy"
start_cluster "$WORK/cluster" "wal_keep_size = 2GB
synchronous_commit = off
max_wal_size = 4GB
archive_command = '/bin/true'"

echo "generating WAL and a pgbench database (scale $SCALE) ..." >&2
pgbench_c -i -s "$SCALE" -q >/dev/null 2>&1
pgbench_segments "$SEGMENTS" "$WORK/segs"
psql_c "CHECKPOINT" >/dev/null
# The load's dirty pages would otherwise be written back during the first steps, and every
# fsync the store makes would wait for them.
sync

as_pg "$TIDEWAL" keygen --output "$WORK/repo.key" 2>/dev/null
mkdir -p "$WORK/s3" && give_pg "$WORK/s3"
S3S=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
S3PORT=$(free_port)
"$S3S" --host 127.0.0.1 --port "$S3PORT" --access-key bench --secret-key benchsecret "$WORK/s3" >/dev/null 2>&1 &
S3PID=$!
sleep 1

results="$WORK/results.txt"
set_archive_command() {
    psql_c "ALTER SYSTEM SET archive_command = '$1'" >/dev/null
    psql_c "SELECT pg_reload_conf()" >/dev/null
}
# measure DELAY STEP CMD...: wall time (µs) and peak RSS (kB) of CMD, run as postgres.
measure() {
    local delay=$1 step=$2 t0 t1
    shift 2
    t0=$(date +%s%N)
    as_pg /usr/bin/time -f '%M' -o "$WORK/time.out" "$@" >/dev/null
    t1=$(date +%s%N)
    echo "$delay $step $(((t1 - t0) / 1000)) $(tail -n1 "$WORK/time.out")" >>"$results"
}

for delay in $DELAYS; do
    echo "at ${delay} ms each way ..." >&2
    port=$(free_port)
    "$PROXY" "127.0.0.1:$port" "127.0.0.1:$S3PORT" "$delay" 2>>"$WORK/proxy.log" &
    PROXYPID=$!
    sleep 0.5
    mkdir -p "$WORK/s3/delay$delay" && give_pg "$WORK/s3/delay$delay"
    write_tidewal_config "$WORK/d$delay.toml" "s3://delay$delay/cluster" "[repository.s3]
endpoint = \"http://127.0.0.1:$port\"
region = \"us-east-1\"
access_key_id = \"bench\"
secret_access_key = \"benchsecret\"
allow_http = true

[daemon]
pgdata = \"$PGDATA_DIR\"
listen = \"127.0.0.1:$(free_port)\"
socket = \"$WORK/d$delay.sock\"
spool = \"$WORK/spool$delay\"
backup_interval = \"1000d\"
${DAEMON_EXTRA:-}"
    tw=("$TIDEWAL" --config "$WORK/d$delay.toml" -q)
    as_pg "${tw[@]}" init
    for f in "$WORK"/segs/*; do
        measure "$delay" wal-push "${tw[@]}" wal-push "$f"
    done
    # The backup waits for its WAL: archive into this delay's repository from now on.
    set_archive_command "${tw[*]} wal-push %p"
    measure "$delay" backup "${tw[@]}" backup
    mkdir -p "$WORK/r" && give_pg "$WORK/r"
    measure "$delay" restore "${tw[@]}" restore --to "$WORK/r/d$delay"
    rm -rf "$WORK/r/d$delay"

    # The daemon drains a backlog: made while archiving fails, timed from the daemon's start.
    set_archive_command "/bin/false"
    psql_c "CREATE TABLE IF NOT EXISTS filler (t text)" >/dev/null
    for _ in $(seq "$DAEMON_SEGMENTS"); do
        psql_c "INSERT INTO filler SELECT md5(random()::text) || repeat('x', 400) FROM generate_series(1, 30000)" >/dev/null
        psql_c "SELECT pg_switch_wal()" >/dev/null
    done
    psql_c "TRUNCATE filler" >/dev/null
    before=$(psql_c "SELECT archived_count FROM pg_stat_archiver")
    daemon_pattern="^$TIDEWAL --config $WORK/d$delay.toml daemon"
    sync
    t0=$(date +%s%N)
    as_pg "$TIDEWAL" --config "$WORK/d$delay.toml" daemon >>"$WORK/daemon$delay.log" 2>&1 &
    set_archive_command "${tw[*]} wal-push %p"
    until [ "$(psql_c "SELECT archived_count FROM pg_stat_archiver")" -ge $((before + DAEMON_SEGMENTS)) ]; do
        sleep 0.05
    done
    t1=$(date +%s%N)
    echo "$delay daemon $(((t1 - t0) / 1000)) 0" >>"$results"
    pkill -TERM -f "$daemon_pattern" || true
    while pgrep -f "$daemon_pattern" >/dev/null; do sleep 0.1; done
    daemon_pattern=
    # Not into a repository whose proxy is about to go: PostgreSQL's archiver would sit in a
    # wal-push retrying it while the next round's backup waits for its WAL.
    set_archive_command "/bin/true"
    psql_c "SELECT pg_switch_wal()" >/dev/null
    sleep 1
    kill "$PROXYPID"
    wait "$PROXYPID" 2>/dev/null || true
    PROXYPID=
done

echo
echo "tidewal against S3 (s3s-fs) behind a delay in each direction, $(nproc) cores"
echo "($SEGMENTS real pgbench segments pushed one wal-push each, no daemon; pgbench scale $SCALE backup and restore;"
echo " daemon: $DAEMON_SEGMENTS-segment backlog drained with the daemon and wal-push, segments/s; RSS not sampled there)"
python3 - "$results" "$DAEMON_SEGMENTS" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    delay, step, micros, rss = line.split()
    rows.setdefault((step, int(delay)), []).append((int(micros) / 1000, int(rss)))
segs = int(sys.argv[2])
print(f"{'step':<10}{'delay ms':>9}{'median ms':>11}{'per s':>8}{'max RSS MB':>12}{'vs 0 ms':>9}")
for step in ("wal-push", "backup", "restore", "daemon"):
    base = None
    for (s, delay), v in sorted(rows.items()):
        if s != step:
            continue
        med = st.median(x for x, _ in v)
        base = base or med
        rate = {"wal-push": f"{1000 / med:.1f}", "daemon": f"{segs * 1000 / med:.1f}"}.get(step, "")
        print(f"{step:<10}{delay:>9}{med:>11.0f}{rate:>8}{max(r for _, r in v) / 1024:>12.1f}{med / base:>8.2f}x")
PY
