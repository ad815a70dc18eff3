package pika

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Adversarial tests of the day's root-package changes (task batchreview):
// the byte counts' timer, the final recovery codes, and the batched
// hand-over to Next.

// lateBytes is a BytesHook that adds up what it is told and notes a call
// made after the test marked Close as returned.
type lateBytes struct {
	mu     sync.Mutex
	read   int64
	wrote  int64
	closed bool // Close returned
	late   int  // OnBytes calls after that
}

func (h *lateBytes) OnBytes(_ *Conn, read, written int64) {
	h.mu.Lock()
	h.read += read
	h.wrote += written
	if h.closed {
		h.late++
	}
	h.mu.Unlock()
}

// TestReviewBytesAfterOwnEndThenClose: a connection that ended on its own
// (the broker closed it, recovery off) and is then closed by the
// application reports its last byte counts before Close returns, as a
// Close of a live connection does: none reaches the BytesHooks afterwards.
// It failed twice: the throttle's timer held the counts of the last reads
// (the broker's connection.close among them) for up to bytesEvery after
// Close returned, and Close did not wait for the link's writer, which
// still wrote the close-ok (and counted it) after Close returned.
func TestReviewBytesAfterOwnEndThenClose(t *testing.T) {
	for round := range 3 {
		b := newFakeBroker(t)
		h := &lateBytes{}
		cfg := b.config()
		cfg.DisableRecovery = true
		cfg.Hooks = []Hook{h}
		c := dialFake(t, cfg)
		// Within bytesEvery of the first read (whose drain is not
		// delayed): the close's bytes wait for the timer.
		b.conn(1).send(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - test"})
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the broker's close did not end the connection")
		}
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		h.mu.Lock()
		h.closed = true
		atClose, wroteAtClose := h.read, h.wrote
		h.mu.Unlock()
		// Nothing may come later: wait well past the throttle's delay.
		time.Sleep(3 * bytesEvery)
		h.mu.Lock()
		late, total, wrote := h.late, h.read, h.wrote
		h.mu.Unlock()
		if late != 0 {
			t.Fatalf("round %d: %d OnBytes calls after Close returned (read %d reported at Close, %d in all; written %d at Close, %d in all)", round, late, atClose, total, wroteAtClose, wrote)
		}
	}
}

// TestReviewForcedCloseDuringRestoreRecovers: a recovery attempt that the
// broker closes with 320 CONNECTION_FORCED (what a broker shutting down or
// restarting sends), at the login or during the restore, is not final: the
// next attempt recovers.
func TestReviewForcedCloseDuringRestoreRecovers(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func(m wire.Method) bool
	}{
		{"login", func(m wire.Method) bool { _, ok := m.(*wire.ConnectionStartOk); return ok }},
		{"connection.open", func(m wire.Method) bool { _, ok := m.(*wire.ConnectionOpen); return ok }},
		{"restore channel.open", func(m wire.Method) bool { _, ok := m.(*wire.ChannelOpen); return ok }},
		{"restore queue.declare", func(m wire.Method) bool { _, ok := m.(*wire.QueueDeclare); return ok }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t)
			b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
				if fc.n != 2 || !tc.at(m) {
					return false
				}
				fc.send(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"})
				return true
			})
			c, ch, rlog := fakeSetup(t, b, b.config())
			b.conn(1).kill()
			rlog.wait(RecoveryRecovered, 1, 10*time.Second)
			if n := rlog.count(RecoveryGaveUp); n != 0 {
				t.Fatalf("recovery gave up:\n%s", rlog.String())
			}
			if b.count() != 3 {
				t.Fatalf("%d connections, want the refused attempt and a third", b.count())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := ch.QueueDeclare(ctx, "", QueueDeclareOptions{Exclusive: true}); err != nil {
				t.Fatalf("the recovered channel: %v", err)
			}
			if c.IsClosed() {
				t.Fatal("connection closed")
			}
			if s := rlog.String(); !strings.Contains(s, "CONNECTION_FORCED") {
				t.Errorf("events:\n%s\nwant the attempt's 320 reported", s)
			}
		})
	}
}

// blockingBytes is a BytesHook whose calls block until release is closed.
type blockingBytes struct {
	entered chan struct{} // closed at the first call
	once    sync.Once
	release chan struct{}
}

