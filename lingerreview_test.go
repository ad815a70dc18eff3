//go:build linux

package pika

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Review tests of Config.ReadLinger (helpers in linger_test.go): every
// call that makes something awaited while the reader lingers (an hour: a
// missed wake-up hangs, bounded by the calls' ctx of 20 s) ends the
// linger (TestLingerReview…); the second review, confirmation waits while
// the reader lingers (TestLingerReview2…).

// TestLingerReviewCallsEndLinger: each kind of request made while the
// reader lingers completes.
func TestLingerReviewCallsEndLinger(t *testing.T) {
	calls := map[string]func(ctx context.Context, c *Conn, ch *Channel, cons *Consumer) error{
		"Qos": func(ctx context.Context, c *Conn, ch *Channel, _ *Consumer) error {
			return ch.Qos(ctx, QosOptions{PrefetchCount: 10})
		},
		"Cancel": func(ctx context.Context, c *Conn, ch *Channel, cons *Consumer) error {
			return cons.Cancel(ctx)
		},
		"ConfirmSelect": func(ctx context.Context, c *Conn, ch *Channel, _ *Consumer) error {
			return ch.ConfirmSelect(ctx)
		},
		"ChannelClose": func(ctx context.Context, c *Conn, ch *Channel, _ *Consumer) error {
			return ch.Close(ctx)
		},
		"ChannelOpen": func(ctx context.Context, c *Conn, ch *Channel, _ *Consumer) error {
			_, err := c.Channel(ctx)
			return err
		},
		"ExchangeDeclare": func(ctx context.Context, c *Conn, ch *Channel, _ *Consumer) error {
			return ch.ExchangeDeclare(ctx, "x", "direct", ExchangeDeclareOptions{})
		},
		"OtherChannelClose": func(ctx context.Context, c *Conn, ch *Channel, _ *Consumer) error {
			other, err := c.Channel(ctx)
			if err != nil {
				return err
			}
			return other.Close(ctx)
		},
		"WaitConfirmsNothingOutstanding": func(ctx context.Context, c *Conn, ch *Channel, _ *Consumer) error {
			if err := ch.ConfirmSelect(ctx); err != nil {
				return err
			}
			return ch.WaitConfirms(ctx)
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			_, c, _, ch, cons := lingeringConsumer(t)
			whileLingering(t, c, name, func(ctx context.Context) error { return call(ctx, c, ch, cons) })
		})
	}
}

// duringBursts sends rounds bursts of 20 deliveries to a consumer on ch
// from another goroutine while the test makes call rounds times (what
// names it in a failure); every call must complete, and every delivery
// arrive, in order.
func duringBursts(t *testing.T, c *Conn, fc *fakeConn, ch *Channel, rounds int, what string, call func(ctx context.Context) error) {
	t.Helper()
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 100000})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range rounds {
			fc.deliverBurst(ch.ID(), cons.Tag(), uint64(i*20+1), 20, 100)
		}
	}()
	ctx := lingerCtx(t)
	for i := range rounds {
		if err := call(ctx); err != nil {
			t.Fatalf("%s %d: %v (lingers %d)", what, i, err, lingers(c))
		}
	}
	<-sent
	takeThrough(t, cons, rounds*20, uint64(rounds*20))
}

// TestLingerReviewRequestRace: requests made from another goroutine while
// bursts arrive (the reader deciding to linger as the request goes out)
// all complete.
func TestLingerReviewRequestRace(t *testing.T) {
	_, c, fc, ch := hourChannel(t, nil)
	other := stallChannel(t, c)
	duringBursts(t, c, fc, ch, 300, "declare", func(ctx context.Context) error {
		_, err := other.QueueDeclare(ctx, "r", QueueDeclareOptions{})
		return err
	})
	if lingers(c) == 0 {
		t.Fatal("never lingered")
	}
}

// TestLingerReviewHeartbeatTimeout: a broker that goes silent is found dead
// by the heartbeat timer while the reader lingers, and the reader ends.
func TestLingerReviewHeartbeatTimeout(t *testing.T) {
	hourLinger(t)
	longWaitSlice(t)
	b, c := blockingFake(t, func(b *fakeBroker, cfg *Config) {
		cfg.ReadLinger = time.Hour
		cfg.Heartbeat = time.Second
	})
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	lingerAfterBurst(t, fc, c, ch, cons, 1)
	readerEnds(t, c)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the Conn did not end after the heartbeat timeout")
	}
}

