//go:build linux

package pika

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Tests of Config.ReadLinger (with BlockingRead) against fakeBroker over
// TCP loopback. Most make the linger an hour, so that a wait the library
// fails to end shows as a hang (bounded at 10–20 s by waitFor, lingerCtx
// and closeReturns), never as a timing assertion. The helpers here serve
// the review regressions in lingerreview_test.go as well.

// hourLinger lets ReadLinger be an hour for the test's connections. Call
// it before dialling.
func hourLinger(t *testing.T) {
	old := readLingerCap
	readLingerCap = time.Hour
	t.Cleanup(func() { readLingerCap = old })
}

// lingerCtx is the bound of the test's calls: 20 s, against an hour's
// linger.
func lingerCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// lingerFake returns a fakeBroker over TCP and a Conn with BlockingRead
// and ReadLinger d, heartbeats off.
func lingerFake(t *testing.T, d time.Duration, mod func(*fakeBroker, *Config)) (*fakeBroker, *Conn) {
	t.Helper()
	b, c := blockingFake(t, func(b *fakeBroker, cfg *Config) {
		cfg.ReadLinger = d
		cfg.Heartbeat = NoHeartbeat
		// No timer may end a linger behind the test's back: the
		// handshake's would, 2 s after the dial.
		cfg.HandshakeTimeout = time.Hour
		if mod != nil {
			mod(b, cfg)
		}
	})
	c.mu.Lock()
	on := c.l.lingerer != nil
	c.mu.Unlock()
	if !on {
		t.Fatal("ReadLinger with BlockingRead: the link does not linger")
	}
	return b, c
}

// hourChannel returns a Conn with an hour-long ReadLinger (lingerFake,
// config changed by mod), the broker's end of its socket and a channel.
func hourChannel(t *testing.T, mod func(*fakeBroker, *Config)) (*fakeBroker, *Conn, *fakeConn, *Channel) {
	t.Helper()
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, mod)
	return b, c, b.conn(1), stallChannel(t, c)
}

// hourQos is hourChannel (no config change) with a prefetch count set on
// the channel.
func hourQos(t *testing.T, prefetch int) (*fakeBroker, *Conn, *fakeConn, *Channel) {
	t.Helper()
	b, c, fc, ch := hourChannel(t, nil)
	if err := ch.Qos(lingerCtx(t), QosOptions{PrefetchCount: prefetch}); err != nil {
		t.Fatal(err)
	}
	return b, c, fc, ch
}

// confirmChannel opens a channel in confirm mode.
func confirmChannel(t *testing.T, c *Conn) *Channel {
	t.Helper()
	pub := stallChannel(t, c)
	if err := pub.ConfirmSelect(lingerCtx(t)); err != nil {
		t.Fatal(err)
	}
	return pub
}

// confirmPublishes makes the fake broker confirm every publish on pub:
// confirm runs with the tags 1, 2, … in the order the broker reads them,
// one call at a time, and must not block (it sends from another
// goroutine).
func confirmPublishes(b *fakeBroker, pub *Channel, confirm func(fc *fakeConn, tag uint64)) {
	var mu sync.Mutex
	var seq uint64
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); !ok || chID != pub.ID() {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		seq++
		confirm(fc, seq)
		return true
	})
}

// ackPublishes makes the fake broker ack every publish on pub at once.
func ackPublishes(b *fakeBroker, pub *Channel) {
	confirmPublishes(b, pub, func(fc *fakeConn, tag uint64) {
		go fc.send(pub.ID(), &wire.BasicAck{DeliveryTag: tag})
	})
}

