# tidewal's container image: the tidewal binary, and the PostgreSQL 15 server and client
# binaries that `verify --restore-test` (postgres, pg_ctl, amcheck) and `dump` (pg_dump,
# pg_dumpall) run. Runs as the non-root user postgres (uid and gid 999, as in the official
# postgres image, so the database container, this one and their volumes agree).
#
#   docker build -t REGISTRY/tidewal:0.1.0 .
#
# PG_MAJOR must be the major of the clusters it backs up (restore tests start that server):
#   docker build --build-arg PG_MAJOR=17 -t REGISTRY/tidewal:0.1.0-pg17 .

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
# The manual pages and bash completions come from the binary itself (tidewal man,
# tidewal completions), so they match its --help.
RUN cargo build --release --locked --bin tidewal \
    && install -D -m 0755 target/release/tidewal /out/bin/tidewal \
    && /out/bin/tidewal man --dir /out/man1 \
    && /out/bin/tidewal completions bash > /out/tidewal.bash

FROM debian:bookworm-slim
ARG PG_MAJOR=15
# The user before the packages (their scripts would make one with another uid), and no
# default cluster: tidewal's restore tests make their own in a scratch directory.
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    && mkdir -p /etc/postgresql-common /var/lib/postgresql \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
    && chown postgres:postgres /var/lib/postgresql
# Debian's security updates move the exact versions: the major is what is pinned. Bookworm
# ships only PostgreSQL 15; another major comes from the PostgreSQL project's apt repository
# (apt.postgresql.org), added by postgresql-common's own script with the key it ships.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
    && if [ "${PG_MAJOR}" != 15 ]; then /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y; fi \
    && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bin/tidewal /usr/local/bin/tidewal
COPY --from=build /out/man1/ /usr/local/share/man/man1/
COPY --from=build /out/tidewal.bash /usr/share/bash-completion/completions/tidewal
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH
USER 999:999
WORKDIR /var/lib/postgresql
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/tidewal"]
CMD ["--help"]
