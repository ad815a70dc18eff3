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

// The tests below check when the reader pauses for a slow consumer, against
// fakeBroker (recovery_test.go): a full consumer buffer may stop the reader
// only while nothing is awaited from the broker, and never holds up a
// reply, a confirmation or a close.

// stallFake dials a fake broker without heartbeats, with or without
// recovery.
func stallFake(t *testing.T, recovery bool) (*fakeBroker, *Conn) {
	t.Helper()
	b := newFakeBroker(t)
	cfg := b.config()
	cfg.DisableRecovery = !recovery
	cfg.Heartbeat = NoHeartbeat
	return b, dialFake(t, cfg)
}

// deliver writes a basic.deliver with a body of n bytes to the client. It
// blocks while the client does not read (net.Pipe).
func (fc *fakeConn) deliverN(ch uint16, tag string, dtag uint64, n int) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.nc.Write(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: tag, DeliveryTag: dtag, RoutingKey: "q"}, &wire.Properties{}, make([]byte, n), 128<<10))
}

// deliverAsync delivers in the background and returns a channel closed
// once the client has read the whole message.
func (fc *fakeConn) deliverAsync(ch uint16, tag string, dtag uint64, n int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fc.deliverN(ch, tag, dtag, n)
	}()
	return done
}

func stallChannel(t *testing.T, c *Conn) *Channel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func stallConsume(t *testing.T, ch *Channel, queue string, opts ConsumeOptions) *Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := ch.Consume(ctx, queue, opts)
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

// waitFor (callbacks_test.go) polls a condition, failing after 10 s (a
// hang bound, not a timing assertion).

func readerPaused(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readPaused
}

// fillToPause delivers n messages to an AutoAck consumer with BufferSize n
// and waits until the reader has paused.
func fillToPause(t *testing.T, fc *fakeConn, ch *Channel, cons *Consumer, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		fc.deliverN(ch.ID(), cons.Tag(), uint64(i), 100)
	}
	waitFor(t, "the reader to pause", func() bool { return readerPaused(ch.conn) })
	if s := cons.Stats(); s.Buffered != n {
		t.Fatalf("buffered %d, want %d", s.Buffered, n)
	}
}

// TestStallPausesWhileNothingAwaited: with nothing awaited, a full buffer
// stops the reader (TCP back-pressure, the only brake on an AutoAck flood),
// and taking a delivery lets it go on.
func TestStallPausesWhileNothingAwaited(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 2})
	fillToPause(t, fc, ch, cons, 2)
	third := fc.deliverAsync(ch.ID(), cons.Tag(), 3, 100)
	time.Sleep(100 * time.Millisecond)
	select {
	case <-third:
		t.Fatal("the paused reader read a third delivery")
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cons.Next(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-third:
	case <-ctx.Done():
		t.Fatal("the reader did not go on after the buffer drained")
	}
}

// TestStallReplyAwaitedWhilePaused: an RPC on another channel while the
// reader is paused for a full buffer gets its reply.
func TestStallReplyAwaitedWhilePaused(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	other := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 2})
	fillToPause(t, fc, ch, cons, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := other.QueueDeclare(ctx, "other", QueueDeclareOptions{}); err != nil {
		t.Fatalf("QueueDeclare while a consumer's buffer is full: %v", err)
	}
	// The reply came through; with nothing awaited any more, the reader
	// pauses again.
	waitFor(t, "the reader to pause again", func() bool { return readerPaused(c) })
}

