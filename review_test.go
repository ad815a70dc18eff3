package pika

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// TestReviewMaxUnconfirmedWakesAfterLoss: a publisher waiting for room
// under Config.MaxUnconfirmed must be woken when a connection loss settles
// the outstanding messages (ErrOutcomeUnknown without republishing), not
// wait for a confirmation that can never come.
func TestReviewMaxUnconfirmedWakesAfterLoss(t *testing.T) {
	b := newFakeBroker(t)
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		_, ok := m.(*wire.BasicPublish)
		return ok // never confirmed
	})
	cfg := b.config()
	cfg.DisableRepublish = true
	cfg.MaxUnconfirmed = 1
	_, ch, rlog := fakeSetup(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		_, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte("2")})
		published <- err
	}()
	time.Sleep(20 * time.Millisecond) // the second publisher waits for room
	b.conn(1).kill()
	if err := first.Wait(ctx); err == nil {
		t.Fatalf("first message: nil after the loss, want ErrOutcomeUnknown")
	}
	rlog.wait(RecoveryRecovered, 1, 5*time.Second)
	wctx, wcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer wcancel()
	select {
	case err := <-published:
		if err != nil {
			t.Fatalf("second publish: %v", err)
		}
	case <-wctx.Done():
		t.Fatalf("second publish still waits for room after the loss settled the only unconfirmed message")
	}
}

// blockingHandler is a slog.Handler that blocks on records whose message
// contains match until release is closed.
type blockingHandler struct {
	match   string
	entered chan struct{}
	release chan struct{}
	once    *sync.Once
}

func (h blockingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h blockingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h blockingHandler) WithGroup(string) slog.Handler            { return h }
func (h blockingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.once.Do(func() { close(h.entered) })
		<-h.release
	}
	return nil
}

// TestReviewLoggerNotCalledUnderLock: the log records of the overflow
// policies (consumer suspended, deliveries discarded) go through the log
// queue like every other record: a slow Logger handler must not run with
// the connection's lock held, where it stalls every call on the Conn.
func TestReviewLoggerNotCalledUnderLock(t *testing.T) {
	for _, tc := range []struct {
		name, match string
		opts        ConsumeOptions
	}{
		{"suspend", "consumer suspended", ConsumeOptions{AutoAck: true, BufferSize: 2, Overflow: ConsumerSuspend}},
		{"discard", "past its hard limit", ConsumeOptions{AutoAck: true, BufferSize: 2, Overflow: ConsumerDiscard}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t)
			h := blockingHandler{match: tc.match, entered: make(chan struct{}), release: make(chan struct{}), once: new(sync.Once)}
			released := false
			release := func() {
				if !released {
					released = true
					close(h.release)
				}
			}
			defer release()
			cfg := b.config()
			cfg.DisableRecovery = true
			cfg.Heartbeat = NoHeartbeat
			cfg.Logger = slog.New(h)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := DialConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				release()
				c.Close(ctx)
			}()
			ch := stallChannel(t, c)
			if _, err := ch.QueueDeclare(ctx, "lq", QueueDeclareOptions{Durable: true}); err != nil {
				t.Fatal(err)
			}
			// The discard policy discards only while something is
			// awaited: the broker never answers this declaration.
			var pending <-chan error
			if tc.name == "discard" {
				b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
					_, ok := m.(*wire.ExchangeDeclare)
					return ok
				})
				ch2 := stallChannel(t, c)
				errc := make(chan error, 1)
				go func() { errc <- ch2.ExchangeDeclare(ctx, "never", "direct", ExchangeDeclareOptions{}) }()
				pending = errc
				waitFor(t, "the declaration to be sent", func() bool {
					for _, m := range b.conn(1).methods() {
						if strings.HasSuffix(m, "exchange.declare") {
							return true
						}
					}
					return false
				})
			}
			_ = pending
			cons := stallConsume(t, ch, "lq", tc.opts)
			fc := b.conn(1)
			go func() {
				for tag := uint64(1); tag <= 6; tag++ {
					fc.deliverN(ch.ID(), cons.Tag(), tag, 10)
				}
			}()
			select {
			case <-h.entered:
			case <-ctx.Done():
				t.Fatalf("no %q record logged", tc.match)
			}
			got := make(chan ConsumerStats, 1)
			go func() { got <- cons.Stats() }()
			select {
			case <-got:
			case <-time.After(3 * time.Second):
				t.Fatalf("Consumer.Stats blocked while the Logger handled %q: the handler runs under the connection's lock", tc.match)
			}
		})
	}
}

