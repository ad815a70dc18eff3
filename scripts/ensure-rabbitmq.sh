#!/usr/bin/env bash
# ensure-rabbitmq.sh makes sure a RabbitMQ broker answers on the host and port
# of PIKA_TEST_URL (default amqp://guest:guest@127.0.0.1:5672/).
#
#   - If the port accepts TCP connections, it says so in one line and exits 0.
#   - If the URL names this machine and the port is closed, it starts the local
#     broker (rabbitmq-server -detached), installing the Debian/Ubuntu package
#     first when it is missing and we are root with apt-get. It waits up to
#     PIKA_BROKER_WAIT seconds (default 90) for the broker to answer.
#   - If the URL names another machine, it never installs or starts anything:
#     it reports whether the port answers.
#   - If the local broker reports a resource alarm (memory or disk), it warns
#     loudly on stderr; it never changes the broker.
#
# It is idempotent and prints one line on success. Exit status: 0 when the
# broker answers, 1 otherwise (with a message saying what to do).
set -euo pipefail

default_url='amqp://guest:guest@127.0.0.1:5672/'
url=${PIKA_TEST_URL:-$default_url}
wait_secs=${PIKA_BROKER_WAIT:-90}
apt_log=${TMPDIR:-/tmp}/ensure-rabbitmq-apt.log
start_log=${TMPDIR:-/tmp}/ensure-rabbitmq-start.log

say() { printf 'ensure-rabbitmq: %s\n' "$*"; }
err() { printf 'ensure-rabbitmq: %s\n' "$*" >&2; }

