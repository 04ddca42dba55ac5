# shellcheck shell=bash
#
# Throwaway PostgreSQL clusters for local runs and tests. Source this file:
#
#   . scripts/lib/pg.sh
#   pg_start_throwaway [port]   # exports DATABASE_URL, PG_BIN, PGDATA_DIR, PG_TEST_DIR, PG_TEST_PORT
#   ...
#   pg_stop_throwaway           # stops the cluster and removes its directory
#   pg_start_tls_throwaway      # a second cluster with ssl=on: exports TLS_DATABASE_URL,
#   pg_stop_tls_throwaway       #   TLS_PG_TEST_DIR, TLS_CA_FILE (the private CA that signed
#                               #   its certificate); the first cluster's variables are kept
#
# Layout of $PG_TEST_DIR (a mktemp dir, owned by postgres when we are root):
#   data/        the cluster (PGDATA_DIR)
#   server.log   server log
#   start-opts   the -o options for pg_ctl, reused by scripts/pgctl
#   pg-bin       the PostgreSQL bin directory, reused by scripts/pgctl
#   .s.PGSQL.*   the unix socket
#
# Knobs (environment):
#   PG_SSL=1               enable TLS with a self-signed certificate (ssl=on)
#   PG_MAX_CONNECTIONS     max_connections (default 1000)
#   PG_TMPDIR              parent directory for the cluster (default: $TMPDIR or /tmp)
#
# PostgreSQL refuses to run as root, so when we are root every server-side
# command runs as the `postgres` user through runuser. As an ordinary user the
# commands run directly.

# Run a command as the user that owns the cluster.
pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    # cd / so that the postgres user never inherits an unreadable cwd (/root).
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Print the bin directory of the highest installed PostgreSQL version.
pg_find_bin() {
  if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then
    printf '%s\n' "$PG_BIN"
    return 0
  fi
  local initdb
  initdb=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
  if [ -x "$initdb" ]; then
    dirname "$initdb"
    return 0
  fi
  # Not Debian's layout: accept an initdb on PATH (e.g. another distribution).
  if initdb=$(command -v initdb 2>/dev/null) && [ -n "$initdb" ]; then
    dirname "$initdb"
    return 0
  fi
  return 1
}

# Make sure PostgreSQL server binaries exist; install them when root.
pg_ensure_installed() {
  if pg_find_bin >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "pg.sh: PostgreSQL server binaries (initdb, pg_ctl) not found." >&2
    echo "pg.sh: install them first, e.g. 'sudo apt-get install -y postgresql'," >&2
    echo "pg.sh: or point DATABASE_URL at an existing database." >&2
    return 1
  fi
  echo "pg.sh: PostgreSQL not found, installing it with apt-get ..." >&2
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; } >&2; then
    echo "pg.sh: apt-get install postgresql failed" >&2
    return 1
  fi
  pg_find_bin >/dev/null || {
    echo "pg.sh: postgresql installed but initdb still not found" >&2
    return 1
  }
}

# Succeeds if something accepts TCP connections on 127.0.0.1:$1.
pg_port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Print the first free port at or above $1 (default 54329).
pg_free_port() {
  local port=${1:-54329} last=$(( ${1:-54329} + 200 ))
  while [ "$port" -le "$last" ]; do
    if ! pg_port_in_use "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
    port=$((port + 1))
  done
  echo "pg.sh: no free port in ${1:-54329}..$last" >&2
  return 1
}

