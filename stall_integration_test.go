package pika

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// Integration tests of issue 10: one slow consumer never stalls the
// connection. Each must fail (not hang) without the fix: the operations
// that a paused reader would hold up have generous deadlines.

// slowQueue declares an exclusive queue through ch (so that the Conn knows
// it is not auto-delete) and deletes it at the end.
func slowQueue(t *testing.T, ch *Channel) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := ch.QueueDeclare(ctx, testenv.Name(t, "slow"), QueueDeclareOptions{Exclusive: true})
	if err != nil {
		t.Fatalf("QueueDeclare: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ch.QueueDelete(ctx, q.Name, QueueDeleteOptions{})
	})
	return q.Name
}

// fillQueue publishes n messages of size bytes to q and waits for their
// confirmations.
func fillQueue(t *testing.T, c *Conn, q string, n, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close(ctx)
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, size)
	for range n {
		if err := ch.Publish(ctx, "", q, Message{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.WaitConfirms(ctx); err != nil {
		t.Fatal(err)
	}
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// report logs p50, p99 and max.
func (l *latencies) report(t *testing.T, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		t.Logf("%s: none completed", what)
		return
	}
	slices.Sort(l.d)
	pct := func(p float64) time.Duration { return l.d[min(len(l.d)-1, int(float64(len(l.d))*p))] }
	t.Logf("%s: n=%d p50=%v p99=%v max=%v", what, len(l.d), pct(0.50), pct(0.99), l.d[len(l.d)-1])
}

func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// checkBound asserts the stated memory bound of a consumer that no
// prefetch count bounds, whose messages have bodies of body bytes: twice
// its limits plus one read of the socket (readBufferSize, in which a
// delivery takes at least 60 bytes of frames besides its body), or for a
// suspended consumer its soft limit plus what the broker sent before it
// processed the suspension's cancel, if that is more. size is the delivery
// limit, bytes the byte limit.
func checkBound(t *testing.T, s ConsumerStats, size, bytes, body int) {
	t.Helper()
	bound := max(2*size+readBufferSize/(body+60), size+s.SuspendOverrun)
	boundBytes := 2*bytes + readBufferSize
	t.Logf("consumer stats: %+v (bound %d deliveries, %d bytes)", s, bound, boundBytes)
	if s.MaxBuffered > bound || s.MaxBufferedBytes > boundBytes {
		t.Errorf("buffered up to %d deliveries / %d bytes, over the bound of %d / %d", s.MaxBuffered, s.MaxBufferedBytes, bound, boundBytes)
	}
}

// TestSlowConsumerStallAutoAck: an AutoAck consumer whose handler blocks
// while other channels of the same connection make 1,000 RPCs and 10,000
// confirmed publishes: all of them complete while it blocks, and the
// consumer's buffer stays within its bound, losing nothing. The handler
// blocks until that work is done (60 s at most), not for a fixed time: a
// stalled connection then shows as operations timing out (25 s each)
// rather than as operations that complete once a fixed block ends.
//
// With the queue declared through the Conn the consumer is suspended and
// nothing is lost; with a queue declared by another connection
// (ConsumerOverflowAuto then discards), the buffer stays within the hard
// limit and every message is either handled or counted as dropped.
func TestSlowConsumerStallAutoAck(t *testing.T) {
	t.Run("queue-declared-here", func(t *testing.T) { testSlowAutoAck(t, true) })
	t.Run("queue-declared-elsewhere", func(t *testing.T) { testSlowAutoAck(t, false) })
}

func testSlowAutoAck(t *testing.T, declaredHere bool) {
	url := testenv.Broker(t)
	c := dialTest(t, url)
	chA := openChannel(t, c)
	var q string
	if declaredHere {
		q = slowQueue(t, chA)
	} else {
		other := dialTest(t, url)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dq, err := openChannel(t, other).QueueDeclare(ctx, testenv.Name(t, "slow"), QueueDeclareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		q = dq.Name
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := openChannel(t, other).QueueDelete(ctx, q, QueueDeleteOptions{}); err != nil {
				t.Errorf("deleting %s: %v", q, err)
			}
		})
	}
	const total, size = 5000, 1024
	fillQueue(t, c, q, total, size)
	heap0 := heapInuse()

	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	var handled atomic.Int64
	cons, err := chA.ConsumeFunc(context.Background(), q, ConsumeOptions{AutoAck: true}, func(_ context.Context, d *Delivery) {
		if handled.Add(1) == 1 {
			select {
			case <-release:
			case <-time.After(60 * time.Second):
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the consumer's buffer to fill", func() bool { return cons.Stats().Buffered >= DefaultConsumerBuffer-1 })

	chB := openChannel(t, c)
	chC := openChannel(t, c)
	if err := chC.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A paused reader would hold each of these up until the handler
	// returns, which it does only after them: 25 s makes that a failure.
	const opTimeout = 25 * time.Second
	var rpcs, confirms latencies
	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 5 {
			t.Errorf(format, args...)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 1000 {
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			start := time.Now()
			_, err := chB.QueueDeclarePassive(ctx, q)
			cancel()
			if err != nil {
				fail("RPC while the consumer is slow: %v", err)
				return
			}
			rpcs.add(time.Since(start))
		}
	}()
	body := make([]byte, 100)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				start := time.Now()
				conf, err := chC.PublishWithConfirm(ctx, "", "pika-test-nowhere", Message{Body: body})
				if err == nil {
					err = conf.Wait(ctx)
				}
				cancel()
				if err != nil {
					fail("confirmed publish while the consumer is slow: %v", err)
					return
				}
				confirms.add(time.Since(start))
			}
		}()
	}
	wg.Wait()
	stillBlocked := handled.Load() == 1
	heap1 := heapInuse()
	rpcs.report(t, "queue.declare (passive) RPCs")
	confirms.report(t, "publish + confirmation")
	t.Logf("handler still blocked when the work ended: %v; HeapInuse %d KiB before consuming, %d KiB at the end of the work",
		stillBlocked, heap0>>10, heap1>>10)
	releaseOnce.Do(func() { close(release) })
	if failures.Load() > 0 {
		t.FailNow()
	}
	if !stillBlocked {
		t.Errorf("the handler returned before the work was done")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for handled.Load()+int64(cons.Stats().Dropped) < total {
		if ctx.Err() != nil {
			t.Fatalf("handled %d of %d", handled.Load(), total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := cons.Stats()
	checkBound(t, s, DefaultConsumerBuffer, DefaultConsumerBufferBytes, size)
	if declaredHere && (s.Dropped != 0 || handled.Load() != total) {
		t.Errorf("handled %d of %d, dropped %d: the consumer of a queue declared through the Conn is suspended, not discarded", handled.Load(), total, s.Dropped)
	}
	if !declaredHere && s.Suspended != 0 {
		t.Errorf("suspended %d times the consumer of a queue the Conn does not know", s.Suspended)
	}
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSlowConsumerConfirmInHandler: the everyday handler "consume, publish
// with confirm, wait with context.Background()" never hangs, whatever the
// prefetch.
func TestSlowConsumerConfirmInHandler(t *testing.T) {
	url := testenv.Broker(t)
	cases := []struct {
		name     string
		autoAck  bool
		prefetch int
		global   bool
		buffer   int
	}{
		{"manual/prefetch=0", false, 0, false, 16},
		{"autoack/prefetch=0", true, 0, false, 16},
		{"manual/prefetch=1", false, 1, false, 16},
		{"autoack/prefetch=1", true, 1, false, 16},
		{"manual/prefetch=64>buffer", false, 64, false, 16},
		{"manual/global-prefetch=64>buffer", false, 64, true, 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTest(t, url)
			ch := openChannel(t, c)
			q := slowQueue(t, ch)
			const total = 300
			fillQueue(t, c, q, total, 512)
			pub := openChannel(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := pub.ConfirmSelect(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.prefetch > 0 {
				if err := ch.Qos(ctx, QosOptions{PrefetchCount: tc.prefetch, Global: tc.global}); err != nil {
					t.Fatal(err)
				}
			}
			heap0 := heapInuse()
			var handled atomic.Int64
			var errs atomic.Int64
			all := make(chan struct{})
			cons, err := ch.ConsumeFunc(ctx, q, ConsumeOptions{AutoAck: tc.autoAck, BufferSize: tc.buffer}, func(_ context.Context, d *Delivery) {
				conf, err := pub.PublishWithConfirm(context.Background(), "", "pika-test-nowhere", Message{Body: d.Body})
				if err == nil {
					err = conf.Wait(context.Background())
				}
				if err == nil && !tc.autoAck {
					err = d.Ack(false)
				}
				if err != nil {
					errs.Add(1)
				}
				if handled.Add(1) == total {
					close(all)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-all:
			case <-ctx.Done():
				t.Fatalf("handled %d of %d: the handler's confirmation wait hangs", handled.Load(), total)
			}
			if n := errs.Load(); n > 0 {
				t.Fatalf("%d handler calls failed", n)
			}
			s := cons.Stats()
			t.Logf("HeapInuse %d KiB before, %d KiB after", heap0>>10, heapInuse()>>10)
			if !tc.autoAck && tc.prefetch > 0 {
				t.Logf("consumer stats: %+v (bound: the prefetch count, %d)", s, tc.prefetch)
				if s.MaxBuffered > tc.prefetch {
					t.Errorf("buffered up to %d deliveries, over the prefetch count %d", s.MaxBuffered, tc.prefetch)
				}
			} else {
				checkBound(t, s, tc.buffer, DefaultConsumerBufferBytes, 512)
			}
			if s.Dropped != 0 || s.Requeued != 0 {
				t.Errorf("discarded deliveries: %+v", s)
			}
		})
	}
}

// TestSlowConsumerDirectReplyTo: RPC over direct reply-to on one
// connection, with a server slower than its caller: the server's handler
// publishes each reply with a confirmation and waits for it; every call
// gets its reply.
func TestSlowConsumerDirectReplyTo(t *testing.T) {
	url := testenv.Broker(t)
	c := dialTest(t, url)
	srv := openChannel(t, c)
	q := slowQueue(t, srv)
	srvPub := openChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srvPub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	const serverBuffer = 8
	heap0 := heapInuse()
	server, err := srv.ConsumeFunc(ctx, q, ConsumeOptions{AutoAck: true, BufferSize: serverBuffer}, func(_ context.Context, d *Delivery) {
		time.Sleep(2 * time.Millisecond) // slower than the caller
		conf, err := srvPub.PublishWithConfirm(context.Background(), "", d.ReplyTo, Message{
			Properties: Properties{CorrelationID: d.CorrelationID}, Body: d.Body})
		if err == nil {
			err = conf.Wait(context.Background())
		}
		if err != nil {
			t.Errorf("server reply: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	caller := openChannel(t, c)
	replies, err := caller.Consume(ctx, directReplyTo, ConsumeOptions{AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	const calls = 200
	for i := range calls {
		if err := caller.Publish(ctx, "", q, Message{
			Properties: Properties{ReplyTo: directReplyTo, CorrelationID: fmt.Sprint(i)},
			Body:       []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < calls {
		d, err := replies.Next(ctx)
		if err != nil {
			t.Fatalf("%d of %d replies: %v", len(seen), calls, err)
		}
		if string(d.Body) != d.CorrelationID {
			t.Fatalf("reply %q for call %q", d.Body, d.CorrelationID)
		}
		seen[d.CorrelationID] = true
	}
	t.Logf("HeapInuse %d KiB before, %d KiB after", heap0>>10, heapInuse()>>10)
	s := server.Stats()
	checkBound(t, s, serverBuffer, DefaultConsumerBufferBytes, 1)
	if s.Dropped != 0 {
		t.Errorf("server dropped %d requests", s.Dropped)
	}
	checkBound(t, replies.Stats(), DefaultConsumerBuffer, DefaultConsumerBufferBytes, 1)
}
