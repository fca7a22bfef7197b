#!/usr/bin/env bash
# Archive benchmark: the wall time of one archive_command call per 16 MiB segment, on the
# same real pgbench segments, for
#   tidewal wal-push   file:// repository (lz4 + XChaCha20-Poly1305, fsync on)
#   tidewal wal-push   S3 repository on a local s3s-fs server (same codec)
#   pgbackrest archive-push   local repository, lz4 (and lz4 + aes-256-cbc)
# Wall time includes starting the process (as the postgres user), like archive_command.
# Each tool archives each segment once (a second push of the same segment is a no-op for
# all of them). Prints median and p90 wall time and peak RSS, and the codec bench on a
# real segment. Needs: PostgreSQL 15, pgbackrest, s3s-fs (see .ci/run), python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

SEGMENTS=${SEGMENTS:-15}
make_workdir bench
S3PID=
cleanup() {
    stop_cluster
    [ -n "$S3PID" ] && kill "$S3PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

build_tidewal
start_cluster "$WORK/cluster" "wal_keep_size = 2GB
synchronous_commit = off"

echo "generating WAL with pgbench ..." >&2
pgbench_c -i -s 10 -q >/dev/null 2>&1
pgbench_segments "$SEGMENTS" "$WORK/segs"

# tidewal repositories.
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key" 2>/dev/null
mkdir -p "$WORK/repo" "$WORK/s3/bench" && give_pg "$WORK/repo" "$WORK/s3"
S3S=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
S3PORT=$(free_port)
"$S3S" --host 127.0.0.1 --port "$S3PORT" --access-key bench --secret-key benchsecret "$WORK/s3" >/dev/null 2>&1 &
S3PID=$!
write_tidewal_config "$WORK/file.toml" "file://$WORK/repo"
write_tidewal_config "$WORK/s3.toml" "s3://bench/cluster" "[repository.s3]
endpoint = \"http://127.0.0.1:$S3PORT\"
region = \"us-east-1\"
access_key_id = \"bench\"
secret_access_key = \"benchsecret\"
allow_http = true"
sleep 1
as_pg "$TIDEWAL" --config "$WORK/file.toml" -q init
as_pg "$TIDEWAL" --config "$WORK/s3.toml" -q init

# pgBackRest stanzas (plain lz4, and lz4 + AES).
for variant in lz4 lz4aes; do
    cipher=""
    [ "$variant" = lz4aes ] && cipher="repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=benchmarkpassphrase0123456789"
    pgbackrest_stanza "$WORK/pgbr-$variant" "archive-async=n
$cipher"
done

# time_each LABEL CMD...: runs CMD SEG for every segment; records "label ms rss_kb".
results="$WORK/results.txt"
time_each() {
    local label=$1
    shift
    local t0 t1 rss
    for f in "$WORK"/segs/*; do
        t0=$(date +%s%N)
        as_pg /usr/bin/time -f '%M' -o "$WORK/time.out" "$@" "$f"
        t1=$(date +%s%N)
        rss=$(tail -n1 "$WORK/time.out")
        echo "$label $(((t1 - t0) / 1000)) $rss" >>"$results"
    done
}

# Measure on a quiet machine: no server, no checkpoint writes, segments in the page cache.
psql_c "CHECKPOINT" >/dev/null
stop_cluster
sync
cat "$WORK"/segs/* >/dev/null
sleep 2
time_each "tidewal-file" "$TIDEWAL" --config "$WORK/file.toml" -q wal-push
time_each "tidewal-s3" "$TIDEWAL" --config "$WORK/s3.toml" -q wal-push
time_each "pgbackrest-lz4" pgbackrest --config="$WORK/pgbr-lz4/pgbackrest.conf" --stanza=bench archive-push
time_each "pgbackrest-lz4-aes" pgbackrest --config="$WORK/pgbr-lz4aes/pgbackrest.conf" --stanza=bench archive-push

tw_bytes=$(find "$WORK/repo/wal" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
br_bytes=$(find "$WORK/pgbr-lz4/repo/archive" -type f -name '0000*' -printf '%s\n' | awk '{s+=$1} END {print s}')
echo
echo "archive_command wall time per 16 MiB segment, $SEGMENTS real pgbench segments, $(nproc) cores"
python3 - "$results" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    label, micros, rss = line.split()
    rows.setdefault(label, []).append((int(micros) / 1000, int(rss)))
print(f"{'tool':<22}{'median ms':>10}{'p90 ms':>9}{'max RSS MB':>12}{'vs tidewal-file':>17}")
base = st.median(x for x, _ in rows["tidewal-file"])
for label, v in rows.items():
    ms = sorted(x for x, _ in v)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    print(f"{label:<22}{st.median(ms):>10.0f}{p90:>9.0f}{max(r for _, r in v) / 1024:>12.1f}{st.median(ms) / base:>16.2f}x")
PY
echo "stored bytes: tidewal $tw_bytes, pgbackrest lz4 $br_bytes (raw $((SEGMENTS * 16777216)))"
echo
echo "codec throughput on a real segment (criterion, benches/codec.rs):"
first=$(ls "$WORK"/segs | head -n1)
(cd .. && TIDEWAL_BENCH_WAL="$WORK/segs/$first" cargo bench --quiet --bench codec -- --noplot 2>&1 | grep -v '^Benchmarking' | grep -E '^codec/|thrpt|bytes \(' | grep -v '%\]' | sed 's/^/  /')
