#!/usr/bin/env bash
# scripts/rabbitmq.sh: a local RabbitMQ (>= 3.13, with the stream plugin) for partlog.
# Used by `make run`, `make test` and CI on fresh machines; works from any directory.
#
# Usage: scripts/rabbitmq.sh COMMAND
#   start [--tls]    one node, partlog@localhost. Reuses a broker that already answers on
#                    $PARTLOG_BROKER_HOST:$PARTLOG_BROKER_PORT. A second `start` does nothing.
#                    --tls adds a stream TLS listener on 5551 (the plain one on 5552 stays), with a
#                    test CA, server and client certificate made by openssl (see tls-dir); a
#                    running node without it is reused only after `restart --tls`, never silently.
#   start-cluster    three clustered nodes, partlog1..3@localhost (stops partlog@localhost first).
#                    Nodes that run already are kept; ones not yet clustered join partlog1.
#   kill NODE        SIGKILLs cluster node NODE's Erlang VM (partlog1, partlog2 or partlog3): a node
#                    lost without goodbye, for failure tests; start-cluster brings it back
#   restart [--tls]  stops and starts again whatever runs (used by failure tests); the single node
#                    keeps its stream TLS listener, and --tls gives it one
#   stop             stops every node this script started (single and cluster)
#   status           which nodes run, their version and ports
#   logs [N]         log file paths and their last N lines (default 40)
#   wipe             stop, then delete all node data (streams, queues, users); keeps the install
#   exec TOOL ARG..  runs a RabbitMQ CLI tool of the install (rabbitmqctl, rabbitmq-streams,
#                    rabbitmq-diagnostics, rabbitmq-plugins, rabbitmq-queues) with `-n NODE` added:
#                    NODE is $PARTLOG_NODE, else partlog@localhost if it runs, else partlog1@localhost.
#                    e.g. scripts/rabbitmq.sh exec rabbitmq-streams add_super_stream orders --partitions 3
#   stream-dir       prints the directory in which a node (chosen as for exec) keeps its streams'
#                    data: one directory per stream, named <vhost>_<stream>_<timestamp>
#   tls-dir          prints the directory of the single node's TLS files (after start --tls):
#                    ca.pem (the test CA), server.pem/.key, client.pem/.key (PKCS#8, signed by
#                    ca.pem: the broker verifies client certificates that are presented)
#
# Nodes and ports. Every listener is bound to 127.0.0.1; the user is guest/guest (allowed from
# loopback). Streams advertise host "localhost" and the node's own stream port, and accept frames
# of up to 4 MiB (stream.frame_max = 4194304, partlog's broker.max_frame_bytes). Management is on
# only if the installed RabbitMQ ships the plugin (Debian's packages do).
#   node                 stream  AMQP  management  Erlang distribution
#   partlog@localhost    5552    5672  15672       25672    (start; stream TLS 5551 with --tls)
#   partlog1@localhost   5552    5672  15672       25672    (start-cluster)
#   partlog2@localhost   5553    5673  15673       25673    (start-cluster)
#   partlog3@localhost   5554    5674  15674       25674    (start-cluster)
# The single node and cluster node 1 have distinct names and data (so a node that was once
# clustered never waits for absent peers when started alone) but the same ports, so they never run
# together: `start-cluster` stops partlog@localhost first, and `start` while the cluster runs
# reuses it (partlog1 answers on 5552).
#
# Where the broker comes from:
#  1. Something already answers on $PARTLOG_BROKER_HOST:$PARTLOG_BROKER_PORT: it is reused. Its
#     version is asked over the stream protocol (peer properties); older than 3.13 is an error.
#  2. Otherwise partlog runs its own nodes from a Debian root in $CACHE/rabbitmq-$SUITE, made
#     on first use with `debootstrap --variant=minbase --include=rabbitmq-server $SUITE`
#     (root on Debian/Ubuntu only; 1-2 minutes and 370 MB; log in $CACHE/debootstrap.log).
#     $SUITE is forky (Debian testing: RabbitMQ 4.3.x), not trixie (stable: 4.0.5), because
#     4.0.5 has single active consumer bugs that leave a group's partition without an active
#     member after a connection or node loss (rabbitmq-server #13657, fixed in 4.0.8; #13961
#     and #14070, fixed in 4.1.2). PARTLOG_DEBIAN_SUITE=trixie chooses trixie's broker. The
#     root is built in a temporary directory and moved into place only when complete (marker
#     file .partlog-rabbitmq-root).
#     Nodes run through chroot as the root's `rabbitmq` user, with proc mounted at $ROOT/proc.
#     A RabbitMQ found on PATH that is older than 3.13, or that is not serving streams, is
#     reported and not used.
#
# Files ($CACHE is below, $ROOT = $CACHE/rabbitmq-$SUITE, NODE = partlog, partlog1, ...):
#   $ROOT/var/lib/partlog/NODE/mnesia/                  node data (streams included)
#   $ROOT/var/lib/partlog/NODE/log/NODE@localhost.log   node log (start.out: server start output)
#   $ROOT/var/lib/partlog/NODE/rabbitmq.conf, enabled_plugins   rewritten on every start
#   $ROOT/var/lib/rabbitmq/.erlang.cookie               cookie shared by nodes and CLI tools
#
# Environment:
#   PARTLOG_CACHE_DIR              $CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/partlog)
#   PARTLOG_BROKER_HOST            broker host probed for reuse (default localhost)
#   PARTLOG_BROKER_PORT            stream port probed for reuse (default 5552)
#   PARTLOG_RABBITMQ_START_TIMEOUT   seconds to wait for nodes to start (default 120)
#   PARTLOG_DEBIAN_MIRROR          mirror for debootstrap (default http://deb.debian.org/debian)
#   PARTLOG_DEBIAN_SUITE           Debian release to install RabbitMQ from (default forky)
#   PARTLOG_NODE                   node for `exec` (e.g. partlog2@localhost)
#   PARTLOG_RABBITMQ_TLS_PORT, PARTLOG_RABBITMQ_TLS_DIR   a broker this script did not start has a
#                                  stream TLS listener on that port, with its CA as ca.pem (and a
#                                  client certificate as client.pem/client.key) in that directory:
#                                  `start --tls` then reuses it, `tls-dir` prints the directory
#   PARTLOG_RABBITMQ_PORT_OFFSET   N > 0: every command acts on a separate single node,
#                                  partlog-N@localhost, all of whose ports are N higher (stream
#                                  5552+N, TLS 5551+N, ...), and never on the others; e.g. to try
#                                  `start --tls` beside a node others use. No cluster commands.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname "$SCRIPT_DIR")
MIN_VERSION=3.13
SUITE=${PARTLOG_DEBIAN_SUITE:-forky}
MIRROR=${PARTLOG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${PARTLOG_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/partlog}
BROKER_HOST=${PARTLOG_BROKER_HOST:-localhost}
BROKER_PORT=${PARTLOG_BROKER_PORT:-5552}
START_TIMEOUT=${PARTLOG_RABBITMQ_START_TIMEOUT:-120}
PORT_OFFSET=${PARTLOG_RABBITMQ_PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ ]] && ((PORT_OFFSET < 1000)) ||
  { printf '[rabbitmq] error: PARTLOG_RABBITMQ_PORT_OFFSET must be 0 to 999\n' >&2; exit 2; }