// publishConfirm publishes body on pub, in confirm mode.
func publishConfirm(t *testing.T, ctx context.Context, pub *Channel, body string) *Confirmation {
	t.Helper()
	conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// async runs f on another goroutine; its error comes on the channel.
func async(f func() error) <-chan error {
	res := make(chan error, 1)
	go func() { res <- f() }()
	return res
}

// viaDone waits for conf through its Done channel (not Wait, so not
// counted as a confirmation wait).
func viaDone(ctx context.Context, conf *Confirmation) error {
	select {
	case <-conf.Done():
		return conf.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitStarted waits until a goroutine is in conf.Wait.
func waitStarted(t *testing.T, conf *Confirmation) {
	t.Helper()
	waitFor(t, "the wait for the older confirmation to start", func() bool {
		conf.mu.Lock()
		defer conf.mu.Unlock()
		return conf.wake != nil
	})
}

// noConfirmWaits waits until no confirmation wait is counted on c.
func noConfirmWaits(t *testing.T, c *Conn) {
	t.Helper()
	waitFor(t, "no confirmation wait counted", func() bool { return c.confirmWaits.Load() == 0 })
}

// deliverBurst writes deliveries first..first+n-1 (bodies of size bytes)
// to the client in one write, so that one read brings them all.
func (fc *fakeConn) deliverBurst(ch uint16, tag string, first uint64, n, size int) {
	var buf []byte
	for i := range uint64(n) {
		buf = append(buf, scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: tag, DeliveryTag: first + i, RoutingKey: "q"}, &wire.Properties{}, make([]byte, size), 128<<10)...)
	}
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.nc.Write(buf)
}

func lingering(c *Conn) bool { return c.lingerOn.Load() != nil }

func lingers(c *Conn) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lingers
}

// takeN takes n deliveries from cons and returns their tags.
func takeN(t *testing.T, cons *Consumer, n int) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var tags []uint64
	for range n {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d deliveries: %v", len(tags), err)
		}
		tags = append(tags, d.DeliveryTag)
	}
	return tags
}

// takeThrough takes n deliveries from cons and checks that they are
// last-n+1 … last, in order.
func takeThrough(t *testing.T, cons *Consumer, n int, last uint64) {
	t.Helper()
	for i, tag := range takeN(t, cons, n) {
		if want := last - uint64(n-1-i); tag != want {
			t.Fatalf("delivery %d, want %d (of %d through %d)", tag, want, n, last)
		}
	}
}

// lingerAfterBurst delivers a burst of 20 (3–4 KiB) and waits until the
// reader lingers after it.
func lingerAfterBurst(t *testing.T, fc *fakeConn, c *Conn, ch *Channel, cons *Consumer, first uint64) {
	t.Helper()
	fc.deliverBurst(ch.ID(), cons.Tag(), first, 20, 100)
	waitFor(t, "the reader to linger after a burst", func() bool { return lingering(c) })
}

// burstWithoutLinger delivers a burst of 20 to cons, waits until cons has
// it buffered, and checks that the reader did not linger after it (while
// why).
func burstWithoutLinger(t *testing.T, fc *fakeConn, c *Conn, ch *Channel, cons *Consumer, first uint64, why string) {
	t.Helper()
	before := lingers(c)
	buffered := cons.Stats().Buffered
	fc.deliverBurst(ch.ID(), cons.Tag(), first, 20, 100)
	waitFor(t, "the burst", func() bool { return cons.Stats().Buffered == buffered+20 })
	if n := lingers(c) - before; n != 0 {
		t.Errorf("%d lingers while %s", n, why)
	}
}

// whileLingering checks that c's reader lingers, then that call, made
// now, completes (within lingerCtx's 20 s: a wake-up the call misses
// leaves it to the hour-long linger).
func whileLingering(t *testing.T, c *Conn, what string, call func(ctx context.Context) error) {
	t.Helper()
	if !lingering(c) {
		t.Fatalf("%s: the reader does not linger before the call", what)
	}
	if err := call(lingerCtx(t)); err != nil {
		t.Fatalf("%s while the reader lingers: %v", what, err)
	}
}

// lingeringConsumer returns a connection whose reader lingers (for an
// hour) after a burst of 20 deliveries to cons.
func lingeringConsumer(t *testing.T) (*fakeBroker, *Conn, *fakeConn, *Channel, *Consumer) {
	t.Helper()
	b, c, fc, ch := hourChannel(t, nil)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	lingerAfterBurst(t, fc, c, ch, cons, 1)
	return b, c, fc, ch, cons
}

// lingeringPublisher returns a connection with a channel in confirm mode
// whose publishes the fake broker acks when the test sends their tag on
// acks, and whose reader lingers (for an hour) after reading the ack of
// a first message that nobody waited for.
func lingeringPublisher(t *testing.T, mod func(*fakeBroker, *Config)) (b *fakeBroker, c *Conn, pub *Channel, acks chan<- uint64) {
	t.Helper()
	hourLinger(t)
	b, c = lingerFake(t, time.Hour, mod)
	pub = confirmChannel(t, c)
	ackc := make(chan uint64, 100)
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); ok && chID == pub.ID() {
			return true // acked when the test says
		}
		return false
	})
	fc := b.conn(1)
	go func() {
		for tag := range ackc {
			fc.send(pub.ID(), &wire.BasicAck{DeliveryTag: tag})
		}
	}()
	t.Cleanup(func() { close(ackc) })
	publishConfirm(t, lingerCtx(t), pub, "first")
	ackc <- 1
	waitFor(t, "the reader to linger after an ack nobody waited for", func() bool { return lingering(c) })
	return b, c, pub, ackc
}

