#!/usr/bin/env bash
# run.sh is the project's main job: it makes sure a RabbitMQ broker answers
# (scripts/ensure-rabbitmq.sh starts or installs a local one when needed) and
# then runs a short load test with the pika command-line tool against the
# broker at PIKA_TEST_URL (default amqp://guest:guest@127.0.0.1:5672/): one
# producer with publisher confirms (at most 200 outstanding) and one consumer
# for 5 seconds, printing rates and latencies each second and a summary.
# Arguments are passed to `pika perf` (e.g. --duration 30s --producers 2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v go >/dev/null 2>&1; then
	echo "run.sh: go is not installed or not in PATH; install Go 1.26 or newer from https://go.dev/dl/" >&2
	exit 1
fi

bash scripts/ensure-rabbitmq.sh
export AMQP_URL="${AMQP_URL:-${PIKA_TEST_URL:-amqp://guest:guest@127.0.0.1:5672/}}"
exec go run ./cmd/pika perf --duration 5s --confirm 200 "$@"
