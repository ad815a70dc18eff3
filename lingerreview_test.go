//go:build linux

package pika

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Review tests of Config.ReadLinger: every call that makes something
// awaited while the reader lingers (an hour: a missed wake-up hangs,
// bounded by the calls' ctx of 20 s) ends the linger.

func lingerCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

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
			if err := call(lingerCtx(t), c, ch, cons); err != nil {
				t.Fatalf("%s while the reader lingers: %v", name, err)
			}
		})
	}
}

// TestLingerReviewRequestRace: requests made from another goroutine while
// bursts arrive (the reader deciding to linger as the request goes out)
// all complete.
func TestLingerReviewRequestRace(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	other := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 100000})
	const rounds = 300
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range rounds {
			fc.deliverBurst(ch.ID(), cons.Tag(), uint64(i*20+1), 20, 100)
		}
	}()
	ctx := lingerCtx(t)
	for i := range rounds {
		if _, err := other.QueueDeclare(ctx, "r", QueueDeclareOptions{}); err != nil {
			t.Fatalf("declare %d: %v (lingers %d)", i, err, lingers(c))
		}
	}
	wg.Wait()
	takeN(t, cons, rounds*20)
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
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, func(b *fakeBroker, cfg *Config) { cfg.DisableRecovery = false })
	ch := stallChannel(t, c)
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
		if _, err := ch.QueueDeclare(lingerCtx(t), "after", QueueDeclareOptions{}); err != nil {
			t.Fatalf("round %d: declare while the recovered link's reader lingers: %v", round, err)
		}
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
	hourLinger(t)
	run := func(kill bool) {
		b, c := lingerFake(t, time.Hour, nil)
		fc := b.conn(1)
		ch := stallChannel(t, c)
		cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
		lingerAfterBurst(t, fc, c, ch, cons, 1)
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
	hourLinger(t)
	for range 50 {
		b, c := lingerFake(t, time.Hour, nil)
		fc := b.conn(1)
		ch := stallChannel(t, c)
		cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
		fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
		closeReturns(lingerCtx(t), t, c)
		readerEnds(t, c)
	}
}

// TestLingerReviewPausedThenRequest: a reader paused by a full consumer
// buffer lingers once drained; a request then ends the linger.
func TestLingerReviewPausedThenRequest(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 10})
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	waitFor(t, "the reader to pause", func() bool { return readerPaused(c) })
	takeN(t, cons, 20)
	if _, err := ch.QueueDeclare(lingerCtx(t), "p", QueueDeclareOptions{}); err != nil {
		t.Fatalf("declare after the pause: %v", err)
	}
}

// TestLingerReviewInlinePublishConfirm: an inline handler publishing in
// confirm mode (on the reader goroutine) keeps the reader from lingering
// with the confirmation outstanding.
func TestLingerReviewInlinePublishConfirm(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	pub := stallChannel(t, c)
	ctx := lingerCtx(t)
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); ok && chID == pub.ID() {
			go fc.send(chID, &wire.BasicAck{DeliveryTag: 1})
			return true
		}
		return false
	})
	confs := make(chan *Confirmation, 1)
	var once sync.Once
	cons, err := ch.ConsumeFunc(ctx, "q", ConsumeOptions{AutoAck: true, Inline: true}, func(_ context.Context, d *Delivery) {
		once.Do(func() {
			conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("a")})
			if err != nil {
				t.Error(err)
			}
			confs <- conf
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	if err := (<-confs).Wait(ctx); err != nil {
		t.Fatalf("confirmation of a publish from an inline handler: %v", err)
	}
}

// TestLingerReviewRPCCall: an RPCClient.Call made while the reader
// lingers gets its reply: the call awaits it from the broker, like a
// request's reply.
func TestLingerReviewRPCCall(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
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
	if _, err := rpc.Call(ctx, "", "srv", Message{Body: []byte("q")}); err != nil {
		t.Fatalf("Call before any linger: %v", err)
	}
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	lingerAfterBurst(t, fc, c, ch, cons, 1)
	if _, err := rpc.Call(ctx, "", "srv", Message{Body: []byte("q")}); err != nil {
		t.Fatalf("Call while the reader lingers: %v", err)
	}
}

// TestLingerReviewBlockedPublisher: a Publish waiting for the broker to
// unblock the connection (connection.blocked) gets going when
// connection.unblocked comes, even if a burst came before it: the
// publisher awaits the broker, so the reader does not linger.
func TestLingerReviewBlockedPublisher(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	pub := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	fc.send(0, &wire.ConnectionBlocked{Reason: "low on memory"})
	waitFor(t, "the connection blocked", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.blocked
	})
	ctx := lingerCtx(t)
	res := make(chan error, 1)
	go func() { res <- pub.Publish(ctx, "", "x", Message{Body: []byte("a")}) }()
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	takeN(t, cons, 20)
	fc.send(0, &wire.ConnectionUnblocked{})
	if err := <-res; err != nil {
		t.Fatalf("Publish waiting for connection.unblocked: %v", err)
	}
}

