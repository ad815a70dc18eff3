package pika

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// dialHooked dials the broker with hooks.
func dialHooked(t testing.TB, url string, hooks ...Hook) *Conn {
	t.Helper()
	cfg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Hooks = hooks
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// declareTestQueue declares a named queue and deletes it when the test
// ends.
func declareTestQueue(t testing.TB, ch *Channel, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := ch.QueueDeclare(ctx, name, QueueDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c := dialTest(t, testenv.URL())
		dch := openChannel(t, c)
		dch.QueueDelete(context.Background(), name, QueueDeleteOptions{})
	})
}

// TestHooksBrokerConsume: against RabbitMQ, a publish, a ConsumeFunc
// consumer (process hook and handler ctx), a pull consumer, Get, and
// acks, nacks and rejects with the counts they settled, and bytes.
func TestHooksBrokerConsume(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	type key struct{}
	rec := newRecorder()
	rec.ctxKey = key{}
	c := dialHooked(t, url, rec)
	ch := openChannel(t, c)
	q := testenv.Name(t, "hooks")
	declareTestQueue(t, ch, q)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for i := range 6 {
		if err := ch.Publish(ctx, "", q, Message{Body: []byte(fmt.Sprint("m", i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Get one (m0) and reject it without requeue.
	d, ok, err := ch.Get(ctx, q, GetOptions{AutoAck: false})
	if err != nil || !ok {
		t.Fatalf("Get: %v %v", ok, err)
	}
	if d.Headers["hooked"] != "yes" {
		t.Errorf("the publish hook's header did not reach the broker: %v", d.Headers)
	}
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}
	// Pull two (m1, m2), ack both with one multiple ack.
	pull, err := ch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d1, err := pull.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := pull.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Ack(true); err != nil {
		t.Fatal(err)
	}
	if err := d1.Ack(false); err == nil {
		t.Fatal("acking an acked tag succeeded")
	}
	if err := pull.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// Whatever the pull consumer had buffered went back with its cancel?
	// No: it stays takeable; nack it all back to the queue.
	for {
		short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
		d, err := pull.Next(short)
		stop()
		if err != nil {
			break
		}
		d.Nack(false, true)
	}

	// A ConsumeFunc consumer sees the process hook's ctx.
	seen := make(chan string, 16)
	fn, err := ch.ConsumeFunc(ctx, q, ConsumeOptions{}, func(hctx context.Context, d *Delivery) {
		seen <- fmt.Sprint(hctx.Value(key{}))
		d.Ack(false)
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case v := <-seen:
			if v != "process" {
				t.Errorf("handler ctx value %q, want the process hook's", v)
			}
		case <-ctx.Done():
			t.Fatal("ConsumeFunc handler not called")
		}
	}
	if err := fn.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	<-fn.Done()
	// Events of the callers' goroutines, in their order...
	rec.wait(t, "publish  "+q, "published seq=0 <nil>",
		"delivery "+q+" m0", "settle reject 1 n=1",
		"delivery "+q+" m1", "delivery "+q+" m2", "settle ack 3 n=2", "settle ack 2 n=0 pika: ",
		"process "+q, "settle ack", "processed")
	// ... and of the hook goroutine, in theirs (the two are not ordered).
	rec.wait(t, "consumer start "+pull.Tag(), "consumer end "+pull.Tag()+" pika: consumer closed",
		"consumer start "+fn.Tag(), "consumer end "+fn.Tag())
	// Byte counts reach the hook at most every 100 ms: poll for them.
	var read, written int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rec.mu.Lock()
		read, written = rec.read, rec.written
		rec.mu.Unlock()
		if read >= 6*2 && written >= 6*2 || time.Now().After(deadline) {
			break
		}
	}
	if read < 6*2 || written < 6*2 {
		t.Errorf("bytes read %d, written %d", read, written)
	}
	for _, l := range rec.lines() {
		if strings.HasPrefix(l, "outcome") {
			t.Errorf("an outcome without confirm mode: %s", l)
		}
	}
}

// TestHooksNoAllocations: with no hooks, Publish and taking a buffered
// delivery allocate nothing, and no-op publish and delivery hooks add no
// allocation either (Publishings are pooled).
func TestHooksNoAllocations(t *testing.T) {
	url := testenv.Broker(t)
	for _, tc := range []struct {
		name  string
		hooks []Hook
		max   float64
	}{
		{"none", nil, 0},
		{"noop-publish-and-delivery", []Hook{noopPathHooks{}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialHooked(t, url, tc.hooks...)
			ch := openChannel(t, c)
			ctx := context.Background()
			body := make([]byte, 64)
			allocs := testing.AllocsPerRun(2000, func() {
				ch.Publish(ctx, "", "pika-test-nowhere", Message{Body: body})
			})
			if allocs > tc.max {
				t.Errorf("Publish: %.2f allocations, want at most %v", allocs, tc.max)
			}
			// Take pre-buffered deliveries: Next itself.
			cons := &Consumer{ch: ch, limit: 1 << 20, limitBytes: 1 << 30, signal: make(chan struct{}, 1),
				endCh: make(chan struct{}), done: make(chan struct{})}
			ds := make([]*Delivery, 3000)
			for i := range ds {
				ds[i] = &Delivery{ch: ch, Body: body}
			}
			cons.queue = ds
			allocs = testing.AllocsPerRun(2000, func() {
				if _, err := cons.Next(ctx); err != nil {
					t.Fatal(err)
				}
			})
			if allocs > tc.max {
				t.Errorf("Consumer.Next: %.2f allocations, want at most %v", allocs, tc.max)
			}
		})
	}
}

// noopPathHooks are no-op hooks of the kinds that run on the publish and
// delivery paths, on the caller's goroutine.
type noopPathHooks struct{}

func (noopPathHooks) OnDelivery(string, *Delivery)   {}
func (noopPathHooks) OnPublish(*Publishing)          {}
func (noopPathHooks) OnPublished(*Publishing, error) {}