pg_start_throwaway() {
  local want_port=${1:-} bin dir port opts attempt started=0

  pg_ensure_installed || return 1
  bin=$(pg_find_bin) || return 1

  dir=$(mktemp -d "${PG_TMPDIR:-${TMPDIR:-/tmp}}/boardcast-pg.XXXXXX") || return 1
  if [ "$(id -u)" -eq 0 ]; then
    # mktemp dirs are 0700 and owned by root: hand this one to postgres.
    chown postgres:postgres "$dir" || { rm -rf "$dir"; return 1; }
  fi

  if ! pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
      --no-sync >"$dir/initdb.log" 2>&1; then
    echo "pg.sh: initdb failed:" >&2
    cat "$dir/initdb.log" >&2
    rm -rf "$dir"
    return 1
  fi

  local ssl_opt=""
  if [ "${PG_SSL:-0}" = 1 ]; then
    if ! command -v openssl >/dev/null 2>&1; then
      echo "pg.sh: PG_SSL=1 needs openssl" >&2
      rm -rf "$dir"
      return 1
    fi
    # A private CA made for this cluster ($dir/ca.crt, exported as TLS_CA_FILE by
    # pg_start_tls_throwaway) signs the server's certificate, valid for localhost and
    # 127.0.0.1, so sslrootcert with verify-ca/verify-full can be tested; no public root
    # knows the CA, so verify-full without sslrootcert still refuses it. Run as the
    # cluster owner so the files are owned by postgres from the start.
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/san.ext"
    if ! { pg_as_owner openssl req -new -x509 -days 2 -nodes -subj "/CN=boardcast test CA" \
             -keyout "$dir/ca.key" -out "$dir/ca.crt" &&
           pg_as_owner openssl req -new -nodes -subj /CN=localhost \
             -keyout "$dir/data/server.key" -out "$dir/server.csr" &&
           pg_as_owner openssl x509 -req -days 2 -in "$dir/server.csr" -CA "$dir/ca.crt" \
             -CAkey "$dir/ca.key" -CAcreateserial -extfile "$dir/san.ext" \
             -out "$dir/data/server.crt"; } >"$dir/openssl.log" 2>&1; then
      echo "pg.sh: openssl failed:" >&2
      cat "$dir/openssl.log" >&2
      rm -rf "$dir"
      return 1
    fi
    chmod 600 "$dir/data/server.key"
    ssl_opt=" -c ssl=on"
  fi

  # Retry with the next port if a given free port was grabbed in the meantime.
  for attempt in 1 2 3 4 5; do
    if [ -n "$want_port" ]; then
      port=$want_port
    else
      port=$(pg_free_port "${port:+$((port + 1))}") || break
    fi
    opts="-k $dir -p $port -c listen_addresses=127.0.0.1 -c fsync=off"
    opts+=" -c synchronous_commit=off -c full_page_writes=off"
    opts+=" -c max_connections=${PG_MAX_CONNECTIONS:-1000} -c shared_buffers=128MB$ssl_opt"
    if pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$opts" \
        start >/dev/null; then
      started=1
      break
    fi
    [ -n "$want_port" ] && break
    echo "pg.sh: start on port $port failed (attempt $attempt), trying another port" >&2
  done
  if [ "$started" != 1 ]; then
    echo "pg.sh: could not start PostgreSQL; server log:" >&2
    cat "$dir/server.log" >&2 2>/dev/null || true
    rm -rf "$dir"
    return 1
  fi

  printf '%s\n' "$opts" >"$dir/start-opts"
  printf '%s\n' "$bin" >"$dir/pg-bin"

  export PG_BIN=$bin
  export PG_TEST_DIR=$dir
  export PGDATA_DIR=$dir/data
  export PG_TEST_PORT=$port
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

pg_stop_throwaway() {
  pg_stop_dir "${PG_TEST_DIR:-}"
  unset PG_TEST_DIR PGDATA_DIR PG_TEST_PORT
}

# Stop the cluster in directory $1 (made by pg_start_throwaway) and remove the directory.
pg_stop_dir() {
  local dir=${1:-}
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    return 0
  fi
  local bin=${PG_BIN:-}
  [ -n "$bin" ] || bin=$(cat "$dir/pg-bin" 2>/dev/null) || true
  # Tests may already have stopped it (scripts/pgctl stop): ignore failures.
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

# A second throwaway cluster with TLS on (a self-signed certificate), beside the one
# pg_start_throwaway made, which it leaves alone: exports TLS_DATABASE_URL and
# TLS_PG_TEST_DIR, and restores DATABASE_URL, PG_TEST_DIR, PGDATA_DIR and PG_TEST_PORT
# to what they were. Stop it with pg_stop_tls_throwaway.
pg_start_tls_throwaway() {
  local var saved=() status=0
  for var in DATABASE_URL PG_TEST_DIR PGDATA_DIR PG_TEST_PORT; do
    if [ -n "${!var+x}" ]; then
      saved+=("$var=${!var}")
    fi
  done
  unset PG_TEST_DIR PGDATA_DIR PG_TEST_PORT
  # An empty port: pick a free one.
  PG_SSL=1 pg_start_throwaway "" || status=$?
  if [ "$status" -eq 0 ]; then
    export TLS_DATABASE_URL=$DATABASE_URL
    export TLS_PG_TEST_DIR=$PG_TEST_DIR
    export TLS_CA_FILE=$PG_TEST_DIR/ca.crt
  fi
  unset DATABASE_URL PG_TEST_DIR PGDATA_DIR PG_TEST_PORT
  for var in "${saved[@]}"; do
    export "${var?}"
  done
  return "$status"
}

pg_stop_tls_throwaway() {
  pg_stop_dir "${TLS_PG_TEST_DIR:-}"
  unset TLS_PG_TEST_DIR TLS_DATABASE_URL TLS_CA_FILE
}
