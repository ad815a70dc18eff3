package main

import (
	"strings"
	"testing"

	"github.com/pika-go/pika/pikatest"
)

// TestCLIPikatestRoundTrip runs the command against the in-process broker
// of package pikatest: declare, bind, publish with confirms, get, consume,
// a mandatory publish that comes back, purge and delete.
func TestCLIPikatestRoundTrip(t *testing.T) {
	t.Parallel()
	b := pikatest.NewBroker(t)
	pikaBinary(t)
	c := &cli{t: t, url: b.URL()}
	if out := c.ok("", "declare", "queue", "jobs"); out != "jobs\tmessages=0\tconsumers=0\n" {
		t.Fatalf("declare queue printed %q", out)
	}
	c.ok("", "declare", "exchange", "logs", "topic")
	c.ok("", "bind", "jobs", "logs", "app.#")
	c.ok("one\ntwo\nthree\n", "publish", "-l", "--confirm", "--header", "retries:int=5", "logs", "app.web")
	if m, _ := c.counts("jobs"); m != 3 {
		t.Fatalf("%d messages after publishing 3", m)
	}
	if info, ok := b.Queue("jobs"); !ok || info.Messages != 3 {
		t.Fatalf("the broker sees %+v", info)
	}
	if msgs := b.Messages("jobs"); msgs[0].Properties.Headers["retries"] != int64(5) {
		t.Fatalf("headers %v", msgs[0].Properties.Headers)
	}
	if out := c.ok("", "get", "jobs"); out != "one\n" {
		t.Fatalf("get printed %q", out)
	}
	if out := c.ok("", "consume", "--count", "2", "jobs"); out != "two\nthree\n" {
		t.Fatalf("consume printed %q", out)
	}
	if r := c.run("", "get", "jobs"); r.code != 2 {
		t.Fatalf("get from an empty queue: %v", r)
	}
	r := c.run("", "publish", "--mandatory", "--confirm", "--body", "x", "logs", "nowhere")
	if r.code != 3 || !strings.Contains(r.stderr, "312 NO_ROUTE") {
		t.Fatalf("mandatory unroutable publish: %v", r)
	}
	r = c.run("", "declare", "queue", "jobs", "--durable")
	if r.code != 5 || !strings.Contains(r.stderr, "406 PRECONDITION_FAILED - inequivalent arg 'durable'") {
		t.Fatalf("inequivalent redeclare: %v", r)
	}
	c.ok("", "purge", "jobs")
	c.ok("", "delete", "queue", "jobs")
	c.ok("", "delete", "exchange", "logs")
	if _, ok := b.Queue("jobs"); ok {
		t.Fatal("queue still there after delete")
	}
}
