#!/usr/bin/env bash
# Start and stop the services the tests need: real servers on loopback, run as
# background processes out of a scratch directory, no Docker engine, no systemd.
#
#   scripts/test-services.sh start [SERVICE...]  start the selected services (reuses running
#                                                ones; one stopped by `kill` comes back with its
#                                                data, on its port)
#   scripts/test-services.sh env               print `export` lines for the running services
#   scripts/test-services.sh status            say what runs where
#   scripts/test-services.sh stop              stop every service started here, remove its data
#   scripts/test-services.sh restart SERVICE   restart one running service, keeping its data and
#                                              port: postgres `pg_ctl restart -m fast`; rabbitmq a
#                                              full node stop and start (durable queues and the
#                                              messages in them survive); redis stopped and
#                                              started empty (it keeps no data)
#   scripts/test-services.sh kill SERVICE      stop one service abruptly, keeping its data and
#                                              port for `start SERVICE`: redis and rabbitmq
#                                              SIGKILL; postgres `pg_ctl stop -m fast` (a crash
#                                              would lose the last commits: the test cluster
#                                              runs with synchronous_commit = off)
#
# Several sets may run side by side, each with its own CLM_TEST_SERVICES_DIR (tests that
# restart a service start a private one): ports are reserved under CLM_TEST_PORTS_DIR while
# a set holds them, so no other set takes the port of a service that is down for a moment.
#
# Environment:
#   CLM_TEST_SERVICES      services to start, space separated: postgres redis rabbitmq
#                          (default: postgres)
#   CLM_TEST_SERVICES_DIR  scratch directory (default: <repo>/target/test-services)
#   CLM_TEST_PG_PORT, CLM_TEST_REDIS_PORT, CLM_TEST_AMQP_PORT
#                          preferred ports (defaults 55432, 56379, 55672); a free one
#                          is picked when the preferred one is taken (or reserved by
#                          another set); RabbitMQ also takes AMQP+1000 (distribution)
#                          and AMQP+2000 (its own epmd), or free ones above them
#   CLM_TEST_PORTS_DIR     port reservations shared by every set
#                          (default: ${TMPDIR:-/tmp}/clm-test-services-ports)
#   CLM_TEST_SERVICES_OWNER_PID
#                          with `start`: stop the whole set (as `stop` does) once this
#                          process is gone, so a test killed before its cleanup ran leaves
#                          nothing behind
#
# Exported to the tests (written to $CLM_TEST_SERVICES_DIR/env):
#   CLM_TEST_PG_URL     postgres://postgres@127.0.0.1:PORT/clm_test
#   CLM_TEST_REDIS_URL  redis://127.0.0.1:PORT
#   CLM_TEST_AMQP_URL   amqp://guest:guest@127.0.0.1:PORT/%2f
#
# A missing server is installed from Debian's packages (run as root, as CI does).
# Each service is three functions, <name>_start, <name>_running, <name>_stop, and
# keeps its state in $DIR/<name>/ and its exports in $DIR/<name>.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${CLM_TEST_SERVICES_DIR:-$ROOT/target/test-services}"
SERVICES="${CLM_TEST_SERVICES:-postgres redis rabbitmq}"
KNOWN_SERVICES="postgres redis rabbitmq"