# parse_url sets scheme, host and port from $url using plain bash.
# Accepted form: amqp[s]://[user[:password]@]host[:port][/vhost][?query]
parse_url() {
	local rest hostport
	case $url in
	amqp://*) scheme=amqp port=5672 ;;
	amqps://*) scheme=amqps port=5671 ;;
	*)
		err "PIKA_TEST_URL=$url is not an amqp:// or amqps:// URL"
		exit 1
		;;
	esac
	rest=${url#*://}
	hostport=${rest%%[/?#]*} # authority: up to the first / ? or #
	hostport=${hostport##*@} # drop user:password@ (the password may contain @)
	if [[ $hostport == \[* ]]; then
		# IPv6 literal: [addr] or [addr]:port
		host=${hostport#\[}
		host=${host%%\]*}
		local after=${hostport#*\]}
		if [[ -n $after ]]; then
			if [[ $after != :* ]]; then
				err "PIKA_TEST_URL=$url: cannot parse host and port"
				exit 1
			fi
			[[ -n ${after#:} ]] && port=${after#:}
		fi
	elif [[ $hostport == *:* ]]; then
		host=${hostport%:*}
		[[ -n ${hostport##*:} ]] && port=${hostport##*:}
	else
		host=$hostport
	fi
	[[ -n $host ]] || host=localhost
	if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
		err "PIKA_TEST_URL=$url: port '$port' is not a number between 1 and 65535"
		exit 1
	fi
}

# is_local reports whether host names this machine, so that starting or
# installing a broker here could make it answer.
is_local() {
	case $host in
	localhost | localhost.localdomain | ::1 | 0.0.0.0 | 127.*) return 0 ;;
	esac
	[[ $host == "$(hostname 2>/dev/null || true)" ]]
}

# port_open reports whether an AMQP broker answers at host:port within 2 s.
# For amqp:// it sends the AMQP 0-9-1 protocol header and expects the first
# byte of a method frame back (Connection.Start), because a bare TCP connect
# also succeeds against proxies and unrelated services. For amqps:// it only
# checks that the port accepts a TCP connection.
port_open() {
	if [[ $scheme == amqps ]]; then
		timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
		return
	fi
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "AMQP\0\0\x09\x01" >&3 || exit 1
		IFS= read -r -N 1 -t 2 b <&3 || exit 1
		[[ $b == $'"'"'\x01'"'"' ]]' _ "$host" "$port" 2>/dev/null
}

# wait_for_port polls the port for up to wait_secs seconds.
wait_for_port() {
	local deadline=$((SECONDS + wait_secs))
	while ((SECONDS < deadline)); do
		port_open && return 0
		sleep 1
	done
	return 1
}

# node_running reports whether a local RabbitMQ node answers rabbitmqctl,
# even if its AMQP listener is not (yet) open.
node_running() {
	command -v rabbitmqctl >/dev/null 2>&1 &&
		timeout 20 rabbitmqctl -q status >/dev/null 2>&1
}

can_run_server() {
	[[ $(id -u) == 0 ]] || [[ $(id -un 2>/dev/null) == rabbitmq ]]
}

# check_alarms warns loudly when the local node reports a resource alarm.
check_alarms() {
	command -v rabbitmq-diagnostics >/dev/null 2>&1 || return 0
	local out
	out=$(timeout 20 rabbitmq-diagnostics -q alarms --formatter json 2>/dev/null) || return 0
	# An empty list prints as "alarms":[]; anything else is an alarm.
	if [[ $out == *'"alarms":['* && $out != *'"alarms":[]'* ]]; then
		err "WARNING: ================================================================"
		err "WARNING: the local RabbitMQ node reports a resource alarm: publishers"
		err "WARNING: will be blocked and tests that publish will time out."
		err "WARNING: $out"
		err "WARNING: see 'rabbitmq-diagnostics alarms'; free memory/disk or restore"
		err "WARNING: the watermark (e.g. rabbitmqctl set_vm_memory_high_watermark 0.4)."
		err "WARNING: ================================================================"
	fi
}

ready() {
	if is_local; then
		check_alarms
	fi
	if [[ $scheme == amqps ]]; then
		say "RabbitMQ port $host:$port accepts TCP${1:+ ($1)} (amqps: TLS not probed)"
	else
		say "RabbitMQ answers at $host:$port${1:+ ($1)}"
	fi
	exit 0
}

install_server() {
	if ! can_run_server || ! command -v apt-get >/dev/null 2>&1; then
		err "RabbitMQ is not installed and nothing answers at $host:$port."
		err "Install and start it, then run this again:"
		err "  sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached"
		err "or run it in Docker:"
		err "  docker run -d --name rabbitmq -p $port:5672 rabbitmq:3"
		err "or point PIKA_TEST_URL at a broker you have."
		exit 1
	fi
	say "rabbitmq-server is not installed; installing it with apt-get (one time)..."
	# In containers there is no init system: keep the package's maintainer
	# scripts from trying to start the service (policy-rc.d exit 101 = "do not
	# start"), and start it ourselves below.
	local policy=/usr/sbin/policy-rc.d made_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	local rc=0
	{
		apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
	} >"$apt_log" 2>&1 || rc=$?
	[[ -n $made_policy ]] && rm -f "$policy"
	if ! command -v rabbitmq-server >/dev/null 2>&1; then
		err "apt-get could not install rabbitmq-server (exit $rc); log: $apt_log"
		tail -n 20 "$apt_log" >&2 || true
		exit 1
	fi
	if ((rc != 0)); then
		err "apt-get exited $rc but rabbitmq-server is installed; continuing (log: $apt_log)"
	fi
}

start_server() {
	if ! can_run_server; then
		err "RabbitMQ is installed but nothing answers at $host:$port."
		err "Start it (as root), then run this again:"
		err "  sudo rabbitmq-server -detached"
		exit 1
	fi
	say "starting rabbitmq-server -detached ..."
	local log=$start_log
	if ! rabbitmq-server -detached >"$log" 2>&1; then
		err "rabbitmq-server -detached failed; its output ($log):"
		cat "$log" >&2 || true
		exit 1
	fi
}

parse_url

if port_open; then
	ready
fi

if ! is_local; then
	err "no AMQP broker answers at $host:$port (from PIKA_TEST_URL=$url)."
	err "That host is not this machine, so nothing is installed or started here:"
	err "start the broker there, or unset PIKA_TEST_URL to use a local one."
	exit 1
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
	install_server
	# The package may have started the service after all (systemd hosts).
	port_open && ready "installed"
fi

if node_running; then
	# A node is up but not listening: it may still be booting. When it has
	# finished booting and the port is still closed, waiting will not help.
	if timeout "$wait_secs" rabbitmqctl -q await_startup >/dev/null 2>&1; then
		port_open && ready "was starting"
	elif wait_for_port; then
		ready "was starting"
	fi
	err "a local RabbitMQ node is running but no AMQP listener answers at $host:$port."
	err "Check its listeners (rabbitmq-diagnostics listeners) and its log in /var/log/rabbitmq/."
	exit 1
fi

start_server
if wait_for_port; then
	timeout 30 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
	ready "started"
fi
err "started rabbitmq-server but nothing answers at $host:$port after ${wait_secs}s."
err "Look at $start_log and /var/log/rabbitmq/ for the reason."
exit 1