func (h *blockingBytes) OnBytes(*Conn, int64, int64) {
	h.once.Do(func() { close(h.entered) })
	<-h.release
}

// TestReviewCloseEndedConnBlockedHook: Close of a Conn that ended on its
// own, with a ctx without deadline, while a BytesHook blocks: the wait for
// the hooks is bounded by Config.CloseTimeout, as for a live Conn; Close
// does not hang.
func TestReviewCloseEndedConnBlockedHook(t *testing.T) {
	b := newFakeBroker(t)
	h := &blockingBytes{entered: make(chan struct{}), release: make(chan struct{})}
	defer close(h.release)
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.CloseTimeout = 200 * time.Millisecond
	cfg.Hooks = []Hook{h}
	c := dialFake(t, cfg)
	select {
	case <-h.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnBytes call")
	}
	b.conn(1).send(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - test"})
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the broker's close did not end the connection")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close(context.Background()) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs behind a blocked BytesHook")
	}
}

// TestReviewBatchAcksAcrossLoss: goroutines take deliveries with Next and
// ack each at once while the connection is lost in the middle of a flood
// and recovery restarts the consumer, which the new connection then
// floods under broker tags that start from 1 again. Every ack either
// reaches the connection the delivery came on or fails with
// ErrStaleDelivery: the new connection receives acks only of tags it
// delivered, each once, and every one of its deliveries is handed out
// exactly once.
func TestReviewBatchAcksAcrossLoss(t *testing.T) {
	for round := range 5 {
		b := newFakeBroker(t)
		var amu sync.Mutex
		acks := map[int][]uint64{} // connection number -> acked broker tags
		b.setHook(func(fc *fakeConn, _ uint16, m wire.Method) bool {
			if a, ok := m.(*wire.BasicAck); ok {
				amu.Lock()
				acks[fc.n] = append(acks[fc.n], a.DeliveryTag)
				amu.Unlock()
			}
			return false
		})
		c, ch, rlog := fakeSetup(t, b, b.config())
		fc := b.conn(1)
		cons := batchConsume(t, fc, ch, ConsumeOptions{Tag: "m"}, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var mu sync.Mutex
		handedNew := map[string]int{}
		var stale, fresh int
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 4 {
			wg.Go(func() {
				for {
					d, err := cons.Next(ctx)
					if err != nil {
						return
					}
					aerr := d.Ack(false)
					mu.Lock()
					switch {
					case aerr == nil:
						fresh++
					case errors.Is(aerr, ErrStaleDelivery):
						stale++
					default:
						errs <- fmt.Errorf("ack of %d (%q): %v", d.DeliveryTag, d.Body, aerr)
					}
					if strings.HasPrefix(string(d.Body), "new") {
						handedNew[string(d.Body)]++
					}
					mu.Unlock()
				}
			})
		}
		const old, fresh2 = 400, 200
		var burst []byte
		for tag := uint64(1); tag <= old; tag++ {
			burst = append(burst, scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: "m", DeliveryTag: tag}, nil, []byte(fmt.Sprint("old", tag)), 0)...)
			if tag%40 == 0 {
				fc.wmu.Lock()
				fc.nc.Write(burst)
				fc.wmu.Unlock()
				burst = burst[:0]
			}
			if tag == old/2 {
				go fc.kill()
			}
		}
		rlog.wait(RecoveryRecovered, 1, 10*time.Second)
		fc2 := b.conn(2)
		for tag := uint64(1); tag <= fresh2; tag++ {
			burst = append(burst, scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: "m", DeliveryTag: tag}, nil, []byte(fmt.Sprint("new", tag)), 0)...)
			if tag%25 == 0 {
				fc2.wmu.Lock()
				fc2.nc.Write(burst)
				fc2.wmu.Unlock()
				burst = burst[:0]
			}
		}
		waitFor(t, "every new delivery handed out", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(handedNew) == fresh2
		})
		waitFor(t, "the new connection's acks", func() bool {
			amu.Lock()
			defer amu.Unlock()
			return len(acks[2]) >= fresh2
		})
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for body, n := range handedNew {
			if n != 1 {
				t.Errorf("round %d: %s handed out %d times", round, body, n)
			}
		}
		amu.Lock()
		got := slices.Clone(acks[2])
		amu.Unlock()
		slices.Sort(got)
		if len(got) != fresh2 || got[0] != 1 || got[len(got)-1] != fresh2 || len(slices.Compact(got)) != fresh2 {
			t.Fatalf("round %d: the new connection received %d acks %v, want tags 1..%d once each", round, len(got), got, fresh2)
		}
		mu.Lock()
		t.Logf("round %d: %d acks sent, %d stale", round, fresh, stale)
		mu.Unlock()
		c.Close(context.Background())
	}
}

