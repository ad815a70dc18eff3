package pika

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// Tests of issue 13: how a consumer's end is observed through Consumer.All
// (a final error unless the application stopped it) and through the ctx of
// a ConsumeFunc handler (it ends with the consumer).

// consumerEnd is one way a consumer ends: end makes it happen, clean says
// whether the application asked for it, and want checks the error reported.
type consumerEnd struct {
	name  string
	clean bool
	end   func(t *testing.T, c *Conn, ch *Channel, cons *Consumer, fc *fakeConn, cancelCtx context.CancelFunc)
	want  func(err error) bool
}

var consumerEnds = []consumerEnd{
	{"Cancel", true, func(t *testing.T, _ *Conn, _ *Channel, cons *Consumer, _ *fakeConn, _ context.CancelFunc) {
		if err := cons.Cancel(context.Background()); err != nil {
			t.Errorf("Cancel: %v", err)
		}
	}, func(err error) bool { return errors.Is(err, ErrConsumerClosed) }},
	{"Channel.Close", true, func(t *testing.T, _ *Conn, ch *Channel, _ *Consumer, _ *fakeConn, _ context.CancelFunc) {
		if err := ch.Close(context.Background()); err != nil {
			t.Errorf("Channel.Close: %v", err)
		}
	}, func(err error) bool { return errors.Is(err, ErrChannelClosed) }},
	{"Conn.Close", true, func(t *testing.T, c *Conn, _ *Channel, _ *Consumer, _ *fakeConn, _ context.CancelFunc) {
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Conn.Close: %v", err)
		}
	}, func(err error) bool { return errors.Is(err, ErrClosed) }},
	{"broker cancel", false, func(_ *testing.T, _ *Conn, ch *Channel, cons *Consumer, fc *fakeConn, _ context.CancelFunc) {
		fc.send(ch.ID(), &wire.BasicCancel{ConsumerTag: cons.Tag(), NoWait: true})
	}, func(err error) bool { return errors.Is(err, ErrConsumerCancelled) }},
	{"channel error", false, func(_ *testing.T, _ *Conn, ch *Channel, _ *Consumer, fc *fakeConn, _ context.CancelFunc) {
		fc.send(ch.ID(), &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - test"})
	}, func(err error) bool { return errors.Is(err, ErrPreconditionFailed) }},
	{"connection failure", false, func(_ *testing.T, _ *Conn, _ *Channel, _ *Consumer, fc *fakeConn, _ context.CancelFunc) {
		fc.kill()
	}, func(err error) bool { return err != nil && !errors.Is(err, ErrConsumerClosed) }},
}

