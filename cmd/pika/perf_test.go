package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPerfConfigCheck(t *testing.T) {
	base := func() perfConfig {
		return perfConfig{producers: 1, consumers: 1, size: 100, prefetch: 1000}
	}
	c := base()
	if err := c.check(); err != nil || c.duration != 10*time.Second {
		t.Errorf("defaults: err %v, duration %v; want nil, 10s", err, c.duration)
	}
	c = base()
	c.count = 5
	if err := c.check(); err != nil || c.duration != 0 {
		t.Errorf("--count only: err %v, duration %v; want nil, 0 (no time limit)", err, c.duration)
	}
	bad := []struct {
		mod func(*perfConfig)
		err string
	}{
		{func(c *perfConfig) { c.producers = -1 }, "--producers"},
		{func(c *perfConfig) { c.consumers = 1001 }, "--consumers"},
		{func(c *perfConfig) { c.producers, c.consumers = 0, 0 }, "no producers and no consumers"},
		{func(c *perfConfig) { c.size = 7 }, "--size 7"},
		{func(c *perfConfig) { c.size = maxBody + 1 }, "--size"},
		{func(c *perfConfig) { c.rate = -1 }, "--rate"},
		{func(c *perfConfig) { c.confirm = -1 }, "--confirm"},
		{func(c *perfConfig) { c.prefetch = 70000 }, "--prefetch"},
		{func(c *perfConfig) { c.multiAck = -2 }, "--multi-ack-every"},
		{func(c *perfConfig) { c.multiAck, c.autoAck = 10, true }, "not --autoack"},
		{func(c *perfConfig) { c.multiAck, c.prefetch = 100, 10 }, "exceeds --prefetch 10"},
		{func(c *perfConfig) { c.duration = -time.Second }, "--duration"},
		{func(c *perfConfig) { c.count = -1 }, "--count"},
		{func(c *perfConfig) { c.consumeMode = "fast" }, "--consume-mode \"fast\""},
	}
	for _, b := range bad {
		c := base()
		b.mod(&c)
		if err := c.check(); err == nil || !strings.Contains(err.Error(), b.err) {
			t.Errorf("check(%+v) = %v, want an error containing %q", c, err, b.err)
		}
	}
}