// TestReviewSuspendedConsumerAcrossRecovery: an AutoAck consumer suspended
// at the broker (ConsumerSuspend, buffer at its soft limit) when the
// connection is lost keeps its buffer; recovery restarts it, and when the
// broker floods it again it must be suspended again, not left "full"
// without a brake, where deliveries past the hard limit are dropped
// (ConsumerSuspend promises that nothing is lost).
func TestReviewSuspendedConsumerAcrossRecovery(t *testing.T) {
	b := newFakeBroker(t)
	cfg := b.config()
	cfg.Heartbeat = NoHeartbeat
	c, _, rlog := fakeSetup(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := stallChannel(t, c)
	if _, err := ch.QueueDeclare(ctx, "sq", QueueDeclareOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	const limit = 4
	cons := stallConsume(t, ch, "sq", ConsumeOptions{AutoAck: true, BufferSize: limit, Overflow: ConsumerSuspend})
	cancels := func(fc *fakeConn) int {
		n := 0
		for _, m := range fc.methods() {
			if strings.HasSuffix(m, "basic.cancel") {
				n++
			}
		}
		return n
	}
	fc1 := b.conn(1)
	for tag := uint64(1); tag <= limit; tag++ {
		fc1.deliverN(ch.ID(), cons.Tag(), tag, 10)
	}
	waitFor(t, "the suspension", func() bool { return cancels(fc1) == 1 && cons.Stats().Suspended == 1 })
	fc1.kill()
	rlog.wait(RecoveryRecovered, 1, 5*time.Second)
	fc2 := b.conn(2)
	// The broker sends nothing after a basic.cancel-ok: hold it back until
	// the flood below is over.
	var cancelOks []func()
	var hmu sync.Mutex
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if m, ok := m.(*wire.BasicCancel); ok && fc == fc2 {
			hmu.Lock()
			cancelOks = append(cancelOks, func() { fc.send(chID, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag}) })
			hmu.Unlock()
			return true
		}
		return false
	})
	defer func() {
		hmu.Lock()
		defer hmu.Unlock()
		for _, f := range cancelOks {
			f()
		}
	}()
	// The restored consumer gets a flood; a broker stops once it has
	// processed the consumer's basic.cancel.
	delivered := 0
	for tag := uint64(1); tag <= 3*limit && cancels(fc2) == 0; tag++ {
		done := fc2.deliverAsync(ch.ID(), cons.Tag(), tag, 10)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("the client stopped reading after %d deliveries on the new connection", delivered)
		}
		delivered++
	}
	waitFor(t, "the deliveries to be buffered or counted", func() bool {
		s := cons.Stats()
		return s.Buffered+int(s.Dropped) == limit+delivered
	})
	if s := cons.Stats(); s.Dropped != 0 || cancels(fc2) == 0 {
		t.Fatalf("after recovery: %d delivered, stats %+v, %d basic.cancel on the new connection: want none dropped and the consumer suspended again",
			delivered, s, cancels(fc2))
	}
}

// TestReviewWaitConfirmsConcurrentAcrossLoss: several goroutines publish
// and call WaitConfirms on one channel while the connection is lost (half
// of the first connection's messages unconfirmed, republished on the
// next). Every call returns, every message gets a definite outcome, and the
// nacks the WaitConfirms calls count add up to the nacked confirmations:
// each batch is reported once.
func TestReviewWaitConfirmsConcurrentAcrossLoss(t *testing.T) {
	b := newFakeBroker(t)
	var mu sync.Mutex
	published := map[int]uint64{}
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); !ok {
			return false
		}
		mu.Lock()
		published[fc.n]++
		tag := published[fc.n]
		mu.Unlock()
		if fc.n == 1 {
			if tag == 30 { // before every goroutine waits for its first batch
				fc.kill()
			} else if tag%2 == 1 {
				fc.send(chID, &wire.BasicAck{DeliveryTag: tag})
			}
			return true
		}
		if tag%7 == 0 {
			fc.send(chID, &wire.BasicNack{DeliveryTag: tag})
		} else {
			fc.send(chID, &wire.BasicAck{DeliveryTag: tag})
		}
		return true
	})
	_, ch, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		cmu     sync.Mutex
		confs   []*Confirmation
		counted ConfirmsError
	)
	addResult := func(err error) {
		if err == nil {
			return
		}
		var ce *ConfirmsError
		if !errors.As(err, &ce) {
			t.Errorf("WaitConfirms: %v", err)
			return
		}
		cmu.Lock()
		counted.Nacked += ce.Nacked
		counted.Returned += ce.Returned
		counted.MaybeReturned += ce.MaybeReturned
		counted.Unknown += ce.Unknown
		cmu.Unlock()
	}
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				f, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte(fmt.Sprint(g, i))})
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				cmu.Lock()
				confs = append(confs, f)
				cmu.Unlock()
				if i%10 == 9 {
					addResult(ch.WaitConfirms(ctx))
				}
			}
		}()
	}
	wg.Wait()
	addResult(ch.WaitConfirms(ctx))
	if ctx.Err() != nil {
		t.Fatalf("timed out; recovery: %s", rlog)
	}
	nacked := 0
	for i, f := range confs {
		select {
		case <-f.Done():
		default:
			t.Fatalf("confirmation %d (tag %d) not settled after the last WaitConfirms", i, f.Tag())
		}
		switch err := f.Err(); {
		case err == nil:
		case errors.Is(err, ErrNacked):
			nacked++
		default:
			t.Errorf("confirmation %d: %v", i, err)
		}
	}
	if counted.Nacked != nacked || counted.Unknown != 0 || counted.Returned != 0 || counted.MaybeReturned != 0 {
		t.Fatalf("WaitConfirms counted %+v, the confirmations say %d nacked", counted, nacked)
	}
	mu.Lock()
	defer mu.Unlock()
	if nacked == 0 || published[2] <= 200-30 {
		t.Fatalf("%d nacked, publishes per connection %v: want nacks and the unconfirmed messages republished", nacked, published)
	}
}

