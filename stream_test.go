package pika

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

func TestStreamOffsetOf(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want int64
		err  string
	}{
		{int64(42), 42, ""},
		{int32(7), 7, ""},
		{uint8(3), 3, ""},
		{"12", 0, "of type string"},
		{nil, 0, "no x-stream-offset header"},
	} {
		d := &Delivery{}
		if tc.v != nil {
			d.Headers = Table{"x-stream-offset": tc.v}
		}
		got, err := StreamOffsetOf(d)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("StreamOffsetOf(%#v) error %v, want one containing %q", tc.v, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("StreamOffsetOf(%#v) = %d, %v, want %d", tc.v, got, err, tc.want)
		}
	}
}

func TestStreamTrackerAttachAt(t *testing.T) {
	tr := NewStreamTracker(StreamFirst)
	if got := tr.attachAt(); got != StreamFirst {
		t.Errorf("attachAt before any delivery = %v, want first", got)
	}
	if _, ok := tr.Last(); ok {
		t.Errorf("Last before any delivery reports an offset")
	}
	for _, off := range []int64{5, 9, 7} { // out of order: the highest wins
		if err := tr.Processed(&Delivery{Properties: Properties{Headers: Table{"x-stream-offset": off}}}); err != nil {
			t.Fatal(err)
		}
	}
	if last, ok := tr.Last(); !ok || last != 9 {
		t.Errorf("Last = %d, %v, want 9", last, ok)
	}
	if got := tr.attachAt(); got != int64(10) {
		t.Errorf("attachAt = %v, want 10", got)
	}
	if err := tr.Processed(&Delivery{}); err == nil {
		t.Errorf("Processed of a delivery without x-stream-offset: no error")
	}
	if got := NewStreamTrackerAfter(99).attachAt(); got != int64(100) {
		t.Errorf("NewStreamTrackerAfter(99) attaches at %v, want 100", got)
	}
}

func TestCheckConsumeArguments(t *testing.T) {
	rmq := func(v string) func() Table {
		return func() Table { return Table{"product": "RabbitMQ", "version": v} }
	}
	filter := ConsumeOptions{Arguments: Table{"x-stream-filter": "eu"}}
	err := checkConsumeArguments(filter, rmq("3.10.8"))
	if err == nil || !strings.Contains(err.Error(), "3.13") || !strings.Contains(err.Error(), "3.10.8") || !strings.Contains(err.Error(), "x-stream-filter") {
		t.Errorf("filter on 3.10.8: %v, want an error naming the argument, 3.13 and the broker's version", err)
	}
	if err := checkConsumeArguments(filter, rmq("3.13.0")); err != nil {
		t.Errorf("filter on 3.13.0: %v", err)
	}
	if err := checkConsumeArguments(filter, rmq("4.0.1")); err != nil {
		t.Errorf("filter on 4.0.1: %v", err)
	}
	both := ConsumeOptions{Stream: NewStreamTracker(StreamFirst), Arguments: Table{"x-stream-offset": "first"}}
	if err := checkConsumeArguments(both, rmq("3.10.8")); err == nil {
		t.Errorf("Stream and an x-stream-offset argument: no error")
	}
	if err := checkConsumeArguments(ConsumeOptions{Stream: NewStreamTracker("yesterday")}, rmq("3.10.8")); err == nil {
		t.Errorf("a tracker starting at \"yesterday\": no error")
	}
}

// TestFakeStreamTrackerResumesAfterRecovery: a stream consumer with a
// StreamTracker attaches at its start, and after a connection loss at the
// offset after the last one processed; the deliveries the broker sends
// again from the start of the chunk are dropped (and acked), so the
// application sees every offset once.
func TestFakeStreamTrackerResumesAfterRecovery(t *testing.T) {
	b := newFakeBroker(t)
	var mu sync.Mutex
	var attach []any
	var ackedUpTo uint64 // on the second connection: every tag up to it acked
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		mu.Lock()
		defer mu.Unlock()
		switch m := m.(type) {
		case *wire.BasicConsume:
			attach = append(attach, m.Arguments["x-stream-offset"])
		case *wire.BasicAck:
			if fc.n == 2 && (m.Multiple || m.DeliveryTag == ackedUpTo+1) {
				ackedUpTo = max(ackedUpTo, m.DeliveryTag)
			}
		}
		return false
	})
	c := dialFake(t, b.config())
	rlog := watchRecovery(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	mustDo(t, "channel", err)
	tr := NewStreamTracker(StreamFirst)
	cons, err := ch.Consume(ctx, "s", ConsumeOptions{Tag: "c1", Stream: tr})
	mustDo(t, "consume", err)
	deliver := func(fc *fakeConn, tag uint64, off int64) {
		fc.wmu.Lock()
		defer fc.wmu.Unlock()
		fc.nc.Write(scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: tag, RoutingKey: "s"},
			&wire.Properties{Flags: wire.FlagHeaders, Headers: Table{"x-stream-offset": off}}, []byte("m"), 0))
	}
	next := func() int64 {
		t.Helper()
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		off, err := StreamOffsetOf(d)
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	for i := range int64(3) {
		deliver(b.conn(1), uint64(i+1), i)
	}
	for i := range int64(3) {
		if off := next(); off != i {
			t.Fatalf("offset %d, want %d", off, i)
		}
		if i < 2 { // offset 2 is taken but not processed when the link dies
			mustDo(t, "Processed", tr.Processed(&Delivery{Properties: Properties{Headers: Table{"x-stream-offset": i}}}))
		}
	}
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	// The broker resends the chunk from offset 0.
	for i := range int64(4) {
		deliver(b.conn(2), uint64(i+1), i)
	}
	for _, want := range []int64{2, 3} {
		if off := next(); off != want {
			t.Fatalf("after the recovery: offset %d, want %d", off, want)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := ackedUpTo
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tags acked on the new connection: up to %d, want 2 (the dropped offsets 0 and 1): %v", n, b.conn(2).methods())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attach) != 2 || attach[0] != "first" || attach[1] != int64(2) {
		t.Errorf("x-stream-offset of the basic.consumes: %#v, want first, then int64 2", attach)
	}
}