// settledInTurn: the fake broker sends each delivery (2 KiB) to a
// consumer on a channel with the given prefetch count only once it has
// read the settle (ack, nack or reject) of the one before, as a broker
// does with the prefetch window full. total deliveries must pass in turn
// although the linger is an hour: mode "inline" acks from an inline
// handler, "ack", "nack" and "reject" settle after Next. It returns the
// Conn.
func settledInTurn(t *testing.T, prefetch int, total uint64, mode string) *Conn {
	t.Helper()
	b, c, fc, ch := hourQos(t, prefetch)
	ctx := lingerCtx(t)
	var tag string
	settled := make(chan uint64, total)
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		var dtag uint64
		switch m := m.(type) {
		case *wire.BasicAck:
			dtag = m.DeliveryTag
		case *wire.BasicNack:
			dtag = m.DeliveryTag
		case *wire.BasicReject:
			dtag = m.DeliveryTag
		default:
			return false
		}
		if chID != ch.ID() {
			return false
		}
		settled <- dtag
		if dtag < total {
			go fc.deliverN(chID, tag, dtag+1, 2048)
		}
		return true
	})
	var cons *Consumer
	if mode == "inline" {
		cons = inlineConsume(t, ch, ConsumeOptions{}, func(d *Delivery) {
			if err := d.Ack(false); err != nil {
				t.Errorf("Ack: %v", err)
			}
		})
	} else {
		cons = stallConsume(t, ch, "q", ConsumeOptions{})
	}
	tag = cons.Tag()
	go fc.deliverN(ch.ID(), tag, 1, 2048)
	for i := uint64(1); i <= total; i++ {
		if mode != "inline" {
			d, err := cons.Next(ctx)
			if err != nil {
				t.Fatalf("delivery %d: %v (lingers %d)", i, err, lingers(c))
			}
			if d.DeliveryTag != i {
				t.Fatalf("delivery %d, want %d", d.DeliveryTag, i)
			}
			switch mode {
			case "ack":
				err = d.Ack(false)
			case "nack":
				err = d.Nack(false, false)
			case "reject":
				err = d.Reject(false)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		select {
		case got := <-settled:
			if got != i {
				t.Fatalf("settle of %d, want %d", got, i)
			}
		case <-ctx.Done():
			t.Fatalf("delivery %d: the broker's next delivery waits behind a linger (lingers %d)", i, lingers(c))
		}
	}
	return c
}

// TestReadLingerDeliversInOrder: with a short linger, bursts and single
// deliveries all arrive, in order, and the reader lingered after the
// bursts.
func TestReadLingerDeliversInOrder(t *testing.T) {
	b, c := lingerFake(t, 2*time.Millisecond, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 10000})
	const rounds = 30
	go func() {
		tag := uint64(1)
		for i := range rounds {
			fc.deliverBurst(ch.ID(), cons.Tag(), tag, 20, 100)
			tag += 20
			fc.deliverN(ch.ID(), cons.Tag(), tag, 50+i)
			tag++
		}
	}()
	takeThrough(t, cons, rounds*21, rounds*21)
	if lingers(c) == 0 {
		t.Fatal("the reader never lingered after a burst of 20 deliveries")
	}
}

// TestReadLingerNotForTrickle: reads of single small deliveries are never
// followed by a linger (an hour here): each arrives.
func TestReadLingerNotForTrickle(t *testing.T) {
	_, c, fc, ch := hourChannel(t, nil)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true})
	for i := uint64(1); i <= 50; i++ {
		fc.deliverN(ch.ID(), cons.Tag(), i, 100)
		takeThrough(t, cons, 1, i)
	}
	if n := lingers(c); n != 0 {
		t.Fatalf("%d lingers after single deliveries of 100 bytes", n)
	}
}