// TestReviewConfirmSelectLostReplyReturns: a connection lost before
// confirm.select-ok leaves the channel in confirm mode (recovery selects it
// again on the new connection); the returns of mandatory messages
// published there must still be correlated: an unroutable message is
// ErrReturned, not accepted.
func TestReviewConfirmSelectLostReplyReturns(t *testing.T) {
	b := newFakeBroker(t)
	var mu sync.Mutex
	published := map[int]uint64{}
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.ConfirmSelect:
			if fc.n == 1 {
				fc.kill() // no confirm.select-ok
				return true
			}
		case *wire.BasicPublish:
			mu.Lock()
			published[fc.n]++
			tag := published[fc.n]
			mu.Unlock()
			// Unroutable: returned, then acked, as RabbitMQ does.
			fc.wmu.Lock()
			fc.nc.Write(returnFrames(chID, m.Exchange, m.RoutingKey, &wire.Properties{}, "lost"))
			fc.wmu.Unlock()
			fc.send(chID, &wire.BasicAck{DeliveryTag: tag})
			return true
		}
		return false
	})
	_, ch, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := ch.ConfirmSelect(ctx)
	t.Logf("ConfirmSelect across the loss: %v", err)
	rlog.wait(RecoveryRecovered, 1, 5*time.Second)
	f, err := ch.PublishWithConfirm(ctx, "x", "nowhere", Message{Body: []byte("lost"), Mandatory: true})
	if err != nil {
		t.Fatalf("publish after the recovery: %v (the channel was restored in confirm mode)", err)
	}
	if err := f.Wait(ctx); !errors.Is(err, ErrReturned) {
		t.Fatalf("unroutable mandatory message after the recovery: %v, want ErrReturned", err)
	}
}

// TestReviewGetTagAcrossLoss: a message fetched with Get just before the
// connection is lost carries a tag of the lost connection: acknowledging
// it after the recovery must fail with ErrStaleDelivery, never acknowledge
// a message of the new connection that happens to have the same broker
// tag.
func TestReviewGetTagAcrossLoss(t *testing.T) {
	for i := range 20 {
		b := newFakeBroker(t)
		b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
			if _, ok := m.(*wire.BasicGet); !ok {
				return false
			}
			fc.wmu.Lock()
			fc.nc.Write(scripted.Message(chID, &wire.BasicGetOk{DeliveryTag: 1, RoutingKey: "q"}, &wire.Properties{}, []byte(fmt.Sprint("conn ", fc.n)), 128<<10))
			fc.wmu.Unlock()
			if fc.n == 1 {
				fc.kill()
			}
			return true
		})
		_, ch, rlog := fakeSetup(t, b, b.config())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		old, ok, err := ch.Get(ctx, "q", GetOptions{})
		if err != nil || !ok {
			cancel()
			t.Logf("round %d: Get on the first connection: %v %v", i, ok, err)
			continue
		}
		rlog.wait(RecoveryRecovered, 1, 5*time.Second)
		cur, ok, err := ch.Get(ctx, "q", GetOptions{})
		cancel()
		if err != nil || !ok {
			t.Fatalf("Get after the recovery: %v %v", ok, err)
		}
		if old.DeliveryTag == cur.DeliveryTag {
			t.Fatalf("round %d: the message of the lost connection (%q) and that of the new one (%q) share client tag %d",
				i, old.Body, cur.Body, cur.DeliveryTag)
		}
		if err := old.Ack(false); !errors.Is(err, ErrStaleDelivery) {
			t.Fatalf("round %d: ack of the message fetched before the loss: %v, want ErrStaleDelivery", i, err)
		}
		if err := cur.Ack(false); err != nil {
			t.Fatalf("round %d: ack of the message fetched after the loss: %v", i, err)
		}
	}
}

