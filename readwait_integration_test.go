//go:build linux

package pika

import (
	"context"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// blockingBrokerConfig returns the test broker's Config with BlockingRead,
// the given ReadLinger and no recovery.
func blockingBrokerConfig(t *testing.T, linger time.Duration) Config {
	cfg, err := ParseURL(testenv.Broker(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.BlockingRead = true
	cfg.ReadLinger = linger
	cfg.DisableRecovery = true
	return cfg
}

// TestBlockingReadBroker: against RabbitMQ, a connection with
// BlockingRead reads through an fdConn, an inline consumer acknowledging
// in multiples gets every message in order (the prefetch lets them come
// only as the acks reach the broker), and Close returns.
func TestBlockingReadBroker(t *testing.T) {
	t.Parallel()
	c := dialFake(t, blockingBrokerConfig(t, 0)) // a plain DialConfig, closed at the end
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.mu.Lock()
	_, uses := c.l.nc.(*fdConn)
	c.mu.Unlock()
	if !uses {
		t.Fatal("BlockingRead against the broker: the socket stays with the poller")
	}
	ch := openChannel(t, c)
	q := slowQueue(t, ch)
	const n = 3000
	fillQueue(t, c, q, n, 100)
	// With a prefetch of 500, all 3,000 arrive only if the acks reach the
	// broker.
	if err := ch.Qos(ctx, QosOptions{PrefetchCount: 500}); err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, n)
	_, err := ch.ConsumeFunc(ctx, q, ConsumeOptions{Inline: true}, func(_ context.Context, d *Delivery) {
		if d.DeliveryTag%100 == 0 {
			if err := d.Ack(true); err != nil {
				t.Errorf("Ack: %v", err)
			}
		}
		got <- d.DeliveryTag
	})
	if err != nil {
		t.Fatal(err)
	}
	receiveInOrder(ctx, t, got, n)
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer closeCancel()
	if err := closeReturns(closeCtx, t, c); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestReadLingerBroker: against RabbitMQ, with BlockingRead and a 1 ms
// ReadLinger on both connections, a publisher waiting on the confirmation
// of the message published 100 before (PublishWithConfirm) gets every
// confirmation, a Next consumer acknowledging every 50 under a prefetch
// of 200 gets every message in order, a declaration made in the middle
// gets its reply, and both readers did linger.
func TestReadLingerBroker(t *testing.T) {
	t.Parallel()
	cfg := blockingBrokerConfig(t, time.Millisecond)
	pc := dialFake(t, cfg)
	cc := dialFake(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, c := range []*Conn{pc, cc} {
		c.mu.Lock()
		on := c.l.lingerer != nil
		c.mu.Unlock()
		if !on {
			t.Fatal("ReadLinger with BlockingRead against the broker: the reader does not linger")
		}
	}
	cch := openChannel(t, cc)
	q := slowQueue(t, cch)
	if err := cch.Qos(ctx, QosOptions{PrefetchCount: 200}); err != nil {
		t.Fatal(err)
	}
	cons, err := cch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	pubErr := make(chan error, 1)
	go func() {
		pch, err := pc.Channel(ctx)
		if err == nil {
			err = pch.ConfirmSelect(ctx)
		}
		var ring [100]*Confirmation
		for i := 0; err == nil && i < n; i++ {
			if f := ring[i%len(ring)]; f != nil {
				if err = f.Wait(ctx); err != nil {
					break
				}
			}
			ring[i%len(ring)], err = pch.PublishWithConfirm(ctx, "", q, Message{Body: make([]byte, 100)})
		}
		if err == nil {
			err = pch.WaitConfirms(ctx)
		}
		pubErr <- err
	}()
	for i := uint64(1); i <= n; i++ {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d: %v", i-1, err)
		}
		if d.DeliveryTag != i {
			t.Fatalf("delivery tag %d, want %d", d.DeliveryTag, i)
		}
		if i%50 == 0 {
			if err := d.Ack(true); err != nil {
				t.Fatal(err)
			}
		}
		if i == n/2 {
			if _, err := cch.QueueDeclarePassive(ctx, q); err != nil {
				t.Fatalf("passive declare while consuming: %v", err)
			}
		}
	}
	if err := <-pubErr; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	if lingers(pc) == 0 || lingers(cc) == 0 {
		t.Errorf("lingers: publisher %d, consumer %d; want some on both", lingers(pc), lingers(cc))
	}
}
