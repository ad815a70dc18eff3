#!/usr/bin/env bash
# test.sh is the project's test command (CI runs it through .ci/run).
#
# Steps, in order:
#   1. go toolchain present
#   2. RabbitMQ answers (scripts/ensure-rabbitmq.sh starts/installs it locally)
#   3. gofmt: no file needs formatting (testdata excluded)
#   4. go vet ./...
#   5. generated code is current: go generate ./... changes nothing
#   6. go test -race -count=1 -timeout 30m ./...   (extra arguments to this script are
#      passed to this go test invocation, e.g. -run TestDial -v)
#   7. every fuzz target for PIKA_FUZZTIME (default 5s), one per invocation
#   8. the cluster tests: scripts/cluster.sh start (a 3-node RabbitMQ cluster
#      on ports 5681-5683 beside the default broker), go vet and go test
#      -race -tags cluster ./internal/clustertest with PIKA_CLUSTER_URLS, then
#      scripts/cluster.sh stop (always). Outside CI, PIKA_CLUSTER=0 skips this
#      step (it takes about 7 minutes); with CI=true it always runs.
#   9. every other Go module in the repository (each directory below the root
#      with a go.mod: bench/, plugins/*, adapters/*): go vet, then go test
#      -race -count=1 -timeout 30m
#
# A failing step does not stop the later ones (so one run shows every
# problem); the script exits non-zero if any step failed. Integration tests
# use PIKA_TEST_URL (default amqp://guest:guest@127.0.0.1:5672/); with CI=true
# a missing broker fails them instead of skipping them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${PIKA_FUZZTIME:-5s}
start=$SECONDS
failed=()
passed=0

section() { printf '\n=== %s\n' "$*"; }
ok() {
	passed=$((passed + 1))
	printf -- '--- ok: %s\n' "$1"
}
fail() {
	failed+=("$1")
	printf -- '--- FAIL: %s\n' "$1"
}

# step runs "$@" as the step named $1; the command's failure is recorded,
# not fatal.
step() {
	local step_name=$1
	shift
	section "$step_name"
	if "$@"; then ok "$step_name"; else fail "$step_name"; fi
}

in_git() { git rev-parse --is-inside-work-tree >/dev/null 2>&1; }

# go_files lists the module's .go files outside testdata directories:
# tracked and untracked-but-not-ignored files in a git work tree, every file
# otherwise.
go_files() {
	if in_git; then
		git ls-files -co --exclude-standard -- '*.go'
	else
		find . -name '*.go' -not -path './.git/*'
	fi | grep -Ev '(^|/)testdata/' | while IFS= read -r f; do
		[[ -f $f ]] && printf '%s\n' "$f"
	done
	return 0
}

check_gofmt() {
	local files bad
	files=$(go_files)
	if [[ -z $files ]]; then
		echo "no .go files"
		return 0
	fi
	bad=$(printf '%s\n' "$files" | xargs gofmt -l) || {
		echo "gofmt could not parse some files (see above)"
		return 1
	}
	if [[ -n $bad ]]; then
		echo "these files need gofmt -w:"
		printf '  %s\n' $bad
		return 1
	fi
	echo "$(printf '%s\n' "$files" | wc -l | tr -d ' ') files formatted"
}

# snapshot prints "hash path" for every file that differs from HEAD or is
# untracked, so a change made by go generate shows up even in a work tree
# that already has uncommitted edits. In a clean checkout (CI) it is empty
# before generation, which makes this check the same as git diff --exit-code.
snapshot() {
	{
		git diff --name-only HEAD -- 2>/dev/null || git ls-files
		git ls-files -o --exclude-standard
	} | sort -u | while IFS= read -r f; do
		if [[ -f $f ]]; then
			printf '%s %s\n' "$(git hash-object -- "$f")" "$f"
		else
			printf 'deleted %s\n' "$f"
		fi
	done
}

check_generate() {
	if ! in_git; then
		echo "not a git work tree: running go generate without a drift check"
		go generate ./...
		return
	fi
	local before after drifted
	before=$(snapshot)
	go generate ./... || return 1
	after=$(snapshot)
	drifted=$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") |
		sed -n 's/^[<>] [^ ]* //p' | sort -u)
	if [[ -n $drifted ]]; then
		echo "go generate changed files: the generated code in the tree is stale."
		echo "Commit the regenerated files:"
		printf '  %s\n' $drifted
		git --no-pager diff --stat -- $drifted || true
		return 1
	fi
	echo "generated files are current"
}

# The root package's integration tests (recovery, faults, slow consumers)
# take several minutes under -race: give go test more than its default
# 10-minute bound per package.
run_tests() {
	go test -race -count=1 -timeout 30m "$@" ./...
}

