#!/usr/bin/env bash
# cluster.sh runs a 3-node RabbitMQ cluster on this machine for pika's
# cluster tests (internal/clustertest), next to, and never touching, the
# default broker on 5672 (node rabbit@<host>).
#
#   bash scripts/cluster.sh start    start the 3 nodes, join them, print the URLs
#   bash scripts/cluster.sh stop     stop the nodes this script started, delete their data
#   bash scripts/cluster.sh status   say which nodes run and what the cluster looks like
#   bash scripts/cluster.sh urls     print the nodes' AMQP URLs, comma-separated
#   bash scripts/cluster.sh ctl N ARGS...
#                                    rabbitmqctl -n <node N> ARGS... with the cluster's cookie
#
# Each node N (1..3) is pika-cN@localhost with
#   AMQP port          PIKA_CLUSTER_PORT+N-1  (default 5681, 5682, 5683), on 127.0.0.1
#   distribution port  AMQP port + 20000      (25681, 25682, 25683), on 127.0.0.1
#   its own directory  PIKA_CLUSTER_DIR/pika-cN (default ./.cluster): mnesia, logs,
#                      rabbitmq.conf, pid file
# and no plugins (its own empty enabled_plugins file: nothing binds the fixed
# ports of the management or prometheus plugins). All three share an Erlang
# cookie kept in PIKA_CLUSTER_DIR (HOME of the nodes and of the rabbitmqctl
# runs of this script), so the default broker's cookie and files are never
# used. The nodes run as the user who runs this script (root in CI).
#
# start wipes any data left in PIKA_CLUSTER_DIR by a previous run (after
# checking that none of its nodes still runs), so every cluster starts fresh.
# When a node does not start, start says which, prints the tail of its log,
# stops what it started and exits 1. stop stops only the nodes named by the
# pid files in PIKA_CLUSTER_DIR (rabbitmqctl stop, then SIGTERM/SIGKILL of
# that pid if it is still a beam process of that node), then removes the
# directory. The shared epmd daemon (the default broker's) is left alone.
#
# Nodes 2 and 3 join node 1 at the same time; one whose join fails (two
# joins at once can make mnesia fail to start on one node) joins again,
# alone, after a reset, before start gives up. PIKA_CLUSTER_FAIL_JOIN=N
# makes node N's first join fail on purpose, to try that path.
#
# When RabbitMQ is missing, scripts/ensure-rabbitmq.sh installs it (apt-get,
# as root).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${PIKA_CLUSTER_DIR:-$root/.cluster}
base_port=${PIKA_CLUSTER_PORT:-5681}
start_wait=${PIKA_CLUSTER_WAIT:-100} # seconds for every node to boot
nodes=(1 2 3)

say() { printf 'cluster: %s\n' "$*"; }
err() { printf 'cluster: %s\n' "$*" >&2; }

node_name() { printf 'pika-c%s@localhost' "$1"; }
amqp_port() { printf '%s' $((base_port + $1 - 1)); }
dist_port() { printf '%s' $((base_port + $1 - 1 + 20000)); }
node_dir() { printf '%s/pika-c%s' "$dir" "$1"; }
pid_file() { printf '%s/pid' "$(node_dir "$1")"; }