// TestReviewOrphanTagAcrossRecovery: the tag OnOrphanDelivery reports is
// the channel's delivery tag, numbered like Delivery.DeliveryTag: after a
// recovery, rejecting it rejects the orphan delivery, not another message
// of the new connection.
func TestReviewOrphanTagAcrossRecovery(t *testing.T) {
	b := newFakeBroker(t)
	rejected := make(chan uint64, 4)
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if m, ok := m.(*wire.BasicReject); ok {
			rejected <- m.DeliveryTag
			return true
		}
		return false
	})
	_, ch, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	orphans := make(chan uint64, 4)
	ch.OnOrphanDelivery(func(_ string, tag uint64) { orphans <- tag })
	cons := stallConsume(t, ch, "q", ConsumeOptions{})
	fc1 := b.conn(1)
	for tag := uint64(1); tag <= 3; tag++ {
		fc1.deliver(ch.ID(), cons.Tag(), tag, "old")
	}
	for range 3 {
		if _, err := cons.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fc1.kill()
	rlog.wait(RecoveryRecovered, 1, 5*time.Second)
	fc2 := b.conn(2)
	fc2.deliver(ch.ID(), cons.Tag(), 1, "new")
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fc2.deliver(ch.ID(), "ghost", 2, "orphan") // broker tag 2 on the new connection
	var tag uint64
	select {
	case tag = <-orphans:
	case <-ctx.Done():
		t.Fatal("no orphan delivery reported")
	}
	if tag == d.DeliveryTag {
		t.Fatalf("the orphan and the delivery %q have the same tag %d", d.Body, tag)
	}
	if err := ch.Reject(tag, true); err != nil {
		t.Fatalf("reject of the orphan's tag %d: %v", tag, err)
	}
	select {
	case got := <-rejected:
		if got != 2 {
			t.Fatalf("rejecting the orphan's tag %d sent basic.reject of broker tag %d, want 2 (the orphan)", tag, got)
		}
	case <-ctx.Done():
		t.Fatal("no basic.reject sent")
	}
}

// TestReviewAutoAckBufferSurvivesChannelClose: deliveries buffered for an
// AutoAck consumer were acknowledged by the broker when it sent them: when
// the channel closes (or recovery leaves the consumer out) they are the
// only copy, and must stay takeable, not vanish uncounted.
func TestReviewAutoAckBufferSurvivesChannelClose(t *testing.T) {
	b, c := stallFake(t, false)
	ch := stallChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true})
	fc := b.conn(1)
	for tag := uint64(1); tag <= 3; tag++ {
		fc.deliver(ch.ID(), cons.Tag(), tag, fmt.Sprint("m", tag))
	}
	waitFor(t, "3 buffered", func() bool { return cons.Stats().Buffered == 3 })
	fc.send(ch.ID(), &wire.ChannelClose{ReplyCode: uint16(wire.ReplyNotFound), ReplyText: "NOT_FOUND - gone", ClassID: 50, MethodID: 10})
	select {
	case <-cons.endCh:
	case <-ctx.Done():
		t.Fatal("the consumer did not end")
	}
	for i := 1; i <= 3; i++ {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("delivery %d of 3 auto-acked before the close: %v (lost)", i, err)
		}
		if string(d.Body) != fmt.Sprint("m", i) {
			t.Fatalf("delivery %d: %q", i, d.Body)
		}
	}
	if _, err := cons.Next(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after the buffer: %v, want the close cause", err)
	}
}

// TestReviewAckAllAfterRecovery: basic.ack with delivery tag 0 and
// multiple confirms every outstanding message (AMQP 0-9-1); after a
// recovery, where the channel's tags continue from the lost connection's,
// it must still settle them, not hang WaitConfirms.
func TestReviewAckAllAfterRecovery(t *testing.T) {
	b := newFakeBroker(t)
	var mu sync.Mutex
	published := map[int]uint64{}
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); !ok {
			return false
		}
		mu.Lock()
		published[fc.n]++
		n := published[fc.n]
		mu.Unlock()
		if fc.n > 1 && n == 2 {
			fc.send(chID, &wire.BasicAck{DeliveryTag: 0, Multiple: true})
		}
		return true
	})
	_, ch, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	var confs []*Confirmation
	for i := range 2 {
		f, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		confs = append(confs, f)
	}
	waitFor(t, "the publishes", func() bool { mu.Lock(); defer mu.Unlock(); return published[1] == 2 })
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 5*time.Second)
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
	defer wcancel()
	if err := ch.WaitConfirms(wctx); err != nil {
		t.Fatalf("WaitConfirms after basic.ack(0, multiple) on the new connection: %v", err)
	}
	for i, f := range confs {
		if err := f.Err(); err != nil {
			t.Errorf("confirmation %d: %v", i, err)
		}
	}
}
