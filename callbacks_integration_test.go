package pika

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// TestNotifyBufferReturnsIntegration checks the bound on a channel's
// notification queue against RabbitMQ: with OnReturn blocked, unroutable
// mandatory publishes end up waiting in Publish, another channel's RPC
// completes meanwhile, and releasing the callback delivers every return.
// (The queue then holds NotifyBuffer returns plus those of the messages
// that were in flight when it filled: with a fast publisher, thousands.)
func TestNotifyBufferReturnsIntegration(t *testing.T) {
	url := testenv.Broker(t)
	cfg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 8
	cfg.NotifyBuffer = limit
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ch, other := openChannel(t, c), openChannel(t, c)
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	returned := 0
	ch.OnReturn(func(*Return) {
		mu.Lock()
		returned++
		first := returned == 1
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
	})
	key := testenv.Name(t, "no-such-queue")
	published := 0
	for {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := ch.Publish(pctx, "", key, Message{Mandatory: true, Body: []byte("x")})
		pcancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		published++
		if published > 10000 {
			close(release)
			t.Fatalf("%d mandatory publishes returned to a blocked OnReturn without Publish waiting (NotifyBuffer %d)", published, limit)
		}
	}
	<-entered
	if n := ch.notify.box.len(); n < limit || n >= published {
		t.Errorf("Publish waited with %d returns queued of %d published (NotifyBuffer %d)", n, published, limit)
	}
	// (An exclusive queue: it goes with the connection.)
	if _, err := other.QueueDeclare(ctx, "", QueueDeclareOptions{Exclusive: true}); err != nil {
		t.Errorf("an RPC on another channel while OnReturn is blocked: %v", err)
	}
	t.Logf("Publish waited after %d publishes, with %d returns queued", published, ch.notify.box.len())
	close(release)
	waitFor(t, "every return delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return returned == published
	})
	if err := ch.Publish(ctx, "", key, Message{Mandatory: true, Body: []byte("x")}); err != nil {
		t.Errorf("Publish after the callback was released: %v", err)
	}
}