// TestReadLingerEndsForReply: a request made while the reader lingers ends
// the linger: its reply is read at once, not after the linger.
func TestReadLingerEndsForReply(t *testing.T) {
	b, c, fc, ch, cons := lingeringConsumer(t)
	whileLingering(t, c, "QueueDeclare", func(ctx context.Context) error {
		_, err := ch.QueueDeclare(ctx, "other", QueueDeclareOptions{})
		return err
	})
	// And while a reply is awaited the reader does not linger: the
	// burst and the withheld reply that follows it both arrive.
	release := withheldReply(b, "third", nil)
	res := awaitDeclare(ch, "third")
	waitFor(t, "the declare to be awaited", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.l.waiters) > c.l.quiet
	})
	burstWithoutLinger(t, fc, c, ch, cons, 21, "a reply was awaited")
	release()
	if err := <-res; err != nil {
		t.Fatalf("QueueDeclare awaited during a burst: %v", err)
	}
	takeThrough(t, cons, 40, 40)
}

// TestReadLingerConfirmWaits: each way of waiting for a publisher
// confirmation ends the reader's linger (an hour here), so that the ack
// already in the socket is read at once.
func TestReadLingerConfirmWaits(t *testing.T) {
	waits := map[string]func(ctx context.Context, pub *Channel, conf *Confirmation) error{
		"Wait":         func(ctx context.Context, _ *Channel, conf *Confirmation) error { return conf.Wait(ctx) },
		"Done":         func(ctx context.Context, _ *Channel, conf *Confirmation) error { return viaDone(ctx, conf) },
		"WaitConfirms": func(ctx context.Context, pub *Channel, _ *Confirmation) error { return pub.WaitConfirms(ctx) },
	}
	for name, wait := range waits {
		t.Run(name, func(t *testing.T) {
			_, c, pub, acks := lingeringPublisher(t, nil)
			conf := publishConfirm(t, lingerCtx(t), pub, "second")
			if !lingering(c) {
				t.Fatal("a publish in confirm mode ended the linger: nobody waits for its confirmation yet")
			}
			acks <- 2
			whileLingering(t, c, name, func(ctx context.Context) error { return wait(ctx, pub, conf) })
		})
	}
}

// TestReadLingerRoomToPublish: a publisher waiting for room under
// MaxUnconfirmed ends the linger; the ack that makes room is read.
func TestReadLingerRoomToPublish(t *testing.T) {
	_, c, pub, acks := lingeringPublisher(t, func(_ *fakeBroker, cfg *Config) { cfg.MaxUnconfirmed = 1 })
	if err := pub.Publish(lingerCtx(t), "", "x", Message{Body: []byte("second")}); err != nil {
		t.Fatal(err)
	}
	acks <- 2
	// whileLingering checks first that the linger did not end before
	// anyone waited.
	whileLingering(t, c, "Publish waiting for room", func(ctx context.Context) error {
		return pub.Publish(ctx, "", "x", Message{Body: []byte("third")})
	})
}