# fuzz_one fuzzes target $2 of package $1 for $fuzztime. Go's fuzzing
# engine sometimes ends a short run with "context deadline exceeded" when
# the time is up while a worker is still starting or stopping, with no
# failing input found or written: such a run is tried once more, and only a
# second failure (or any failure with an input) counts.
fuzz_one() {
	local out rc
	out=$(mktemp)
	go test -run '^$' -fuzz "^${2}\$" -fuzztime "$fuzztime" "$1" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if ((rc != 0)) && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
		echo "fuzz $1 $2: the engine timed out while stopping, with no failing input; trying once more"
		go test -run '^$' -fuzz "^${2}\$" -fuzztime "$fuzztime" "$1"
		rc=$?
	fi
	rm -f "$out"
	return $rc
}

# run_fuzz runs every Fuzz target of the module for $fuzztime each.
run_fuzz() {
	local list line pkg name rc=0 n=0
	local -a names=()
	list=$(go test -list '^Fuzz' ./... 2>&1) || {
		printf '%s\n' "$list"
		echo "could not list fuzz targets"
		return 1
	}
	while IFS= read -r line; do
		if [[ $line == Fuzz* ]]; then
			names+=("$line")
		elif [[ $line =~ ^ok[[:space:]]+([^[:space:]]+) ]]; then
			pkg=${BASH_REMATCH[1]}
			for name in "${names[@]}"; do
				n=$((n + 1))
				echo "fuzz $pkg $name ($fuzztime)"
				fuzz_one "$pkg" "$name" || {
					echo "FAIL: $name in $pkg (a failing input is saved under the package's testdata/fuzz/$name/; commit it as a regression case after the fix)"
					rc=1
				}
			done
			names=()
		fi
	done <<<"$list"
	((n > 0)) || echo "no fuzz targets yet"
	return $rc
}

# run_cluster starts the test cluster, runs the cluster tests against it and
# stops it, whatever happened.
run_cluster() {
	if [[ ${PIKA_CLUSTER:-} == 0 && ${CI:-} != true ]]; then
		echo "skipped (PIKA_CLUSTER=0); run it with: bash scripts/cluster.sh start, then"
		echo "  PIKA_CLUSTER_URLS=\$(bash scripts/cluster.sh urls) go test -race -tags cluster ./internal/clustertest"
		return 0
	fi
	local rc=0
	bash scripts/cluster.sh start || {
		bash scripts/cluster.sh stop || true
		return 1
	}
	go vet -tags cluster ./internal/clustertest || rc=1
	PIKA_CLUSTER_URLS=$(bash scripts/cluster.sh urls) \
		go test -race -count=1 -timeout 10m -tags cluster -v ./internal/clustertest 2>&1 |
		grep -Ev '^=== (RUN|PAUSE|CONT)' || rc=1
	bash scripts/cluster.sh stop || rc=1
	return $rc
}

# other_modules lists the directories below the root that hold a go.mod, in
# a stable order.
other_modules() {
	find . -mindepth 2 -name go.mod -not -path '*/testdata/*' -not -path './.git/*' \
		-printf '%h\n' | sort
}

# run_module vets and tests the module in directory $1 under the race
# detector.
run_module() {
	(cd "$1" && go vet ./... && go test -race -count=1 -timeout 30m ./...)
}

section "go toolchain"
if ! command -v go >/dev/null 2>&1; then
	echo "go is not installed or not in PATH. Install Go 1.26 or newer from https://go.dev/dl/"
	echo "and make sure 'go version' works, then run this again."
	echo
	echo "test.sh: FAIL (no go toolchain)"
	exit 1
fi
go version
ok "go toolchain"

step "RabbitMQ (scripts/ensure-rabbitmq.sh)" bash scripts/ensure-rabbitmq.sh
step "gofmt" check_gofmt
step "go vet" go vet ./...
step "go generate drift" check_generate
step "go test -race" run_tests "$@"
step "fuzz (${fuzztime} each)" run_fuzz
step "cluster tests (scripts/cluster.sh, internal/clustertest)" run_cluster
while IFS= read -r mod; do
	step "module ${mod#./}" run_module "$mod"
done < <(other_modules)

elapsed=$((SECONDS - start))
echo
if ((${#failed[@]} > 0)); then
	printf 'test.sh: FAIL after %ds: %d step(s) failed:' "$elapsed" "${#failed[@]}"
	printf ' [%s]' "${failed[@]}"
	printf '; %d passed\n' "$passed"
	exit 1
fi
printf 'test.sh: PASS after %ds: all %d steps passed\n' "$elapsed" "$passed"