// TestLingerReviewRecovery: a cut while the reader lingers is recovered
// from; on the new link the reader lingers again and a request ends it.
func TestLingerReviewRecovery(t *testing.T) {
	b, c, _, ch := hourChannel(t, func(b *fakeBroker, cfg *Config) { cfg.DisableRecovery = false })
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	for round := range 5 {
		old := c.currentLink()
		lingerAfterBurst(t, b.conn(b.count()), c, ch, cons, 1)
		b.conn(b.count()).kill()
		waitFor(t, "a recovered link", func() bool {
			l := c.currentLink()
			return l != nil && l != old && l.isOpen() && !c.IsRecovering()
		})
		if c.currentLink().lingerer == nil {
			t.Fatal("the recovered link does not linger")
		}
		lingerAfterBurst(t, b.conn(b.count()), c, ch, cons, 1)
		whileLingering(t, c, "round "+strconv.Itoa(round)+": declare on the recovered link", func(ctx context.Context) error {
			_, err := ch.QueueDeclare(ctx, "after", QueueDeclareOptions{})
			return err
		})
	}
}

func (c *Conn) currentLink() *link {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.l
}

// TestLingerReviewNoFdLeak: connections that linger and close, or are
// dropped while lingering, leave no descriptor (socket or eventfd) open.
func TestLingerReviewNoFdLeak(t *testing.T) {
	run := func(kill bool) {
		_, c, fc, _, _ := lingeringConsumer(t)
		if kill {
			fc.kill()
			readerEnds(t, c)
		}
		closeReturns(lingerCtx(t), t, c)
		readerEnds(t, c)
		fc.kill()
	}
	run(false)
	base := openFds(t)
	for i := range 40 {
		run(i%2 == 0)
	}
	fdsBackTo(t, "after lingering connections", base)
}

// TestLingerReviewCloseRace: Close right after a burst, as the reader may
// be deciding to linger, returns.
func TestLingerReviewCloseRace(t *testing.T) {
	for range 50 {
		_, c, fc, ch := hourChannel(t, nil)
		cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
		fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
		closeReturns(lingerCtx(t), t, c)
		readerEnds(t, c)
	}
}

// pausedReader returns a connection whose reader paused for a full
// consumer buffer (10) after a burst of 20, and the consumer, its 20
// deliveries taken since.
func pausedReader(t *testing.T) (*Conn, *fakeConn, *Channel, *Consumer) {
	t.Helper()
	_, c, fc, ch := hourChannel(t, nil)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 10})
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	waitFor(t, "the reader to pause", func() bool { return readerPaused(c) })
	takeThrough(t, cons, 20, 20)
	return c, fc, ch, cons
}

// TestLingerReviewPausedThenRequest: a reader paused by a full consumer
// buffer lingers once drained; a request then ends the linger.
func TestLingerReviewPausedThenRequest(t *testing.T) {
	_, _, ch, _ := pausedReader(t)
	if _, err := ch.QueueDeclare(lingerCtx(t), "p", QueueDeclareOptions{}); err != nil {
		t.Fatalf("declare after the pause: %v", err)
	}
}

// inlinePublisher: an inline consumer on one channel whose handler, at
// its first delivery, publishes on a second channel in confirm mode (the
// fake broker acks at once) and runs inHandler, if any, on the
// confirmation; a burst of 20 runs it. It returns the Conn and the
// confirmation.
func inlinePublisher(t *testing.T, ctx context.Context, inHandler func(conf *Confirmation)) (*Conn, *Confirmation) {
	t.Helper()
	b, c, fc, ch := hourChannel(t, nil)
	pub := confirmChannel(t, c)
	ackPublishes(b, pub)
	confs := make(chan *Confirmation, 1)
	var once sync.Once
	cons := inlineConsume(t, ch, ConsumeOptions{AutoAck: true}, func(d *Delivery) {
		once.Do(func() {
			conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("a")})
			if err != nil {
				t.Error(err)
			} else if inHandler != nil {
				inHandler(conf)
			}
			confs <- conf
		})
	})
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	conf := <-confs
	if conf == nil {
		t.FailNow()
	}
	return c, conf
}