// TestReadLingerNotWhileWaiting: while a goroutine waits for a
// confirmation, a burst of deliveries is not followed by a linger, and
// the confirmation that comes after it is read.
func TestReadLingerNotWhileWaiting(t *testing.T) {
	b, c, pub, acks := lingeringPublisher(t, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	ctx := lingerCtx(t)
	conf := publishConfirm(t, ctx, pub, "second")
	res := async(func() error { return conf.Wait(ctx) })
	waitFor(t, "the wait to start", func() bool { return c.confirmWaits.Load() == 1 })
	burstWithoutLinger(t, fc, c, ch, cons, 1, "a confirmation was waited for")
	takeThrough(t, cons, 20, 20)
	acks <- 2
	if err := <-res; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if n := c.confirmWaits.Load(); n != 0 {
		t.Errorf("%d confirmation waits counted after the wait", n)
	}
}

// TestReadLingerConfirmRaces: publish, ack and wait, over and over, with
// the ack racing the start of the wait and the reader's decision to
// linger (after every ack it reads, as nobody waits then): no wait may
// be left to the hour-long linger.
func TestReadLingerConfirmRaces(t *testing.T) {
	_, c, pub, acks := lingeringPublisher(t, nil)
	ctx := lingerCtx(t)
	for tag := uint64(2); tag < 300; tag++ {
		conf := publishConfirm(t, ctx, pub, "m")
		if tag%2 == 0 {
			acks <- tag // before the wait starts
		} else {
			go func() { acks <- tag }() // racing it
		}
		wait := conf.Wait
		if tag%3 == 0 {
			wait = pub.WaitConfirms
		}
		if err := wait(ctx); err != nil {
			t.Fatalf("message %d: %v", tag, err)
		}
	}
	if lingers(c) == 0 {
		t.Fatal("the reader never lingered")
	}
	if n := c.confirmWaits.Load(); n != 0 {
		t.Errorf("%d confirmation waits counted after the waits", n)
	}
}

// TestReadLingerEndsForClose: Close while the reader lingers completes
// (the connection.close-ok is read at once).
func TestReadLingerEndsForClose(t *testing.T) {
	_, c, _, _, _ := lingeringConsumer(t)
	whileLingering(t, c, "Close", func(ctx context.Context) error { return closeReturns(ctx, t, c) })
	readerEnds(t, c)
}

// TestReadLingerEndsAtPeerClose: the broker's end of the socket closing
// while the reader lingers ends the linger and the connection.
func TestReadLingerEndsAtPeerClose(t *testing.T) {
	_, c, fc, _, cons := lingeringConsumer(t)
	fc.kill()
	readerEnds(t, c)
	takeThrough(t, cons, 20, 20)
	if _, err := cons.Next(lingerCtx(t)); err == nil {
		t.Fatal("Next after the connection ended: no error")
	}
}

// TestReadLingerIgnoredWithoutBlockingRead: without BlockingRead the
// reader never lingers.
func TestReadLingerIgnoredWithoutBlockingRead(t *testing.T) {
	hourLinger(t)
	b := newFakeBroker(t)
	b.tcp = true
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.Heartbeat = NoHeartbeat
	cfg.ReadLinger = time.Hour
	c := dialFake(t, cfg)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	for i := range 5 {
		fc.deliverBurst(ch.ID(), cons.Tag(), uint64(i*20+1), 20, 100)
		takeThrough(t, cons, 20, uint64(i*20+20))
	}
	if n := lingers(c); n != 0 {
		t.Fatalf("%d lingers without BlockingRead", n)
	}
}

// TestReadLingerOlderConfirmWait: a wait for a confirmation with newer
// messages unconfirmed behind it is not counted and leaves the linger
// alone (the broker is busy with the newer ones); a wait for the newest
// ends it, and both waits then end.
func TestReadLingerOlderConfirmWait(t *testing.T) {
	_, c, pub, acks := lingeringPublisher(t, nil)
	ctx := lingerCtx(t)
	older, newest := publishConfirm(t, ctx, pub, "second"), publishConfirm(t, ctx, pub, "third")
	acks <- 3 // a multiple ack would do as well; two singles here
	acks <- 2
	res := async(func() error { return older.Wait(ctx) })
	waitStarted(t, older)
	if !lingering(c) || c.confirmWaits.Load() != 0 {
		t.Fatalf("a wait for an older confirmation: lingering %v, %d waits counted", lingering(c), c.confirmWaits.Load())
	}
	whileLingering(t, c, "Wait for the newest confirmation", newest.Wait)
	if err := <-res; err != nil {
		t.Fatalf("Wait for the older confirmation: %v", err)
	}
}

// TestReadLingerAckShortOfCredit: with a prefetch count of 2 and messages
// of 2 KiB (each read brings 1 KiB or more), the broker sends the next
// message only after the ack of the one before: the ack ends the linger
// (Next) or forbids the one after its read (Inline), so that 50 messages
// go through although the linger is an hour.
func TestReadLingerAckShortOfCredit(t *testing.T) {
	for name, mode := range map[string]string{"Next": "ack", "Inline": "inline"} {
		t.Run(name, func(t *testing.T) { settledInTurn(t, 2, 50, mode) })
	}
}

// TestReadLingerAckWithCreditLeft: an ack that leaves the prefetch window
// far from full (20 unacked of 1,000) leaves the linger alone.
func TestReadLingerAckWithCreditLeft(t *testing.T) {
	_, c, fc, ch := hourQos(t, 1000)
	ctx := lingerCtx(t)
	cons := stallConsume(t, ch, "q", ConsumeOptions{})
	lingerAfterBurst(t, fc, c, ch, cons, 1)
	var last *Delivery
	for range 20 {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		last = d
	}
	if err := last.Ack(true); err != nil {
		t.Fatal(err)
	}
	if !lingering(c) {
		t.Fatal("an ack of 20 with a prefetch count of 1,000 ended the linger")
	}
}