// TestStallConfirmOutstandingWhilePaused: a publisher confirmation
// outstanding while the reader is paused arrives.
func TestStallConfirmOutstandingWhilePaused(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	pub := stallChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	published := uint64(0)
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); ok && chID == pub.ID() {
			mu.Lock()
			published++
			tag := published
			mu.Unlock()
			fc.send(chID, &wire.BasicAck{DeliveryTag: tag})
			return true
		}
		return false
	})
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 2})
	fillToPause(t, fc, ch, cons, 2)
	conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	if err := conf.Wait(ctx); err != nil {
		t.Fatalf("confirmation while a consumer's buffer is full: %v", err)
	}
	if err := pub.WaitConfirms(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStallCloseWhilePaused: closing another channel while the reader is
// paused completes even when the broker sends the full consumer another
// delivery before the close-ok; so does closing the connection.
func TestStallCloseWhilePaused(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	other := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 2, Overflow: ConsumerDiscard})
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.ChannelClose); ok && chID == other.ID() {
			go func() {
				fc.deliverN(ch.ID(), cons.Tag(), 3, 100)
				fc.send(chID, &wire.ChannelCloseOk{})
			}()
			return true
		}
		return false
	})
	fillToPause(t, fc, ch, cons, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := other.Close(ctx); err != nil {
		t.Fatalf("Channel.Close while a consumer's buffer is full: %v", err)
	}
	waitFor(t, "the reader to pause again", func() bool { return readerPaused(c) })
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Conn.Close while a consumer's buffer is full: %v", err)
	}
}

// TestStallPrefetchNeverPauses: a manual-ack consumer whose channel has a
// prefetch count (per consumer or global) buffers all the broker may send,
// whatever BufferSize says, and never pauses the reader.
func TestStallPrefetchNeverPauses(t *testing.T) {
	for _, global := range []bool{false, true} {
		t.Run(fmt.Sprintf("global=%v", global), func(t *testing.T) {
			b, c := stallFake(t, false)
			fc := b.conn(1)
			ch := stallChannel(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := ch.Qos(ctx, QosOptions{PrefetchCount: 10, Global: global}); err != nil {
				t.Fatal(err)
			}
			cons := stallConsume(t, ch, "q", ConsumeOptions{BufferSize: 2})
			// In the background: a paused reader would block the writes.
			go func() {
				for i := 1; i <= 10; i++ {
					fc.deliverN(ch.ID(), cons.Tag(), uint64(i), 100)
				}
			}()
			waitFor(t, "10 buffered", func() bool { return cons.Stats().Buffered == 10 })
			if s := cons.Stats(); s.Buffered != 10 || readerPaused(c) {
				t.Fatalf("buffered %d (want 10), reader paused %v", s.Buffered, readerPaused(c))
			}
		})
	}
}

// withheldReply makes the fake broker hold back its answer to a
// queue.declare of name until release is called, so that a reply is
// awaited meanwhile.
func withheldReply(b *fakeBroker, name string, next func(fc *fakeConn, ch uint16, m wire.Method) bool) (release func()) {
	var once sync.Once
	gate := make(chan struct{})
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if d, ok := m.(*wire.QueueDeclare); ok && d.Queue == name {
			go func() {
				<-gate
				fc.send(ch, &wire.QueueDeclareOk{Queue: name})
			}()
			return true
		}
		return next != nil && next(fc, ch, m)
	})
	return func() { once.Do(func() { close(gate) }) }
}

// awaitDeclare starts a queue.declare of name on ch and returns its result.
func awaitDeclare(ch *Channel, name string) <-chan error {
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := ch.QueueDeclare(ctx, name, QueueDeclareOptions{})
		res <- err
	}()
	return res
}

