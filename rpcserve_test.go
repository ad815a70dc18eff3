package pika

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// TestServeAcksAfterConfirm drives Serve against the fake broker: the
// request is acknowledged only once the broker confirmed the reply; a
// nacked reply requeues the request; a handler error is replied too.
func TestServeAcksAfterConfirm(t *testing.T) {
	b := newFakeBroker(t)
	var mu sync.Mutex
	var fc *fakeConn
	var ch uint16
	var tag string
	consumed := make(chan struct{})
	seen := make(chan string, 100) // "publish rk", "ack N", "nack N requeue"
	b.setHook(func(c *fakeConn, channel uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.BasicConsume:
			mu.Lock()
			fc, ch, tag = c, channel, m.ConsumerTag
			mu.Unlock()
			c.send(channel, &wire.BasicConsumeOk{ConsumerTag: m.ConsumerTag})
			close(consumed)
			return true
		case *wire.BasicPublish:
			seen <- "publish " + m.RoutingKey
		case *wire.BasicAck:
			seen <- fmt.Sprintf("ack %d", m.DeliveryTag)
		case *wire.BasicNack:
			seen <- fmt.Sprintf("nack %d requeue=%v", m.DeliveryTag, m.Requeue)
		}
		return false
	})
	cfg := b.config()
	cfg.DisableRecovery = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dialFake(t, cfg)

	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- Serve(sctx, c, "requests", func(_ context.Context, d *Delivery) (Message, error) {
			if string(d.Body) == "fail" {
				return Message{}, errors.New("no")
			}
			return Message{Body: d.Body}, nil
		}, ServeOptions{})
	}()
	select {
	case <-consumed:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not consume")
	}
	deliver := func(dt uint64, body string) {
		mu.Lock()
		defer mu.Unlock()
		fc.wmu.Lock()
		defer fc.wmu.Unlock()
		fc.nc.Write(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: tag, DeliveryTag: dt, RoutingKey: "requests"},
			&wire.Properties{ReplyTo: "amq.rabbitmq.reply-to.abc", CorrelationID: fmt.Sprint("c", dt)}, []byte(body), 128<<10))
	}
	confirm := func(m wire.Method) {
		mu.Lock()
		defer mu.Unlock()
		fc.send(ch, m)
	}
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("broker saw %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("broker never saw %q", want)
		}
	}
	nothing := func(what string) {
		t.Helper()
		select {
		case got := <-seen:
			t.Fatalf("%s: broker saw %q", what, got)
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Request 1: replied; not acked until the reply is confirmed.
	deliver(1, "one")
	expect("publish amq.rabbitmq.reply-to.abc")
	nothing("before the reply's confirm")
	confirm(&wire.BasicAck{DeliveryTag: 1})
	expect("ack 1")

	// Request 2: the reply is nacked: the request is requeued.
	deliver(2, "two")
	expect("publish amq.rabbitmq.reply-to.abc")
	confirm(&wire.BasicNack{DeliveryTag: 2})
	expect("nack 2 requeue=true")

	// Request 3: the handler fails: an error reply, then the ack.
	deliver(3, "fail")
	expect("publish amq.rabbitmq.reply-to.abc")
	nothing("before the error reply's confirm")
	confirm(&wire.BasicAck{DeliveryTag: 3})
	expect("ack 3")

	// Request 4: Serve stops before the confirm: no ack (the channel's
	// close gives the request back to the queue).
	deliver(4, "four")
	expect("publish amq.rabbitmq.reply-to.abc")
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve stopped by its ctx returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its ctx ended")
	}
	for {
		select {
		case got := <-seen:
			if got == "ack 4" || got == "nack 4 requeue=true" {
				t.Fatalf("request 4 settled (%s) without its reply's confirm", got)
			}
			continue
		default:
		}
		break
	}
}

// TestServeReturnsBrokerCancelWhileHandling: when the broker cancels the
// request consumer while a handler runs, Serve returns the cancel
// (ErrConsumerCancelled), not the handlers' ctx's context.Canceled.
func TestServeReturnsBrokerCancelWhileHandling(t *testing.T) {
	b := newFakeBroker(t)
	var mu sync.Mutex
	var fc *fakeConn
	var ch uint16
	var tag string
	consumed := make(chan struct{})
	b.setHook(func(c *fakeConn, channel uint16, m wire.Method) bool {
		if m, ok := m.(*wire.BasicConsume); ok {
			mu.Lock()
			fc, ch, tag = c, channel, m.ConsumerTag
			mu.Unlock()
			c.send(channel, &wire.BasicConsumeOk{ConsumerTag: m.ConsumerTag})
			close(consumed)
			return true
		}
		return false
	})
	cfg := b.config()
	cfg.DisableRecovery = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dialFake(t, cfg)

	handling := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, c, "requests", func(hctx context.Context, d *Delivery) (Message, error) {
			close(handling)
			<-hctx.Done()
			return Message{}, hctx.Err()
		}, ServeOptions{})
	}()
	select {
	case <-consumed:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not consume")
	}
	mu.Lock()
	fc.wmu.Lock()
	fc.nc.Write(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: tag, DeliveryTag: 1, RoutingKey: "requests"},
		&wire.Properties{ReplyTo: "amq.rabbitmq.reply-to.abc", CorrelationID: "c1"}, []byte("x"), 128<<10))
	fc.wmu.Unlock()
	mu.Unlock()
	<-handling
	mu.Lock()
	fc.send(ch, &wire.BasicCancel{ConsumerTag: tag, NoWait: true})
	mu.Unlock()
	select {
	case err := <-served:
		if !errors.Is(err, ErrConsumerCancelled) {
			t.Fatalf("Serve returned %v, want ErrConsumerCancelled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the broker cancelled its consumer")
	}
}

// TestServeDefaultPrefetchFitsQos: the default prefetch (2 × Concurrency)
// is capped at basic.qos's limit, 65535, instead of failing Serve with an
// out-of-range Qos error for Concurrency above 32767.
func TestServeDefaultPrefetchFitsQos(t *testing.T) {
	b := newFakeBroker(t)
	qos := make(chan uint16, 1)
	b.setHook(func(c *fakeConn, channel uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.BasicQos:
			qos <- m.PrefetchCount
		case *wire.BasicConsume:
			// Refuse the consumer: Serve returns before starting workers.
			c.send(channel, &wire.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no queue 'requests'", ClassID: 60, MethodID: 20})
			return true
		}
		return false
	})
	cfg := b.config()
	cfg.DisableRecovery = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dialFake(t, cfg)
	err := Serve(ctx, c, "requests", func(context.Context, *Delivery) (Message, error) { return Message{}, nil },
		ServeOptions{Concurrency: 40000})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Serve returned %v, want the consume's 404", err)
	}
	select {
	case n := <-qos:
		if n != 65535 {
			t.Fatalf("prefetch %d, want 65535", n)
		}
	default:
		t.Fatal("no basic.qos sent")
	}
}
