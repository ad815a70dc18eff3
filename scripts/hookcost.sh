#!/usr/bin/env bash
# hookcost.sh measures what the observability hooks (Config.Hooks) cost on
# the publish and consume paths, as BENCHMARKS.md "Cost of the observability
# hooks" reports it.
#
#   scripts/hookcost.sh build DIR
#       builds, in DIR, the bench module's binary (the sink) and four test
#       binaries of the root package, each with this tree's benchmark files
#       (bench_paths_test.go, and hooks_bench_test.go where hooks exist):
#         base.test   the commit before the hooks (BASE, default cfdd9cb)
#         strip.test  this tree with the hook sites of the publish and
#                     consume paths deleted: the same code without hooks
#         old.test    the commit this branch started from (OLD, default
#                     the merge base with main)
#         new.test    this tree
#   scripts/hookcost.sh run DIR WORKLOAD ROUNDS
#       WORKLOAD is sink (BenchmarkPathPublish against the sink, 1,000,000
#       messages), publish or consume (against the broker, 20,000). Five
#       variants: base, strip, none (new.test), oldnoop (old.test with a
#       no-op hook of every kind), noop (new.test, the same); each round runs
#       them in an order rotated round by round, each in a process of its
#       own. Prints "round variant cpu-ns/op allocs/op" lines.
#   scripts/hookcost.sh ratios FILE
#       per-round ratios of the lines of one run: median, interquartile
#       range and range over the rounds.
#   scripts/hookcost.sh micro DIR ROUNDS
#       the socket-free benchmarks (BenchmarkPublishEntry*,
#       BenchmarkNextBuffered*, 20,000,000 iterations) of base, strip, old
#       and new, rotated round by round, one process each, into
#       DIR/micro-VARIANT.txt; then benchstat on them if it is installed
#       (go install golang.org/x/perf/cmd/benchstat@latest).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

build() {
	local dir=$1
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	local base=${BASE:-cfdd9cb} old=${OLD:-$(git merge-base HEAD main)}
	(cd bench && go build -o "$dir/benchbin" .)
	local src
	for v in base strip old; do
		src=$dir/src-$v
		rm -rf "$src"
		mkdir -p "$src"
		case $v in
		base) git archive "$base" | tar -x -C "$src" ;;
		old) git archive "$old" | tar -x -C "$src" ;;
		strip) git ls-files -z | tar -c --null -T - | tar -x -C "$src" ;;
		esac
		cp bench_paths_test.go "$src/"
		if [ "$v" = base ]; then
			printf 'package pika\n\nfunc applyBenchConfig(*Config, Config) {}\n' >"$src/bench_base_test.go"
		else
			cp hooks_bench_test.go "$src/"
		fi
	done
	strip "$dir/src-strip"
	for v in base strip old; do
		(cd "$dir/src-$v" && go test -c -o "$dir/$v.test" .)
	done
	go test -c -o "$dir/new.test" .
}

# replace replaces text in a file by new, failing unless it occurs exactly
# once.
replace() {
	local file=$1
	OLD=$2 NEW=${3:-} perl -0777 -i -pe '$n = () = /\Q$ENV{OLD}\E/g; die "hookcost: $ARGV: $n matches\n" if $n != 1; s/\Q$ENV{OLD}\E/$ENV{NEW}/' "$file"
}

# strip deletes the hook sites of the publish and consume hot paths.
strip() {
	local s=$1
	replace "$s/publish.go" '	if p == nil && len(ch.conn.hk.publish) > 0 {
		return ch.publishHooked(ctx, exchange, routingKey, msg, wantConfirm)
	}
'
	replace "$s/publish.go" '		case len(c.hk.outcome) > 0 && ch.confirm && c.hookq.outcomesFull(c.cfg.MaxUnconfirmed) != nil:
			// Outcomes wait for a slow PublishOutcomeHook: bound them.
			wait = c.hookq.outcomesFull(c.cfg.MaxUnconfirmed)
'
	replace "$s/consume.go" '		d, queue, err := cons.take(true)
		if d != nil {
			if len(c.hk.delivery) > 0 {
				c.deliveryEvent(queue, d)
			}
			return d, nil' '		_ = c
		d, _, err := cons.take(true)
		if d != nil {
			return d, nil'
	replace "$s/consume.go" '	c := ch.conn
	if len(c.hk.settle) == 0 {
		_, err := ch.settleLocking(kind, tag, multiple, requeue, false)
		return err
	}
	n, err := ch.settleLocking(kind, tag, multiple, requeue, true)
	c.settleEvent(SettleEvent{Channel: ch, Kind: kind, Tag: tag, Multiple: multiple, Requeue: requeue, Count: n, Err: err})
	return err' '	_, err := ch.settleLocking(kind, tag, multiple, requeue, false)
	return err'
	replace "$s/link.go" '		if n > 0 && len(c.hk.bytes) > 0 {
			c.addBytes(n, 0)
		}
'
	replace "$s/link.go" '		n, err := l.nc.Write(buf)
		if n > 0 && len(c.hk.bytes) > 0 {
			c.addBytes(0, n)
		}
' '		_, err := l.nc.Write(buf)
'
	(cd "$s" && go vet .)
}