// TestReviewCloseFromInlineHandler: an inline handler (running on the
// reader goroutine) that closes the Conn, with a ctx that bounds the wait:
// Close returns (the broker's close-ok cannot be read while the handler
// runs, so it ends with ctx), the handler returns and the reader ends; it
// must not wait for the reader goroutine, which is the caller (it waited
// for itself for ever). Also when the broker's close came in the same read
// as the delivery (recovery off).
func TestReviewCloseFromInlineHandler(t *testing.T) {
	for _, ended := range []bool{false, true} {
		t.Run(fmt.Sprint("ended=", ended), func(t *testing.T) {
			b, c := stallFake(t, false)
			fc := b.conn(1)
			ch := stallChannel(t, c)
			closed := make(chan error, 1)
			cons := inlineConsume(t, ch, ConsumeOptions{AutoAck: true}, func(d *Delivery) {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				closed <- c.Close(ctx)
			})
			msg := scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: cons.Tag(), DeliveryTag: 1}, nil, []byte("x"), 0)
			if ended {
				msg = append(msg, scripted.Method(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - test"})...)
			}
			fc.wmu.Lock()
			fc.nc.Write(msg)
			fc.wmu.Unlock()
			select {
			case <-closed:
			case <-time.After(20 * time.Second):
				t.Fatal("Close from an inline handler hangs")
			}
			select {
			case <-c.Done():
			case <-time.After(20 * time.Second):
				t.Fatal("the Conn did not end")
			}
		})
	}
}

// TestReviewSuspendResumesAfterBatchDrained: a suspended consumer
// (ConsumerSuspend, BufferSize 4) whose cancel-ok comes only after the
// application took the whole buffer with Next, the last takes from the
// batch made without the connection's lock (nothing watched them once the
// buffer was down to half): the cancel-ok finds the buffer empty and
// restarts the consumer at once; the deliveries of the restarted consumer
// reach Next.
func TestReviewSuspendResumesAfterBatchDrained(t *testing.T) {
	b := newFakeBroker(t)
	release := make(chan struct{})
	var once sync.Once
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if cn, ok := m.(*wire.BasicCancel); ok {
			once.Do(func() {
				go func() {
					<-release
					fc.send(ch, &wire.BasicCancelOk{ConsumerTag: cn.ConsumerTag})
				}()
			})
			return true
		}
		return false
	})
	_, ch := fakeChannel(t, b, false)
	fc := b.conn(1)
	cons := batchConsume(t, fc, ch, ConsumeOptions{Tag: "s", BufferSize: 4, Overflow: ConsumerSuspend}, 4)
	countConsumes := func() int {
		n := 0
		for _, m := range fc.methods() {
			if strings.HasSuffix(m, ":basic.consume") {
				n++
			}
		}
		return n
	}
	waitFor(t, "the suspension's basic.cancel", func() bool { return slices.Contains(fc.methods(), fmt.Sprintf("%d:basic.cancel", ch.ID())) })
	for want := 1; want <= 4; want++ {
		if d := nextDelivery(t, cons); string(d.Body) != fmt.Sprint(want) {
			t.Fatalf("body %q, want %d", d.Body, want)
		}
	}
	if n := countConsumes(); n != 1 {
		t.Fatalf("%d basic.consume before the cancel-ok, want 1", n)
	}
	close(release)
	waitFor(t, "the restart's basic.consume", func() bool { return countConsumes() == 2 })
	fc.deliver(ch.ID(), "s", 5, "5")
	if d := nextDelivery(t, cons); string(d.Body) != "5" {
		t.Fatalf("after the restart: body %q", d.Body)
	}
	if s := cons.Stats(); s.Buffered != 0 || s.Suspended != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestReviewCancelledBufferDroppedAtLoss: a manual-ack consumer cancelled