SINGLE=partlog
CLUSTER=(partlog1 partlog2 partlog3)
ALL_NODES=("$SINGLE" "${CLUSTER[@]}")
if ((PORT_OFFSET > 0)); then
  SINGLE=partlog-$PORT_OFFSET
  CLUSTER=()
  ALL_NODES=("$SINGLE")
  BROKER_PORT=${PARTLOG_BROKER_PORT:-$((5552 + PORT_OFFSET))}
fi
DATA=/var/lib/partlog                 # node data, as seen inside the root
MARKER=.partlog-rabbitmq-root         # present only in a complete root
ROOT=                                 # set by init_paths
TMP_ROOT=                             # root being built; removed if the build does not finish

say() { printf '[rabbitmq] %s\n' "$*"; }
warn() { printf '[rabbitmq] warning: %s\n' "$*" >&2; }
die() { printf '[rabbitmq] error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

init_paths() {
  mkdir -p "$CACHE_DIR"
  CACHE_DIR=$(cd "$CACHE_DIR" && pwd -P)
  # /proc/mounts escapes whitespace, and mounts are matched by path
  [[ $CACHE_DIR != *[[:space:]]* ]] || die "PARTLOG_CACHE_DIR must not contain whitespace: '$CACHE_DIR'"
  ROOT=$CACHE_DIR/rabbitmq-$SUITE
}

root_ok() { [[ -f $ROOT/$MARKER ]]; }

# version_ge A B: true if version A >= version B.
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

# port_open HOST PORT: true if a TCP connection succeeds within 2 seconds.
# shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

# stream_version HOST PORT: the RabbitMQ version a stream port reports in its peer properties
# (the first, unauthenticated step of the stream protocol), or nothing.
stream_version() {
  local out
  # shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
  out=$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    # size 12, key 0x0011 PeerProperties, version 1, correlation id 1, empty map
    printf "\x00\x00\x00\x0c\x00\x11\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00" >&3
    dd bs=65536 count=1 <&3 2>/dev/null' _ "$1" "$2" |
    tr -cs '[:print:]' '\n' | awk 'prev == "version" { print; exit } { prev = $0 }') || true
  [[ $out =~ ^[0-9]+\.[0-9]+ ]] && printf '%s\n' "$out"
  return 0
}

# ---------------------------------------------------------------------------------------------
# Nodes