// consumeOnFake dials b (no recovery), opens a channel and starts a
// consumer on it, with handler when it is not nil.
func consumeOnFake(t *testing.T, b *fakeBroker, handler func(context.Context, *Delivery)) (*Conn, *Channel, *Consumer) {
	t.Helper()
	c, ch := fakeChannel(t, b, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cons *Consumer
	var err error
	if handler != nil {
		cons, err = ch.ConsumeFunc(ctx, "q", ConsumeOptions{Tag: "ctag"}, handler)
	} else {
		cons, err = ch.Consume(ctx, "q", ConsumeOptions{Tag: "ctag"})
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, ch, cons
}

// TestAllReportsTheEnd checks Consumer.All for every way a consumer ends:
// deliveries come with a nil error; an end the application asked for ends
// the loop without an error, any other end with one final (nil, err).
func TestAllReportsTheEnd(t *testing.T) {
	for _, e := range consumerEnds {
		t.Run(e.name, func(t *testing.T) {
			b := newFakeBroker(t)
			c, ch, cons := consumeOnFake(t, b, nil)
			fc := b.conn(1)
			fc.deliver(ch.ID(), "ctag", 1, "one")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var bodies []string
			var errs []error
			for d, err := range cons.All(ctx) {
				if err != nil {
					if d != nil {
						t.Errorf("All yielded a delivery with the error %v", err)
					}
					errs = append(errs, err)
					continue // the iterator must stop by itself after an error
				}
				bodies = append(bodies, string(d.Body))
				if len(bodies) == 1 {
					e.end(t, c, ch, cons, fc, cancel)
				}
			}
			if len(bodies) != 1 || bodies[0] != "one" {
				t.Errorf("deliveries %q, want [one]", bodies)
			}
			switch {
			case e.clean && len(errs) != 0:
				t.Errorf("All after %s yielded %v, want a clean end (Err: %v)", e.name, errs, cons.Err())
			case !e.clean && (len(errs) != 1 || !e.want(errs[0])):
				t.Errorf("All after %s yielded errors %v, want one matching the end", e.name, errs)
			}
			if err := cons.Err(); !e.want(err) {
				t.Errorf("Err after %s = %v", e.name, err)
			}
			if ctx.Err() != nil {
				t.Fatal("the test's ctx ended")
			}
		})
	}
}

// TestAllReportsCtxEnd checks that All ends with ctx.Err() when its ctx
// ends, the consumer still running.
func TestAllReportsCtxEnd(t *testing.T) {
	b := newFakeBroker(t)
	_, ch, cons := consumeOnFake(t, b, nil)
	b.conn(1).deliver(ch.ID(), "ctag", 1, "one")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errs []error
	n := 0
	for d, err := range cons.All(ctx) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		if d.DeliveryTag == 1 {
			cancel()
		}
	}
	if n != 1 || len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Errorf("All with its ctx cancelled: %d deliveries, errors %v; want 1 and [context.Canceled]", n, errs)
	}
	if err := cons.Err(); err != nil {
		t.Errorf("Err after the ctx of All ended = %v, want nil (the consumer runs)", err)
	}
}

// TestConsumeFuncCtxEndsWithConsumer checks the ctx a ConsumeFunc handler
// receives: live while the consumer runs, ended when the consumer ends,
// whichever way, with Consumer.Err as its cause.
func TestConsumeFuncCtxEndsWithConsumer(t *testing.T) {
	for _, e := range consumerEnds {
		t.Run(e.name, func(t *testing.T) {
			b := newFakeBroker(t)
			got := make(chan context.Context, 1)
			release := make(chan struct{})
			c, ch, cons := consumeOnFake(t, b, func(ctx context.Context, d *Delivery) {
				got <- ctx
				<-release
			})
			defer close(release)
			fc := b.conn(1)
			fc.deliver(ch.ID(), "ctag", 1, "one")
			var hctx context.Context
			select {
			case hctx = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("handler not called")
			}
			if err := hctx.Err(); err != nil {
				t.Fatalf("handler ctx ended while the consumer runs: %v", err)
			}
			e.end(t, c, ch, cons, fc, nil)
			select {
			case <-hctx.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("handler ctx still live 10 s after %s", e.name)
			}
			if cause := context.Cause(hctx); !e.want(cause) {
				t.Errorf("context.Cause of the handler ctx after %s = %v", e.name, cause)
			}
		})
	}
}

// TestConsumeFuncCtxOutlivesRecovery checks that a connection loss that
// recovery repairs does not end the handler's ctx: the consumer goes on.
func TestConsumeFuncCtxOutlivesRecovery(t *testing.T) {
	b := newFakeBroker(t)
	c, ch := fakeChannel(t, b, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan context.Context, 2)
	cons, err := ch.ConsumeFunc(ctx, "q", ConsumeOptions{Tag: "ctag", AutoAck: true}, func(ctx context.Context, d *Delivery) { got <- ctx })
	if err != nil {
		t.Fatal(err)
	}
	recovered := make(chan struct{}, 1)
	c.OnRecovery(func(ev RecoveryEvent) {
		if ev.Kind == RecoveryRecovered {
			recovered <- struct{}{}
		}
	})
	b.conn(1).deliver(ch.ID(), "ctag", 1, "one")
	hctx := <-got
	b.conn(1).kill()
	select {
	case <-recovered:
	case <-ctx.Done():
		t.Fatal("no recovery")
	}
	waitFor(t, "the consumer restarted on connection 2", func() bool {
		fc := b.conn(2)
		if fc == nil {
			return false
		}
		for _, m := range fc.methods() {
			if m == "1:basic.consume" {
				return true
			}
		}
		return false
	})
	b.conn(2).deliver(ch.ID(), "ctag", 1, "two")
	if again := <-got; again != hctx {
		t.Error("the handler got another ctx after the recovery")
	}
	if err := hctx.Err(); err != nil {
		t.Errorf("handler ctx ended by a repaired connection loss: %v (consumer Err %v)", err, cons.Err())
	}
}