// TestStallHardLimitDiscard: while a reply is awaited, deliveries past the
// hard limit (twice BufferSize) are dropped (AutoAck) or rejected with
// requeue (manual ack, with the broker's tags), and counted.
func TestStallHardLimitDiscard(t *testing.T) {
	for _, autoAck := range []bool{true, false} {
		t.Run(fmt.Sprintf("autoAck=%v", autoAck), func(t *testing.T) {
			b, c := stallFake(t, false)
			fc := b.conn(1)
			var mu sync.Mutex
			var rejected []uint64
			release := withheldReply(b, "slow", func(fc *fakeConn, ch uint16, m wire.Method) bool {
				if r, ok := m.(*wire.BasicReject); ok {
					mu.Lock()
					if r.Requeue {
						rejected = append(rejected, r.DeliveryTag)
					}
					mu.Unlock()
				}
				return false
			})
			defer release()
			ch := stallChannel(t, c)
			other := stallChannel(t, c)
			cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: autoAck, BufferSize: 2, Overflow: ConsumerDiscard})
			declared := awaitDeclare(other, "slow")
			waitFor(t, "the declare to be awaited", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return len(c.l.waiters) > 0
			})
			go func() {
				for i := 1; i <= 10; i++ {
					fc.deliverN(ch.ID(), cons.Tag(), uint64(i), 100)
				}
			}()
			waitFor(t, "10 deliveries handled", func() bool { s := cons.Stats(); return s.Buffered+int(s.Dropped+s.Requeued) == 10 })
			s := cons.Stats()
			if s.Buffered != 4 || s.MaxBuffered != 4 {
				t.Fatalf("stats %+v: want 4 buffered (the hard limit)", s)
			}
			if autoAck && (s.Dropped != 6 || s.Requeued != 0) || !autoAck && (s.Requeued != 6 || s.Dropped != 0) {
				t.Fatalf("stats %+v: want 6 discarded", s)
			}
			release()
			if err := <-declared; err != nil {
				t.Fatal(err)
			}
			if !autoAck {
				waitFor(t, "6 rejects", func() bool { mu.Lock(); defer mu.Unlock(); return len(rejected) == 6 })
				mu.Lock()
				defer mu.Unlock()
				if fmt.Sprint(rejected) != "[5 6 7 8 9 10]" {
					t.Fatalf("rejected %v, want [5 6 7 8 9 10]", rejected)
				}
			}
		})
	}
}

// TestStallSuspendResume: a consumer on a queue declared through the Conn
// (not auto-delete) whose buffer reaches its soft limit is cancelled at the
// broker, keeps what the broker had sent before the cancel-ok, and is
// started again with the same tag once drained to half.
func TestStallSuspendResume(t *testing.T) {
	b, c := stallFake(t, false)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ch.QueueDeclare(ctx, "sq", QueueDeclareOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	cancelled := make(chan struct{})
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.BasicCancel:
			mu.Lock()
			order = append(order, "cancel")
			mu.Unlock()
			close(cancelled)
			// What the broker sent before it saw the cancel.
			go func() {
				for tag := uint64(5); tag <= 7; tag++ {
					fc.deliverN(chID, m.ConsumerTag, tag, 100)
				}
				fc.send(chID, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag})
			}()
			return true
		case *wire.BasicConsume:
			mu.Lock()
			order = append(order, "consume "+m.ConsumerTag)
			mu.Unlock()
		}
		return false
	})
	cons := stallConsume(t, ch, "sq", ConsumeOptions{AutoAck: true, BufferSize: 4})
	for tag := uint64(1); tag <= 4; tag++ {
		fc.deliverN(ch.ID(), cons.Tag(), tag, 100)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("no basic.cancel for the full consumer")
	}
	// The suspended consumer does not pause the reader: it takes what the
	// broker sent before the cancel-ok.
	waitFor(t, "7 buffered", func() bool { return cons.Stats().Buffered == 7 })
	if readerPaused(c) {
		t.Fatal("the reader paused for a suspended consumer")
	}
	for want := uint64(1); want <= 7; want++ {
		if d, err := cons.Next(ctx); err != nil || d.DeliveryTag != want {
			t.Fatalf("got %v (err %v), want tag %d", d, err, want)
		}
	}
	waitFor(t, "the restart", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 3 })
	mu.Lock()
	got := fmt.Sprint(order)
	mu.Unlock()
	if want := fmt.Sprintf("[consume %s cancel consume %s]", cons.Tag(), cons.Tag()); got != want {
		t.Fatalf("consumer methods %s, want %s", got, want)
	}
	if s := cons.Stats(); s.Suspended != 1 || s.Dropped != 0 || s.MaxBuffered != 7 || s.SuspendOverrun != 3 {
		t.Fatalf("stats %+v", s)
	}
	// Deliveries flow again to the restarted consumer.
	fc.deliverN(ch.ID(), cons.Tag(), 8, 100)
	for _, want := range []uint64{8} {
		if d, err := cons.Next(ctx); err != nil || d.DeliveryTag != want {
			t.Fatalf("after the restart: got %v (err %v), want tag %d", d, err, want)
		}
	}
}

