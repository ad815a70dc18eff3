#!/bin/sh
# conformance_speed.sh runs the conformance table against RabbitMQ (on
# 127.0.0.1:5672, internal/testenv) and against pikatest, interleaved, for
# ROUNDS rounds, the whole table and then only the scenarios that no protocol
# timer bounds (-conformance.untimed), and prints each run's duration as Run
# logs it (the table only: not the build, not the wait for the broker lock).
# Usage: scripts/conformance_speed.sh [ROUNDS]   (default 7)
set -eu
rounds=${1:-7}
cd "$(dirname "$0")/.."
go test -c -o /tmp/conf.test ./internal/conformance
go test -c -o /tmp/pikatest.test ./pikatest
one() { # broker mode binary test
	extra=""
	[ "$2" = untimed ] && extra="-conformance.untimed"
	d=$(cd "$4" && "$3" -test.run "$5" -test.count=1 -test.v $extra 2>&1 | sed -n 's/.*conformance: [0-9]* scenarios (untimed only: [a-z]*) in //p')
	echo "$1 $2 ${d:-FAILED}"
}
i=1
while [ "$i" -le "$rounds" ]; do
	for mode in full untimed; do
		one rabbitmq "$mode" /tmp/conf.test internal/conformance 'TestRabbitMQ$'
		one pikatest "$mode" /tmp/pikatest.test pikatest 'TestConformance$'
	done
	i=$((i + 1))
done