run() {
	local dir=$1 workload=$2 rounds=$3
	local bench n
	case $workload in
	sink) bench=BenchmarkPathPublish n=1000000 ;;
	publish) bench=BenchmarkPathPublish n=20000 ;;
	consume) bench=BenchmarkPathConsume n=20000 ;;
	*) echo "hookcost: unknown workload $workload" >&2; exit 2 ;;
	esac
	local sinkpid=
	if [ "$workload" = sink ]; then
		rm -f "$dir/sink.in"
		mkfifo "$dir/sink.in"
		"$dir/benchbin" -sink <"$dir/sink.in" >"$dir/sink.out" &
		sinkpid=$!
		exec 9>"$dir/sink.in" # the sink serves until its stdin closes
		local addr=
		for _ in $(seq 100); do
			addr=$(sed -n 's/^addr //p' "$dir/sink.out")
			[ -n "$addr" ] && break
			sleep 0.1
		done
		export PIKA_BENCH_SINK_URL=amqp://guest:guest@$addr/
	else
		unset PIKA_BENCH_SINK_URL
	fi
	local variants=(base strip none oldnoop noop) v bin name line
	for r in $(seq 1 "$rounds"); do
		for i in 0 1 2 3 4; do
			v=${variants[$(((i + r) % 5))]}
			case $v in
			base | strip) bin=$v name=$bench ;;
			none) bin=new name=$bench ;;
			oldnoop) bin=old name=${bench}NoopHooks ;;
			noop) bin=new name=${bench}NoopHooks ;;
			esac
			line=$("$dir/$bin.test" -test.run '^$' -test.bench "^$name\$" -test.benchtime "${n}x" | grep "^$name-")
			echo "$r $v $(echo "$line" | awk '{for (i = 1; i < NF; i++) { if ($(i+1) == "cpu-ns/op") c = $i; if ($(i+1) == "allocs/op") a = $i }; print c, a}')"
		done
	done
	if [ -n "$sinkpid" ]; then
		exec 9>&-
		wait "$sinkpid" || true
	fi
}

ratios() {
	awk '
	{ cpu[$1, $2] = $3; if ($1 > rounds) rounds = $1; sum[$2] += $3; cnt[$2]++; all[$2, cnt[$2]] = $3 }
	function stats(name, vals, k,    i, j, t) {
		for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (vals[j] < vals[i]) { t = vals[i]; vals[i] = vals[j]; vals[j] = t }
		printf "%-16s median %7.3f  IQR %7.3f-%7.3f  range %7.3f-%7.3f  (%d rounds)\n", name, q(vals, k, 0.5), q(vals, k, 0.25), q(vals, k, 0.75), vals[1], vals[k], k
	}
	function q(vals, k, p,    h, lo) { h = (k - 1) * p + 1; lo = int(h); return lo >= k ? vals[k] : vals[lo] + (h - lo) * (vals[lo + 1] - vals[lo]) }
	END {
		split("base strip none oldnoop noop", vs, " ")
		for (x = 1; x <= 5; x++) {
			k = 0; delete vals
			for (i = 1; i <= cnt[vs[x]]; i++) vals[++k] = all[vs[x], i]
			if (k) stats(vs[x] " cpu-ns", vals, k)
		}
		n = split("none/base none/strip strip/base noop/none oldnoop/none noop/oldnoop noop/strip", pairs, " ")
		for (x = 1; x <= n; x++) {
			split(pairs[x], ab, "/"); k = 0; delete vals
			for (r = 1; r <= rounds; r++) if ((r, ab[1]) in cpu && (r, ab[2]) in cpu && cpu[r, ab[2]] > 0) vals[++k] = cpu[r, ab[1]] / cpu[r, ab[2]]
			if (k) stats(pairs[x], vals, k)
		}
	}' "$1"
}

micro() {
	local dir=$1 rounds=$2 variants=(base strip old new) v
	rm -f "$dir"/micro-*.txt
	for r in $(seq 1 "$rounds"); do
		for i in 0 1 2 3; do
			v=${variants[$(((i + r) % 4))]}
			"$dir/$v.test" -test.run '^$' -test.bench '^Benchmark(PublishEntry|NextBuffered)' \
				-test.benchtime 20000000x >>"$dir/micro-$v.txt"
		done
	done
	if command -v benchstat >/dev/null; then
		(cd "$dir" && benchstat micro-base.txt micro-strip.txt micro-old.txt micro-new.txt)
	fi
}

case ${1:-} in
build) build "$2" ;;
run) run "$2" "$3" "$4" ;;
ratios) ratios "$2" ;;
micro) micro "$2" "$3" ;;
*) sed -n '2,32p' "$0"; exit 2 ;;
esac
