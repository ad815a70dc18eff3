//go:build linux

package pika

import (
	"context"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// TestBlockingReadBroker: against RabbitMQ, a connection with
// BlockingRead reads through an fdConn, an inline consumer acknowledging
// in multiples gets every message in order (the prefetch lets them come
// only as the acks reach the broker), and Close returns.
func TestBlockingReadBroker(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	cfg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BlockingRead = true
	cfg.DisableRecovery = true
	c := dialFake(t, cfg) // a plain DialConfig, closed at the end
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
	_, err = ch.ConsumeFunc(ctx, q, ConsumeOptions{Inline: true}, func(_ context.Context, d *Delivery) {
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
