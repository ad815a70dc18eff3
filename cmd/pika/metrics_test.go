package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/obsmetrics"
	"github.com/pika-go/pika/internal/testenv"
)

// TestCLIPerfMetrics: perf --metrics serves, while it runs, the metrics of
// the prompika plugin (same names), with the run's counts.
func TestCLIPerfMetrics(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	q := testenv.Name(t, "pika-cli-perf-metrics")
	t.Cleanup(func() { c.run("", "delete", "queue", q) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.command(ctx, "perf", "--queue", q, "--duration", "20s", "--rate", "200", "--confirm", "10", "--metrics", addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	lines := lineReader(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	nextLine(t, lines, "perf") // a second of load
	nextLine(t, lines, "perf")
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping perf --metrics: %v (stderr %q)", err, stderr.String())
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	values := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		values[line[:i]] = v
	}
	for _, f := range obsmetrics.New(obsmetrics.Options{}).Families() {
		if !bytes.Contains(body, []byte("# TYPE "+f.Name+" "+f.Type+"\n")) {
			t.Errorf("no %s %s in:\n%s", f.Type, f.Name, body)
		}
	}
	for _, name := range []string{"pika_messages_published_total", `pika_publish_outcomes_total{outcome="acked"}`,
		"pika_deliveries_received_total", `pika_deliveries_settled_total{kind="ack"}`, "pika_read_bytes_total",
		"pika_written_bytes_total", "pika_confirm_latency_seconds_count"} {
		if values[name] <= 0 {
			t.Errorf("%s = %v after two seconds of load, want > 0", name, values[name])
		}
	}
	// perf's setup connection, a producer and a consumer.
	if v := values["pika_connections_open"]; v != 3 {
		t.Errorf("pika_connections_open = %v, want 3", v)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("perf after SIGINT: %v (stderr %q)", err, stderr.String())
	}
}

// TestCLIPerfMetricsBadAddr: an address perf cannot listen on is a usage
// error naming the flag.
func TestCLIPerfMetricsBadAddr(t *testing.T) {
	code, _, stderr := runCLI(t, nil, "perf", "--metrics", "256.0.0.1:http-nope", "--duration", "1s")
	if code != 1 || !strings.Contains(stderr, "--metrics") {
		t.Errorf("exit %d, stderr %q: want a usage error naming --metrics", code, stderr)
	}
}
