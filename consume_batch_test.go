package pika

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Tests of the batched hand-over (Consumer.take): a Next call moves all
// that is buffered to the consumer's batch in one hold of the connection's
// lock and the following calls take from it without the lock. Deliveries
// in the batch still count as buffered, are dropped like the rest of the
// buffer when they can no longer be acknowledged, and are each handed out
// once, whatever the number of goroutines calling Next.

// batchConsume starts a consumer on ch and delivers tags 1..n with bodies
// "1".."n" to it through fc, waiting until all are buffered.
func batchConsume(t *testing.T, fc *fakeConn, ch *Channel, opts ConsumeOptions, n int) *Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := ch.Consume(ctx, "q", opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		fc.deliver(ch.ID(), cons.Tag(), uint64(i), fmt.Sprint(i))
	}
	waitFor(t, fmt.Sprintf("%d buffered", n), func() bool { return cons.Stats().Buffered == n })
	return cons
}

// nextDelivery takes a delivery, failing the test on an error.
func nextDelivery(t *testing.T, cons *Consumer) *Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return d
}

// batchLen returns how many deliveries wait in the consumer's batch (not
// yet handed out).
func batchLen(cons *Consumer) int {
	cons.nextMu.Lock()
	defer cons.nextMu.Unlock()
	v := cons.cursor.Load()
	if v&batchVoided != 0 {
		return 0
	}
	return len(cons.batch) - int(v)
}

// TestBatchCountsAsBuffered: what Next moved into its batch still counts in
// ConsumerStats.Buffered and BufferedBytes, and against the buffer's
// limits, until Next returns it: a reader paused for a full AutoAck
// consumer (BufferSize 4) goes on only once the application has taken the
// buffer down to half the limit, not when Next moved it out of the
// reader's way.
func TestBatchCountsAsBuffered(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	// The queue was not declared here: the overflow policy is discard,
	// which pauses the reader at the soft limit.
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 4})
	fillToPause(t, fc, ch, cons, 4)
	if d := nextDelivery(t, cons); d.DeliveryTag != 1 {
		t.Fatalf("first delivery tag %d", d.DeliveryTag)
	}
	if n := batchLen(cons); n != 3 {
		t.Fatalf("batch holds %d, want the other 3", n)
	}
	if s := cons.Stats(); s.Buffered != 3 || s.BufferedBytes != 3*100 {
		t.Fatalf("after one Next: Buffered %d, BufferedBytes %d, want 3 and 300", s.Buffered, s.BufferedBytes)
	}
	if !readerPaused(c) {
		t.Fatal("the reader went on with 3 of 4 deliveries still buffered (in Next's batch)")
	}
	if d := nextDelivery(t, cons); d.DeliveryTag != 2 {
		t.Fatalf("second delivery tag %d", d.DeliveryTag)
	}
	// Two left: half the limit. The reader reads again.
	waitFor(t, "the reader to go on", func() bool { return !readerPaused(c) })
	fc.deliverN(ch.ID(), cons.Tag(), 5, 100)
	for want := uint64(3); want <= 5; want++ {
		if d := nextDelivery(t, cons); d.DeliveryTag != want {
			t.Fatalf("got tag %d, want %d", d.DeliveryTag, want)
		}
	}
	if s := cons.Stats(); s.Buffered != 0 || s.BufferedBytes != 0 || s.MaxBuffered != 4 {
		t.Fatalf("at the end: %+v", s)
	}
}

// settleRecorder is a SettleHook that keeps the library's settlements.
type settleRecorder struct {
	mu   sync.Mutex
	tags []uint64
}

func (r *settleRecorder) OnSettle(ev SettleEvent) {
	if ev.ByLibrary {
		r.mu.Lock()
		r.tags = append(r.tags, ev.Tag)
		r.mu.Unlock()
	}
}

func (r *settleRecorder) got() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.tags)
}

