package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
)

// TestMain lets the test binary serve as the sink child process too.
func TestMain(m *testing.M) {
	if os.Getenv(sinkEnv) == "1" {
		if err := runSinkChild(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func smokeOptions(workloads ...string) options {
	return options{
		URL: brokerURL(), N: 2000, Rounds: 1, BodySize: 100, Window: 1000, Prefetch: 1000, AckEvery: 100,
		PollInterval: 2 * time.Millisecond, RunTimeout: 30 * time.Second, Workloads: workloads,
	}
}

// checkReport checks that every workload has sane figures for both clients
// and that the report encodes as JSON and as an SVG chart.
func checkReport(t *testing.T, rep *report, workloads ...string) {
	t.Helper()
	for _, w := range workloads {
		wr := rep.Workloads[w]
		if wr == nil {
			t.Fatalf("no figures for workload %s", w)
		}
		for _, name := range []string{cPika, cAMQP091} {
			r := wr.Clients[name]
			if r == nil {
				t.Fatalf("%s: no figures for %s", w, name)
			}
			if len(r.Rounds) != rep.Config.Rounds {
				t.Errorf("%s %s: %d rounds recorded, want %d", w, name, len(r.Rounds), rep.Config.Rounds)
			}
			if !(r.MsgsPerS > 0) || !(r.WallS > 0) || r.CPUS < 0 || r.AllocsPerMsg < 0 || r.BytesPerMsg < 0 {
				t.Errorf("%s %s: implausible figures %+v", w, name, r.runResult)
			}
			// Every message needs bytes on the wire: publishers must have
			// written, and consumers acked (every 100 deliveries).
			if !(r.WritesPerMsg > 0) {
				t.Errorf("%s %s: %v write calls per message, want some", w, name, r.WritesPerMsg)
			}
		}
		if wr.Ratios["msgs_per_s"] <= 0 {
			t.Errorf("%s: ratio msgs_per_s = %v", w, wr.Ratios["msgs_per_s"])
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if _, ok := back["workloads"].(map[string]any)[workloads[0]].(map[string]any)["clients"].(map[string]any)[cPika].(map[string]any)["msgs_per_s"]; !ok {
		t.Errorf("JSON lacks workloads.%s.clients.pika.msgs_per_s: %s", workloads[0], b)
	}
	var svg bytes.Buffer
	if err := writeChart(&svg, rep); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&svg)
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
	}
	var table bytes.Buffer
	printTable(&table, rep)
	for _, w := range workloads {
		if !strings.Contains(table.String(), w) {
			t.Errorf("table lacks workload %s:\n%s", w, table.String())
		}
	}
}

// TestSinkSmoke runs the harness against the sink only: no broker needed.
func TestSinkSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := run(ctx, smokeOptions(wPublishSink))
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, wPublishSink)
	// Both clients must have published exactly through the sink: a run
	// only completes once the sink counted every basic.publish.
	for _, tg := range rep.Targets {
		if tg.Workload != wPublishSink {
			t.Errorf("target for %s evaluated without its figures", tg.Workload)
		}
	}
}

// TestSinkHandshake checks the sink against pika directly: handshake,
// channel, queue.declare, publishes counted, and a clean close.
func TestSinkHandshake(t *testing.T) {
	p, err := startSink()
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	if err := p.expect(10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@"+p.addr+"/")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, "sink-q", pika.QueueDeclareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if q.Name != "sink-q" {
		t.Errorf("queue.declare-ok named %q, want sink-q", q.Name)
	}
	for range 10 {
		if err := ch.Publish(ctx, "", "sink-q", pika.Message{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.waitReached(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// brokerOrSkip skips when the broker does not answer, unless CI=true,
// where that is a failure.
func brokerOrSkip(t *testing.T) string {
	t.Helper()
	url := brokerURL()
	cfg, err := pika.ParseURL(url)
	if err != nil {
		t.Fatalf("PIKA_TEST_URL: %v", err)
	}
	nc, err := net.DialTimeout("tcp", cfg.Addr, 2*time.Second)
	if err != nil {
		msg := fmt.Sprintf("RabbitMQ at %s does not answer (%v); start it with scripts/ensure-rabbitmq.sh or set PIKA_TEST_URL", pika.RedactURL(url), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("skipping the broker smoke test: " + msg)
	}
	nc.Close()
	return url
}

// TestBrokerSmoke runs the broker workloads with small N and checks that
// every queue the bench declared is gone afterwards.
func TestBrokerSmoke(t *testing.T) {
	url := brokerOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := smokeOptions(wPublish, wPublishConfirm, wConsume)
	var declared []string
	opts.declared = func(q string) { declared = append(declared, q) }
	rep, err := run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, wPublish, wPublishConfirm, wConsume)
	if want := 3 * len(allClients); len(declared) != want {
		t.Errorf("%d queues declared, want %d (3 workloads x %d clients): %q", len(declared), want, len(allClients), declared)
	}
	checkGone(t, url, declared)
}

// failingClient fails every workload after the queue was declared.
type failingClient struct{}

var errInjected = errors.New("injected failure")

func (failingClient) name() string                               { return cPika }
func (failingClient) publish(context.Context, *env) error        { return errInjected }
func (failingClient) publishConfirm(context.Context, *env) error { return errInjected }
func (failingClient) consume(context.Context, *env) error        { return errInjected }

// TestCleanupOnError checks that a run that fails still deletes its queue.
func TestCleanupOnError(t *testing.T) {
	url := brokerOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := smokeOptions(wPublish)
	opts.clients = []client{failingClient{}}
	var declared []string
	opts.declared = func(q string) { declared = append(declared, q) }
	_, err := run(ctx, opts)
	if !errors.Is(err, errInjected) {
		t.Fatalf("run: %v, want the injected failure", err)
	}
	if len(declared) != 1 {
		t.Fatalf("%d queues declared, want 1", len(declared))
	}
	checkGone(t, url, declared)
}

// checkGone checks that none of the queues exists.
func checkGone(t *testing.T, url string, queues []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pika.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range queues {
		ch, err := conn.Channel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ch.QueueDeclarePassive(ctx, q)
		if !errors.Is(err, pika.ErrNotFound) {
			t.Errorf("queue %s after the run: passive declare gave %v, want ErrNotFound (the bench left it behind)", q, err)
			ch.QueueDelete(ctx, q, pika.QueueDeleteOptions{})
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestNiceCeil(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0, 1}, {0.9, 1}, {1, 2}, {1.7, 2}, {2.2, 2.5}, {3, 5}, {4.5, 5}, {4.7, 10}, {9.5, 20}, {123000, 200000},
	} {
		if got := niceCeil(tc.in); got != tc.want {
			t.Errorf("niceCeil(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestIdleOpen opens a few idle connections with every client of the idle
// mode against the sink (heartbeats on), in this process, and closes them.
func TestIdleOpen(t *testing.T) {
	sink, err := startSinkEnv(sinkHeartbeatEnv + "=1")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.stop()
	url := "amqp://guest:guest@" + sink.addr + "/"
	for _, c := range append([]string{"loop-fallback", "loop-norecovery"}, idleClients...) {
		t.Run(c, func(t *testing.T) {
			closeAll, err := openIdle(c, url, 20)
			if err != nil {
				t.Fatal(err)
			}
			// Past two heartbeat intervals: the connections must live on
			// the sink's heartbeats and their own (the loop's closeAll
			// reports a connection that did not).
			time.Sleep(2500 * time.Millisecond)
			if err := closeAll(); err != nil {
				t.Errorf("a connection was lost while idle: %v", err)
			}
		})
	}
	if _, err := openIdle("nope", url, 1); err == nil {
		t.Error("an unknown client: no error")
	}
}

// TestConsumeModesSmoke: pika's handler and inline consume styles complete
// the consume workload.
func TestConsumeModesSmoke(t *testing.T) {
	brokerOrSkip(t)
	defer func(m string) { pikaConsumeMode = m }(pikaConsumeMode)
	for _, mode := range []string{"handler", "inline"} {
		pikaConsumeMode = mode
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		opts := smokeOptions(wConsume)
		opts.Clients = []string{cPika}
		rep, err := run(ctx, opts)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if p := rep.Workloads[wConsume].Clients[cPika]; p == nil || p.MsgsPerS <= 0 {
			t.Fatalf("%s: no consume figures", mode)
		}
	}
}