// TestLingerReviewInlinePublishConfirm: an inline handler publishing in
// confirm mode (on the reader goroutine) keeps the reader from lingering
// with the confirmation outstanding.
func TestLingerReviewInlinePublishConfirm(t *testing.T) {
	ctx := lingerCtx(t)
	_, conf := inlinePublisher(t, ctx, nil)
	if err := conf.Wait(ctx); err != nil {
		t.Fatalf("confirmation of a publish from an inline handler: %v", err)
	}
}

// TestLingerReviewRPCCall: an RPCClient.Call made while the reader
// lingers gets its reply: the call awaits it from the broker, like a
// request's reply.
func TestLingerReviewRPCCall(t *testing.T) {
	b, c, fc, _ := hourChannel(t, nil)
	var mu sync.Mutex
	var replyCh uint16
	var replyTag, prefix string
	n := 0
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		mu.Lock()
		defer mu.Unlock()
		switch m := m.(type) {
		case *wire.BasicConsume:
			if m.Queue == directReplyTo {
				replyCh, replyTag = chID, m.ConsumerTag
			}
		case *wire.BasicPublish:
			if chID == replyCh {
				n++
				id := prefix + strconv.FormatUint(uint64(n), 36)
				go func() {
					fc.wmu.Lock()
					defer fc.wmu.Unlock()
					fc.nc.Write(scripted.Message(replyCh, &wire.BasicDeliver{ConsumerTag: replyTag, DeliveryTag: uint64(n), RoutingKey: "r"},
						&wire.Properties{CorrelationID: id}, []byte("reply"), 128<<10))
				}()
				return true
			}
		}
		return false
	})
	ctx := lingerCtx(t)
	rpc, err := NewRPCClient(ctx, c, RPCClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rpc.Close(ctx)
	mu.Lock()
	prefix = rpc.prefix
	mu.Unlock()
	call := func(ctx context.Context) error {
		_, err := rpc.Call(ctx, "", "srv", Message{Body: []byte("q")})
		return err
	}
	if err := call(ctx); err != nil {
		t.Fatalf("Call before any linger: %v", err)
	}
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	lingerAfterBurst(t, fc, c, ch, cons, 1)
	whileLingering(t, c, "Call", call)
}

// publishWhilePaused: the broker stops pub (pause, until paused says so);
// a Publish on pub then waits, a burst of 20 comes to a consumer on
// another channel and is taken, and the broker lets pub go (resume, the
// method named by resumed): the Publish completes.
func publishWhilePaused(t *testing.T, pause, resume func(fc *fakeConn, pub *Channel), paused func(c *Conn, pub *Channel) bool, resumed string) {
	t.Helper()
	_, c, fc, ch := hourChannel(t, nil)
	pub := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	pause(fc, pub)
	waitFor(t, "the publisher stopped", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return paused(c, pub)
	})
	ctx := lingerCtx(t)
	res := async(func() error { return pub.Publish(ctx, "", "x", Message{Body: []byte("a")}) })
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	takeThrough(t, cons, 20, 20)
	resume(fc, pub)
	if err := <-res; err != nil {
		t.Fatalf("Publish waiting for %s: %v", resumed, err)
	}
}

// TestLingerReviewBlockedPublisher: a Publish waiting for the broker to
// unblock the connection (connection.blocked) gets going when
// connection.unblocked comes, even if a burst came before it: the
// publisher awaits the broker, so the reader does not linger.
func TestLingerReviewBlockedPublisher(t *testing.T) {
	publishWhilePaused(t,
		func(fc *fakeConn, _ *Channel) { fc.send(0, &wire.ConnectionBlocked{Reason: "low on memory"}) },
		func(fc *fakeConn, _ *Channel) { fc.send(0, &wire.ConnectionUnblocked{}) },
		func(c *Conn, _ *Channel) bool { return c.blocked },
		"connection.unblocked")
}

// TestLingerReviewFlowPausedPublisher: likewise for a channel the broker
// stopped with channel.flow.
func TestLingerReviewFlowPausedPublisher(t *testing.T) {
	publishWhilePaused(t,
		func(fc *fakeConn, pub *Channel) { fc.send(pub.ID(), &wire.ChannelFlow{Active: false}) },
		func(fc *fakeConn, pub *Channel) { fc.send(pub.ID(), &wire.ChannelFlow{Active: true}) },
		func(_ *Conn, pub *Channel) bool { return pub.paused != nil },
		"channel.flow")
}