func TestPerfSummaryJSON(t *testing.T) {
	var stdout bytes.Buffer
	r := &perfRun{e: &env{stdout: &stdout}, cfg: perfConfig{producers: 2, consumers: 3, size: 100, json: true}, queue: "q"}
	r.stats.sent.Store(1000)
	r.stats.confirmed.Store(990)
	r.stats.nacked.Store(4)
	r.stats.returned.Store(6)
	r.stats.received.Store(900)
	for i := range 100 {
		r.stats.lat.add(uint64(i+1) * 1e6) // 1..100 ms
	}
	if err := r.summary(2*time.Second, "count", true); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(stdout.String(), "\n"); n != 1 {
		t.Fatalf("summary is %d lines, want one JSON object on one line: %q", n, stdout.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("summary is not JSON: %v: %s", err, stdout.String())
	}
	want := map[string]any{
		"sent": 1000.0, "confirmed": 990.0, "nacked": 4.0, "returned": 6.0, "received": 900.0,
		"duration_s": 2.0, "send_rate": 500.0, "receive_rate": 450.0,
		"producers": 2.0, "consumers": 3.0, "size": 100.0, "queue": "q", "stopped": "count",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k, exact := range map[string]float64{"latency_p50_ms": 50, "latency_p95_ms": 95, "latency_p99_ms": 99, "latency_max_ms": 100} {
		v, ok := got[k].(float64)
		if !ok || v < exact*(1-1.0/subCount) || v > exact*(1+1.0/subCount) {
			t.Errorf("%s = %v, want about %v", k, got[k], exact)
		}
	}
	if got["latency_p99_ms"].(float64) > got["latency_max_ms"].(float64) {
		t.Errorf("p99 %v above max %v", got["latency_p99_ms"], got["latency_max_ms"])
	}
}

func TestPerfSummaryText(t *testing.T) {
	var stdout bytes.Buffer
	r := &perfRun{e: &env{stdout: &stdout}, cfg: perfConfig{producers: 1, consumers: 1, size: 8}, queue: "pika-perf-x"}
	r.stats.sent.Store(10)
	r.stats.received.Store(10)
	if err := r.summary(time.Second, "duration", false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`summary: 1.00 s (stopped: duration), 1 producer(s), 1 consumer(s), 8-byte messages, queue "pika-perf-x" (kept)`,
		"  sent      10 (10 msg/s)", "  received  10 (10 msg/s)", "  latency   p50 0.000 ms",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestPerfReportLine(t *testing.T) {
	r := &perfRun{}
	rep := newReporter(r)
	var out bytes.Buffer
	r.stats.sent.Store(2000)
	r.stats.received.Store(1000)
	for range 1000 {
		r.stats.lat.add(3e6)
	}
	rep.line(&out, 2*time.Second)
	r.stats.sent.Store(2500)
	rep.line(&out, 3*time.Second)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines: %q", len(lines), out.String())
	}
	re := regexp.MustCompile(`^time +2\.0s  sent 1000/s  confirmed 0/s  nacked 0/s  returned 0/s  received 500/s  latency ms p50 (2\.9|3\.0)\d+ p95 (2\.9|3\.0)\d+ p99 (2\.9|3\.0)\d+$`)
	if !re.MatchString(lines[0]) {
		t.Errorf("line 1 = %q", lines[0])
	}
	// The second line covers only its own second: no receives, no latency.
	if want := "time   3.0s  sent 500/s  confirmed 0/s  nacked 0/s  returned 0/s  received 0/s  latency ms p50 0.000 p95 0.000 p99 0.000"; lines[1] != want {
		t.Errorf("line 2 = %q, want %q", lines[1], want)
	}
}

func TestPerfSummaryNotes(t *testing.T) {
	tests := []struct {
		name string
		cfg  perfConfig
		s    perfSummary
		want []string
	}{
		{"all accounted for", perfConfig{producers: 1, consumers: 1, confirm: 10},
			perfSummary{Sent: 100, Confirmed: 100, Received: 100}, nil},
		{"in flight at the end", perfConfig{producers: 1, consumers: 1, confirm: 10},
			perfSummary{Sent: 100, Confirmed: 90, Received: 95}, []string{
				"10 of 100 sent were neither confirmed, nacked nor returned: in flight (unconfirmed) when perf stopped; their outcome is unknown",
				"5 of the 100 sent and not refused were not received: still in the queue, or in flight, when perf stopped"}},
		{"nacked and returned", perfConfig{producers: 1, consumers: 1, confirm: 10, mandatory: true},
			perfSummary{Sent: 100, Confirmed: 90, Nacked: 4, Returned: 6, Received: 90}, []string{
				"4 nacked: the broker refused them (e.g. a full queue with x-overflow reject-publish); they are not in the queue",
				"6 returned: unroutable (--mandatory and no queue for the routing key); they are not in the queue"}},
		{"no confirms", perfConfig{producers: 1, consumers: 1},
			perfSummary{Sent: 100, Received: 100}, []string{
				"confirmed is 0: publisher confirms are off (--confirm N turns them on), so nacks are not seen either"}},
		{"more received than sent", perfConfig{producers: 1, consumers: 1, confirm: 10},
			perfSummary{Sent: 10, Confirmed: 10, Received: 15}, []string{
				"5 more received than sent and not refused: the queue held messages before the run, or others publish to it"}},
		{"no consumers", perfConfig{producers: 1, confirm: 1},
			perfSummary{Sent: 10, Confirmed: 10}, []string{"received is 0: no consumers (--consumers 0)"}},
		{"consumers only", perfConfig{consumers: 1}, perfSummary{Received: 7}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.notes(&tt.cfg); !slices.Equal(got, tt.want) {
				t.Errorf("notes:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
	// The text summary prints them.
	var stdout bytes.Buffer
	r := &perfRun{e: &env{stdout: &stdout}, cfg: perfConfig{producers: 1, consumers: 1, confirm: 10}, queue: "q"}
	r.stats.sent.Store(100)
	r.stats.confirmed.Store(90)
	r.stats.received.Store(90)
	if err := r.summary(time.Second, "duration", true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "\n  note: 10 of 100 sent were neither confirmed") {
		t.Errorf("summary lacks the note:\n%s", stdout.String())
	}
}

// TestPerfClusterFlags: --recover, --quorum and --shuffle set their fields,
// and the help shows a cluster URL.
func TestPerfClusterFlags(t *testing.T) {
	e := &env{stdout: new(bytes.Buffer), stderr: new(bytes.Buffer)}
	fs := newFlagSet(e, "perf", perfHelp)
	var c perfConfig
	perfFlags(fs, &c)
	if _, err := fs.parse([]string{"--recover", "--quorum", "--shuffle", "--url", "amqp://h1:5681,h2:5682/"}); err != nil {
		t.Fatal(err)
	}
	if !c.recover || !c.quorum || !c.shuffle || e.url != "amqp://h1:5681,h2:5682/" {
		t.Errorf("after --recover --quorum --shuffle --url: %+v, url %q", c, e.url)
	}
	if !strings.Contains(perfHelp, "--recover") || !strings.Contains(perfHelp, "host1:5672,host2:5672") {
		t.Errorf("perf help does not document --recover and cluster URLs")
	}
}

// TestPerfRecoveryLines: recovery events are lines of the live output,
// on standard error with --json (standard output keeps the JSON summary).
func TestPerfRecoveryLines(t *testing.T) {
	for _, js := range []bool{false, true} {
		var stdout, stderr bytes.Buffer
		r := &perfRun{e: &env{stdout: &stdout, stderr: &stderr}, cfg: perfConfig{json: js}}
		r.printLine("time   1.0s  recovery producer 1: recovered to 127.0.0.1:5682 after 131ms (attempt 1)\n")
		got, other := stdout.String(), stderr.String()
		if js {
			got, other = other, got
		}
		if !strings.Contains(got, "recovery producer 1: recovered to") || other != "" {
			t.Errorf("json %v: line on the wrong stream: stdout %q, stderr %q", js, stdout.String(), stderr.String())
		}
	}
}