node_off() {
  case $1 in
    "$SINGLE") echo "$PORT_OFFSET" ;;
    partlog[1-3]) echo $((${1#partlog} - 1)) ;;
    *) die "unknown node '$1' (known: ${ALL_NODES[*]})" ;;
  esac
}
stream_port() { echo $((5552 + $(node_off "$1"))); }
amqp_port() { echo $((5672 + $(node_off "$1"))); }
mgmt_port() { echo $((15672 + $(node_off "$1"))); }
dist_port() { echo $((25672 + $(node_off "$1"))); }
tls_port() { echo $((5551 + $(node_off "$1"))); }
tls_dir() { echo "$ROOT$DATA/$1/tls"; }
# node_tls NODE: true if NODE was last started with a stream TLS listener.
node_tls() { grep -q '^stream.listeners.ssl' "$ROOT$DATA/$1/rabbitmq.conf" 2>/dev/null; }

# plugins_dir: the install's plugin directory, as seen inside the root. The CLI tools need it
# (RABBITMQ_PLUGINS_DIR) to offer plugin commands such as rabbitmq-streams add_super_stream.
plugins_dir() {
  local d
  for d in "$ROOT"/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins; do
    if [[ -d $d ]]; then echo "${d#"$ROOT"}"; fi
  done | sort -V | tail -n1
}
has_mgmt() { compgen -G "$ROOT$(plugins_dir)/rabbitmq_management-*" >/dev/null; }

# Environment for everything run inside the root: a clean one, so nothing of the caller's
# (RABBITMQ_*, ERL_*, locale) leaks in. HOME makes server and CLI tools share one Erlang cookie.
BASE_ENV=(HOME=/var/lib/rabbitmq PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/rabbitmq/bin LANG=C.UTF-8 LC_ALL=C.UTF-8
  ERL_EPMD_ADDRESS=127.0.0.1)

# fd 9 (the lock) is closed so that a detached server does not hold the lock forever.
in_root() { chroot "$ROOT" /usr/bin/env -i "${BASE_ENV[@]}" "$@" 9>&-; }

# server_env NODE: sets SERVER_ENV, the variables rabbitmq-server runs NODE with.
server_env() {
  local n=$1 base=$DATA/$1
  SERVER_ENV=(
    RABBITMQ_NODENAME="$n@localhost"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$(amqp_port "$n")"
    RABBITMQ_DIST_PORT="$(dist_port "$n")"
    RABBITMQ_MNESIA_BASE="$base/mnesia"
    RABBITMQ_LOG_BASE="$base/log"
    RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
    RABBITMQ_PLUGINS_DIR="$(plugins_dir)"
  )
}

# ctl NODE TOOL ARGS...: a CLI tool (rabbitmqctl, rabbitmq-streams, ...) against NODE, ended
# after $CTL_TIMEOUT seconds (default 120).
ctl() {
  local n=$1 tool=$2
  shift 2
  timeout "${CTL_TIMEOUT:-120}" chroot "$ROOT" /usr/bin/env -i "${BASE_ENV[@]}" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DATA/$n/enabled_plugins" RABBITMQ_PLUGINS_DIR="$(plugins_dir)" \
    "$tool" -n "$n@localhost" "$@" 9>&-
}

# root_pids DIR: processes whose root directory is DIR, i.e. that this script started by chroot.
root_pids() {
  local p r
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null) || continue
    [[ $r == "$1" ]] && echo "${p#/proc/}"
  done
  return 0
}

# node_pids NODE: the Erlang VM running NODE (recognised by the RABBITMQ_NODENAME it was given).
node_pids() {
  local p
  [[ -d $ROOT ]] || return 0
  for p in $(root_pids "$ROOT"); do
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == beam* ]] || continue
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$1@localhost" &&
      echo "$p"
  done
  return 0
}

node_alive() { [[ -n $(node_pids "$1") ]]; }
node_ready() { node_alive "$1" && port_open 127.0.0.1 "$(stream_port "$1")"; }
node_log() { echo "$ROOT$DATA/$1/log/$1@localhost.log"; }

mount_proc() {
  if ! awk -v m="$ROOT/proc" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; then
    mount -t proc proc "$ROOT/proc"
  fi
}

# unmount_under DIR: unmount everything mounted at or below DIR, deepest first.
unmount_under() {
  local m
  awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}

# After the last node stopped: end epmd and unmount proc, so nothing of ours keeps running.
release_root() {
  local p
  # Another node (one of PARTLOG_RABBITMQ_PORT_OFFSET's, or the others) still needs epmd.
  for p in $(root_pids "$ROOT"); do
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == beam* ]] && return 0
  done
  for p in $(root_pids "$ROOT"); do
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == epmd ]] && kill "$p" 2>/dev/null
  done
  sleep 0.2
  [[ -z $(root_pids "$ROOT") ]] && unmount_under "$ROOT/proc"
  return 0
}

