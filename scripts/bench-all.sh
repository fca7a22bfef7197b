#!/usr/bin/env bash
# Every benchmark in one run, tidewal beside pgBackRest and pg_basebackup/pg_receivewal, and
# BENCHMARKS.md written from what it measured:
#   bench-backup.sh   base backup, restore and verify of one pgbench database (SCALE)
#   bench-archive.sh  archive_command wall time per segment (file://, S3), and the codec
#   bench-daemon.sh   archive throughput: wal-push alone, with the daemon, pgBackRest sync
#                     and async
#   bench-stream.sh   streaming catch-up: the daemon against pg_receivewal --synchronous
#   bench-idle.sh     the daemon's CPU seconds per minute, idle and under a light load
#   bench-remote.sh   wal-push, backup, restore and the daemon's drain against S3 behind
#                     0, 20 and 50 ms of added delay each way
# Each part starts its own cluster from the same pgbench scale, so they do not disturb one
# another. pgBackRest runs with process-max = the cores (PROCESS_MAX). Sizes: SCALE (100,
# about 1.5 GB), REPS (3), SEGMENTS, ROUNDS, PHASE as the parts document; QUICK=1 shrinks
# them for a smoke run. Needs: PostgreSQL 15, pgbackrest, lz4, s3s-fs, python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
root=$(cd .. && pwd)
out=${OUT:-$root/BENCHMARKS.md}

if [ "${QUICK:-}" = 1 ]; then
    export SCALE=${SCALE:-10} REPS=${REPS:-1} SEGMENTS=${SEGMENTS:-8} ROUNDS=${ROUNDS:-1} PHASE=${PHASE:-15}
fi
export SCALE=${SCALE:-100} REPS=${REPS:-3} PROCESS_MAX
command -v pgbackrest >/dev/null || { echo "pgbackrest not found: apt-get install pgbackrest lz4" >&2; exit 2; }

# One release build for every part.
if [ -z "${TIDEWAL_BIN:-}" ]; then
    (cd "$root" && cargo build --release --quiet)
    TIDEWAL_BIN="${CARGO_TARGET_DIR:-$root/target}/release/tidewal"
fi
export TIDEWAL_BIN

log=$(mktemp -d /tmp/tidewal-bench-all.XXXXXX)
trap 'rm -rf "$log"' EXIT
started=$(date -u +%Y-%m-%dT%H:%MZ)
for part in backup archive daemon stream idle remote; do
    echo "== bench-$part.sh" >&2
    t0=$(date +%s)
    ./bench-"$part".sh 2>"$log/$part.err" | grep -v '^initialised ' | tee "$log/$part.out"
    echo "$(($(date +%s) - t0))" >"$log/$part.secs"
done

disk_dev=$(df --output=source /tmp | tail -n1)
rota=$(lsblk -ndo ROTA "$disk_dev" 2>/dev/null | xargs || echo "?")
{
    echo "# Benchmarks"
    echo
    echo "Written by \`scripts/bench-all.sh\` on $started; rerun with"
    echo
    echo '```'
    echo "SCALE=$SCALE REPS=$REPS PROCESS_MAX=$PROCESS_MAX scripts/bench-all.sh"
    echo '```'
    echo
    echo "Ratios are the peer's figure over tidewal's (time: above 1 means tidewal is faster;"
    echo "segments per second: below 1 means tidewal is faster). tidewal encrypts everything"
    echo "(XChaCha20-Poly1305) and fsyncs every object it stores; pgBackRest runs with AES-256 where"
    echo "its label says so; pg_basebackup and pg_receivewal encrypt nothing. pgBackRest's verify"
    echo "is not timed (it did not read its backup files here; see scripts/bench-backup.sh)."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "- memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "- disk: $(df -h --output=size,fstype /tmp | tail -n1 | xargs) under /tmp, rotational: $rota"
    echo "- kernel: $(uname -r)"
    echo
    echo "## Versions"
    echo
    echo "- $("$TIDEWAL_BIN" --version)"
    echo "- PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
    echo "- $(pgbackrest version)"
    echo "- lz4 $(lz4 -V 2>&1 | grep -o 'v[0-9.]*' | head -n1)"
    for part in backup archive daemon stream idle remote; do
        echo
        echo "## bench-$part.sh ($(cat "$log/$part.secs") s)"
        echo
        echo '```'
        cat "$log/$part.out"
        echo '```'
    done
} >"$out"
echo "wrote $out" >&2