log() { printf 'test-services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# helpers

# A process is alive when /proc has it and it is not a zombie: exited processes
# are reaped slowly on these machines, so `kill -0` alone would say "alive".
alive() {
    local pid="$1" stat
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"             # drop "pid (comm) ", comm may hold spaces
    [[ "${stat%% *}" != Z && "${stat%% *}" != X ]]
}

# Wait up to $2 seconds for process $1 to go away.
wait_gone() {
    local pid="$1" i
    for ((i = 0; i < $2 * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    return 1
}

# Stop a process we started, by its id: TERM, then KILL after $2 seconds.
terminate() {
    local pid="$1" grace="${2:-10}"
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" "$grace" && return 0
    log "pid $pid did not stop in ${grace}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_free() {
    local port="$1"
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$port" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
# As the servers bind: a port held only by TIME_WAIT connections is free.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
    elif command -v ss >/dev/null 2>&1; then
        [[ -z "$(ss -Htln "sport = :$port")" ]]
    else
        if tcp_open "$port"; then return 1; fi
    fi
}

# Port reservations: $PORTS_DIR/<port>/owner names the set ($DIR) that picked the port. A
# set keeps its reservations until `stop`, so while one of its services is down (restart,
# kill) no other set takes the port. A reservation is stale once its set no longer lists the
# port in a state file (after a grace period covering the moment between picking a port and
# writing it down), e.g. when that set was removed without `stop`.
PORTS_DIR="${CLM_TEST_PORTS_DIR:-${TMPDIR:-/tmp}/clm-test-services-ports}"

reservation_stale() {
    local res="$PORTS_DIR/$1" owner age f
    age=$(($(date +%s) - $(stat -c %Y "$res" 2>/dev/null || date +%s)))
    ((age > 120)) || return 1
    owner="$(cat "$res/owner" 2>/dev/null)" || return 0
    [[ -d "$owner" ]] || return 0
    for f in "$owner"/*/port "$owner"/rabbitmq/dist_port "$owner"/rabbitmq/epmd_port; do
        [[ -f "$f" && "$(cat "$f" 2>/dev/null)" == "$1" ]] && return 1
    done
    return 0
}

# Reserves port $1 for this set; fails when another set holds it.
reserve_port() {
    local res="$PORTS_DIR/$1"
    mkdir -p "$PORTS_DIR"
    if [[ -d "$res" ]]; then
        [[ "$(cat "$res/owner" 2>/dev/null)" == "$DIR" ]] && return 0
        reservation_stale "$1" || return 1
        rm -rf "$res"
    fi
    mkdir "$res" 2>/dev/null || return 1  # atomic: one of two racing sets wins
    echo "$DIR" >"$res/owner"
}

# Drops every reservation of this set.
release_ports() {
    local res
    for res in "$PORTS_DIR"/*/; do
        [[ -d "$res" ]] || continue
        if [[ "$(cat "$res/owner" 2>/dev/null)" == "$DIR" ]]; then rm -rf "$res"; fi
    done
}

# The preferred port if it is free, else the first free one in the 100 above it; reserved
# for this set either way.
pick_port() {
    local port="$1" p
    for ((p = port; p < port + 100; p++)); do
        if port_free "$p" && reserve_port "$p"; then echo "$p"; return 0; fi
    done
    die "no free port in $port-$((port + 99))"
}

# Install Debian packages without letting their maintainer scripts start the
# system-wide service (there is no init system here, and the tests start their
# own instance): policy-rc.d answering 101 forbids invoke-rc.d to start anything.
apt_install() {
    [[ "$(id -u)" == 0 ]] || die "$* is not installed and installing it needs root: apt-get install $*"
    command -v apt-get >/dev/null || die "$* is not installed and there is no apt-get"
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    log "installing $* (apt-get)"
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
    } >"$DIR/apt.log" 2>&1 || rc=$?
    if [[ "$made_policy" == 1 ]]; then rm -f "$policy"; fi
    if [[ "$rc" != 0 ]]; then
        tail -n 20 "$DIR/apt.log" >&2
        die "apt-get install $* failed (log: $DIR/apt.log)"
    fi
}

# ---------------------------------------------------------------------------
# PostgreSQL: initdb + pg_ctl as the postgres user (initdb refuses root).

pg_bindir() {
    local bin
    bin="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$bin" ]] && dirname "$bin"
}

as_postgres() { runuser -u postgres -- "$@"; }

pg_state() { echo "$DIR/postgres"; }

# Prints the data dir of the running cluster, or fails.
postgres_running() {
    local st port data pid
    st="$(pg_state)"
    [[ -f "$st/port" && -f "$st/datadir" ]] || return 1
    port="$(cat "$st/port")" data="$(cat "$st/datadir")"
    pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null)" || return 1
    alive "$pid" || return 1
    "$(cat "$st/bindir")/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5 || return 1
}

