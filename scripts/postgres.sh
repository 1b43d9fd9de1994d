#!/usr/bin/env bash
# A throwaway PostgreSQL server for the ledger tests: `start DIR` makes a cluster in DIR
# (initdb), starts it on a Unix socket in DIR (no TCP port, so nothing else on the machine is
# reached or in the way) and prints the URL to export as TRACEMARK_TEST_POSTGRES; `stop DIR`
# stops it. Installs Debian's server package when no initdb is found. As root, the server
# runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}

find_bin() {
    local b
    for b in "$(command -v "$1" 2>/dev/null || true)" /usr/lib/postgresql/*/bin/"$1"; do
        [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return 0; }
    done
    return 1
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    if ! find_bin initdb >/dev/null; then
        if command -v apt-get >/dev/null 2>&1; then
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        fi
    fi
    initdb=$(find_bin initdb) || { echo "postgres.sh: initdb not found and could not be installed" >&2; exit 1; }
    pg_ctl=$(find_bin pg_ctl)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_owner "$initdb" -D "$dir/data" -U tracemark --auth=trust -E UTF8 --no-locale >/dev/null
    as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=200 -c fsync=off" \
        start >/dev/null
    # The URL's host is the socket directory, percent-encoded.
    host=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$dir")
    echo "postgresql://tracemark@$host/postgres"
    ;;
stop)
    pg_ctl=$(find_bin pg_ctl) || exit 0
    [ -d "$dir/data" ] && as_owner "$pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
*)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