// TestLingerReviewFlowPausedPublisher: likewise for a channel the broker
// stopped with channel.flow.
func TestLingerReviewFlowPausedPublisher(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	pub := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	fc.send(pub.ID(), &wire.ChannelFlow{Active: false})
	waitFor(t, "the channel paused", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return pub.paused != nil
	})
	ctx := lingerCtx(t)
	res := make(chan error, 1)
	go func() { res <- pub.Publish(ctx, "", "x", Message{Body: []byte("a")}) }()
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	takeN(t, cons, 20)
	fc.send(pub.ID(), &wire.ChannelFlow{Active: true})
	if err := <-res; err != nil {
		t.Fatalf("Publish waiting for channel.flow: %v", err)
	}
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
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 10})
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	waitFor(t, "the reader to pause", func() bool { return readerPaused(c) })
	takeN(t, cons, 20)
	fc.deliverN(ch.ID(), cons.Tag(), 21, 100)
	if got := takeN(t, cons, 1); got[0] != 21 {
		t.Fatalf("delivery %d, want 21", got[0])
	}
}

// TestLingerReviewSuspendResume: a consumer suspended at the broker
// (basic.cancel when its buffer fills) is restarted once the application
// takes its deliveries: the reader, after the burst that filled it, does
// not linger (an hour here) with the cancel-ok the restart waits for
// unread.
func TestLingerReviewSuspendResume(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	ctx := lingerCtx(t)
	if _, err := ch.QueueDeclare(ctx, "sq", QueueDeclareOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	consumes := 0
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicConsume); ok {
			mu.Lock()
			consumes++
			mu.Unlock()
		}
		return false
	})
	cons := stallConsume(t, ch, "sq", ConsumeOptions{AutoAck: true, BufferSize: 10, Overflow: ConsumerSuspend})
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	takeN(t, cons, 20)
	waitFor(t, "the suspended consumer's restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return consumes == 2
	})
	fc.deliverN(ch.ID(), cons.Tag(), 21, 100)
	if got := takeN(t, cons, 1); got[0] != 21 {
		t.Fatalf("delivery %d, want 21", got[0])
	}
	if s := cons.Stats(); s.Suspended != 1 {
		t.Fatalf("suspended %d times, want 1", s.Suspended)
	}
}

// TestLingerReviewResumeEndsLinger: the restart of a suspended consumer
// (its cancel-ok read) while the reader lingers after another consumer's
// burst ends the linger: the consume-ok and the deliveries that follow are
// read at once.
func TestLingerReviewResumeEndsLinger(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	ctx := lingerCtx(t)
	if _, err := ch.QueueDeclare(ctx, "sq", QueueDeclareOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	consumes := 0
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicConsume); ok {
			mu.Lock()
			consumes++
			mu.Unlock()
		}
		return false
	})
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
	takeN(t, susp, 4)
	waitFor(t, "the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return consumes == 3
	})
	fc.deliverN(ch.ID(), susp.Tag(), 5, 100)
	if got := takeN(t, susp, 1); got[0] != 5 {
		t.Fatalf("delivery %d, want 5", got[0])
	}
}

// TestLingerReviewConfirmRace: publishes in confirm mode from another
// goroutine while bursts arrive all get their confirmation.
func TestLingerReviewConfirmRace(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	pub := stallChannel(t, c)
	ctx := lingerCtx(t)
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seq uint64
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); ok && chID == pub.ID() {
			mu.Lock()
			seq++
			tag := seq
			mu.Unlock()
			go fc.send(chID, &wire.BasicAck{DeliveryTag: tag})
			return true
		}
		return false
	})
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 100000})
	const rounds = 300
	go func() {
		for i := range rounds {
			fc.deliverBurst(ch.ID(), cons.Tag(), uint64(i*20+1), 20, 100)
		}
	}()
	for i := range rounds {
		conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("a")})
		if err != nil {
			t.Fatal(err)
		}
		if err := conf.Wait(ctx); err != nil {
			t.Fatalf("confirmation %d: %v (lingers %d)", i, err, lingers(c))
		}
	}
	takeN(t, cons, rounds*20)
}
