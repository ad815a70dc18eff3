#!/bin/sh
# conformance_speed.sh runs the conformance table against RabbitMQ (on
# 127.0.0.1:5672, internal/testenv) and against pikatest, interleaved, for
# ROUNDS rounds, the whole table and then only the scenarios that no protocol
# timer bounds (-conformance.untimed), and prints each run's duration as Run
# logs it (the table only: not the build, not the wait for the broker lock).
# pikatest runs through its in-memory transport (TestConformance), and, for
# comparison, over TCP too ("pikatest-tcp", -pikatest.tcp).
# Usage: scripts/conformance_speed.sh [ROUNDS]   (default 7)
set -eu
rounds=${1:-7}
cd "$(dirname "$0")/.."
go test -c -o /tmp/conf.test ./internal/conformance
go test -c -o /tmp/pikatest.test ./pikatest
one() { # name mode binary dir test [flag]
	extra=""
	[ "$2" = untimed ] && extra="-conformance.untimed"
	d=$(cd "$4" && "$3" -test.run "$5" -test.count=1 -test.v $extra ${6:-} 2>&1 | sed -n 's/.*conformance: [0-9]* scenarios (untimed only: [a-z]*) in //p')
	echo "$1 $2 ${d:-FAILED}"
}
i=1
while [ "$i" -le "$rounds" ]; do
	echo "round $i, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	for mode in full untimed; do
		one rabbitmq "$mode" /tmp/conf.test internal/conformance 'TestRabbitMQ$'
		one pikatest "$mode" /tmp/pikatest.test pikatest 'TestConformance$'
		one pikatest-tcp "$mode" /tmp/pikatest.test pikatest 'TestConformance$' -pikatest.tcp
	done
	i=$((i + 1))
done
