package pika

import (
	"context"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// TestInlineBlockedHandlerKeepsConnection: an inline handler that blocks
// for longer than two heartbeat intervals stalls the connection (nothing
// is read meanwhile) but does not kill it: heartbeats are still sent, and
// the broker's bytes waiting in the socket count as a sign of life. After
// the handler returns, everything flows again, the consumer included.
func TestInlineBlockedHandlerKeepsConnection(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	cfg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Heartbeat = time.Second
	cfg.DisableRecovery = true // a heartbeat timeout must show, not be repaired
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ch := openChannel(t, c)
	q := slowQueue(t, ch)
	fillQueue(t, c, q, 20, 10)
	got := make(chan uint64, 20)
	_, err = ch.ConsumeFunc(ctx, q, ConsumeOptions{Inline: true, AutoAck: true}, func(_ context.Context, d *Delivery) {
		if d.DeliveryTag == 1 {
			time.Sleep(3500 * time.Millisecond) // > 2 heartbeat intervals
		}
		got <- d.DeliveryTag
	})
	if err != nil {
		t.Fatal(err)
	}
	receiveInOrder(ctx, t, got, 20)
	if err := c.Err(); err != nil {
		t.Fatalf("the connection failed while the handler blocked: %v", err)
	}
	if _, err := ch.QueueDeclarePassive(ctx, q); err != nil {
		t.Fatalf("after the handler returned: %v", err)
	}
}

// receiveInOrder fails the test unless delivery tags 1 to n come from got
// in order before ctx ends.
func receiveInOrder(ctx context.Context, t *testing.T, got <-chan uint64, n uint64) {
	t.Helper()
	for i := uint64(1); i <= n; i++ {
		select {
		case tag := <-got:
			if tag != i {
				t.Fatalf("delivery %d arrived as number %d", tag, i)
			}
		case <-ctx.Done():
			t.Fatalf("delivery %d did not arrive", i)
		}
	}
}
