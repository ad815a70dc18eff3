package pika

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Tests of ConsumeOptions.Inline against fakeBroker (recovery_test.go):
// the handler runs on the reader goroutine, in order, one call at a time;
// while it runs nothing is read; what it awaits from the broker waits until
// its ctx ends; the connection carries on afterwards.

// inlineConsume starts an inline consumer whose handler is f.
func inlineConsume(t *testing.T, ch *Channel, opts ConsumeOptions, f func(*Delivery)) *Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts.Inline = true
	cons, err := ch.ConsumeFunc(ctx, "q", opts, func(_ context.Context, d *Delivery) { f(d) })
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

// TestInlineNeedsHandler: Consume (no handler) refuses Inline.
func TestInlineNeedsHandler(t *testing.T) {
	_, c := stallFake(t, false)
	ch := stallChannel(t, c)
	_, err := ch.Consume(context.Background(), "q", ConsumeOptions{Inline: true})
	if err == nil || !strings.Contains(err.Error(), "Inline") {
		t.Fatalf("Consume with Inline = %v, want an error naming Inline", err)
	}
}

// TestInlineOrderAndAck: the handler gets every delivery in order, on one
// goroutine at a time, and may acknowledge from inside; Cancel ends the
// consumer and Done closes after the handler's last return.
func TestInlineOrderAndAck(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	var mu sync.Mutex
	var got []uint64
	running := 0
	cons := inlineConsume(t, ch, ConsumeOptions{}, func(d *Delivery) {
		mu.Lock()
		running++
		if running > 1 {
			t.Error("two handler calls at once")
		}
		got = append(got, d.DeliveryTag)
		mu.Unlock()
		if d.DeliveryTag%10 == 0 {
			if err := d.Ack(true); err != nil {
				t.Errorf("Ack from the inline handler: %v", err)
			}
		}
		mu.Lock()
		running--
		mu.Unlock()
	})
	for i := uint64(1); i <= 50; i++ {
		fc.deliver(ch.ID(), cons.Tag(), i, "m")
	}
	waitFor(t, "50 handler calls", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 50
	})
	if !slices.IsSorted(got) || got[0] != 1 {
		t.Fatalf("handler order %v", got)
	}
	waitFor(t, "the acknowledgements", func() bool {
		n := 0
		for _, m := range fc.methods() {
			if strings.HasSuffix(m, "basic.ack") {
				n++
			}
		}
		return n == 5
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cons.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after Cancel")
	}
}

// TestInlineHandlerBlocks: while an inline handler blocks, nothing is read
// on the connection: another channel's reply waits, and arrives once the
// handler returns. A call from inside the handler that waits for the
// broker ends with its ctx, and the connection carries on.
func TestInlineHandlerBlocks(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	other := stallChannel(t, c)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	inner := make(chan error, 1)
	cons := inlineConsume(t, ch, ConsumeOptions{}, func(d *Delivery) {
		switch d.DeliveryTag {
		case 1:
			entered <- struct{}{}
			<-release
		case 2:
			// Waits for a reply the blocked reader cannot read.
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := ch.QueueDeclare(ctx, "inner", QueueDeclareOptions{})
			inner <- err
		}
	})
	fc.deliver(ch.ID(), cons.Tag(), 1, "block")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	declared := make(chan error, 1)
	go func() {
		_, err := other.QueueDeclare(ctx, "other", QueueDeclareOptions{})
		declared <- err
	}()
	// The fake broker answers at once, but the client does not read the
	// reply while the handler blocks (net.Pipe: the reply's write waits).
	waitFor(t, "the declare to be sent", func() bool { return slices.Contains(fc.methods(), "2:queue.declare") })
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-declared:
		t.Fatalf("a reply was read while the inline handler blocked: %v", err)
	default:
	}
	close(release)
	if err := <-declared; err != nil {
		t.Fatalf("QueueDeclare after the handler returned: %v", err)
	}

	fc.deliver(ch.ID(), cons.Tag(), 2, "rpc inside")
	if err := <-inner; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call awaiting the broker inside the inline handler = %v, want its ctx's deadline", err)
	}
	if _, err := other.QueueDeclare(ctx, "after", QueueDeclareOptions{}); err != nil {
		t.Fatalf("the connection after the handler's stuck call: %v", err)
	}
}

// TestInlineEndDrains: deliveries still buffered when an inline consumer
// ends (here an AutoAck consumer whose channel the broker closes in the
// read that brought them) go to the handler in order; Done closes after
// the last.
func TestInlineEndDrains(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var mu sync.Mutex
	var got []uint64
	cons := inlineConsume(t, ch, ConsumeOptions{AutoAck: true}, func(d *Delivery) {
		if d.DeliveryTag == 1 {
			entered <- struct{}{}
			<-release
		}
		mu.Lock()
		got = append(got, d.DeliveryTag)
		mu.Unlock()
	})
	fc.deliver(ch.ID(), cons.Tag(), 1, "m")
	<-entered
	// One write (read at once when the handler returns) carries two more
	// deliveries and the channel's close: the reader buffers both, the
	// close ends the consumer, and both still reach the handler.
	deliver := func(tag uint64) []byte {
		return scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: cons.Tag(), DeliveryTag: tag}, nil, []byte("m"), 0)
	}
	go func() {
		fc.wmu.Lock()
		defer fc.wmu.Unlock()
		fc.nc.Write(scripted.Concat(deliver(2), deliver(3),
			scripted.Method(ch.ID(), &wire.ChannelClose{ReplyCode: uint16(wire.ReplyNotFound), ReplyText: "NOT_FOUND - gone", ClassID: 60, MethodID: 20})))
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-cons.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("handler got %v, want 1 2 3 in order", got)
	}
	if !errors.Is(cons.Err(), ErrNotFound) {
		t.Fatalf("Err() = %v", cons.Err())
	}
}
