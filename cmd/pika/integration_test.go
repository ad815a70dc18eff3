package main

import (
	"bufio"
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// These tests build the pika command once and run it against the broker.

// raceEnabled is set by race_test.go: the command is then built with -race
// too.
var raceEnabled bool

var (
	binDir    string // made by TestMain, removed after the tests
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pika-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pikaBinary builds the command (once per test binary) and returns its
// path.
func pikaBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("go not in PATH: %w", err)
			return
		}
		binPath = filepath.Join(binDir, "pika")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// result is a finished pika run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// cli runs pika commands against one broker URL.
type cli struct {
	t   *testing.T
	url string
	env []string // extra environment
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	url := testenv.Broker(t)
	pikaBinary(t)
	return &cli{t: t, url: url}
}

func (c *cli) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), "AMQP_URL="+c.url)
	if raceEnabled {
		// A race-enabled program sleeps a second at exit by default.
		cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	cmd.Env = append(cmd.Env, c.env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs pika with stdin and args, for at most a minute.
func (c *cli) run(stdin string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.command(ctx, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("pika %q: %v", args, err)
	}
	if ctx.Err() != nil {
		c.t.Fatalf("pika %q did not finish within a minute: %v", args, r)
	}
	return r
}

// ok runs pika and fails the test unless it exits 0; it returns stdout.
func (c *cli) ok(stdin string, args ...string) string {
	c.t.Helper()
	r := c.run(stdin, args...)
	if r.code != 0 {
		c.t.Fatalf("pika %q: %v", args, r)
	}
	return r.stdout
}

// queue declares a queue for the test and deletes it at the end.
func (c *cli) queue(extra ...string) string {
	c.t.Helper()
	name := testenv.Name(c.t, "pika-cli")
	out := c.ok("", append([]string{"declare", "queue", name}, extra...)...)
	if want := name + "\tmessages=0\tconsumers=0\n"; out != want {
		c.t.Fatalf("declare queue printed %q, want %q", out, want)
	}
	c.t.Cleanup(func() { c.run("", "delete", "queue", name) })
	return name
}

// counts returns a queue's message and consumer counts (passive declare).
func (c *cli) counts(queue string) (messages, consumers int) {
	c.t.Helper()
	out := c.ok("", "declare", "queue", queue, "--passive", "--json")
	var v struct {
		Queue     string `json:"queue"`
		Messages  int    `json:"messages"`
		Consumers int    `json:"consumers"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Queue != queue {
		c.t.Fatalf("declare --passive --json printed %q (%v)", out, err)
	}
	return v.Messages, v.Consumers
}

func TestCLIPublishGetConsume(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := c.queue()
	user := "guest"
	if u, err := url.Parse(c.url); err == nil && u.User.Username() != "" {
		user = u.User.Username()
	}

	c.ok("", "publish", "", q, "--body", "héllo <1>",
		"--header", "n:int=5", "--header", "s=5", "--header", "f:float=2.5", "--header", "b:bool=true",
		"--content-type", "text/plain", "--content-encoding", "utf-8", "--delivery-mode", "persistent",
		"--priority", "3", "--correlation-id", "corr", "--reply-to", "replies", "--expiration", "60000",
		"--message-id", "m-1", "--timestamp", "1700000000", "--type", "greeting", "--user-id", user,
		"--app-id", "pika-test")
	if m, _ := c.counts(q); m != 1 {
		t.Fatalf("queue holds %d messages after publish, want 1", m)
	}
	out := c.ok("", "get", "--json", q)
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("get --json printed %q: %v", out, err)
	}
	wantJSON := fmt.Sprintf(`{"exchange":"","routing_key":%q,"delivery_tag":1,"redelivered":false,"message_count":0,`+
		`"properties":{"content_type":"text/plain","content_encoding":"utf-8","delivery_mode":2,"priority":3,`+
		`"correlation_id":"corr","reply_to":"replies","expiration":"60000","message_id":"m-1","timestamp":1700000000,`+
		`"type":"greeting","user_id":%q,"app_id":"pika-test"},"headers":{"b":true,"f":2.5,"n":5,"s":"5"},"body":"héllo <1>"}`+"\n", q, user)
	if out != wantJSON {
		t.Errorf("get --json =\n%s\nwant\n%s", out, wantJSON)
	}

	// One message per line, with confirms; consume prints them in order.
	c.ok("a\nb\n\nc\n", "publish", "-l", "--confirm", "", q)
	if out := c.ok("", "consume", "--count", "4", q); out != "a\nb\n\nc\n" {
		t.Errorf("consume --count 4 printed %q", out)
	}
	if m, cons := c.counts(q); m != 0 || cons != 0 {
		t.Errorf("after consume: %d messages, %d consumers; want 0, 0", m, cons)
	}

	// Empty queue: exit status 2.
	r := c.run("", "get", q)
	if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "queue is empty") {
		t.Errorf("get on an empty queue: %v; want exit 2 and \"queue is empty\"", r)
	}

	// A binary body from standard input comes back as base64, and --count
	// leaves the other messages in the queue.
	bin := "\xff\x00\xfe binary\n"
	c.ok(bin, "publish", "", q)
	c.ok("", "publish", "", q, "--body", "second")
	out = c.ok("", "consume", "--json", "--count", "1", q)
	var d deliveryJSON
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("consume --json printed %q: %v", out, err)
	}
	if b, _ := base64.StdEncoding.DecodeString(d.Body); d.BodyEncoding != "base64" || string(b) != bin || d.RoutingKey != q || !strings.HasPrefix(d.ConsumerTag, "pika-ctag-") {
		t.Errorf("consume --json = %+v; want the binary body in base64", d)
	}
	// get --requeue peeks.
	if out := c.ok("", "get", "--requeue", q); out != "second\n" {
		t.Errorf("get --requeue printed %q", out)
	}
	if out := c.ok("", "get", "--no-ack", "--json", q); !strings.Contains(out, `"redelivered":true`) || !strings.Contains(out, `"body":"second"`) {
		t.Errorf("get after get --requeue printed %q; want the message again, redelivered", out)
	}

	// --no-ack with --count loses nothing beyond the count.
	c.ok("1\n2\n3\n4\n5\n", "publish", "-l", "", q)
	if out := c.ok("", "consume", "--no-ack", "--count", "2", q); out != "1\n2\n" {
		t.Errorf("consume --no-ack --count 2 printed %q", out)
	}
	if m, _ := c.counts(q); m != 3 {
		t.Errorf("after consume --no-ack --count 2 of 5: %d messages left, want 3", m)
	}
	if out := c.ok("", "consume", "--no-ack", "--count", "3", "--prefetch", "1", q); out != "3\n4\n5\n" {
		t.Errorf("consume --no-ack --count 3 printed %q", out)
	}

	if out := c.ok("", "publish", "", q, "--body", "x"); out != "" {
		t.Errorf("publish printed %q", out)
	}
	if out := c.ok("", "purge", q); out != "messages=1\n" {
		t.Errorf("purge printed %q", out)
	}
	c.ok("", "publish", "", q, "--body", "y")
	if out := c.ok("", "delete", "queue", q); out != "messages=1\n" {
		t.Errorf("delete queue printed %q, want messages=1", out)
	}
}

// TestCLIRawRoundTrip publishes random 2 MiB bodies and takes them back
// with get --raw, consume --count 1 --raw and consume --output-dir: the
// bytes are the same (sha256).
func TestCLIRawRoundTrip(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := c.queue()
	bodies := make([][]byte, 4)
	for i := range bodies {
		bodies[i] = make([]byte, 2<<20)
		cryptorand.Read(bodies[i])
		c.ok(string(bodies[i]), "publish", "", q)
	}
	same := func(what string, got, want []byte) {
		t.Helper()
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Errorf("%s: %d bytes, sha256 %x; want %d bytes, sha256 %x", what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
		}
	}
	same("get --raw", []byte(c.ok("", "get", "--raw", q)), bodies[0])
	same("consume --count 1 --raw", []byte(c.ok("", "consume", "--count", "1", "--raw", q)), bodies[1])
	dir := t.TempDir()
	if out := c.ok("", "consume", "--count", "2", "--output-dir", dir, q); out != "" {
		t.Errorf("consume --output-dir printed %q", out)
	}
	for i, name := range []string{"000001", "000002"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		same("consume --output-dir, file "+name, got, bodies[2+i])
	}
	if m, _ := c.counts(q); m != 0 {
		t.Errorf("%d messages left in the queue, want 0", m)
	}

	// An existing file is not overwritten: the message stays in the queue.
	c.ok("x", "publish", "", q)
	r := c.run("", "consume", "--count", "1", "--output-dir", dir, q)
	if r.code != 1 || !strings.Contains(r.stderr, "000001") {
		t.Errorf("consume --output-dir onto an existing file: %v; want exit 1 naming the file", r)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "000001")); len(got) != 2<<20 {
		t.Errorf("the existing file was changed: %d bytes", len(got))
	}
	if m, _ := c.counts(q); m != 1 {
		t.Errorf("%d messages in the queue after the failed write, want 1 (requeued)", m)
	}
	for _, args := range [][]string{
		{"consume", "--raw", q},
		{"consume", "--raw", "--count", "2", q},
		{"consume", "--raw", "--count", "1", "--json", q},
		{"consume", "--output-dir", filepath.Join(dir, "missing"), q},
		{"get", "--raw", "--json", q},
	} {
		if r := c.run("", args...); r.code != 1 || !strings.Contains(r.stderr, "--help") {
			t.Errorf("pika %q: %v; want a usage error", args, r)
		}
	}
}

func TestCLIExec(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := c.queue()
	file := filepath.Join(t.TempDir(), "out")
	c.env = []string{"OUT=" + file}
	c.ok("1\n2\n3\n", "publish", "-l", "--confirm", "", q)
	r := c.run("", "consume", "--count", "3", "--prefetch", "1", "--exec",
		`body=$(cat); echo "$body $PIKA_ROUTING_KEY $PIKA_REDELIVERED" >> "$OUT"; [ "$body" != 2 ]`, q)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "exit status 1; message rejected (dropped or dead-lettered)") {
		t.Fatalf("consume --exec: %v", r)
	}
	b, err := os.ReadFile(file)
	if want := fmt.Sprintf("1 %[1]s false\n2 %[1]s false\n3 %[1]s false\n", q); err != nil || string(b) != want {
		t.Errorf("--exec wrote %q (%v), want %q", b, err, want)
	}
	if m, _ := c.counts(q); m != 0 {
		t.Errorf("the rejected message is still queued (%d messages); want it dropped", m)
	}

	// --requeue-on-failure puts it back.
	c.ok("", "publish", "", q, "--body", "again")
	r = c.run("", "consume", "--count", "1", "--exec", "cat >/dev/null; exit 3", "--requeue-on-failure", q)
	if r.code != 0 || !strings.Contains(r.stderr, "exit status 3; message rejected and requeued") {
		t.Fatalf("consume --exec --requeue-on-failure: %v", r)
	}
	if out := c.ok("", "get", "--json", q); !strings.Contains(out, `"redelivered":true`) || !strings.Contains(out, `"body":"again"`) {
		t.Errorf("after a requeue, get printed %q", out)
	}
}

func TestCLIUnroutableAndNacked(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	key := testenv.Name(t, "nowhere")

	r := c.run("", "publish", "--confirm", "--mandatory", "amq.direct", key, "--body", "x")
	if r.code != 3 || !strings.Contains(r.stderr, fmt.Sprintf(`message 1 returned by the broker: 312 NO_ROUTE (exchange "amq.direct", routing key %q)`, key)) {
		t.Errorf("publish --confirm --mandatory to an unroutable key: %v; want exit 3 naming the return", r)
	}
	r = c.run("", "publish", "--mandatory", "amq.direct", key, "--body", "x")
	if r.code != 3 || !strings.Contains(r.stderr, "returned by the broker: 312 NO_ROUTE") {
		t.Errorf("publish --mandatory (no --confirm) to an unroutable key: %v; want exit 3", r)
	}
	if r := c.run("", "publish", "--confirm", "amq.direct", key, "--body", "x"); r.code != 0 {
		t.Errorf("publish --confirm without --mandatory to an unroutable key: %v; want exit 0 (dropped, acked)", r)
	}

	// A full queue that rejects publishes nacks them.
	q := c.queue("--arg", "x-max-length=1", "--arg", "x-overflow=reject-publish")
	r = c.run("1\n2\n3\n", "publish", "-l", "--confirm", "", q)
	if r.code != 3 || !strings.Contains(r.stderr, "message 2 nacked by the broker") || !strings.Contains(r.stderr, "message 3 nacked") ||
		!strings.Contains(r.stderr, "2 of 3 messages not accepted (0 returned, 2 nacked)") {
		t.Errorf("publish --confirm to a full reject-publish queue: %v; want exit 3 naming messages 2 and 3", r)
	}

	// A missing exchange is a 404, with or without --confirm.
	for _, extra := range [][]string{nil, {"--confirm"}} {
		r = c.run("", append([]string{"publish", key, "k", "--body", "x"}, extra...)...)
		if r.code != exitRefused || !strings.Contains(r.stderr, fmt.Sprintf(`pika: publish to exchange %q with routing key "k": 404 NOT_FOUND - no exchange`, key)) {
			t.Errorf("publish %q to a missing exchange: %v; want exit 5 and the 404", extra, r)
		}
	}
}

func TestCLIDeclareErrors(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := c.queue("--durable")
	r := c.run("", "declare", "queue", q)
	want := fmt.Sprintf(`pika: declare queue %q: 406 PRECONDITION_FAILED - inequivalent arg 'durable'`, q)
	if r.code != exitRefused || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("redeclare with other settings: %v; want exit 5 and %q", r, want)
	}
	missing := testenv.Name(t, "missing")
	r = c.run("", "declare", "queue", missing, "--passive")
	if r.code != exitRefused || !strings.Contains(r.stderr, fmt.Sprintf("pika: declare queue %q: 404 NOT_FOUND", missing)) {
		t.Errorf("passive declare of a missing queue: %v", r)
	}
	r = c.run("", "consume", missing)
	if r.code != exitRefused || !strings.Contains(r.stderr, fmt.Sprintf("pika: consume from queue %q: 404 NOT_FOUND", missing)) {
		t.Errorf("consume from a missing queue: %v", r)
	}
	r = c.run("", "declare", "queue", q, "--passive")
	if r.code != 0 {
		t.Errorf("passive declare of an existing queue: %v", r)
	}
	// The broker closes the connection (503) for an unknown exchange type:
	// a refusal after connecting, not a failure to connect.
	ex := testenv.Name(t, "ex")
	r = c.run("", "declare", "exchange", ex, "bogus-type")
	if r.code != exitRefused || !strings.Contains(r.stderr, "503 COMMAND_INVALID") || strings.Contains(r.stderr, "connect to") {
		t.Errorf("declare exchange with a bogus type: %v; want exit 5 and the 503", r)
	}
	c.ok("", "publish", "", q, "--body", "x")
	r = c.run("", "delete", "queue", q, "--if-empty")
	if r.code != exitRefused || !strings.Contains(r.stderr, "406 PRECONDITION_FAILED") {
		t.Errorf("delete --if-empty of a queue with a message: %v", r)
	}

	// A server-named queue: the explicit empty name is accepted.
	out := c.ok("", "declare", "queue", "", "--auto-delete")
	name, _, _ := strings.Cut(out, "\t")
	if !strings.HasPrefix(name, "amq.gen-") || !strings.HasSuffix(out, "\tmessages=0\tconsumers=0\n") {
		t.Fatalf("declare queue \"\" printed %q", out)
	}
	c.ok("", "delete", "queue", name)
	r = c.run("", "declare", "queue", "", "--passive")
	if r.code == 0 {
		t.Errorf("passive declare of \"\": %v", r)
	}
}

func TestCLIExchangesAndBindings(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := c.queue()
	ex := testenv.Name(t, "pika-cli-x")
	fan := testenv.Name(t, "pika-cli-fan")
	c.ok("", "declare", "exchange", ex, "direct")
	t.Cleanup(func() { c.run("", "delete", "exchange", ex) })
	c.ok("", "declare", "exchange", fan, "fanout", "--arg", "alternate-exchange=none")
	t.Cleanup(func() { c.run("", "delete", "exchange", fan) })
	if r := c.run("", "declare", "exchange", ex, "fanout"); r.code != exitRefused || !strings.Contains(r.stderr, "406 PRECONDITION_FAILED") {
		t.Errorf("redeclare exchange as another type: %v", r)
	}
	c.ok("", "declare", "exchange", ex, "--passive")

	c.ok("", "bind", q, ex, "k")
	c.ok("", "publish", "--confirm", "--mandatory", ex, "k", "--body", "direct")
	if out := c.ok("", "get", q); out != "direct\n" {
		t.Errorf("after bind, get printed %q", out)
	}
	// Exchange to exchange: fan -> ex -> q.
	c.ok("", "bind", "--exchange", ex, fan, "")
	c.ok("", "publish", "--confirm", "--mandatory", fan, "k", "--body", "via fanout")
	if out := c.ok("", "get", q); out != "via fanout\n" {
		t.Errorf("after exchange bind, get printed %q", out)
	}
	c.ok("", "unbind", "--exchange", ex, fan, "")
	c.ok("", "unbind", q, ex, "k")
	if r := c.run("", "publish", "--confirm", "--mandatory", ex, "k", "--body", "x"); r.code != 3 {
		t.Errorf("after unbind, a mandatory publish: %v; want exit 3 (returned)", r)
	}
	if r := c.run("", "bind", q, testenv.Name(t, "missing"), "k"); r.code != exitRefused || !strings.Contains(r.stderr, "404 NOT_FOUND") {
		t.Errorf("bind to a missing exchange: %v", r)
	}
	c.ok("", "delete", "exchange", ex)
	c.ok("", "delete", "exchange", fan, "--if-unused")
	if r := c.run("", "declare", "exchange", ex, "--passive"); r.code != exitRefused || !strings.Contains(r.stderr, "404 NOT_FOUND") {
		t.Errorf("passive declare of a deleted exchange: %v", r)
	}
}

// lineReader hands out the lines a process writes.
func lineReader(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines
}

func nextLine(t *testing.T, lines <-chan string, what string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("%s: the output ended", what)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no line within 30 s", what)
	}
	return ""
}

func TestCLIConsumeInterrupt(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := c.queue()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.command(ctx, "consume", q)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	lines := lineReader(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the consumer to register.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, n := c.counts(q); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer did not register within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.ok("", "publish", "", q, "--body", "before interrupt")
	if l := nextLine(t, lines, "consume"); l != "before interrupt" {
		t.Errorf("consume printed %q", l)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if err != nil {
		t.Fatalf("consume after SIGINT: %v; stderr %q; want exit 0", err, stderr.String())
	}
	if m, n := c.counts(q); m != 0 || n != 0 {
		t.Errorf("after SIGINT: %d messages, %d consumers; want 0 and 0 (acked, cancelled)", m, n)
	}
}

// perfKeys are the keys the perf --json summary must have.
var perfKeys = []string{"sent", "confirmed", "nacked", "returned", "received", "duration_s", "send_rate",
	"receive_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}

// TestCLIPerfConsumeModes: every --consume-mode receives every message,
// acknowledging with multiple.
func TestCLIPerfConsumeModes(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	for _, mode := range []string{"handler", "inline", "inline --blocking-read", "next --blocking-read --read-linger 2ms"} {
		args := append([]string{"perf", "--count", "3000", "--multi-ack-every", "100", "--consume-mode"}, strings.Fields(mode)...)
		r := c.run("", append(args, "--json")...)
		if r.code != 0 {
			t.Fatalf("perf --consume-mode %s: %v", mode, r)
		}
		var s map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
			t.Fatalf("perf --json printed %q (%v)", r.stdout, err)
		}
		if s["sent"] != 3000.0 || s["received"] != 3000.0 || s["stopped"] != "count" {
			t.Errorf("--consume-mode %s: summary %s: want sent == received == 3000, stopped by count", mode, r.stdout)
		}
	}
}

func TestCLIPerfCount(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	r := c.run("", "perf", "--count", "2000", "--json")
	if r.code != 0 {
		t.Fatalf("perf --count 2000 --json: %v", r)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("perf --json printed %q, not one JSON object (%v)", r.stdout, err)
	}
	for _, k := range perfKeys {
		if _, ok := s[k].(float64); !ok {
			t.Errorf("summary key %q is %v, want a number", k, s[k])
		}
	}
	if s["sent"] != 2000.0 || s["received"] != 2000.0 || s["stopped"] != "count" {
		t.Errorf("summary %s: want sent == received == 2000, stopped by count", r.stdout)
	}
	q, _ := s["queue"].(string)
	if !strings.HasPrefix(q, "pika-perf-") {
		t.Fatalf("summary queue %q", q)
	}
	if r := c.run("", "declare", "queue", q, "--passive"); r.code != exitRefused || !strings.Contains(r.stderr, "404 NOT_FOUND") {
		t.Errorf("perf left its queue %q behind: %v", q, r)
	}

	// With confirms, several producers and consumers and multiple acks.
	r = c.run("", "perf", "--count", "3000", "--json", "--producers", "2", "--consumers", "2",
		"--confirm", "50", "--multi-ack-every", "10", "--prefetch", "100", "--size", "8", "--persistent")
	if r.code != 0 {
		t.Fatalf("perf with confirms: %v", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatal(err)
	}
	if s["sent"] != 3000.0 || s["confirmed"] != 3000.0 || s["received"] != 3000.0 || s["nacked"] != 0.0 {
		t.Errorf("perf with confirms: %s; want 3000 sent, confirmed and received", r.stdout)
	}

	// A queue that exists is used and kept.
	mine := c.queue()
	r = c.run("", "perf", "--count", "100", "--queue", mine, "--autoack", "--rate", "2000")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("queue %q (kept)", mine)) || !regexp.MustCompile(`received  100 `).MatchString(r.stdout) {
		t.Errorf("perf --queue (existing): %v", r)
	}
	c.counts(mine) // still there
}

func TestCLIPerfRPC(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	r := c.run("", "perf", "rpc", "--count", "500", "--callers", "8", "--servers", "2", "--json")
	if r.code != 0 {
		t.Fatalf("perf rpc --count 500: %v", r)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("perf rpc --json printed %q, not one JSON object (%v)", r.stdout, err)
	}
	for _, k := range []string{"calls", "errors", "timeouts", "late", "duration_s", "call_rate", "latency_p50_ms",
		"latency_p95_ms", "latency_p99_ms", "latency_max_ms", "callers", "servers", "size"} {
		if _, ok := s[k].(float64); !ok {
			t.Errorf("summary key %q is %v, want a number", k, s[k])
		}
	}
	if s["calls"] != 500.0 || s["errors"] != 0.0 || s["stopped"] != "count" || s["callers"] != 8.0 {
		t.Errorf("summary %s: want 500 calls, no errors, stopped by count", r.stdout)
	}
	q, _ := s["queue"].(string)
	if r := c.run("", "declare", "queue", q, "--passive"); r.code != exitRefused || !strings.Contains(r.stderr, "404 NOT_FOUND") {
		t.Errorf("perf rpc left its queue %q behind: %v", q, r)
	}
}

func TestCLIPerfInterrupt(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := testenv.Name(t, "pika-cli-perf")
	t.Cleanup(func() { c.run("", "delete", "queue", q) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.command(ctx, "perf", "--queue", q, "--duration", "1m", "--rate", "200")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	lines := lineReader(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := nextLine(t, lines, "perf")
	if !regexp.MustCompile(`^time +1\.0s  sent \d+/s  confirmed 0/s  nacked 0/s  returned 0/s  received \d+/s  latency ms p50 [\d.]+ p95 [\d.]+ p99 [\d.]+$`).MatchString(l) {
		t.Errorf("perf per-second line %q", l)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("perf after SIGINT: %v; stderr %q; want exit 0", err, stderr.String())
	}
	out := strings.Join(rest, "\n")
	if !strings.Contains(out, "(stopped: interrupted)") || !strings.Contains(out, fmt.Sprintf("queue %q (deleted)", q)) {
		t.Errorf("perf summary after SIGINT:\n%s", out)
	}
	if r := c.run("", "declare", "queue", q, "--passive"); r.code != exitRefused || !strings.Contains(r.stderr, "404 NOT_FOUND") {
		t.Errorf("perf did not delete the queue it declared: %v", r)
	}
}

func TestCLIConnectFailures(t *testing.T) {
	t.Parallel()
	c := newCLI(t)

	// Nothing listens: exit 4, the URL named without its password.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dead := &cli{t: t, url: "amqp://someone:s3cret@127.0.0.1:" + strconv.Itoa(port) + "/"}
	r := dead.run("", "get", "q")
	if r.code != 4 || !strings.Contains(r.stderr, fmt.Sprintf("pika: connect to amqp://someone:xxxxx@127.0.0.1:%d/: ", port)) || strings.Contains(r.stderr, "s3cret") {
		t.Errorf("connection refused: %v; want exit 4, the redacted URL", r)
	}

	// An HTTP server: exit 4, "does not speak AMQP", with its answer.
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	go func() {
		for {
			conn, err := web.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.Read(make([]byte, 8))
				conn.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			}()
		}
	}()
	http := &cli{t: t, url: "amqp://guest:guest@" + web.Addr().String() + "/"}
	r = http.run("", "get", "q")
	want := fmt.Sprintf(`the server at %s does not speak AMQP 0-9-1 (it answered "HTTP/1.1 400 Bad Request\x0d\x0a\x0d\x0a")`, web.Addr())
	if r.code != exitConnection || !strings.Contains(r.stderr, want) {
		t.Errorf("an HTTP server: %v; want exit 4 and %q", r, want)
	}

	// A wrong password: exit 4, authentication named, password not shown.
	u, err := url.Parse(c.url)
	if err != nil {
		t.Fatal(err)
	}
	user := u.User.Username()
	if user == "" {
		user = "guest"
	}
	u.User = url.UserPassword(user, "wrong-s3cret")
	bad := &cli{t: t, url: u.String()}
	for _, args := range [][]string{{"get", "q"}, {"perf", "--count", "10"}, {"publish", "", "q", "--body", "x"}} {
		r = bad.run("", args...)
		if r.code != 4 || !strings.Contains(r.stderr, "authentication failed") || strings.Contains(r.stdout+r.stderr, "s3cret") {
			t.Errorf("pika %q with a wrong password: %v; want exit 4 naming the authentication failure, without the password", args, r)
		}
	}
}

func TestCLIConsumeClosedStdout(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := c.queue()
	c.ok("", "publish", "", q, "--body", "first")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.command(ctx, "consume", q)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if line != "first\n" {
		t.Fatalf("consume printed %q (%v)", line, err)
	}
	// The reader goes away, as "| head -1" does; the next message cannot
	// be printed: consume stops cleanly and the message stays queued.
	pr.Close()
	c.ok("", "publish", "", q, "--body", "second")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("consume after its stdout closed: %v; stderr %q; want exit 0", err, stderr.String())
	}
	if m, n := c.counts(q); m != 1 || n != 0 {
		t.Errorf("after consume stopped: %d messages, %d consumers; want 1 (requeued) and 0", m, n)
	}
}