// TestLingerReviewClamp: a negative ReadLinger is none (the link gets no
// eventfd), a longer one than MaxReadLinger is MaxReadLinger.
func TestLingerReviewClamp(t *testing.T) {
	for _, tc := range []struct {
		in, want time.Duration
	}{{-time.Second, 0}, {0, 0}, {time.Millisecond, time.Millisecond}, {MaxReadLinger, MaxReadLinger}, {time.Hour, MaxReadLinger}} {
		_, c := blockingFake(t, func(b *fakeBroker, cfg *Config) { cfg.ReadLinger = tc.in })
		c.mu.Lock()
		got, on := c.cfg.ReadLinger, c.l.lingerer != nil
		c.mu.Unlock()
		if got != tc.want || on != (tc.want > 0) {
			t.Errorf("ReadLinger %v: taken as %v, lingerer %v", tc.in, got, on)
		}
		closeReturns(lingerCtx(t), t, c)
	}
}

// TestLingerReviewFdConnPrimitives: linger (an hour) ends at an unlinger
// made before it or during it, at a read deadline passing, at Close and
// at the peer's close; after Close both return at once and the eventfd
// is closed with the socket.
func TestLingerReviewFdConnPrimitives(t *testing.T) {
	ends := func(t *testing.T, what string, fc *fdConn, during func()) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			fc.linger(time.Hour)
			close(done)
		}()
		if during != nil {
			during()
		}
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("linger did not end at %s", what)
		}
	}
	newPair := func(t *testing.T) fdPair {
		p := fdConnPair(t)
		if !p.enableLinger() {
			t.Fatal("enableLinger: no eventfd")
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	t.Run("UnlingerBefore", func(t *testing.T) {
		p := newPair(t)
		p.unlinger()
		p.unlinger()
		ends(t, "an earlier unlinger", p.fdConn, nil)
		// The count was reset: a second unlinger is needed and enough.
		ends(t, "an unlinger during the wait", p.fdConn, func() { p.unlinger() })
	})
	t.Run("ReadDeadline", func(t *testing.T) {
		p := newPair(t)
		ends(t, "a read deadline passing", p.fdConn, func() { p.SetReadDeadline(time.Now().Add(10 * time.Millisecond)) })
	})
	t.Run("Close", func(t *testing.T) {
		p := newPair(t)
		ends(t, "Close", p.fdConn, func() { p.Close() })
		p.mu.Lock()
		closed := p.fdClosed
		p.mu.Unlock()
		if !closed {
			t.Fatal("the descriptors stay open after Close and the linger's end")
		}
		ends(t, "a call after Close", p.fdConn, nil)
		p.unlinger() // no write to a closed (maybe reused) descriptor
	})
	t.Run("PeerClose", func(t *testing.T) {
		p := newPair(t)
		ends(t, "the peer's close", p.fdConn, func() { p.peer.Close() })
	})
	t.Run("PeerHalfClose", func(t *testing.T) {
		p := newPair(t)
		ends(t, "the peer's FIN", p.fdConn, func() { p.peer.(*net.TCPConn).CloseWrite() })
	})
}

// TestLingerReviewNoLingerAfterPause: a reader that paused for a full
// consumer buffer does not linger once the application takes the
// deliveries: the broker's writes piled up during the pause, and a linger
// would leave the application, which just emptied its buffer, waiting (an
// hour here) for the delivery that follows.
func TestLingerReviewNoLingerAfterPause(t *testing.T) {
	_, fc, ch, cons := pausedReader(t)
	fc.deliverN(ch.ID(), cons.Tag(), 21, 100)
	takeThrough(t, cons, 1, 21)
}

// suspendable declares the durable queue "sq" on ch (a consumer of it may
// be suspended) and counts the basic.consume methods the fake broker
// reads from then on: the function returned reports whether there were n.
func suspendable(t *testing.T, b *fakeBroker, ch *Channel) (consumes func(n int) bool) {
	t.Helper()
	if _, err := ch.QueueDeclare(lingerCtx(t), "sq", QueueDeclareOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := 0
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicConsume); ok {
			mu.Lock()
			seen++
			mu.Unlock()
		}
		return false
	})
	return func(n int) bool {
		mu.Lock()
		defer mu.Unlock()
		return seen == n
	}
}