postgres_start() {
    local st bindir port data sockdir
    st="$(pg_state)"
    if postgres_running; then
        port="$(cat "$st/port")"
        log "postgres already running on 127.0.0.1:$port (reused)"
    else
        postgres_cleanup  # whatever a crashed or interrupted run left behind

        bindir="$(pg_bindir)" || true
        if [[ -z "$bindir" ]]; then
            apt_install postgresql
            bindir="$(pg_bindir)" || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres"
        fi
        id postgres >/dev/null 2>&1 || die "no postgres user (the postgresql package creates it)"

        port="$(pick_port "${CLM_TEST_PG_PORT:-55432}")"
        mkdir -p "$st"
        # The data dir must be reachable by the postgres user through every parent
        # directory; a checkout under /root (mode 700) is not, so use /tmp then.
        data="$st/data"
        mkdir -p "$data"
        chown postgres: "$data"
        if ! as_postgres test -w "$data" -a -x "$data"; then
            rm -rf "$data"
            data="/tmp/clm-test-pg-$port"
            rm -rf "$data"
            mkdir -p "$data"
            chown postgres: "$data"
            chmod 700 "$data"
        fi
        echo "$bindir" >"$st/bindir"
        echo "$port" >"$st/port"
        echo "$data" >"$st/datadir"

        # A Unix socket path is limited to 107 bytes; without one, tests use TCP.
        sockdir="$data"
        if ((${#sockdir} > 80)); then sockdir=""; fi

        as_postgres "$bindir/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C --no-sync \
            >"$st/initdb.log" 2>&1 || { cat "$st/initdb.log" >&2; die "initdb failed"; }
        # Test settings: durability off (a crash loses only test data), enough
        # connections for parallel test processes each holding a pool.
        cat >>"$data/postgresql.conf" <<EOF

# --- scripts/test-services.sh ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockdir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
        postgres_launch
        log "postgres started on 127.0.0.1:$port (data: $data)"
    fi

    bindir="$(cat "$st/bindir")"
    if [[ "$("$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -XAtq \
        -c "SELECT 1 FROM pg_database WHERE datname = 'clm_test'")" != 1 ]]; then
        "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Xq -v ON_ERROR_STOP=1 \
            -c 'CREATE DATABASE clm_test' || die "could not create database clm_test"
    fi
    echo "export CLM_TEST_PG_URL=postgres://postgres@127.0.0.1:$port/clm_test" >"$DIR/postgres.env"
}

# Starts the cluster set up in $(pg_state), on its port, with its data.
postgres_launch() {
    local st bindir data
    st="$(pg_state)"
    bindir="$(cat "$st/bindir")" data="$(cat "$st/datadir")"
    if ! as_postgres "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >"$st/pg_ctl.log" 2>&1; then
        cat "$st/pg_ctl.log" >&2
        tail -n 30 "$data/server.log" >&2 2>/dev/null || true
        die "postgres did not start (log: $data/server.log)"
    fi
}

# Starts again a cluster stopped by `kill`.
postgres_resume() {
    local st
    st="$(pg_state)"
    postgres_running || postgres_launch
    rm -f "$st/halted"
    log "postgres started again on 127.0.0.1:$(cat "$st/port")"
}

postgres_restart() {
    local st bindir data
    st="$(pg_state)"
    postgres_running || die "postgres is not running here"
    bindir="$(cat "$st/bindir")" data="$(cat "$st/datadir")"
    if ! as_postgres "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -m fast -w -t 60 restart >"$st/pg_ctl.log" 2>&1; then
        cat "$st/pg_ctl.log" >&2
        tail -n 30 "$data/server.log" >&2 2>/dev/null || true
        die "postgres did not restart (log: $data/server.log)"
    fi
    log "postgres restarted on 127.0.0.1:$(cat "$st/port")"
}

# Stops the cluster (fast: a clean shutdown, see the header), keeping data and port.
postgres_halt() {
    local st data pid bindir
    st="$(pg_state)"
    [[ -f "$st/datadir" ]] || die "postgres was not started here"
    data="$(cat "$st/datadir")" bindir="$(cat "$st/bindir")"
    pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)"
    touch "$st/halted"
    if [[ -n "$pid" ]] && alive "$pid"; then
        as_postgres "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        terminate "$pid" 10
    fi
    log "postgres stopped (kill); data and port 127.0.0.1:$(cat "$st/port") kept"
}

# Removes the data of a cluster that is not running (any more).
postgres_cleanup() {
    local st data
    st="$(pg_state)"
    if [[ -f "$st/datadir" ]]; then
        data="$(cat "$st/datadir")"
        # Only ever a directory this script made.
        case "$data" in "$st/data" | /tmp/clm-test-pg-*) rm -rf "$data" ;; esac
    fi
    rm -rf "$st" "$DIR/postgres.env"
}

postgres_stop() {
    local st data pid bindir
    st="$(pg_state)"
    [[ -d "$st" ]] || return 0
    if [[ -f "$st/datadir" ]]; then
        data="$(cat "$st/datadir")"
        bindir="$(cat "$st/bindir" 2>/dev/null || true)"
        pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)"
        if [[ -n "$pid" ]] && alive "$pid"; then
            as_postgres "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
            terminate "$pid" 10
            log "postgres stopped"
        fi
    fi
    postgres_cleanup
}

# ---------------------------------------------------------------------------
# Redis: redis-server --daemonize, no persistence.

redis_running() {
    local st="$DIR/redis" pid
    [[ -f "$st/port" && -f "$st/redis.pid" ]] || return 1
    pid="$(cat "$st/redis.pid")"
    alive "$pid" || return 1
    [[ "$(redis-cli -h 127.0.0.1 -p "$(cat "$st/port")" ping 2>/dev/null)" == PONG ]]
}

redis_start() {
    local st="$DIR/redis" port
    if redis_running; then
        port="$(cat "$st/port")"
        log "redis already running on 127.0.0.1:$port (reused)"
    else
        redis_stop
        if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
            apt_install redis-server
        fi
        port="$(pick_port "${CLM_TEST_REDIS_PORT:-56379}")"
        mkdir -p "$st"
        echo "$port" >"$st/port"
        redis_launch
        log "redis started on 127.0.0.1:$port"
    fi
    echo "export CLM_TEST_REDIS_URL=redis://127.0.0.1:$port" >"$DIR/redis.env"
}

# Starts redis-server on the port in $DIR/redis/port.
redis_launch() {
    local st="$DIR/redis" i
    rm -f "$st/redis.pid"
    redis-server --bind 127.0.0.1 --port "$(cat "$st/port")" --dir "$st" \
        --save '' --appendonly no --daemonize yes \
        --pidfile "$st/redis.pid" --logfile "$st/redis.log" ||
        die "redis-server did not start (log: $st/redis.log)"
    for ((i = 0; i < 100; i++)); do
        redis_running && return 0
        sleep 0.1
    done
    tail -n 20 "$st/redis.log" >&2
    die "redis did not answer PING (log: $st/redis.log)"
}

redis_resume() {
    local st="$DIR/redis"
    redis_running || redis_launch
    rm -f "$st/halted"
    log "redis started again on 127.0.0.1:$(cat "$st/port")"
}

# SIGKILL (it keeps no data anyway), keeping the port.
redis_halt() {
    local st="$DIR/redis" pid
    [[ -f "$st/port" ]] || die "redis was not started here"
    touch "$st/halted"
    pid="$(cat "$st/redis.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "redis (pid $pid) survived SIGKILL"
    fi
    log "redis stopped (kill); port 127.0.0.1:$(cat "$st/port") kept"
}

redis_restart() {
    local st="$DIR/redis" pid
    redis_running || die "redis is not running here"
    pid="$(cat "$st/redis.pid")"
    redis-cli -h 127.0.0.1 -p "$(cat "$st/port")" shutdown nosave >/dev/null 2>&1 || true
    wait_gone "$pid" 10 || terminate "$pid" 5
    redis_launch
    log "redis restarted on 127.0.0.1:$(cat "$st/port")"
}

redis_stop() {
    local st="$DIR/redis" pid
    [[ -d "$st" ]] || return 0
    pid="$(cat "$st/redis.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && alive "$pid"; then
        terminate "$pid" 10  # SIGTERM: redis exits cleanly (nothing to save)
        log "redis stopped"
    fi
    rm -rf "$st" "$DIR/redis.env"
}

# ---------------------------------------------------------------------------
# RabbitMQ: the Erlang node runs in the foreground under setsid, in the
# background of this shell, with its own epmd port, cookie (HOME), config
# and data, so it touches nothing system-wide and needs no plugins.

rabbit_sbin=/usr/lib/rabbitmq/bin
# Erlang distribution (node <-> CLI) listens on loopback only, like everything else.
loopback_dist='-kernel inet_dist_use_interface {127,0,0,1}'

# rabbitmq-server/rabbitmqctl with this instance's environment.
rabbit_env() {
    local st="$DIR/rabbitmq"
    env HOME="$st/home" \
        RABBITMQ_NODENAME="$(cat "$st/nodename")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(cat "$st/port")" \
        RABBITMQ_DIST_PORT="$(cat "$st/dist_port")" \
        ERL_EPMD_PORT="$(cat "$st/epmd_port")" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_CONF_ENV_FILE="$st/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$st/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$st/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$st/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$st/mnesia" \
        RABBITMQ_LOG_BASE="$st/log" \
        RABBITMQ_PID_FILE="$st/rabbitmq.pid" \
        RABBITMQ_LOGS=- \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$loopback_dist" \
        RABBITMQ_CTL_ERL_ARGS="$loopback_dist" \
        "$@"
}

rabbitmq_running() {
    local st="$DIR/rabbitmq" pid
    [[ -f "$st/port" && -f "$st/rabbitmq.pid" ]] || return 1
    pid="$(cat "$st/rabbitmq.pid")"
    alive "$pid" || return 1
    tcp_open "$(cat "$st/port")"
}

rabbitmq_start() {
    local st="$DIR/rabbitmq" port
    if rabbitmq_running; then
        port="$(cat "$st/port")"
        log "rabbitmq already running on 127.0.0.1:$port (reused)"
    else
        rabbitmq_stop
        [[ -x "$rabbit_sbin/rabbitmq-server" ]] || apt_install rabbitmq-server
        port="$(pick_port "${CLM_TEST_AMQP_PORT:-55672}")"
        mkdir -p "$st/home" "$st/mnesia" "$st/log"
        chmod 700 "$st/home"
        echo "$port" >"$st/port"
        pick_port $((port + 1000)) >"$st/dist_port"
        pick_port $((port + 2000)) >"$st/epmd_port"
        echo "clm-test-$port@localhost" >"$st/nodename"
        : >"$st/rabbitmq-env.conf"
        echo '[].' >"$st/enabled_plugins"
        echo '[].' >"$st/advanced.config"
        # guest may log in over loopback only (RabbitMQ's default), which is all we use.
        printf 'listeners.tcp.default = 127.0.0.1:%s\n' "$port" >"$st/rabbitmq.conf"
        rabbitmq_launch
        log "rabbitmq started on 127.0.0.1:$port"
    fi
    echo "export CLM_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$port/%2f" >"$DIR/rabbitmq.env"
}

# Boots the node set up in $DIR/rabbitmq (its port, name and data) and waits until it runs.
rabbitmq_launch() {
    local st="$DIR/rabbitmq" pid
    rm -f "$st/rabbitmq.pid"
    # The background job is the rabbitmq-server script, parent of the Erlang
    # VM (whose pid lands in rabbitmq.pid); setsid keeps both out of our
    # session, so a Ctrl-C in the terminal reaches them only through `stop`.
    rabbit_env setsid "$rabbit_sbin/rabbitmq-server" >>"$st/server.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$st/launcher.pid"
    # await_startup waits for a node that has registered with epmd to finish
    # booting, but fails at once while the VM is still coming up: poll.
    local deadline=$((SECONDS + 120)) up=0
    while ((SECONDS < deadline)) && alive "$pid"; do
        if rabbit_env "$rabbit_sbin/rabbitmqctl" -q --timeout 60 await_startup >"$st/await.log" 2>&1; then
            up=1
            break
        fi
        sleep 1
    done
    if [[ "$up" != 1 ]] || ! rabbitmq_running; then
        cat "$st/await.log" >&2
        tail -n 30 "$st/server.log" >&2
        die "rabbitmq did not start (log: $st/server.log)"
    fi
}

rabbitmq_resume() {
    local st="$DIR/rabbitmq"
    rabbitmq_running || rabbitmq_launch
    rm -f "$st/halted"
    log "rabbitmq started again on 127.0.0.1:$(cat "$st/port")"
}

# SIGKILL to the Erlang VM (what it confirmed is on disk: quorum queues sync before
# confirming), keeping port, node name and data; its epmd keeps running.
rabbitmq_halt() {
    local st="$DIR/rabbitmq" pid launcher
    [[ -f "$st/nodename" ]] || die "rabbitmq was not started here"
    touch "$st/halted"
    pid="$(cat "$st/rabbitmq.pid" 2>/dev/null || true)"
    launcher="$(cat "$st/launcher.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "rabbitmq (pid $pid) survived SIGKILL"
    fi
    terminate "$launcher" 5
    log "rabbitmq stopped (kill); data and port 127.0.0.1:$(cat "$st/port") kept"
}

# A clean node stop (rabbitmqctl stop), then a boot on the same port, name and data.
rabbitmq_restart() {
    local st="$DIR/rabbitmq" pid launcher
    rabbitmq_running || die "rabbitmq is not running here"
    pid="$(cat "$st/rabbitmq.pid" 2>/dev/null || true)"
    launcher="$(cat "$st/launcher.pid" 2>/dev/null || true)"
    rabbit_env timeout 60 "$rabbit_sbin/rabbitmqctl" -q stop >/dev/null 2>&1 || true
    terminate "$pid" 15
    terminate "$launcher" 5
    rabbitmq_launch
    log "rabbitmq restarted on 127.0.0.1:$(cat "$st/port")"
}

rabbitmq_stop() {
    local st="$DIR/rabbitmq" pid launcher
    [[ -d "$st" ]] || return 0
    pid="$(cat "$st/rabbitmq.pid" 2>/dev/null || true)"
    launcher="$(cat "$st/launcher.pid" 2>/dev/null || true)"
    if [[ -f "$st/nodename" ]] && { alive "$pid" || alive "$launcher"; }; then
        rabbit_env timeout 60 "$rabbit_sbin/rabbitmqctl" -q stop >/dev/null 2>&1 || true
        terminate "$pid" 15
        terminate "$launcher" 5
        log "rabbitmq stopped"
    fi
    # The epmd this instance started on its private port.
    if [[ -f "$st/epmd_port" ]] && command -v epmd >/dev/null; then
        ERL_EPMD_PORT="$(cat "$st/epmd_port")" epmd -kill >/dev/null 2>&1 || true
    fi
    rm -rf "$st" "$DIR/rabbitmq.env"
}

# ---------------------------------------------------------------------------

check_services() {
    local s
    for s in $SERVICES; do
        case " $KNOWN_SERVICES " in *" $s "*) ;; *) die "unknown service '$s' (known: $KNOWN_SERVICES)" ;; esac
    done
}

