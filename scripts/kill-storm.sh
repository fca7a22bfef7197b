#!/usr/bin/env bash
# What kill -9 leaves behind: KILLS (default 30) random kill -9s of `tidewal backup` and of the
# daemon while it takes a base backup, under a steady insert load, on a file:// repository.
# Reports the debris (object_store staging files `<name>#<n>`, backups without backup.json)
# right after the storm and after one `tidewal prune`, then checks that a last backup
# completes and restores (`tidewal list` shows it with its objects intact).
# TIDEWAL_BIN=path measures that binary instead of building this tree; SCALE (default 40)
# is the pgbench scale (40: about 600 MB, a backup of a few seconds). Needs: PostgreSQL 15 (pgbench), python3.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

KILLS=${KILLS:-30}
SCALE=${SCALE:-40}
make_workdir kill-storm
load_pid=
cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    pkill -9 -f "$WORK/tidewal" 2>/dev/null || true
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT

build_tidewal
start_cluster "$WORK/cluster" "archive_timeout = 60"
as_pg "$TIDEWAL" keygen --output "$WORK/repo.key" 2>/dev/null
REPO="$WORK/repo"
mkdir -p "$REPO" && give_pg "$REPO"
CONF="$WORK/tidewal.toml"
write_tidewal_config "$CONF" "file://$REPO"
cat >>"$CONF" <<CONF

[daemon]
pgdata = "$PGDATA_DIR"
listen = "127.0.0.1:$(free_port)"
spool = "$WORK/spool"
CONF
as_pg "$TIDEWAL" --config "$CONF" init >/dev/null 2>&1
psql_c "ALTER SYSTEM SET archive_command = '$TIDEWAL --config $CONF wal-push %p'" >/dev/null
psql_c "SELECT pg_reload_conf()" >/dev/null
pgbench_c -i -q -s "$SCALE" >/dev/null 2>&1
psql_c "CREATE TABLE ticks (at timestamptz)" >/dev/null
echo "INSERT INTO ticks VALUES (now());" >"$WORK/tick.sql"
give_pg "$WORK/tick.sql"
as_pg "$PGBIN/pgbench" -h "$PGSOCK" -p "$PGPORT_NUM" -U postgres -n -R 20 -T 100000 -f "$WORK/tick.sql" postgres \
    >/dev/null 2>&1 &
load_pid=$!

# debris: staging files (count and MB) and backup folders without backup.json.
debris() {
    local files mb incomplete=0 d
    files=$(find "$REPO" -name '*#*' -type f | wc -l)
    mb=$(find "$REPO" -name '*#*' -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s / 1048576}')
    for d in "$REPO"/backups/*/; do
        [ -d "$d" ] && [ ! -e "$d/backup.json" ] && incomplete=$((incomplete + 1))
    done
    echo "$files staging file(s), $mb MB; $incomplete backup folder(s) without backup.json"
}

for i in $(seq 1 "$KILLS"); do
    delay=$(python3 -c "import random; print(round(random.uniform(0.2, 2.0), 2))")
    if [ $((i % 3)) = 0 ]; then
        # The daemon takes a base backup at start when there is none, or on SIGUSR1.
        as_pg "$TIDEWAL" --config "$CONF" daemon >/dev/null 2>&1 &
        sleep 1
        pkill -USR1 -f "$TIDEWAL --config $CONF daemon" 2>/dev/null || true
        what=daemon
    else
        as_pg "$TIDEWAL" --config "$CONF" backup >/dev/null 2>&1 &
        what=backup
    fi
    sleep "$delay"
    pkill -9 -f "$TIDEWAL --config $CONF (daemon|backup)" 2>/dev/null || true
    sleep 0.2
    printf 'kill %2d: %-6s after %ss\n' "$i" "$what" "$delay"
done
echo "after $KILLS kills: $(debris)"
as_pg "$TIDEWAL" --config "$CONF" prune >/dev/null 2>&1 || echo "prune failed"
echo "after one prune:  $(debris)"
as_pg "$TIDEWAL" --config "$CONF" backup >/dev/null 2>&1 && echo "a backup after the storm completed"
as_pg "$TIDEWAL" --config "$CONF" list --json | python3 -c '
import json, sys
l = json.load(sys.stdin)
backups = l["backups"]
ok = [b["id"] for b in backups if b.get("objects_ok", True)]
print(len(backups), "complete backup(s),", len(ok), "with every object intact; restorable to", l["restorable_to"])
'