# find_bin sets bin to the directory of RabbitMQ's real scripts. The Debian
# package's /usr/sbin/rabbitmq-server and rabbitmqctl are wrappers that
# switch to the rabbitmq user (and its HOME, so its cookie): use the scripts
# they wrap.
find_bin() {
	if [[ -n ${RABBITMQ_BIN:-} ]]; then
		bin=$RABBITMQ_BIN
	elif [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
		bin=/usr/lib/rabbitmq/bin
	elif command -v rabbitmq-server >/dev/null 2>&1; then
		bin=$(dirname "$(readlink -f "$(command -v rabbitmq-server)")")
	else
		return 1
	fi
	[[ -x $bin/rabbitmq-server && -x $bin/rabbitmqctl ]]
}

ensure_installed() {
	find_bin && return 0
	# ensure-rabbitmq.sh installs the package (apt-get, as root) when it is
	# missing, and starts the default broker the other tests use.
	say "rabbitmq-server is not installed: running scripts/ensure-rabbitmq.sh"
	bash "$root/scripts/ensure-rabbitmq.sh" || true
	if ! find_bin; then
		err "RabbitMQ is not installed. Install it (sudo apt-get install -y rabbitmq-server),"
		err "or set RABBITMQ_BIN to the directory holding rabbitmq-server and rabbitmqctl."
		exit 1
	fi
}

# node_env runs "$@" with the environment of node $1.
node_env() {
	local n=$1 d
	shift
	d=$(node_dir "$n")
	env HOME="$dir" \
		RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
		RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
		RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
		RABBITMQ_NODENAME="$(node_name "$n")" \
		RABBITMQ_USE_LONGNAME=false \
		RABBITMQ_DIST_PORT="$(dist_port "$n")" \
		RABBITMQ_MNESIA_BASE="$d/mnesia" \
		RABBITMQ_LOG_BASE="$d/log" \
		RABBITMQ_PID_FILE="$(pid_file "$n")" \
		RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
		RABBITMQ_ENABLED_PLUGINS= \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
		ERL_EPMD_ADDRESS=127.0.0.1 \
		"$@"
}

# ctl runs rabbitmqctl against node $1 with the cluster's cookie.
ctl() {
	local n=$1
	shift
	node_env "$n" timeout 90 "$bin/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

# beam_of prints the pid in node $1's pid file when it is a live beam
# process of that node, and fails otherwise.
beam_of() {
	local f pid
	f=$(pid_file "$1")
	[[ -f $f ]] || return 1
	pid=$(tr -dc 0-9 <"$f")
	[[ -n $pid && -r /proc/$pid/environ ]] || return 1
	# The node name is in the beam's environment, not on its command line.
	tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
		grep -qx -- "RABBITMQ_NODENAME=$(node_name "$1")" || return 1
	printf '%s' "$pid"
}

port_free() {
	! timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

urls() {
	local n out=()
	for n in "${nodes[@]}"; do
		out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/")
	done
	(
		IFS=,
		printf '%s\n' "${out[*]}"
	)
}

# node_log_tail prints what tells why node $1 did not start: the end of its
# console output and of its log file.
node_log_tail() {
	local n=$1 d f
	d=$(node_dir "$n")
	for f in "$d/console.log" "$d"/log/*.log; do
		[[ -s $f ]] || continue
		err "---- last lines of $f:"
		tail -n 25 "$f" | sed 's/^/    /' >&2
	done
	if [[ -f $d/erl_crash.dump ]]; then
		err "---- $d/erl_crash.dump: $(head -n 3 "$d/erl_crash.dump" | tr '\n' ' ')"
	fi
}

write_config() {
	local n=$1 d
	d=$(node_dir "$n")
	mkdir -p "$d/mnesia" "$d/log"
	cat >"$d/rabbitmq.conf" <<EOF
# Written by scripts/cluster.sh for node $(node_name "$n"); deleted by its stop.
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
cluster_name = pika-test-cluster
log.file.level = info
log.console = false
# The cluster shares the machine with the default broker and other nodes.
vm_memory_high_watermark.relative = 0.2
disk_free_limit.absolute = 50MB
EOF
	# No advanced config: an empty list.
	printf '[].\n' >"$d/advanced.config"
}

# init_dir makes $dir afresh: a new Erlang cookie, an empty env file and
# no plugins.
init_dir() {
	rm -rf "$dir"
	mkdir -p "$dir"
	local cookie
	cookie=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
	printf '%s' "$cookie" >"$dir/.erlang.cookie"
	chmod 400 "$dir/.erlang.cookie"
	: >"$dir/rabbitmq-env.conf"
	printf '[].\n' >"$dir/enabled_plugins"
}

start_node() {
	local n=$1 d
	d=$(node_dir "$n")
	# The server script stays in the foreground (its output is the console
	# log) in a session of its own; the node writes its beam pid to its pid
	# file.
	(
		cd "$d"
		node_env "$n" setsid "$bin/rabbitmq-server" >"$d/console.log" 2>&1 </dev/null &
		printf '%s\n' "$!" >"$d/script.pid"
	)
}

# wait_node waits for node $1's application to run; when it does not, it
# writes why to the node's failure file (the waits run in parallel: the
# reports are printed one after the other afterwards).
wait_node() {
	local n=$1 d
	d=$(node_dir "$n")
	if ! ctl "$n" -q wait --timeout "$start_wait" "$(pid_file "$n")" >/dev/null 2>"$d/wait.err"; then
		{
			err "node $(node_name "$n") (AMQP port $(amqp_port "$n")) did not start within ${start_wait}s:"
			sed 's/^/    /' "$d/wait.err" >&2 || true
			node_log_tail "$n"
		} 2>"$d/failure.txt"
		return 1
	fi
}

# join_step runs step $2 (stop_app, join_cluster or start_app) of joining
# node $1 to node 1, and reports a failure with the node's log.
join_step() {
	local n=$1 step=$2 args=("$2")
	[[ $step == join_cluster ]] && args+=("$(node_name 1)")
	if ! ctl "$n" -q "${args[@]}" >>"$(node_dir "$n")/join.log" 2>&1; then
		err "node $(node_name "$n") could not join $(node_name 1): rabbitmqctl ${args[*]} failed:"
		sed 's/^/    /' "$(node_dir "$n")/join.log" >&2
		node_log_tail "$n"
		return 1
	fi
}

# join_node joins node $1 to node 1: stop_app, join_cluster, start_app;
# on success it leaves a "joined" file in the node's directory.
join_node() {
	if [[ ${PIKA_CLUSTER_FAIL_JOIN:-} == "$1" ]]; then
		# For testing the retry: node $1 joins but its app is left
		# stopped, as after a start_app that failed.
		join_step "$1" stop_app && join_step "$1" join_cluster
		err "PIKA_CLUSTER_FAIL_JOIN=$1: the first join of $(node_name "$1") fails on purpose"
		return 1
	fi
	join_step "$1" stop_app && join_step "$1" join_cluster && join_step "$1" start_app &&
		touch "$(node_dir "$1")/joined"
}

# rejoin_node joins node $1 again, alone, after a reset: two nodes joining
# at once can make mnesia fail to start on one of them (start_app then
# fails with {mnesia_app,start,...}), which a second, lone join gets past.
rejoin_node() {
	local n=$1
	say "joining $(node_name "$n") again, alone, after a reset"
	ctl "$n" -q stop_app >>"$(node_dir "$n")/join.log" 2>&1 || true
	join_step "$n" reset && join_step "$n" join_cluster && join_step "$n" start_app &&
		touch "$(node_dir "$n")/joined"
}

# in_parallel runs "$1 N" for nodes 2 and 3 at once and fails if any
# failed.
in_parallel() {
	local n rc=0 pids=()
	for n in "${nodes[@]:1}"; do
		"$1" "$n" &
		pids+=($!)
	done
	for n in "${pids[@]}"; do
		wait "$n" || rc=1
	done
	return $rc
}

cmd_start() {
	ensure_installed
	local n running=0
	for n in "${nodes[@]}"; do
		beam_of "$n" >/dev/null && running=$((running + 1))
	done
	if ((running == ${#nodes[@]})) && cmd_status >/dev/null 2>&1; then
		say "already running: $(urls)"
		return 0
	fi
	if ((running > 0)); then
		say "found $running node(s) of an earlier run in $dir: stopping them first"
		cmd_stop
	fi
	local names
	names=$(epmd -names 2>/dev/null || true)
	for n in "${nodes[@]}"; do
		if grep -q "^name pika-c$n at " <<<"$names"; then
			err "an Erlang node named $(node_name "$n") already runs (epmd -names), but not from $dir:"
			err "another cluster.sh run with another PIKA_CLUSTER_DIR? Stop it with that PIKA_CLUSTER_DIR first."
			exit 1
		fi
		local p
		for p in "$(amqp_port "$n")" "$(dist_port "$n")"; do
			if ! port_free "$p"; then
				err "port $p (for node $(node_name "$n")) is taken by another process; free it or set PIKA_CLUSTER_PORT"
				exit 1
			fi
		done
	done
	init_dir
	local t0=$SECONDS
	for n in "${nodes[@]}"; do
		write_config "$n"
		start_node "$n"
	done
	local failed=0 pids=()
	for n in "${nodes[@]}"; do
		wait_node "$n" &
		pids+=($!)
	done
	for n in "${pids[@]}"; do
		wait "$n" || failed=1
	done
	if ((failed)); then
		for n in "${nodes[@]}"; do
			[[ -s $(node_dir "$n")/failure.txt ]] && cat "$(node_dir "$n")/failure.txt" >&2
		done
		err "stopping the nodes this run started"
		cmd_stop >&2 || true
		exit 1
	fi
	say "3 nodes up after $((SECONDS - t0))s; joining pika-c2 and pika-c3 to $(node_name 1)"
	# Nodes 2 and 3 join at the same time (each: stop_app, join_cluster,
	# start_app): rabbitmqctl runs take seconds each on a busy machine.
	if ! in_parallel join_node; then
		for n in "${nodes[@]:1}"; do
			[[ -e $(node_dir "$n")/joined ]] && continue
			if ! rejoin_node "$n"; then
				cmd_stop >&2 || true
				exit 1
			fi
		done
	fi
	# Fresh 3.10 nodes enable every feature flag (stream_queue and
	# quorum_queue included); make sure of it for the whole cluster.
	ctl 1 -q enable_feature_flag all >/dev/null
	if ! cmd_status >/dev/null; then
		err "the cluster did not form:"
		cmd_status >&2 || true
		cmd_stop >&2 || true
		exit 1
	fi
	urls >"$dir/urls"
	say "cluster up after $((SECONDS - t0))s: $(urls)"
}

# stop_one stops node $1: rabbitmqctl stop (which waits for the process to
# exit), then signals for a node that does not stop.
stop_one() {
	local n=$1 pid sp
	pid=$(beam_of "$n") || pid=
	if [[ -n $pid ]]; then
		ctl "$n" -q stop "$(pid_file "$n")" >/dev/null 2>&1 || true
		local i
		for i in $(seq 1 20); do
			[[ -d /proc/$pid ]] || break
			((i == 10)) && kill -TERM "$pid" 2>/dev/null
			sleep 0.5
		done
		if [[ -d /proc/$pid ]] && beam_of "$n" >/dev/null; then
			err "node $(node_name "$n") (pid $pid) ignored SIGTERM: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	# The foreground server script ends with its node; make sure.
	sp=$(node_dir "$n")/script.pid
	if [[ -f $sp ]]; then
		local s
		s=$(tr -dc 0-9 <"$sp")
		if [[ -n $s && -r /proc/$s/cmdline ]] && tr '\0' ' ' <"/proc/$s/cmdline" 2>/dev/null | grep -q rabbitmq-server; then
			kill -TERM "$s" 2>/dev/null || true
		fi
	fi
}

cmd_stop() {
	find_bin || true
	[[ -d $dir ]] || {
		say "nothing to stop ($dir does not exist)"
		return 0
	}
	local n
	for n in "${nodes[@]}"; do
		stop_one "$n" &
	done
	wait
	for n in "${nodes[@]}"; do
		if beam_of "$n" >/dev/null; then
			err "node $(node_name "$n") still runs; leaving $dir in place"
			return 1
		fi
	done
	if [[ -n ${PIKA_CLUSTER_KEEP:-} ]]; then
		say "stopped; kept $dir (PIKA_CLUSTER_KEEP is set)"
	else
		rm -rf "$dir"
		say "stopped; removed $dir"
	fi
}

cmd_status() {
	find_bin || {
		err "RabbitMQ is not installed"
		return 1
	}
	local n up=0
	for n in "${nodes[@]}"; do
		local pid
		if pid=$(beam_of "$n"); then
			up=$((up + 1))
			say "$(node_name "$n") pid $pid, AMQP 127.0.0.1:$(amqp_port "$n")"
		else
			say "$(node_name "$n") not running"
		fi
	done
	((up > 0)) || return 1
	local out running
	for n in "${nodes[@]}"; do
		beam_of "$n" >/dev/null || continue
		out=$(ctl "$n" -q cluster_status --formatter json 2>&1) || {
			err "cluster_status on $(node_name "$n") failed: $out"
			return 1
		}
		break
	done
	running=$(grep -o '"running_nodes":\[[^]]*\]' <<<"$out" || true)
	say "${running:-cluster_status: $out}"
	((up == ${#nodes[@]})) || return 1
	for n in "${nodes[@]}"; do
		[[ $running == *"\"$(node_name "$n")\""* ]] || return 1
	done
}

# Sourced (scripts/manyconns.sh reuses the helpers above for a node of its
# own): define, do nothing.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
	return 0
fi

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
urls) urls ;;
ctl)
	shift
	[[ ${1:-} =~ ^[1-3]$ ]] || {
		err "usage: cluster.sh ctl N ARGS... (N is 1, 2 or 3)"
		exit 2
	}
	find_bin || {
		err "RabbitMQ is not installed"
		exit 1
	}
	ctl "$@"
	;;
*)
	err "usage: cluster.sh start|stop|status|urls|ctl N ARGS..."
	exit 2
	;;
esac