# write_tls_files NODE: a test CA and, signed by it, a server certificate for localhost and a
# client certificate, made once and again when the server certificate has less than 30 days left.
write_tls_files() {
  local d
  d=$(tls_dir "$1")
  if [[ -s $d/server.pem && -s $d/client.key ]] &&
    openssl x509 -checkend 2592000 -noout -in "$d/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  command -v openssl >/dev/null || die "start --tls needs openssl (apt-get install openssl)"
  rm -rf "$d"
  mkdir -p "$d"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  {
    openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=partlog test CA" \
      -keyout "$d/ca.key" -out "$d/ca.pem" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$d/server.key" -out "$d/server.csr"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 825 -extfile "$d/server.ext" -out "$d/server.pem"
    # openssl 3 writes PKCS#8 keys (BEGIN PRIVATE KEY), which partlog needs for a client key.
    openssl req "${ec[@]}" -subj "/CN=partlog" -keyout "$d/client.key" -out "$d/client.csr"
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$d/client.ext"
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 825 -extfile "$d/client.ext" -out "$d/client.pem"
  } >"$d/openssl.log" 2>&1 || die "openssl could not make the test certificates (log: $d/openssl.log)"
  grep -q "BEGIN PRIVATE KEY" "$d/client.key" ||
    die "openssl wrote $d/client.key in another format than PKCS#8 (openssl < 3?)"
  rm -f "$d"/*.csr "$d"/*.ext
  # Readable by the tests (root) and the node (its own files); the CA key only by root.
  chmod 600 "$d"/*.key
  say "made test TLS certificates in $d"
}

write_node_files() {
  local n=$1 tls=${2:-} dir=$ROOT$DATA/$1 plugins=rabbitmq_stream
  local stream amqp dist
  stream=$(stream_port "$n") amqp=$(amqp_port "$n") dist=$(dist_port "$n")
  mkdir -p "$dir/mnesia" "$dir/log"
  # The stream management plugin lists stream consumers (DescribeGroup).
  has_mgmt && plugins="rabbitmq_stream,rabbitmq_management,rabbitmq_stream_management"
  printf '[%s].\n' "$plugins" >"$dir/enabled_plugins"
  {
    echo "# Written by scripts/rabbitmq.sh on every start of $n@localhost; edits are lost."
    echo "listeners.tcp.1 = 127.0.0.1:$amqp"
    echo "stream.listeners.tcp.1 = 127.0.0.1:$stream"
    echo "stream.advertised_host = localhost"
    echo "stream.advertised_port = $stream"
    echo "# partlog sends frames of up to broker.max_frame_bytes (4 MiB); the default is 1 MiB"
    echo "stream.frame_max = 4194304"
    echo "distribution.listener.interface = 127.0.0.1"
    echo "distribution.listener.port_range.min = $dist"
    echo "distribution.listener.port_range.max = $dist"
    if has_mgmt; then
      echo "management.tcp.ip = 127.0.0.1"
      echo "management.tcp.port = $(mgmt_port "$n")"
    fi
    if [[ -n $tls ]]; then
      echo "# start --tls: stream TLS beside the plain listener, certificates from tls-dir"
      echo "stream.listeners.ssl.1 = 127.0.0.1:$(tls_port "$n")"
      echo "stream.advertised_tls_port = $(tls_port "$n")"
      echo "ssl_options.cacertfile = $DATA/$n/tls/ca.pem"
      echo "ssl_options.certfile = $DATA/$n/tls/server.pem"
      echo "ssl_options.keyfile = $DATA/$n/tls/server.key"
      echo "# a client certificate is verified when presented, not required"
      echo "ssl_options.verify = verify_peer"
      echo "ssl_options.fail_if_no_peer_cert = false"
    fi
    echo "log.file.level = info"
    echo "log.console = false"
  } >"$dir/rabbitmq.conf"
  [[ -z $tls ]] || write_tls_files "$n"
  in_root chown -R rabbitmq:rabbitmq "$DATA/$n"
  # The CA key stays root's: nothing in the node needs it.
  [[ -z $tls ]] || chown root:root "$dir/tls/ca.key"
}

check_ports_free() {
  local n=$1 p what
  for what in stream amqp dist mgmt tls; do
    [[ $what == mgmt ]] && ! has_mgmt && continue
    [[ $what == tls && -z ${2:-} ]] && continue
    p=$("${what}_port" "$n")
    if port_open 127.0.0.1 "$p"; then
      die "port $p ($what port of $n@localhost) is already in use on 127.0.0.1 (by another RabbitMQ" \
        "without the stream plugin?). Stop what listens there, or enable streams on it" \
        "(rabbitmq-plugins enable rabbitmq_stream) so that it answers on $BROKER_HOST:$BROKER_PORT."
    fi
  done
}

start_node() {
  local n=$1 out=$ROOT$DATA/$1/log/start.out
  write_node_files "$n" "${2:-}"
  server_env "$n"
  # Every stream client connection is a file descriptor: RabbitMQ wants far more than the usual
  # soft limit of 1024 (its production guidance is 65536 and up). rabbitmq-server switches to
  # the rabbitmq user through su, whose pam_limits applies the root's limits.d.
  local nofile
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited ]] && nofile=65536
  printf 'rabbitmq soft nofile %s\nrabbitmq hard nofile %s\n' "$nofile" "$nofile" \
    >"$ROOT/etc/security/limits.d/partlog-rabbitmq.conf"
  if ! in_root "${SERVER_ENV[@]}" rabbitmq-server -detached >"$out" 2>&1; then
    fail_start "$n" "rabbitmq-server -detached failed for $n@localhost"
  fi
}

fail_start() {
  local n=$1 f
  printf '[rabbitmq] error: %s\n' "$2" >&2
  for f in "$ROOT$DATA/$n/log/start.out" "$(node_log "$n")"; do
    [[ -s $f ]] || continue
    printf '[rabbitmq] ---- last lines of %s\n' "$f" >&2
    tail -n 25 "$f" >&2
  done
  printf '[rabbitmq] logs: %s (all: %s logs)\n' "$(node_log "$n")" "$0" >&2
  exit 1
}

# wait_ready NODE...: until each node's stream port answers and the node reports startup done.
wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) started=$SECONDS n left
  for n in "$@"; do
    until port_open 127.0.0.1 "$(stream_port "$n")"; do
      if ((SECONDS - started > 5)) && ! node_alive "$n"; then
        fail_start "$n" "$n@localhost exited while starting"
      fi
      ((SECONDS < deadline)) ||
        fail_start "$n" "stream port $(stream_port "$n") of $n@localhost did not answer within ${START_TIMEOUT}s"
      sleep 1
    done
    left=$((deadline - SECONDS > 10 ? deadline - SECONDS : 10))
    CTL_TIMEOUT=$((left + 15)) ctl "$n" rabbitmqctl await_startup --timeout "$left" \
      >>"$ROOT$DATA/$n/log/start.out" 2>&1 ||
      fail_start "$n" "$n@localhost answers on its stream port but did not finish starting"
  done
}

stop_node() {
  local n=$1 pids i
  pids=$(node_pids "$n")
  [[ -n $pids ]] || return 0
  say "stopping $n@localhost"
  CTL_TIMEOUT=90 ctl "$n" rabbitmqctl stop >/dev/null 2>&1 || true
  for ((i = 0; i < 30; i++)); do
    node_alive "$n" || return 0
    sleep 1
  done
  warn "$n@localhost did not stop; killing its VM ($pids)"
  # shellcheck disable=SC2086 # word splitting intended: one pid per word
  kill $pids 2>/dev/null || true
  sleep 3
  # shellcheck disable=SC2086
  node_alive "$n" && kill -9 $pids 2>/dev/null
  return 0
}

node_summary() {
  local n=$1 v line
  v=$(stream_version 127.0.0.1 "$(stream_port "$n")")
  line="$n@localhost: RabbitMQ ${v:-?}, stream localhost:$(stream_port "$n")"
  node_tls "$n" && line+=", stream TLS localhost:$(tls_port "$n") (CA: $(tls_dir "$n")/ca.pem)"
  line+=", AMQP localhost:$(amqp_port "$n")"
  has_mgmt && line+=", management http://localhost:$(mgmt_port "$n")"
  echo "$line"
}

# ---------------------------------------------------------------------------------------------
# The root

lock() {
  exec 9>"$CACHE_DIR/rabbitmq.lock"
  flock -w 900 9 || die "another $0 is still busy after 15 minutes (lock $CACHE_DIR/rabbitmq.lock)"
}

need_root_user() {
  [[ $(id -u) -eq 0 ]] && return 0
  die "partlog's own RabbitMQ runs through chroot and needs root: run 'sudo $0 $*'." \
    "Or provide RabbitMQ >= $MIN_VERSION with the rabbitmq_stream plugin on $BROKER_HOST:$BROKER_PORT" \
    "yourself (e.g. 'docker compose up -d' in $REPO_DIR)."
}

# Remove a root directory that is not in use: its processes, its mounts, then its files.
remove_root_dir() {
  local d=$1 p
  for p in $(root_pids "$d"); do kill -9 "$p" 2>/dev/null || true; done
  unmount_under "$d"
  # --one-file-system: never descend into something still mounted there (e.g. a bind of /dev)
  rm -rf --one-file-system "$d"
}

cleanup_tmp_root() {
  if [[ -n $TMP_ROOT && -d $TMP_ROOT ]]; then
    warn "removing the unfinished root $TMP_ROOT"
    remove_root_dir "$TMP_ROOT" || true
  fi
}

report_native_rabbitmq() {
  local ctl_bin v
  ctl_bin=$(command -v rabbitmqctl 2>/dev/null) || return 0
  v=$(timeout 30 "$ctl_bin" version 2>/dev/null | tail -n1) || true
  if [[ ! $v =~ ^[0-9]+\.[0-9]+ ]]; then
    warn "found $ctl_bin but could not get its version; using partlog's own RabbitMQ instead"
  elif ! version_ge "$v" "$MIN_VERSION"; then
    warn "RabbitMQ $v found ($ctl_bin), partlog needs >= $MIN_VERSION; using partlog's own RabbitMQ instead"
  else
    warn "RabbitMQ $v found ($ctl_bin) but nothing answers on $BROKER_HOST:$BROKER_PORT; to use it," \
      "start it with the stream plugin (rabbitmq-plugins enable rabbitmq_stream). Using partlog's own RabbitMQ instead"
  fi
}

install_root() {
  local log=$CACHE_DIR/debootstrap.log t0=$SECONDS d script=()
  need_root_user install
  if ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || die "no RabbitMQ >= $MIN_VERSION here, and this is not Debian/Ubuntu," \
      "so it cannot be installed automatically. Install RabbitMQ >= $MIN_VERSION with the" \
      "rabbitmq_stream plugin listening on $BROKER_HOST:$BROKER_PORT (or run 'docker compose up -d'" \
      "in $REPO_DIR), or install debootstrap."
    say "installing debootstrap with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q debootstrap >/dev/null 2>&1; then
      apt-get update -q >/dev/null || die "apt-get update failed"
      apt-get install -y -q debootstrap >/dev/null || die "apt-get install debootstrap failed"
    fi
  fi
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg opts=()
  if [[ ! -f $keyring ]] && command -v apt-get >/dev/null; then  # Ubuntu
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debian-archive-keyring >/dev/null 2>&1 || true
  fi
  if [[ -f $keyring ]]; then opts+=("--keyring=$keyring"); fi
  # An old debootstrap without a script for the suite: newer suites are built like sid.
  [[ -e /usr/share/debootstrap/scripts/$SUITE ]] || script=(/usr/share/debootstrap/scripts/sid)

  for d in "$CACHE_DIR"/rabbitmq-$SUITE.tmp.*; do  # left by a killed install
    if [[ -d $d ]]; then remove_root_dir "$d"; fi
  done
  if [[ -e $ROOT ]]; then
    warn "removing the incomplete root $ROOT"
    remove_root_dir "$ROOT"
  fi

  TMP_ROOT=$CACHE_DIR/rabbitmq-$SUITE.tmp.$$
  trap cleanup_tmp_root EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$TMP_ROOT"
  say "installing RabbitMQ from Debian $SUITE into $ROOT (debootstrap, 1-2 minutes, ~370 MB; log: $log)"
  if ! debootstrap --variant=minbase --include=rabbitmq-server "${opts[@]}" \
    "$SUITE" "$TMP_ROOT" "$MIRROR" "${script[@]}" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "debootstrap failed (full log: $log)"
  fi
  # Nothing installed may keep running (a package could start its service).
  for d in $(root_pids "$TMP_ROOT"); do kill -9 "$d" 2>/dev/null || true; done
  unmount_under "$TMP_ROOT"
  [[ -x $TMP_ROOT/usr/sbin/rabbitmq-server ]] || die "debootstrap finished but rabbitmq-server is missing (log: $log)"
  fix_root "$TMP_ROOT"
  # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
  chroot "$TMP_ROOT" dpkg-query -W -f '${Version}\n' rabbitmq-server >"$TMP_ROOT/$MARKER"
  mv "$TMP_ROOT" "$ROOT"
  TMP_ROOT=
  trap - EXIT INT TERM
  say "installed RabbitMQ $(cat "$ROOT/$MARKER") in $((SECONDS - t0))s"
}

# fix_root DIR: what a chroot needs beyond debootstrap's result.
fix_root() {
  local d=$1 dev major minor
  # Device nodes, in case debootstrap bind-mounted /dev instead of creating them.
  while read -r dev major minor; do
    [[ -c $d/dev/$dev ]] || { rm -f "$d/dev/$dev"; mknod -m 666 "$d/dev/$dev" c "$major" "$minor"; }
  done <<<$'null 1 3\nzero 1 5\nfull 1 7\nrandom 1 8\nurandom 1 9\ntty 5 0'
  grep -qw localhost "$d/etc/hosts" 2>/dev/null || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >>"$d/etc/hosts"
  mkdir -p "$d$DATA"
}

ensure_root() {
  root_ok && return 0
  need_root_user start
  install_root
}

# ---------------------------------------------------------------------------------------------
# Commands

# cmd_start [--tls]
cmd_start() {
  local tls=
  case ${1:-} in
    --tls) tls=1 ;;
    "") ;;
    *) die "start: unknown option $1 (start [--tls])" ;;
  esac
  init_paths
  lock
  if root_ok && node_alive "$SINGLE"; then
    need_root_user start
    wait_ready "$SINGLE"
    if [[ -n $tls ]] && ! node_tls "$SINGLE"; then
      die "$SINGLE@localhost runs without a stream TLS listener, and --tls asks for one; RabbitMQ" \
        "reads listeners at boot: run '$0 restart --tls' (streams and data are kept)"
    fi
    say "already running: $(node_summary "$SINGLE")"
    say "logs: $(node_log "$SINGLE")"
    return 0
  fi
  if port_open "$BROKER_HOST" "$BROKER_PORT"; then
    local v
    v=$(stream_version "$BROKER_HOST" "$BROKER_PORT")
    if [[ -n $v ]] && ! version_ge "$v" "$MIN_VERSION"; then
      die "RabbitMQ $v answers on $BROKER_HOST:$BROKER_PORT, partlog needs >= $MIN_VERSION." \
        "Stop it (partlog's own RabbitMQ then takes its place), or set PARTLOG_BROKER_HOST/PORT to a newer one."
    fi
    local who="" n
    if root_ok && [[ $BROKER_HOST == localhost || $BROKER_HOST == 127.0.0.1 ]]; then
      for n in "${CLUSTER[@]}"; do
        [[ $(stream_port "$n") == "$BROKER_PORT" ]] && node_alive "$n" && who=", partlog's cluster node $n@localhost"
      done
    fi
    if [[ -n $tls ]]; then
      local tls_port=${PARTLOG_RABBITMQ_TLS_PORT:-$(tls_port "$SINGLE")}
      if [[ ! -s ${PARTLOG_RABBITMQ_TLS_DIR:-/nonexistent}/ca.pem ]] || ! port_open "$BROKER_HOST" "$tls_port"; then
        die "--tls: the broker at $BROKER_HOST:$BROKER_PORT$who was not started by '$0 start --tls'," \
          "so its stream TLS listener and CA are unknown. Stop it and run '$0 start --tls', or name" \
          "its TLS port in PARTLOG_RABBITMQ_TLS_PORT and a directory with its CA as ca.pem in" \
          "PARTLOG_RABBITMQ_TLS_DIR."
      fi
      say "reusing broker at $BROKER_HOST:$BROKER_PORT (RabbitMQ ${v:-of unknown version}$who)," \
        "stream TLS on $tls_port (CA in $PARTLOG_RABBITMQ_TLS_DIR)"
      return 0
    fi
    say "reusing broker at $BROKER_HOST:$BROKER_PORT (RabbitMQ ${v:-of unknown version}$who)"
    return 0
  fi
  root_ok || report_native_rabbitmq
  ensure_root
  need_root_user start
  check_ports_free "$SINGLE" "$tls"
  mount_proc
  local t0=$SECONDS
  say "starting $SINGLE@localhost${tls:+ with stream TLS on $(tls_port "$SINGLE")}"
  start_node "$SINGLE" "$tls"
  wait_ready "$SINGLE"
  say "ready in $((SECONDS - t0))s: $(node_summary "$SINGLE")"
  say "logs: $(node_log "$SINGLE")"
}

# running_members: the nodes partlog1 counts as running members of its cluster.
running_members() {
  ctl "${CLUSTER[0]}" rabbitmqctl cluster_status --formatter json 2>/dev/null |
    grep -o '"running_nodes":\[[^]]*\]' | grep -o '"[^"]*@[^"]*"' | tr -d '"'
}

cmd_start_cluster() {
  ((PORT_OFFSET == 0)) || die "start-cluster: not with PARTLOG_RABBITMQ_PORT_OFFSET (a single node only)"
  init_paths
  lock
  ensure_root
  need_root_user start-cluster
  local n t0=$SECONDS to_start=() joined=0
  if node_alive "$SINGLE"; then
    say "stopping the single node first (it uses the same ports as ${CLUSTER[0]})"
    stop_node "$SINGLE"
  fi
  # Cluster members remember each other; if node 1 has no data, the others' data is useless.
  if [[ ! -d $ROOT$DATA/${CLUSTER[0]}/mnesia/${CLUSTER[0]}@localhost ]] && ! node_alive "${CLUSTER[0]}"; then
    for n in "${CLUSTER[@]:1}"; do
      node_alive "$n" || rm -rf --one-file-system "${ROOT:?}$DATA/$n"
    done
  fi
  for n in "${CLUSTER[@]}"; do
    node_alive "$n" && continue
    check_ports_free "$n"
    to_start+=("$n")
  done
  mount_proc
  for n in "${to_start[@]}"; do
    say "starting $n@localhost"
    start_node "$n"
  done
  wait_ready "${CLUSTER[@]}"
  local members
  members=$(running_members)
  for n in "${CLUSTER[@]:1}"; do
    grep -qx "$n@localhost" <<<"$members" && continue
    say "joining $n@localhost to ${CLUSTER[0]}@localhost"
    {
      ctl "$n" rabbitmqctl stop_app &&
        ctl "$n" rabbitmqctl reset &&
        ctl "$n" rabbitmqctl join_cluster "${CLUSTER[0]}@localhost" &&
        ctl "$n" rabbitmqctl start_app
    } >>"$ROOT$DATA/$n/log/start.out" 2>&1 || fail_start "$n" "could not join $n@localhost to the cluster"
    wait_ready "$n"
    joined=$((joined + 1))
  done
  members=$(running_members)
  for n in "${CLUSTER[@]}"; do
    grep -qx "$n@localhost" <<<"$members" ||
      fail_start "$n" "$n@localhost is not a running member of the cluster (running: ${members//$'\n'/ })"
  done
  if ((${#to_start[@]} == 0 && joined == 0)); then
    say "cluster already running:"
  else
    say "cluster ready in $((SECONDS - t0))s:"
  fi
  for n in "${CLUSTER[@]}"; do say "  $(node_summary "$n")"; done
  say "logs: $ROOT$DATA/partlog{1,2,3}/log/"
}

# restart [--tls]: stops and starts again what runs now, the cluster or the single node (for
# tests that take the broker away and bring it back). The single node keeps its TLS listener.
cmd_restart() {
  init_paths
  local cluster= tls=${1:-}
  [[ -z $tls || $tls == --tls ]] || die "restart: unknown option $tls (restart [--tls])"
  root_ok && ((${#CLUSTER[@]} > 0)) && node_alive "${CLUSTER[0]}" && cluster=1
  [[ -z $cluster || -z $tls ]] || die "restart --tls: the cluster has no TLS listeners"
  root_ok && node_tls "$SINGLE" && tls=--tls
  cmd_stop
  if [[ -n $cluster ]]; then cmd_start_cluster; else cmd_start $tls; fi
}

cmd_stop() {
  init_paths
  [[ -d $ROOT ]] || { say "nothing to stop (no partlog RabbitMQ installed in $ROOT)"; return 0; }
  lock
  local n any=
  for n in "${ALL_NODES[@]}"; do
    node_alive "$n" || continue
    [[ -n $any ]] || need_root_user stop
    any=1
  done
  # Node 1 last: when the cluster comes back, the others wait for the last one stopped.
  for n in "$SINGLE" "${CLUSTER[@]:2:1}" "${CLUSTER[@]:1:1}" "${CLUSTER[@]:0:1}"; do stop_node "$n"; done
  if [[ $(id -u) -eq 0 ]]; then release_root; fi
  if [[ -n $any ]]; then say "stopped"; else say "no partlog node was running"; fi
}

cmd_kill() {
  (($# == 1)) || die "usage: $0 kill NODE  (one of ${CLUSTER[*]})"
  init_paths
  local n=${1%@localhost} pids
  [[ " ${CLUSTER[*]} " == *" $n "* ]] || die "kill: $1 is not a cluster node (${CLUSTER[*]})"
  need_root_user kill
  pids=$(node_pids "$n")
  [[ -n $pids ]] || die "kill: $n@localhost does not run"
  # shellcheck disable=SC2086 # word splitting intended: one pid per word
  kill -9 $pids
  say "killed $n@localhost (SIGKILL to $pids)"
}

cmd_wipe() {
  cmd_stop
  if ((PORT_OFFSET > 0)); then
    [[ -d $ROOT$DATA/$SINGLE ]] || return 0
    need_root_user wipe
    rm -rf --one-file-system "${ROOT:?}$DATA/$SINGLE"
    say "wiped node data in $ROOT$DATA/$SINGLE"
  elif [[ -d $ROOT$DATA ]]; then
    need_root_user wipe
    rm -rf --one-file-system "${ROOT:?}$DATA"
    mkdir -p "$ROOT$DATA"
    say "wiped node data in $ROOT$DATA"
  fi
}

cmd_status() {
  init_paths
  local n running=0 v
  if root_ok; then
    say "partlog RabbitMQ install: $ROOT (package $(cat "$ROOT/$MARKER"))"
  else
    say "partlog RabbitMQ install: none yet ($ROOT)"
  fi
  if root_ok; then
    for n in "${ALL_NODES[@]}"; do
      if node_ready "$n"; then
        say "running  $(node_summary "$n"), dist port $(dist_port "$n")"
        running=$((running + 1))
      elif node_alive "$n"; then
        say "starting $n@localhost (VM up, stream port $(stream_port "$n") not answering yet)"
        running=$((running + 1))
      fi
    done
  fi
  ((running > 0)) || say "no partlog node is running"
  if port_open "$BROKER_HOST" "$BROKER_PORT"; then
    v=$(stream_version "$BROKER_HOST" "$BROKER_PORT")
    say "broker answering on $BROKER_HOST:$BROKER_PORT: RabbitMQ ${v:-of unknown version}"
  else
    say "nothing answers on $BROKER_HOST:$BROKER_PORT"
  fi
}

cmd_logs() {
  local lines=${1:-40} n f found=
  [[ $lines =~ ^[0-9]+$ ]] || die "logs: N must be a number"
  init_paths
  for n in "${ALL_NODES[@]}"; do
    for f in "$(node_log "$n")" "$ROOT$DATA/$n/log/start.out"; do
      [[ -s $f ]] || continue
      found=1
      printf '==> %s <==\n' "$f"
      tail -n "$lines" "$f"
      echo
    done
  done
  [[ -n $found ]] || say "no logs yet (node logs go to $ROOT$DATA/NODE/log/)"
  [[ ! -s $CACHE_DIR/debootstrap.log ]] || say "install log: $CACHE_DIR/debootstrap.log"
}

# The node `exec` and `stream-dir` act on: $PARTLOG_NODE, else the single node if it runs, else
# the first cluster node (without @localhost).
chosen_node() {
  local node=${PARTLOG_NODE:-}
  if [[ -z $node ]]; then
    if node_alive "$SINGLE" || ((${#CLUSTER[@]} == 0)); then node=$SINGLE; else node=${CLUSTER[0]}; fi
  fi
  node=${node%@localhost}
  node_off "$node" >/dev/null
  echo "$node"
}

cmd_tls_dir() {
  if [[ -n ${PARTLOG_RABBITMQ_TLS_DIR:-} ]]; then
    echo "$PARTLOG_RABBITMQ_TLS_DIR"
    return 0
  fi
  init_paths
  local d
  d=$(tls_dir "$SINGLE")
  [[ -s $d/ca.pem ]] || die "no TLS files for $SINGLE@localhost yet: run '$0 start --tls' (or restart --tls)"
  if node_alive "$SINGLE" && ! node_tls "$SINGLE"; then
    die "$SINGLE@localhost runs without its stream TLS listener: run '$0 restart --tls'"
  fi
  echo "$d"
}

cmd_stream_dir() {
  init_paths
  root_ok || die "partlog's RabbitMQ is not installed yet (run '$0 start')"
  local node
  node=$(chosen_node)
  echo "$ROOT$DATA/$node/mnesia/$node@localhost/stream"
}

cmd_exec() {
  (($# > 0)) || die "usage: $0 exec TOOL [ARGS...]  (e.g. rabbitmqctl cluster_status)"
  init_paths
  root_ok || die "partlog's RabbitMQ is not installed yet (run '$0 start')"
  need_root_user exec
  local node
  node=$(chosen_node)
  case $1 in
    rabbitmqctl | rabbitmq-streams | rabbitmq-diagnostics | rabbitmq-plugins | rabbitmq-queues | rabbitmq-upgrade) ;;
    *) die "exec: '$1' is not a RabbitMQ CLI tool" ;;
  esac
  ctl "$node" "$@"
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  start-cluster) cmd_start_cluster ;;
  stop) cmd_stop ;;
  kill) shift; cmd_kill "$@" ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  wipe) cmd_wipe ;;
  exec) shift; cmd_exec "$@" ;;
  stream-dir) cmd_stream_dir ;;
  tls-dir) cmd_tls_dir ;;
  -h | --help | help) usage ;;
  "") usage >&2; exit 2 ;;
  *) printf '[rabbitmq] error: unknown command %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
esac