// TestBatchDroppedWhenChannelCloses: a manual-ack consumer's buffered
// deliveries can no longer be acknowledged once its channel closed; those
// waiting in Next's batch are dropped with the rest (and reported to the
// SettleHooks as requeued by the broker), never handed out.
func TestBatchDroppedWhenChannelCloses(t *testing.T) {
	b := newFakeBroker(t)
	rec := &settleRecorder{}
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.Hooks = []Hook{rec}
	c := dialFake(t, cfg)
	ch := stallChannel(t, c)
	fc := b.conn(1)
	cons := batchConsume(t, fc, ch, ConsumeOptions{}, 5)
	if d := nextDelivery(t, cons); string(d.Body) != "1" {
		t.Fatalf("first body %q", d.Body)
	}
	// 2 and 3 in the batch, 4 and 5 behind them in the queue.
	fc.deliver(ch.ID(), cons.Tag(), 6, "6")
	waitFor(t, "6 buffered", func() bool { return cons.Stats().Buffered == 5 })
	fc.send(ch.ID(), &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - test"})
	<-ch.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if d, err := cons.Next(ctx); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("Next after the channel closed: %v, %v; want no delivery and the channel's error", d, err)
	}
	if s := cons.Stats(); s.Buffered != 0 || s.BufferedBytes != 0 {
		t.Fatalf("stats after the close: %+v", s)
	}
	select {
	case <-cons.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed")
	}
	waitFor(t, "the library's settlements", func() bool { return len(rec.got()) == 5 })
	if got := rec.got(); !slices.Equal(got, []uint64{2, 3, 4, 5, 6}) {
		t.Fatalf("dropped deliveries reported %v, want [2 3 4 5 6]", got)
	}
}

// TestBatchKeptAfterCancel: after Cancel (or a broker cancel), what Next
// already moved into its batch is still handed out, in order, before
// ErrConsumerClosed; Done closes after the last one.
func TestBatchKeptAfterCancel(t *testing.T) {
	b := newFakeBroker(t)
	_, ch := fakeChannel(t, b, false)
	fc := b.conn(1)
	cons := batchConsume(t, fc, ch, ConsumeOptions{}, 4)
	if d := nextDelivery(t, cons); string(d.Body) != "1" {
		t.Fatalf("first body %q", d.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	for want := 2; want <= 4; want++ {
		select {
		case <-cons.Done():
			t.Fatalf("Done closed with delivery %d still buffered", want)
		default:
		}
		d := nextDelivery(t, cons)
		if string(d.Body) != fmt.Sprint(want) {
			t.Fatalf("body %q, want %d", d.Body, want)
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("ack of %d after Cancel: %v", want, err)
		}
	}
	if _, err := cons.Next(ctx); !errors.Is(err, ErrConsumerClosed) {
		t.Fatalf("Next after the buffer: %v, want ErrConsumerClosed", err)
	}
	select {
	case <-cons.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after the last delivery")
	}
}

// TestBatchStaleAfterRecovery: a connection loss drops a manual-ack
// consumer's buffer, Next's batch included (the broker requeues those
// messages, and their tags mean nothing on the new connection): after the
// recovery Next returns the new connection's deliveries, whose acks carry
// that connection's tags, and the delivery taken before the loss fails to
// ack with ErrStaleDelivery. An AutoAck consumer keeps its batch.
func TestBatchStaleAfterRecovery(t *testing.T) {
	b := newFakeBroker(t)
	_, ch, rlog := fakeSetup(t, b, b.config())
	fc := b.conn(1)
	cons := batchConsume(t, fc, ch, ConsumeOptions{Tag: "m"}, 4)
	auto := batchConsume(t, fc, ch, ConsumeOptions{Tag: "a", AutoAck: true}, 0)
	for i := 5; i <= 7; i++ {
		fc.deliver(ch.ID(), "a", uint64(i), fmt.Sprint(i))
	}
	waitFor(t, "3 buffered for the AutoAck consumer", func() bool { return auto.Stats().Buffered == 3 })
	first := nextDelivery(t, cons)
	if string(first.Body) != "1" || batchLen(cons) != 3 {
		t.Fatalf("first body %q, batch %d", first.Body, batchLen(cons))
	}
	if d := nextDelivery(t, auto); string(d.Body) != "5" || batchLen(auto) != 2 {
		t.Fatalf("AutoAck first body %q, batch %d", d.Body, batchLen(auto))
	}
	fc.kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	fc2 := b.conn(2)
	// The new connection numbers its deliveries from 1 again.
	fc2.deliver(ch.ID(), "m", 1, "new")
	d := nextDelivery(t, cons)
	if string(d.Body) != "new" {
		t.Fatalf("after the recovery Next returned %q, want the new connection's delivery (the batch of the lost one is void)", d.Body)
	}
	if err := first.Ack(false); !errors.Is(err, ErrStaleDelivery) {
		t.Fatalf("ack of a delivery from before the loss: %v, want ErrStaleDelivery", err)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ack on the new connection", func() bool { return slices.Contains(fc2.methods(), "1:basic.ack") })
	for _, want := range []string{"6", "7"} {
		if d := nextDelivery(t, auto); string(d.Body) != want {
			t.Fatalf("AutoAck consumer after the recovery: body %q, want %s", d.Body, want)
		}
	}
	if s := cons.Stats(); s.Buffered != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestBatchManyGoroutines: goroutines calling Next on one consumer, while
// deliveries arrive one by one and in bursts, get every delivery exactly
// once; each is woken when something arrives (no delivery waits in the
// buffer while callers sleep), and all return ErrConsumerClosed after
// Cancel.
func TestBatchManyGoroutines(t *testing.T) {
	b := newFakeBroker(t)
	_, ch := fakeChannel(t, b, false)
	fc := b.conn(1)
	cons := batchConsume(t, fc, ch, ConsumeOptions{AutoAck: true}, 0)
	const goroutines, total = 8, 2000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	seen := make(map[string]int)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Go(func() {
			for {
				d, err := cons.Next(ctx)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				seen[string(d.Body)]++
				mu.Unlock()
			}
		})
	}
	for i := 1; i <= total; {
		// Bursts of 1 to 16 messages in one write, so that reads bring
		// one delivery or many.
		n := min(1+i%16, total-i+1)
		var burst []byte
		for j := range n {
			tag := uint64(i + j)
			burst = append(burst, scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: cons.Tag(), DeliveryTag: tag}, nil, []byte(fmt.Sprint(tag)), 0)...)
		}
		fc.wmu.Lock()
		fc.nc.Write(burst)
		fc.wmu.Unlock()
		i += n
	}
	waitFor(t, "every delivery taken", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == total
	})
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrConsumerClosed) {
			t.Errorf("a Next call ended with %v, want ErrConsumerClosed", err)
		}
	}
	for body, n := range seen {
		if n != 1 {
			t.Errorf("delivery %s handed out %d times", body, n)
		}
	}
	if s := cons.Stats(); s.Buffered != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestBatchDropRacesNext: a channel closed while goroutines take from