write_env() {
    local s
    {
        echo "# written by scripts/test-services.sh; source it or eval \"\$(scripts/test-services.sh env)\""
        for s in $KNOWN_SERVICES; do
            if [[ -f "$DIR/$s.env" ]]; then cat "$DIR/$s.env"; fi
        done
    } >"$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
}

# The one service named by $1, which must be known.
one_service() {
    [[ -n "${1:-}" ]] || die "which service? (known: $KNOWN_SERVICES)"
    case " $KNOWN_SERVICES " in *" $1 "*) ;; *) die "unknown service '$1' (known: $KNOWN_SERVICES)" ;; esac
    [[ -d "$DIR/$1" ]] || die "$1 was not started in $DIR (run: $0 start)"
}

# With CLM_TEST_SERVICES_OWNER_PID: a watcher (one per set) that stops the set once the owner
# is gone. Its own session and no inherited descriptors, so a caller reading our output is
# not kept waiting by it.
start_watcher() {
    local owner="${CLM_TEST_SERVICES_OWNER_PID:-}"
    [[ -n "$owner" ]] || return 0
    alive "$owner" || die "CLM_TEST_SERVICES_OWNER_PID=$owner is not a running process"
    if alive "$(cat "$DIR/watcher.pid" 2>/dev/null)"; then return 0; fi
    rm -f "$DIR/watcher.pid"
    CLM_TEST_SERVICES_DIR="$DIR" setsid bash "${BASH_SOURCE[0]}" watch "$owner" \
        </dev/null >>"$DIR/watcher.log" 2>&1 &
    # The watcher writes its pid itself (setsid may fork); wait for it, briefly.
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s "$DIR/watcher.pid" ]] && return 0
        sleep 0.1
    done
    log "warning: the owner watcher did not start (log: $DIR/watcher.log)"
}