// TestLingerReviewSuspendResume: a consumer suspended at the broker
// (basic.cancel when its buffer fills) is restarted once the application
// takes its deliveries: the reader, after the burst that filled it, does
// not linger (an hour here) with the cancel-ok the restart waits for
// unread.
func TestLingerReviewSuspendResume(t *testing.T) {
	b, _, fc, ch := hourChannel(t, nil)
	consumes := suspendable(t, b, ch)
	cons := stallConsume(t, ch, "sq", ConsumeOptions{AutoAck: true, BufferSize: 10, Overflow: ConsumerSuspend})
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	takeThrough(t, cons, 20, 20)
	waitFor(t, "the suspended consumer's restart", func() bool { return consumes(2) })
	fc.deliverN(ch.ID(), cons.Tag(), 21, 100)
	takeThrough(t, cons, 1, 21)
	if s := cons.Stats(); s.Suspended != 1 {
		t.Fatalf("suspended %d times, want 1", s.Suspended)
	}
}

// TestLingerReviewResumeEndsLinger: the restart of a suspended consumer
// (its cancel-ok read) while the reader lingers after another consumer's
// burst ends the linger: the consume-ok and the deliveries that follow are
// read at once.
func TestLingerReviewResumeEndsLinger(t *testing.T) {
	b, c, fc, ch := hourChannel(t, nil)
	consumes := suspendable(t, b, ch)
	susp := stallConsume(t, ch, "sq", ConsumeOptions{AutoAck: true, BufferSize: 4, Overflow: ConsumerSuspend})
	for tag := uint64(1); tag <= 4; tag++ {
		fc.deliverN(ch.ID(), susp.Tag(), tag, 100)
	}
	waitFor(t, "the suspension's cancel-ok", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return susp.susp == suspCancelled
	})
	other := stallChannel(t, c)
	busy := stallConsume(t, other, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	lingerAfterBurst(t, fc, c, other, busy, 1)
	takeThrough(t, susp, 4, 4)
	waitFor(t, "the restart", func() bool { return consumes(3) })
	fc.deliverN(ch.ID(), susp.Tag(), 5, 100)
	takeThrough(t, susp, 1, 5)
}

// TestLingerReviewConfirmRace: publishes in confirm mode from another
// goroutine while bursts arrive all get their confirmation.
func TestLingerReviewConfirmRace(t *testing.T) {
	b, c, fc, ch := hourChannel(t, nil)
	pub := confirmChannel(t, c)
	ackPublishes(b, pub)
	duringBursts(t, c, fc, ch, 300, "confirmation", func(ctx context.Context) error {
		return publishConfirm(t, ctx, pub, "a").Wait(ctx)
	})
}

// TestLingerReview2NewestSettledFirst: the broker confirms (or nacks) the
// newest message of a channel before an older one (RabbitMQ does when
// they went to different queues, or the newest was unroutable); a wait for
// the older one, now the newest outstanding, must end the linger that
// follows, whether it started before the newest's confirmation or after.
// Before the fix the wait, not counted (an older message), waited out the
// hour-long linger with its ack in the socket.
func TestLingerReview2NewestSettledFirst(t *testing.T) {
	for _, nack := range []bool{false, true} {
		for _, waitFirst := range []bool{false, true} {
			name := "ack"
			if nack {
				name = "nack"
			}
			if waitFirst {
				name += "/wait-before"
			} else {
				name += "/wait-after"
			}
			t.Run(name, func(t *testing.T) {
				b, c, pub, acks := lingeringPublisher(t, nil)
				fc := b.conn(1)
				ctx := lingerCtx(t)
				older, newest := publishConfirm(t, ctx, pub, "second"), publishConfirm(t, ctx, pub, "third")
				var res <-chan error
				wait := func() { res = async(func() error { return older.Wait(ctx) }) }
				if waitFirst {
					wait()
					waitStarted(t, older)
				}
				if nack {
					fc.send(pub.ID(), &wire.BasicNack{DeliveryTag: 3})
				} else {
					acks <- 3
				}
				// Ends the linger; the reader reads the newest's outcome
				// and lingers again.
				if err := newest.Wait(ctx); (err != nil) != nack {
					t.Fatalf("Wait for the newest: %v", err)
				}
				if !waitFirst {
					waitFor(t, "the reader to linger after the newest's outcome", func() bool { return lingering(c) })
					wait()
				}
				acks <- 2
				if err := <-res; err != nil {
					t.Fatalf("Wait for the older confirmation, the newest outstanding: %v", err)
				}
				noConfirmWaits(t, c)
			})
		}
	}
}