// Next's batch: each delivery is either handed out or dropped (and
// reported to the SettleHooks), never both and never neither.
func TestBatchDropRacesNext(t *testing.T) {
	for round := range 20 {
		b := newFakeBroker(t)
		rec := &settleRecorder{}
		cfg := b.config()
		cfg.DisableRecovery = true
		cfg.Hooks = []Hook{rec}
		c := dialFake(t, cfg)
		ch := stallChannel(t, c)
		fc := b.conn(1)
		cons := batchConsume(t, fc, ch, ConsumeOptions{}, 0)
		const total = 300
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var mu sync.Mutex
		var handed []uint64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					d, err := cons.Next(ctx)
					if err != nil {
						return
					}
					mu.Lock()
					handed = append(handed, d.DeliveryTag)
					mu.Unlock()
				}
			})
		}
		var burst []byte
		for tag := uint64(1); tag <= total; tag++ {
			burst = append(burst, scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: cons.Tag(), DeliveryTag: tag}, nil, []byte("x"), 0)...)
			if tag%50 == 0 {
				fc.wmu.Lock()
				fc.nc.Write(burst)
				fc.wmu.Unlock()
				burst = burst[:0]
			}
		}
		fc.send(ch.ID(), &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - test"})
		wg.Wait()
		cancel()
		mu.Lock()
		got := slices.Clone(handed)
		mu.Unlock()
		nHanded := len(got)
		waitFor(t, "the library's settlements", func() bool { return nHanded+len(rec.got()) >= total })
		got = append(got, rec.got()...)
		slices.Sort(got)
		if len(got) != total {
			t.Fatalf("round %d: %d handed out + %d dropped, want each of the %d deliveries exactly once", round, nHanded, len(got)-nHanded, total)
		}
		for i, tag := range got {
			if tag != uint64(i+1) {
				t.Fatalf("round %d: delivery %d handed out and dropped, or neither", round, i+1)
			}
		}
		t.Logf("round %d: %d handed out, %d dropped", round, nHanded, total-nHanded)
		c.Close(context.Background())
	}
}