stop_watcher() {
    local pid
    pid="$(cat "$DIR/watcher.pid" 2>/dev/null || true)"
    if [[ -n "$pid" && "$pid" != "$$" ]] && alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || true
    fi
    rm -f "$DIR/watcher.pid" "$DIR/watcher.log"
}

stop_all() {
    # Every service that has state here, whatever CLM_TEST_SERVICES says now.
    if [[ -d "$DIR" ]]; then
        stop_watcher
        for s in $KNOWN_SERVICES; do "${s}_stop"; done
        rm -f "$DIR/env" "$DIR/env.tmp" "$DIR/apt.log"
        rmdir "$DIR" 2>/dev/null || true
    fi
    release_ports
}

cmd="${1:-}"
case "$cmd" in
start)
    shift
    if (($# > 0)); then SERVICES="$*"; fi
    check_services
    mkdir -p "$DIR"
    for s in $SERVICES; do
        if [[ -f "$DIR/$s/halted" ]]; then "${s}_resume"; else "${s}_start"; fi
    done
    write_env
    start_watcher
    ;;
stop)
    stop_all
    ;;
restart | kill)
    one_service "${2:-}"
    if [[ "$cmd" == kill ]]; then "${2}_halt"; else "${2}_restart"; fi
    ;;
watch)
    # Internal (see start_watcher): waits for process $2 to end, then stops the set.
    owner="${2:-}"
    echo "$$" >"$DIR/watcher.pid"
    while alive "$owner" && [[ -d "$DIR" ]]; do sleep 1; done
    if [[ -d "$DIR" ]]; then
        log "owner $owner of $DIR is gone; stopping its services"
        stop_all  # stop_watcher leaves this process ($$) alone
    fi
    ;;