// with deliveries still buffered (some in Next's batch) keeps them
// takeable, but once the channel closes, or the connection is lost, they
// can no longer be acknowledged and the broker requeues them: they are
// dropped as a running consumer's are, not handed out to fail their ack.
func TestReviewCancelledBufferDroppedAtLoss(t *testing.T) {
	for _, how := range []string{"channel close", "connection loss"} {
		t.Run(how, func(t *testing.T) {
			b := newFakeBroker(t)
			rec := &settleRecorder{}
			cfg := b.config()
			cfg.Hooks = []Hook{rec}
			c := dialFake(t, cfg)
			rlog := watchRecovery(t, c)
			ch := stallChannel(t, c)
			fc := b.conn(1)
			cons := batchConsume(t, fc, ch, ConsumeOptions{Tag: "c"}, 4)
			if d := nextDelivery(t, cons); string(d.Body) != "1" {
				t.Fatalf("first body %q", d.Body)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := cons.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			if s := cons.Stats(); s.Buffered != 3 {
				t.Fatalf("after Cancel: %+v", s)
			}
			if how == "channel close" {
				fc.send(ch.ID(), &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - test"})
				<-ch.Done()
			} else {
				fc.kill()
				rlog.wait(RecoveryRecovered, 1, 10*time.Second)
			}
			if d, err := cons.Next(ctx); !errors.Is(err, ErrConsumerClosed) {
				var body string
				if d != nil {
					body = string(d.Body)
					t.Logf("its ack: %v", d.Ack(false))
				}
				t.Fatalf("Next after the %s: delivery %q, error %v; want none and ErrConsumerClosed", how, body, err)
			}
			if s := cons.Stats(); s.Buffered != 0 {
				t.Fatalf("stats %+v", s)
			}
			select {
			case <-cons.Done():
			case <-ctx.Done():
				t.Fatal("Done not closed")
			}
			if how == "channel close" {
				waitFor(t, "the library's settlements", func() bool { return len(rec.got()) == 3 })
				if got := rec.got(); !slices.Equal(got, []uint64{2, 3, 4}) {
					t.Fatalf("dropped deliveries reported %v, want [2 3 4]", got)
				}
			}
		})
	}
}

// TestReviewCloseFromInlineHandlerDuringRestore: an inline consumer that
// recovery restarted receives a delivery while the restore still waits
// for another consumer's basic.consume-ok, and its handler closes the
// Conn: Close returns (bounded by its ctx) instead of waiting for the
// recovery, which waits for the reader, which is the caller.
func TestReviewCloseFromInlineHandlerDuringRestore(t *testing.T) {
	b := newFakeBroker(t)
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		// The second consumer's restart is never answered.
		cm, ok := m.(*wire.BasicConsume)
		return ok && fc.n == 2 && cm.ConsumerTag == "held"
	})
	cfg := b.config()
	cfg.HandshakeTimeout = 30 * time.Second // the restore waits for "held" until Close
	c := dialFake(t, cfg)
	ch := stallChannel(t, c)
	closed := make(chan error, 1)
	entered := make(chan struct{}, 1)
	cons := inlineConsume(t, ch, ConsumeOptions{Tag: "inl", AutoAck: true}, func(d *Delivery) {
		if d.Body[0] != 'r' {
			return
		}
		entered <- struct{}{}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		closed <- c.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ch.Consume(ctx, "q2", ConsumeOptions{Tag: "held", AutoAck: true}); err != nil {
		t.Fatal(err)
	}
	b.conn(1).kill()
	fc2 := waitConn(t, b, 2, 10*time.Second)
	waitFor(t, "the restore's basic.consume of the held consumer", func() bool {
		n := 0
		for _, m := range fc2.methods() {
			if strings.HasSuffix(m, ":basic.consume") {
				n++
			}
		}
		return n == 2
	})
	fc2.deliver(ch.ID(), cons.Tag(), 1, "r")
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the restarted inline consumer's handler was not called")
	}
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close from an inline handler during the restore hangs")
	}
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the Conn did not end")
	}
}
