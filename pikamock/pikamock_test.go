package pikamock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/pikamock"
)

// handle is a handler as an application writes it: ack what it can parse,
// reject (no requeue) what it cannot, and requeue when the work fails.
func handle(_ context.Context, d *pika.Delivery) error {
	switch string(d.Body) {
	case "bad":
		return d.Reject(false)
	case "busy":
		return d.Nack(false, true)
	}
	return d.Ack(false)
}

func TestRecorderRecordsInOrder(t *testing.T) {
	var r pikamock.Recorder
	ctx := context.Background()
	for i, body := range []string{"ok", "bad", "busy"} {
		if err := handle(ctx, r.Delivery(uint64(i+1), []byte(body))); err != nil {
			t.Fatalf("handle %q: %v", body, err)
		}
	}
	want := []pikamock.Call{
		pikamock.AckOf(1),
		{Kind: pikamock.Reject, Tag: 2},
		{Kind: pikamock.Nack, Tag: 3, Requeue: true},
	}
	if got := r.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls %v, want %v", got, want)
	}
	if c, ok := r.Settled(2); !ok || c.Kind != pikamock.Reject {
		t.Errorf("Settled(2) = %v, %v; want the reject", c, ok)
	}
	if _, ok := r.Settled(4); ok {
		t.Error("Settled(4): a tag never settled reported settled")
	}
	r.Reset()
	if len(r.Calls()) != 0 {
		t.Error("calls left after Reset")
	}
}

func TestRecorderMultiple(t *testing.T) {
	var r pikamock.Recorder
	d := r.Delivery(5, nil)
	if err := d.Ack(true); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []uint64{1, 4, 5} {
		if c, ok := r.Settled(tag); !ok || c != (pikamock.Call{Kind: pikamock.Ack, Tag: 5, Multiple: true}) {
			t.Errorf("Settled(%d) = %v, %v; want the multiple ack of 5", tag, c, ok)
		}
	}
	if _, ok := r.Settled(6); ok {
		t.Error("a multiple ack of 5 settled tag 6")
	}
	if err := r.Delivery(9, nil).Nack(true, false); err != nil {
		t.Fatal(err)
	}
	if c, ok := r.Settled(7); !ok || c.Kind != pikamock.Nack {
		t.Errorf("Settled(7) = %v, %v; want the multiple nack of 9", c, ok)
	}
}

func TestRecorderFailWith(t *testing.T) {
	var r pikamock.Recorder
	r.FailWith(pika.ErrStaleDelivery)
	if err := r.Delivery(1, nil).Ack(false); !errors.Is(err, pika.ErrStaleDelivery) {
		t.Errorf("Ack with FailWith(ErrStaleDelivery) = %v", err)
	}
	r.FailWith(nil)
	if err := r.Delivery(2, nil).Ack(false); err != nil {
		t.Errorf("Ack after FailWith(nil) = %v", err)
	}
	if n := len(r.Calls()); n != 2 {
		t.Errorf("%d calls recorded, want 2 (failed ones too)", n)
	}
}

func TestRecorderConcurrent(t *testing.T) {
	var r pikamock.Recorder
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { r.Delivery(uint64(i+1), nil).Ack(false) })
	}
	wg.Wait()
	calls := r.Calls()
	if len(calls) != 50 {
		t.Fatalf("%d calls, want 50", len(calls))
	}
	for tag := uint64(1); tag <= 50; tag++ {
		if _, ok := r.Settled(tag); !ok {
			t.Errorf("tag %d not recorded", tag)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[pikamock.Kind]string{pikamock.Ack: "ack", pikamock.Nack: "nack", pikamock.Reject: "reject", 9: "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", k, got, want)
		}
	}
}

func Example() {
	var acks pikamock.Recorder
	d := acks.Delivery(1, []byte("bad"))
	d.RoutingKey = "orders"
	if err := handle(context.Background(), d); err != nil {
		fmt.Println("handler:", err)
	}
	fmt.Println(acks.Calls())
	// Output: [reject tag 1 (multiple false, requeue false)]
}
