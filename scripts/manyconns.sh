#!/usr/bin/env bash
# manyconns.sh measures many connections publishing with confirms against a
# real RabbitMQ node (issue 16, "Measure": 1,000 connections on one loop vs
# 1,000 pika.Conns): it starts an extra node with a raised file-descriptor
# limit, runs the bench's many mode against it, and stops the node and
# deletes its files afterwards, also when the run fails or is interrupted.
#
#   bash scripts/manyconns.sh [extra bench flags...]
#
# The bench runs as
#   bench -url amqp://guest:guest@127.0.0.1:PORT/ -many CONNS -many-rate RATE \
#         -many-duration DURATION -rounds ROUNDS [extra bench flags...]
# with CONNS, RATE, DURATION, ROUNDS from PIKA_MANY_CONNS (1000),
# PIKA_MANY_RATE (10), PIKA_MANY_DURATION (30s), PIKA_MANY_ROUNDS (3);
# e.g. -many-clients loop,pika,amqp091-go or -json as extra flags. The
# table goes to stdout, progress to stderr.
#
# The node is rabbit-many@localhost with
#   AMQP port          PIKA_MANY_PORT (default 5690), on 127.0.0.1
#   distribution port  AMQP port + 20000 (25690), on 127.0.0.1
#   its own directory  PIKA_MANY_DIR (default /tmp/pika-many): mnesia, logs,
#                      config, cookie, pid file, the bench binary
#   no plugins         (so no management or prometheus port)
#   open files         ulimit -n PIKA_MANY_NOFILE (65536), or the hard limit
#                      when that is lower and cannot be raised
# It is started and stopped with scripts/cluster.sh's helpers (sourced),
# as a one-node "cluster" in PIKA_MANY_DIR; the default broker on 5672 and
# its files are never touched.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PIKA_CLUSTER_DIR=${PIKA_MANY_DIR:-/tmp/pika-many}
PIKA_CLUSTER_PORT=${PIKA_MANY_PORT:-5690}
# shellcheck source=cluster.sh
source "$here/cluster.sh"

nodes=(1)
node_name() { printf 'rabbit-many@localhost'; }
node_dir() { printf '%s/node' "$dir"; }
say() { printf 'manyconns: %s\n' "$*" >&2; }
err() { printf 'manyconns: %s\n' "$*" >&2; }

conns=${PIKA_MANY_CONNS:-1000}
rate=${PIKA_MANY_RATE:-10}
duration=${PIKA_MANY_DURATION:-30s}
rounds=${PIKA_MANY_ROUNDS:-3}
nofile=${PIKA_MANY_NOFILE:-65536}

ensure_installed
if beam_of 1 >/dev/null; then
	say "a node of an earlier run still runs from $dir: stopping it first"
	cmd_stop
fi
if epmd -names 2>/dev/null | grep -q '^name rabbit-many at '; then
	err "an Erlang node named $(node_name 1) already runs (epmd -names), but not from $dir"
	exit 1
fi
for p in "$(amqp_port 1)" "$(dist_port 1)"; do
	if ! port_free "$p"; then
		err "port $p is taken by another process; free it or set PIKA_MANY_PORT"
		exit 1
	fi
done

init_dir
# From here on, whatever happens, the node is stopped and $dir removed.
bench_pid=
finish() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
		# The bench and its children, in a session of their own.
		kill -TERM -- "-$bench_pid" 2>/dev/null || kill -TERM "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	fi
	cmd_stop >&2 || rc=1
	exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

write_config 1
(
	# The node inherits the limit. Raising the hard limit needs privileges
	# a container may not have: then take the hard limit as it is.
	ulimit -n "$nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
	start_node 1
)
t0=$SECONDS
if ! wait_node 1; then
	cat "$(node_dir 1)/failure.txt" >&2
	exit 1
fi
pid=$(beam_of 1)
limit=$(awk '/^Max open files/ {print $4}' "/proc/$pid/limits")
say "node $(node_name 1) up after $((SECONDS - t0))s, pid $pid, AMQP 127.0.0.1:$(amqp_port 1), open files limit $limit"
ctl 1 -q status 2>/dev/null | grep -A 3 -i 'file descriptors' | sed 's/^/    /' >&2 || true
if ((limit < conns + 200)); then
	err "the node may open $limit files, too few for $conns connections"
	exit 1
fi

(cd "$here/../bench" && go build -o "$dir/bench" .)
# The bench's client side needs a descriptor per connection too (Go raises
# its soft limit to the hard one by itself). It runs in a session of its
# own, in the background, so that a signal to this script stops it (and
# its children) at once.
setsid "$dir/bench" -url "amqp://guest:guest@127.0.0.1:$(amqp_port 1)/" -many "$conns" -many-rate "$rate" \
	-many-duration "$duration" -rounds "$rounds" "$@" &
bench_pid=$!
wait "$bench_pid"