// TestConsumeAbandonedRejectsBrokerTag: after a recovery (client tags are
// the broker's plus an offset), deliveries reaching a consumer abandoned
// before its consume-ok are rejected with the broker's tag, so they go back
// to the queue.
func TestConsumeAbandonedRejectsBrokerTag(t *testing.T) {
	b, c := stallFake(t, true)
	rlog := watchRecovery(t, c)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{Tag: "first"})
	fc1 := b.conn(1)
	for i := 1; i <= 3; i++ {
		fc1.deliverN(ch.ID(), "first", uint64(i), 10)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if _, err := cons.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fc1.kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	fc2 := b.conn(2)

	var mu sync.Mutex
	var rejects []string
	var lateCh uint16
	consumeSeen := make(chan struct{})
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.BasicConsume:
			if m.ConsumerTag == "late" {
				lateCh = chID
				close(consumeSeen) // not answered: the caller gives up
				return true
			}
		case *wire.BasicReject:
			mu.Lock()
			rejects = append(rejects, fmt.Sprintf("%d requeue=%v", m.DeliveryTag, m.Requeue))
			mu.Unlock()
		}
		return false
	})
	lctx, lcancel := context.WithCancel(context.Background())
	go func() {
		<-consumeSeen
		lcancel()
	}()
	if _, err := ch.Consume(lctx, "q", ConsumeOptions{Tag: "late"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume: %v, want context.Canceled", err)
	}
	// The broker starts it late and delivers to it before the cancel.
	fc2.send(lateCh, &wire.BasicConsumeOk{ConsumerTag: "late"})
	fc2.deliverN(lateCh, "late", 1, 10)
	waitFor(t, "the reject of the late delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(rejects) > 0 })
	mu.Lock()
	defer mu.Unlock()
	if rejects[0] != "1 requeue=true" {
		t.Fatalf("rejects %v, want [1 requeue=true] (the broker's tag)", rejects)
	}
}

// TestConsumeAbandonedRequeuesBuffered: a consumer abandoned with
// deliveries already buffered requeues them (with the broker's tags).
func TestConsumeAbandonedRequeuesBuffered(t *testing.T) {
	b, c := stallFake(t, false)
	ch := stallChannel(t, c)
	var mu sync.Mutex
	var rejects []uint64
	gate := make(chan struct{})
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.BasicConsume:
			if m.NoWait {
				return true
			}
			// The broker starts the consumer and delivers, but the
			// consume-ok is still on its way when the caller gives up.
			go func() {
				<-gate
				fc.send(chID, &wire.BasicConsumeOk{ConsumerTag: m.ConsumerTag})
			}()
			return true
		case *wire.BasicReject:
			mu.Lock()
			rejects = append(rejects, m.DeliveryTag)
			mu.Unlock()
		}
		return false
	})
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := ch.Consume(ctx, "q", ConsumeOptions{Tag: "ab"})
		res <- err
	}()
	waitFor(t, "the consume", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return ch.consumers["ab"] != nil
	})
	// The engine knows the tag only from consume-ok: register it the way
	// a no-wait consume would, so that the deliveries below reach the
	// consumer before its consume-ok.
	c.mu.Lock()
	c.eng.Send(ch.ID(), &wire.BasicConsume{Queue: "q", ConsumerTag: "ab", NoWait: true})
	cons := ch.consumers["ab"]
	c.mu.Unlock()
	b.conn(1).deliverN(ch.ID(), "ab", 1, 10)
	b.conn(1).deliverN(ch.ID(), "ab", 2, 10)
	waitFor(t, "2 buffered", func() bool { return cons.Stats().Buffered == 2 })
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume: %v", err)
	}
	close(gate)
	waitFor(t, "2 rejects", func() bool { mu.Lock(); defer mu.Unlock(); return len(rejects) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(rejects) != "[1 2]" {
		t.Fatalf("rejects %v, want [1 2]", rejects)
	}
}

// TestConsumeRacesRecovery: a Consume racing a connection loss either
// succeeds, with exactly one consumer of its tag running at the broker, or
// fails, with none left there; it never sends basic.consume twice for the
// tag (a recovery restoring it and the call sending it again), nor leaves a
// consumer running that nobody holds. Run with -race: the link the consume
// goes to must be read under the connection's lock.
func TestConsumeRacesRecovery(t *testing.T) {
	for i := range 200 {
		b := newFakeBroker(t)
		cfg := b.config()
		cfg.Heartbeat = NoHeartbeat
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := DialConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rlog := watchRecovery(t, c)
		ch, err := c.Channel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		killed := make(chan struct{})
		go func() {
			defer close(killed)
			time.Sleep(time.Duration(i%16) * 25 * time.Microsecond)
			b.conn(1).kill()
		}()
		cons, cerr := ch.Consume(ctx, "q", ConsumeOptions{Tag: "racer"})
		<-killed
		rlog.wait(RecoveryRecovered, 1, 10*time.Second)
		// Let any late cancel or consume reach the fake broker: a round
		// trip on the channel comes after them.
		if cerr == nil {
			if _, err := ch.QueueDeclarePassive(ctx, "q"); err != nil {
				t.Fatalf("iteration %d: %v", i, err)
			}
		} else {
			waitFor(t, "the channel to be usable", func() bool {
				_, err := ch.QueueDeclarePassive(ctx, "q")
				return err == nil
			})
		}
		running := 0
		for _, m := range b.conn(2).methods() {
			switch m {
			case fmt.Sprintf("%d:basic.consume", ch.ID()):
				running++
				if running > 1 {
					t.Fatalf("iteration %d: basic.consume sent twice for one consumer on the new connection: %v", i, b.conn(2).methods())
				}
			case fmt.Sprintf("%d:basic.cancel", ch.ID()):
				running--
			}
		}
		if cerr == nil && (running != 1 || cons.Err() != nil) {
			t.Fatalf("iteration %d: Consume succeeded but %d consumers run at the broker (err %v): %v", i, running, cons.Err(), b.conn(2).methods())
		}
		if cerr != nil && running != 0 {
			t.Fatalf("iteration %d: Consume failed (%v) but a consumer still runs at the broker: %v", i, cerr, b.conn(2).methods())
		}
		c.Close(ctx)
		cancel()
	}
}

// TestConsumerEndCauses: a consumer ends with ErrConsumerClosed only after
// Cancel; when its channel closes it ends with the channel's close cause
// (the broker's *Error, ErrChannelClosed after Channel.Close, ErrClosed
// after Conn.Close), and with ErrConsumerCancelled after a broker cancel.
func TestConsumerEndCauses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check := func(what string, cons *Consumer, want error) {
		t.Helper()
		select {
		case <-cons.Done():
		case <-ctx.Done():
			t.Fatalf("%s: the consumer did not end", what)
		}
		if err := cons.Err(); !errors.Is(err, want) {
			t.Errorf("%s: Err() = %v, want %v", what, err, want)
		}
		if _, err := cons.Next(ctx); !errors.Is(err, want) {
			t.Errorf("%s: Next = %v, want %v", what, err, want)
		}
		if want != ErrConsumerClosed && errors.Is(cons.Err(), ErrConsumerClosed) {
			t.Errorf("%s: Err() matches ErrConsumerClosed", what)
		}
	}
	b, c := stallFake(t, false)
	ch := stallChannel(t, c)

	cons := stallConsume(t, ch, "q", ConsumeOptions{})
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	check("Cancel", cons, ErrConsumerClosed)

	cons = stallConsume(t, ch, "q", ConsumeOptions{})
	b.conn(1).send(ch.ID(), &wire.BasicCancel{ConsumerTag: cons.Tag()})
	check("broker cancel", cons, ErrConsumerCancelled)

	cons = stallConsume(t, ch, "q", ConsumeOptions{})
	b.conn(1).send(ch.ID(), &wire.ChannelClose{ReplyCode: uint16(wire.ReplyNotFound), ReplyText: "NOT_FOUND - gone", ClassID: 60, MethodID: 20})
	check("broker channel close", cons, ErrNotFound)

	ch = stallChannel(t, c)
	cons = stallConsume(t, ch, "q", ConsumeOptions{})
	if err := ch.Close(ctx); err != nil {
		t.Fatal(err)
	}
	check("Channel.Close", cons, ErrChannelClosed)

	ch = stallChannel(t, c)
	cons = stallConsume(t, ch, "q", ConsumeOptions{})
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	check("Conn.Close", cons, ErrClosed)
}