// TestLingerReview2PrefetchOne: a consumer with prefetch 1 (the fake
// broker sends the next delivery, of 2 KiB, when it reads the ack of the
// previous) gets 50 deliveries in turn with an hour-long linger, pulling
// with Next and acking, a nack or a reject, or acking from an inline
// handler: each settle ends the linger that followed its delivery (or
// forbids it), so the loop is never held to one delivery per linger.
func TestLingerReview2PrefetchOne(t *testing.T) {
	for _, mode := range []string{"ack", "nack", "reject", "inline"} {
		t.Run(mode, func(t *testing.T) {
			c := settledInTurn(t, 1, 50, mode)
			n := lingers(c)
			if mode == "inline" && n != 0 {
				t.Errorf("%d lingers after reads whose inline handler acked", n)
			}
			if mode != "inline" && n == 0 {
				t.Error("the reader never lingered: the test tests nothing")
			}
		})
	}
}

// TestLingerReview2ConcurrentPublishers: goroutines publishing on one
// channel with confirms, each waiting for its own confirmation, while
// the fake broker confirms every message alone, in a shuffled order
// (acks and nacks): with an hour-long linger, every wait ends. A wait
// for an older message is not counted while newer ones are unconfirmed;
// whoever waits for the newest ends the linger, and when the newest is
// confirmed first, the wait for the next newest counts.
func TestLingerReview2ConcurrentPublishers(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	pub := confirmChannel(t, c)
	ctx := lingerCtx(t)
	rng := rand.New(rand.NewPCG(1, 2))
	confirmPublishes(b, pub, func(fc *fakeConn, tag uint64) {
		delay := time.Duration(rng.IntN(300)) * time.Microsecond
		nack := rng.IntN(7) == 0
		go func() {
			time.Sleep(delay) // shuffles the order, not a timing assert
			if nack {
				fc.send(pub.ID(), &wire.BasicNack{DeliveryTag: tag})
			} else {
				fc.send(pub.ID(), &wire.BasicAck{DeliveryTag: tag})
			}
		}()
	})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 100 {
				conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("m")})
				if err != nil {
					t.Errorf("publisher %d, message %d: %v", g, i, err)
					return
				}
				if i%5 == 4 {
					err = viaDone(ctx, conf)
				} else {
					err = conf.Wait(ctx)
				}
				if err != nil && !errors.Is(err, ErrNacked) {
					t.Errorf("publisher %d, message %d: %v (lingers %d)", g, i, err, lingers(c))
					return
				}
			}
		})
	}
	wg.Wait()
	noConfirmWaits(t, c)
}

// TestLingerReview2WaitCounts: every way a confirmation wait ends leaves
// no wait counted (a count left behind would forbid lingering for good),
// and each wait for the newest message ends the hour-long linger.
func TestLingerReview2WaitCounts(t *testing.T) {
	t.Run("Wait ends by ctx, then Wait again", func(t *testing.T) {
		_, c, pub, acks := lingeringPublisher(t, nil)
		conf := publishConfirm(t, lingerCtx(t), pub, "m")
		ctx, cancel := context.WithCancel(context.Background())
		res := async(func() error { return conf.Wait(ctx) })
		waitFor(t, "the wait to be counted", func() bool { return c.confirmWaits.Load() == 1 })
		cancel()
		if err := <-res; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait: %v", err)
		}
		noConfirmWaits(t, c)
		acks <- 2
		if err := conf.Wait(lingerCtx(t)); err != nil {
			t.Fatal(err)
		}
		noConfirmWaits(t, c)
	})
	t.Run("Done twice, Wait and Wait ending by ctx", func(t *testing.T) {
		_, c, pub, acks := lingeringPublisher(t, nil)
		conf := publishConfirm(t, lingerCtx(t), pub, "m")
		d1, d2 := conf.Done(), conf.Done()
		if d1 != d2 {
			t.Fatal("two Done channels")
		}
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, 2)
		go func() { res <- conf.Wait(ctx) }()
		go func() { res <- conf.Wait(lingerCtx(t)) }()
		cancel()
		if n := c.confirmWaits.Load(); n != 1 {
			t.Fatalf("%d waits counted for one confirmation", n)
		}
		acks <- 2
		select {
		case <-d1:
		case <-lingerCtx(t).Done():
			t.Fatal("Done not closed")
		}
		for range 2 {
			if err := <-res; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
		}
		noConfirmWaits(t, c)
	})
	t.Run("Wait and Done concurrently", func(t *testing.T) {
		_, c, pub, acks := lingeringPublisher(t, nil)
		for tag := uint64(2); tag < 200; tag++ {
			conf := publishConfirm(t, lingerCtx(t), pub, "m")
			ctx, cancel := context.WithCancel(lingerCtx(t))
			res := async(func() error { return conf.Wait(ctx) })
			done := conf.Done()
			if tag%3 == 0 {
				cancel()
			}
			acks <- tag
			<-done
			if err := <-res; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
			cancel()
			noConfirmWaits(t, c)
		}
	})
	for _, how := range []string{"Channel.Close", "Conn.Close", "channel closed by the broker"} {
		t.Run(how, func(t *testing.T) {
			b, c, pub, _ := lingeringPublisher(t, nil)
			ctx := lingerCtx(t)
			older, newest := publishConfirm(t, ctx, pub, "m"), publishConfirm(t, ctx, pub, "m")
			res := make(chan error, 2)
			go func() { res <- older.Wait(ctx) }()
			go func() { res <- viaDone(ctx, newest) }()
			waitFor(t, "the newest's wait to be counted", func() bool { return c.confirmWaits.Load() == 1 })
			var err error
			switch how {
			case "Channel.Close":
				err = pub.Close(ctx)
			case "Conn.Close":
				err = closeReturns(ctx, t, c)
			default:
				b.conn(1).send(pub.ID(), &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED"})
			}
			if err != nil {
				t.Fatalf("%s: %v", how, err)
			}
			for range 2 {
				if err := <-res; !errors.Is(err, ErrOutcomeUnknown) {
					t.Fatalf("wait after %s: %v, want ErrOutcomeUnknown", how, err)
				}
			}
			noConfirmWaits(t, c)
		})
	}
}