env)
    [[ -f "$DIR/env" ]] || die "no services started (run: $0 start)"
    grep '^export ' "$DIR/env"
    ;;
status)
    for s in $KNOWN_SERVICES; do
        if "${s}_running" 2>/dev/null; then
            echo "$s: running on 127.0.0.1:$(cat "$DIR/$s/port")"
        elif [[ -f "$DIR/$s/halted" ]]; then
            echo "$s: stopped by kill (port $(cat "$DIR/$s/port" 2>/dev/null) kept; start it again: $0 start $s)"
        elif [[ -d "$DIR/$s" ]]; then
            echo "$s: not running (stale state in $DIR/$s)"
        else
            echo "$s: stopped"
        fi
    done
    ;;
rabbitmqctl)
    # Tests isolate themselves in their own vhosts: `test-services.sh rabbitmqctl add_vhost X`.
    rabbitmq_running || die "rabbitmq is not running (run: $0 start)"
    shift
    rabbit_env "$rabbit_sbin/rabbitmqctl" -q "$@"
    ;;
*)
    echo "usage: $0 start [SERVICE...]|stop|env|status|restart SERVICE|kill SERVICE|rabbitmqctl ARGS   (services: CLM_TEST_SERVICES=\"$SERVICES\")" >&2
    exit 2
    ;;
esac
