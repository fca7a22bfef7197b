# Shared helpers for the demo and bench scripts: a throwaway PostgreSQL cluster run as the
# postgres user when we are root (PostgreSQL refuses to run as root), in a private directory.
# shellcheck shell=bash

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL 15 not found in $PGBIN: apt-get install postgresql-15 (or set PGBIN)" >&2; exit 2; }

# pgBackRest's process-max: every core unless set.
PROCESS_MAX=${PROCESS_MAX:-$(nproc)}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

give_pg() {
    if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# make_workdir NAME: a world-traversable temp dir owned by postgres; sets WORK.
make_workdir() {
    WORK=$(mktemp -d "/tmp/tidewal-$1.XXXXXX")
    chmod 755 "$WORK"
    give_pg "$WORK"
}

# build_tidewal: release build (or the binary TIDEWAL_BIN names, to measure another
# version), copied where the postgres user can run it; sets TIDEWAL.
build_tidewal() {
    local root bin=${TIDEWAL_BIN:-}
    if [ -z "$bin" ]; then
        root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
        (cd "$root" && cargo build --release --quiet)
        bin="${CARGO_TARGET_DIR:-$root/target}/release/tidewal"
    fi
    install -m 755 "$bin" "$WORK/tidewal"
    TIDEWAL="$WORK/tidewal"
}

# start_cluster DIR [extra postgresql.conf lines]: initdb and start; sets PGDATA_DIR, PGSOCK, PGPORT_NUM.
start_cluster() {
    local dir=$1 extra=${2:-}
    mkdir -p "$dir/sock"
    give_pg "$dir"
    PGDATA_DIR="$dir/pgdata"
    PGSOCK="$dir/sock"
    PGPORT_NUM=$(free_port)
    as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
port = $PGPORT_NUM
listen_addresses = ''
unix_socket_directories = '$PGSOCK'
wal_level = replica
archive_mode = on
max_wal_senders = 4
$extra
CONF
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$dir/postgres.log" -w start >/dev/null
}

stop_cluster() {
    [ -n "${PGDATA_DIR:-}" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
}

psql_c() {
    as_pg "$PGBIN/psql" -X -At -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PGPORT_NUM" -U postgres -d postgres -c "$1"
}

pgbench_c() {
    as_pg "$PGBIN/pgbench" -h "$PGSOCK" -p "$PGPORT_NUM" -U postgres "$@" postgres
}

# pgbackrest_stanza DIR [extra [global] lines]: a pgBackRest repository in DIR with stanza
# "bench" for the running cluster, lz4 at level 1.
pgbackrest_stanza() {
    local dir=$1 extra=${2:-}
    mkdir -p "$dir/repo" "$dir/log" "$dir/lock"
    cat >"$dir/pgbackrest.conf" <<CONF
[global]
repo1-path=$dir/repo
compress-type=lz4
compress-level=1
log-level-console=warn
log-level-file=off
log-path=$dir/log
lock-path=$dir/lock
$extra

[bench]
pg1-path=$PGDATA_DIR
pg1-socket-path=$PGSOCK
pg1-port=$PGPORT_NUM
CONF
    give_pg "$dir"
    as_pg pgbackrest --config="$dir/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
}

# pgbench_segments N DIR: run pgbench until more than N segments of fresh WAL exist, then
# copy N real segments (after the first) into DIR, readable by postgres.
pgbench_segments() {
    local n=$1 dir=$2 start cur load i seg
    start=$(psql_c "SELECT pg_walfile_name(pg_current_wal_lsn())")
    pgbench_c -c 4 -j 2 -T 600 -n >/dev/null 2>&1 &
    load=$!
    while :; do
        cur=$(psql_c "SELECT pg_walfile_name(pg_current_wal_lsn())")
        [ $((16#${cur:16:8} - 16#${start:16:8})) -gt "$n" ] && break
        sleep 1
    done
    kill "$load" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
    mkdir -p "$dir"
    for i in $(seq 1 "$n"); do
        seg=$(printf '%08X' $((16#${start:16:8} + i)))
        cp "$PGDATA_DIR/pg_wal/${start:0:16}$seg" "$dir/"
    done
    give_pg "$dir"
}

# write_tidewal_config FILE URL [extra TOML]: a tidewal config for the running cluster with
# the key $WORK/repo.key, readable by postgres.
write_tidewal_config() {
    cat >"$1" <<CONF
[repository]
url = "$2"
key_file = "$WORK/repo.key"
${3:-}

[postgres]
conninfo = "host=$PGSOCK port=$PGPORT_NUM user=postgres dbname=postgres"
CONF
    give_pg "$1"
}

# init_file_repo: a key and a file:// repository in $WORK/repo with its config
# $WORK/tidewal.toml for the running cluster, initialised; `tw ARGS` runs tidewal on it.
init_file_repo() {
    as_pg "$TIDEWAL" keygen --output "$WORK/repo.key" 2>/dev/null
    mkdir -p "$WORK/repo" && give_pg "$WORK/repo"
    write_tidewal_config "$WORK/tidewal.toml" "file://$WORK/repo"
    tw init
}
tw() { as_pg "$TIDEWAL" --config "$WORK/tidewal.toml" -q "$@"; }

# cleanup_daemon_bench: the EXIT trap of the daemon benches: stop the daemon that
# $daemon_pattern matches (if one was started), the cluster, and remove $WORK.
daemon_pattern=
cleanup_daemon_bench() {
    [ -n "$daemon_pattern" ] && pkill -TERM -f "$daemon_pattern" 2>/dev/null || true
    stop_cluster
    rm -rf "$WORK"
}