// TestLingerReview2RepublishedNewest: a wait for a message that a
// recovery republishes as the newest of its channel (the newer one was
// returned, so not republished) counts once republished: the reader of
// the recovered connection does not linger (an hour) after a burst of
// deliveries with the republished copy's ack left unread. Before the fix
// the wait, not counted (a newer message was outstanding when it
// started), waited out the linger.
func TestLingerReview2RepublishedNewest(t *testing.T) {
	b, c, fc, pub := hourChannel(t, func(_ *fakeBroker, cfg *Config) { cfg.DisableRecovery = false })
	ch := stallChannel(t, c)
	ctx := lingerCtx(t)
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	published := make(chan int, 10) // the connection each publish came on
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); ok && chID == pub.ID() {
			published <- fc.n
			return true // acked when the test says
		}
		return false
	})
	older := publishConfirm(t, ctx, pub, "older")
	newest, err := pub.PublishWithConfirm(ctx, "", "nowhere", Message{Body: []byte("newest"), Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	<-published
	<-published
	fc.wmu.Lock()
	fc.nc.Write(scripted.Message(pub.ID(), &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nowhere"}, &wire.Properties{}, []byte("newest"), 128<<10))
	fc.wmu.Unlock()
	if err := newest.Wait(ctx); !errors.Is(err, ErrReturned) {
		t.Fatalf("the returned message: %v", err)
	}
	res := async(func() error { return older.Wait(ctx) })
	waitStarted(t, older)
	fc.kill()
	if n := <-published; n != 2 {
		t.Fatalf("republished on connection %d", n)
	}
	waitFor(t, "the recovery", func() bool { return b.count() == 2 && !c.IsRecovering() })
	fc = b.conn(2)
	before := lingers(c)
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	takeThrough(t, cons, 20, 20)
	fc.send(pub.ID(), &wire.BasicAck{DeliveryTag: 1})
	if err := <-res; err != nil {
		t.Fatalf("Wait for the republished message (lingers since the recovery: %d): %v", lingers(c)-before, err)
	}
	noConfirmWaits(t, c)
}

// TestLingerReview2PublisherWaitsForSpace: a publisher waiting for the
// write buffer (WriteBufferLimit) to drain waits for the broker to read,
// and a broker may stop reading while the client does not read what it
// sent (RabbitMQ's credit flow holds its reader back while its writer is
// stuck): here the fake broker answers each publish with a delivery of
// 2 KiB and reads nothing more until the consumer has it. The reader must
// not start a linger (an hour) while such a publisher waits, or all wait
// for each other until the linger ends.
func TestLingerReview2PublisherWaitsForSpace(t *testing.T) {
	b, c, fc, ch := hourChannel(t, func(_ *fakeBroker, cfg *Config) { cfg.WriteBufferLimit = 8 << 10 })
	pub := stallChannel(t, c)
	ctx := lingerCtx(t)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 100000})
	got := make(chan uint64, 1000)
	go func() {
		for {
			d, err := cons.Next(ctx)
			if err != nil {
				return
			}
			got <- d.DeliveryTag
		}
	}()
	dtag := uint64(20) // after the burst's
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); !ok || chID != pub.ID() {
			return false
		}
		dtag++
		fc.deliverN(ch.ID(), cons.Tag(), dtag, 2048)
		for {
			select {
			case tag := <-got:
				if tag == dtag {
					return true
				}
			case <-ctx.Done():
				return true
			}
		}
	})
	// The reader lingers after a burst; the publisher then writes more
	// than the sockets' buffers hold.
	lingerAfterBurst(t, fc, c, ch, cons, 1)
	body := make([]byte, 64<<10)
	for i := range 400 {
		if err := pub.Publish(ctx, "", "x", Message{Body: body}); err != nil {
			t.Fatalf("publish %d (lingers %d): %v", i, lingers(c), err)
		}
	}
}

