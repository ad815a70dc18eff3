package pika

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// Allocation figures of the hot paths against the broker (issue 14):
// every allocation of the process counts, the reader's and writer's
// goroutines included. testing.AllocsPerRun truncates its average to a
// whole number, so allocsPerRun below does the same measurement (after a
// warm-up run, with GOMAXPROCS 1) and keeps the fraction; both are
// asserted, and logged for BENCHMARKS.md.

// allocsPerRun is testing.AllocsPerRun without the truncation.
func allocsPerRun(runs int, f func()) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	before := m.Mallocs
	for range runs {
		f()
	}
	runtime.ReadMemStats(&m)
	return float64(m.Mallocs-before) / float64(runs)
}

// consumeAllocs consumes runs messages of 100 bytes with prefetch 1000,
// acknowledging every 100th with multiple, and returns the allocations per
// message.
func consumeAllocs(t *testing.T, opts ConsumeOptions, runs int) float64 {
	t.Helper()
	url := testenv.Broker(t)
	c := dialTest(t, url)
	ch := openChannel(t, c)
	q := slowQueue(t, ch)
	fillQueue(t, c, q, runs+200, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := ch.Qos(ctx, QosOptions{PrefetchCount: 1000}); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, q, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Cancel(ctx)
	i := 0
	take := func() {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i++
		if i%100 == 0 {
			if err := d.Ack(true); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 100 { // warm up: buffers, slabs
		take()
	}
	if n := testing.AllocsPerRun(runs/2, take); n > 0 {
		t.Errorf("testing.AllocsPerRun: %v allocations per consumed message, want 0 (truncated)", n)
	}
	return allocsPerRun(runs/2-2, take)
}

// TestConsumeAllocations: a consumed small message costs a small fraction
// of an allocation (its Delivery from a slab, its body from a shared
// chunk).
func TestConsumeAllocations(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts ConsumeOptions
		max  float64
	}{
		{"default", ConsumeOptions{}, 0.1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := consumeAllocs(t, tc.opts, 5000)
			t.Logf("%s: %.4f allocations per consumed message", tc.name, a)
			if a > tc.max {
				t.Errorf("%.4f allocations per consumed message, want <= %v", a, tc.max)
			}
		})
	}
}

// TestPublishWithConfirmAllocationsBroker: PublishWithConfirm with a
// sliding window of 1000 (waiting on the confirmation published 1000
// earlier) costs well under 0.1 allocations per message, acks included.
func TestPublishWithConfirmAllocationsBroker(t *testing.T) {
	url := testenv.Broker(t)
	c := dialTest(t, url)
	ch := openChannel(t, c)
	q := slowQueue(t, ch)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	msg := Message{Body: make([]byte, 100)}
	ring := make([]*Confirmation, 1000)
	i := 0
	publish := func() {
		slot := i % len(ring)
		i++
		if f := ring[slot]; f != nil {
			if err := f.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		f, err := ch.PublishWithConfirm(ctx, "", q, msg)
		if err != nil {
			t.Fatal(err)
		}
		ring[slot] = f
	}
	for range 2000 {
		publish()
	}
	if n := testing.AllocsPerRun(5000, publish); n > 0 {
		t.Errorf("testing.AllocsPerRun: %v allocations per PublishWithConfirm, want 0 (truncated)", n)
	}
	a := allocsPerRun(5000, publish)
	t.Logf("%.4f allocations per PublishWithConfirm", a)
	if a > 0.1 {
		t.Errorf("%.4f allocations per PublishWithConfirm, want <= 0.1", a)
	}
	if err := ch.WaitConfirms(ctx); err != nil {
		t.Fatal(err)
	}
}