// TestDeliveryWithoutAcknowledger checks that a Delivery built by hand
// without an Acknowledger fails its acknowledgements with
// ErrNoAcknowledger instead of panicking, and that one with an
// Acknowledger calls it with its tag.
func TestDeliveryWithoutAcknowledger(t *testing.T) {
	d := &Delivery{DeliveryTag: 3, Body: []byte("x")}
	for name, call := range map[string]func() error{
		"Ack":    func() error { return d.Ack(false) },
		"Nack":   func() error { return d.Nack(false, true) },
		"Reject": func() error { return d.Reject(false) },
	} {
		if err := call(); !errors.Is(err, ErrNoAcknowledger) {
			t.Errorf("%s on a Delivery without an Acknowledger = %v, want ErrNoAcknowledger", name, err)
		}
	}
	if d.Channel() != nil {
		t.Error("Channel of a hand-built Delivery is not nil")
	}
	var got []string
	d.Acknowledger = fakeAcker(func(s string) error { got = append(got, s); return nil })
	d.Ack(true)
	d.Nack(false, true)
	d.Reject(false)
	if want := []string{"ack 3 true", "nack 3 false true", "reject 3 false"}; !slices.Equal(got, want) {
		t.Errorf("acknowledger calls %q, want %q", got, want)
	}
}

type fakeAcker func(string) error

func (f fakeAcker) Ack(tag uint64, multiple bool) error {
	return f(fmt.Sprint("ack ", tag, " ", multiple))
}
func (f fakeAcker) Nack(tag uint64, multiple, requeue bool) error {
	return f(fmt.Sprint("nack ", tag, " ", multiple, " ", requeue))
}
func (f fakeAcker) Reject(tag uint64, requeue bool) error {
	return f(fmt.Sprint("reject ", tag, " ", requeue))
}

// TestReceivedDeliveryAcksOnItsChannel checks that a delivery the library
// made acknowledges on its channel (its Acknowledger), and that replacing
// the Acknowledger redirects the acknowledgement.
func TestReceivedDeliveryAcksOnItsChannel(t *testing.T) {
	b := newFakeBroker(t)
	_, ch, cons := consumeOnFake(t, b, nil)
	fc := b.conn(1)
	fc.deliver(ch.ID(), "ctag", 1, "one")
	fc.deliver(ch.ID(), "ctag", 2, "two")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d1, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d1.Acknowledger != Acknowledger(ch) || d1.Channel() != ch {
		t.Fatalf("delivery Acknowledger %v, Channel %v; want the channel", d1.Acknowledger, d1.Channel())
	}
	if err := d1.Ack(false); err != nil {
		t.Fatal(err)
	}
	waitMethod(t, b, 1, "1:basic.ack")
	d2, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	d2.Acknowledger = fakeAcker(func(s string) error { got = append(got, s); return nil })
	if err := d2.Reject(true); err != nil || !slices.Equal(got, []string{"reject 2 true"}) {
		t.Errorf("Reject through a replaced Acknowledger: %v, calls %q", err, got)
	}
	for _, m := range fc.methods() {
		if m == "1:basic.reject" {
			t.Error("the reject went to the broker instead of the replaced Acknowledger")
		}
	}
}