// TestLingerReview2Transactions: tx.select, a publish and tx.commit made
// while the reader lingers (an hour) all complete: each awaits a reply.
func TestLingerReview2Transactions(t *testing.T) {
	b, c, fc, ch, cons := lingeringConsumer(t)
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		switch m.(type) {
		case *wire.TxSelect:
			fc.send(chID, &wire.TxSelectOk{})
		case *wire.TxCommit:
			fc.send(chID, &wire.TxCommitOk{})
		case *wire.TxRollback:
			fc.send(chID, &wire.TxRollbackOk{})
		default:
			return false
		}
		return true
	})
	ctx := lingerCtx(t)
	tx := stallChannel(t, c)
	if err := tx.TxSelect(ctx); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		lingerAfterBurst(t, fc, c, ch, cons, uint64(21+20*round))
		if err := tx.Publish(ctx, "", "x", Message{Body: []byte("m")}); err != nil {
			t.Fatal(err)
		}
		end := tx.TxCommit
		if round%2 == 1 {
			end = tx.TxRollback
		}
		if err := end(ctx); err != nil {
			t.Fatalf("round %d: commit or rollback while the reader lingers: %v", round, err)
		}
	}
}

// TestLingerReview2InlineHandlerWaits: an inline handler that publishes
// with a confirmation and waits for it (its ctx ends the wait: the reader
// runs the handler) leaves no wait counted, and a wait for that
// confirmation outside the handler, while the reader lingers after the
// read that ran it, ends the linger.
func TestLingerReview2InlineHandlerWaits(t *testing.T) {
	ctx := lingerCtx(t)
	c, conf := inlinePublisher(t, ctx, func(conf *Confirmation) {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if err := conf.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait in an inline handler: %v, want the ctx's end (the reader runs the handler)", err)
		}
	})
	noConfirmWaits(t, c)
	if err := conf.Wait(ctx); err != nil {
		t.Fatalf("confirmation waited for outside the handler: %v", err)
	}
	noConfirmWaits(t, c)
}

// TestLingerReview2NewestSettledFirstRace: over and over, two messages,
// the newer acked first and waited for (which ends the linger and reads
// its ack), and a wait for the older racing the reader's read of that
// ack (which makes the older the newest unconfirmed, and is followed by
// a linger): every wait for the older ends, and none stays counted.
func TestLingerReview2NewestSettledFirstRace(t *testing.T) {
	_, c, pub, acks := lingeringPublisher(t, nil)
	ctx := lingerCtx(t)
	for tag := uint64(2); tag < 300; tag += 2 {
		older, newer := publishConfirm(t, ctx, pub, "older"), publishConfirm(t, ctx, pub, "newer")
		acks <- tag + 1
		var res <-chan error
		if tag%4 == 0 {
			res = async(func() error { return older.Wait(ctx) })
		} else {
			res = async(func() error { return viaDone(ctx, older) })
		}
		if err := newer.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		acks <- tag
		if err := <-res; err != nil {
			t.Fatalf("message %d (lingers %d): %v", tag, lingers(c), err)
		}
	}
	if lingers(c) < 2 {
		t.Fatal("the reader hardly lingered: the test tests nothing")
	}
	noConfirmWaits(t, c)
}
