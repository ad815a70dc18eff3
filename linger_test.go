//go:build linux

package pika

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Tests of Config.ReadLinger (with BlockingRead) against fakeBroker over
// TCP loopback. Most make the linger an hour, so that a wait the library
// fails to end shows as a hang (bounded at 10–20 s by waitFor and
// closeReturns), never as a timing assertion.

// hourLinger lets ReadLinger be an hour for the test's connections. Call
// it before dialling.
func hourLinger(t *testing.T) {
	old := readLingerCap
	readLingerCap = time.Hour
	t.Cleanup(func() { readLingerCap = old })
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

// lingerAfterBurst delivers a burst of 20 (3–4 KiB) and waits until the
// reader lingers after it.
func lingerAfterBurst(t *testing.T, fc *fakeConn, c *Conn, ch *Channel, cons *Consumer, first uint64) {
	t.Helper()
	fc.deliverBurst(ch.ID(), cons.Tag(), first, 20, 100)
	waitFor(t, "the reader to linger after a burst", func() bool { return lingering(c) })
}

// lingeringConsumer returns a connection whose reader lingers (for an
// hour) after a burst of 20 deliveries to cons.
func lingeringConsumer(t *testing.T) (*fakeBroker, *Conn, *fakeConn, *Channel, *Consumer) {
	t.Helper()
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	lingerAfterBurst(t, fc, c, ch, cons, 1)
	return b, c, fc, ch, cons
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
	got := takeN(t, cons, rounds*21)
	if !slices.IsSorted(got) || got[0] != 1 || got[len(got)-1] != rounds*21 {
		t.Fatalf("delivery order: first %d, last %d, sorted %v", got[0], got[len(got)-1], slices.IsSorted(got))
	}
	if lingers(c) == 0 {
		t.Fatal("the reader never lingered after a burst of 20 deliveries")
	}
}

// TestReadLingerNotForTrickle: reads of single small deliveries are never
// followed by a linger (an hour here): each arrives.
func TestReadLingerNotForTrickle(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true})
	for i := uint64(1); i <= 50; i++ {
		fc.deliverN(ch.ID(), cons.Tag(), i, 100)
		if got := takeN(t, cons, 1); got[0] != i {
			t.Fatalf("delivery %d, want %d", got[0], i)
		}
	}
	if n := lingers(c); n != 0 {
		t.Fatalf("%d lingers after single deliveries of 100 bytes", n)
	}
}

// TestReadLingerEndsForReply: a request made while the reader lingers ends
// the linger: its reply is read at once, not after the linger.
func TestReadLingerEndsForReply(t *testing.T) {
	b, c, fc, ch, cons := lingeringConsumer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := ch.QueueDeclare(ctx, "other", QueueDeclareOptions{}); err != nil {
		t.Fatalf("QueueDeclare while the reader lingers: %v", err)
	}
	// And while a reply is awaited the reader does not linger: the
	// burst and the withheld reply that follows it both arrive.
	release := withheldReply(b, "third", nil)
	res := awaitDeclare(ch, "third")
	waitFor(t, "the declare to be awaited", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.l.waiters) > c.l.quiet
	})
	before := lingers(c)
	fc.deliverBurst(ch.ID(), cons.Tag(), 21, 20, 100)
	waitFor(t, "the burst", func() bool { return cons.Stats().Buffered == 40 })
	if n := lingers(c) - before; n != 0 {
		t.Errorf("%d lingers while a reply was awaited", n)
	}
	release()
	if err := <-res; err != nil {
		t.Fatalf("QueueDeclare awaited during a burst: %v", err)
	}
	if got := takeN(t, cons, 40); got[39] != 40 {
		t.Fatalf("last delivery %d, want 40", got[39])
	}
}

// lingeringPublisher returns a connection with a channel in confirm mode
// whose publishes the fake broker acks when the test sends their tag on
// acks, and whose reader lingers (for an hour) after reading the ack of
// a first message that nobody waited for.
func lingeringPublisher(t *testing.T, mod func(*fakeBroker, *Config)) (b *fakeBroker, c *Conn, pub *Channel, acks chan<- uint64) {
	t.Helper()
	hourLinger(t)
	b, c = lingerFake(t, time.Hour, mod)
	pub = stallChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
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
	if _, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	ackc <- 1
	waitFor(t, "the reader to linger after an ack nobody waited for", func() bool { return lingering(c) })
	return b, c, pub, ackc
}

// TestReadLingerConfirmWaits: each way of waiting for a publisher
// confirmation ends the reader's linger (an hour here), so that the ack
// already in the socket is read at once.
func TestReadLingerConfirmWaits(t *testing.T) {
	waits := map[string]func(ctx context.Context, pub *Channel, conf *Confirmation) error{
		"Wait": func(ctx context.Context, _ *Channel, conf *Confirmation) error { return conf.Wait(ctx) },
		"Done": func(ctx context.Context, _ *Channel, conf *Confirmation) error {
			select {
			case <-conf.Done():
				return conf.Err()
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		"WaitConfirms": func(ctx context.Context, pub *Channel, _ *Confirmation) error { return pub.WaitConfirms(ctx) },
	}
	for name, wait := range waits {
		t.Run(name, func(t *testing.T) {
			_, c, pub, acks := lingeringPublisher(t, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("second")})
			if err != nil {
				t.Fatal(err)
			}
			if !lingering(c) {
				t.Fatal("a publish in confirm mode ended the linger: nobody waits for its confirmation yet")
			}
			acks <- 2
			if err := wait(ctx, pub, conf); err != nil {
				t.Fatalf("%s while the reader lingers: %v", name, err)
			}
		})
	}
}

// TestReadLingerRoomToPublish: a publisher waiting for room under
// MaxUnconfirmed ends the linger; the ack that makes room is read.
func TestReadLingerRoomToPublish(t *testing.T) {
	_, c, pub, acks := lingeringPublisher(t, func(_ *fakeBroker, cfg *Config) { cfg.MaxUnconfirmed = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, "", "x", Message{Body: []byte("second")}); err != nil {
		t.Fatal(err)
	}
	acks <- 2
	if !lingering(c) {
		t.Fatal("the linger ended before anyone waited")
	}
	if err := pub.Publish(ctx, "", "x", Message{Body: []byte("third")}); err != nil {
		t.Fatalf("Publish waiting for room while the reader lingers: %v", err)
	}
}

// TestReadLingerNotWhileWaiting: while a goroutine waits for a
// confirmation, a burst of deliveries is not followed by a linger, and
// the confirmation that comes after it is read.
func TestReadLingerNotWhileWaiting(t *testing.T) {
	b, c, pub, acks := lingeringPublisher(t, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("second")})
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- conf.Wait(ctx) }()
	waitFor(t, "the wait to start", func() bool { return c.confirmWaits.Load() == 1 })
	before := lingers(c)
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	if got := takeN(t, cons, 20); got[19] != 20 {
		t.Fatalf("last delivery %d, want 20", got[19])
	}
	if n := lingers(c) - before; n != 0 {
		t.Errorf("%d lingers while a confirmation was waited for", n)
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for tag := uint64(2); tag < 300; tag++ {
		conf, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("m")})
		if err != nil {
			t.Fatal(err)
		}
		if tag%2 == 0 {
			acks <- tag // before the wait starts
		} else {
			go func() { acks <- tag }() // racing it
		}
		if tag%3 == 0 {
			err = pub.WaitConfirms(ctx)
		} else {
			err = conf.Wait(ctx)
		}
		if err != nil {
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := closeReturns(ctx, t, c); err != nil {
		t.Fatalf("Close while the reader lingers: %v", err)
	}
	readerEnds(t, c)
}

// TestReadLingerEndsAtPeerClose: the broker's end of the socket closing
// while the reader lingers ends the linger and the connection.
func TestReadLingerEndsAtPeerClose(t *testing.T) {
	_, c, fc, _, cons := lingeringConsumer(t)
	fc.kill()
	readerEnds(t, c)
	if got := takeN(t, cons, 20); got[19] != 20 {
		t.Fatalf("last delivery %d, want 20", got[19])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cons.Next(ctx); err == nil {
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
		takeN(t, cons, 20)
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	older, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("second")})
	if err != nil {
		t.Fatal(err)
	}
	newest, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("third")})
	if err != nil {
		t.Fatal(err)
	}
	acks <- 3 // a multiple ack would do as well; two singles here
	acks <- 2
	res := make(chan error, 1)
	go func() { res <- older.Wait(ctx) }()
	waitFor(t, "the wait for the older confirmation to start", func() bool {
		older.mu.Lock()
		defer older.mu.Unlock()
		return older.wake != nil
	})
	if !lingering(c) || c.confirmWaits.Load() != 0 {
		t.Fatalf("a wait for an older confirmation: lingering %v, %d waits counted", lingering(c), c.confirmWaits.Load())
	}
	if err := newest.Wait(ctx); err != nil {
		t.Fatalf("Wait for the newest confirmation while the reader lingers: %v", err)
	}
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
	for _, inline := range []bool{false, true} {
		name := "Next"
		if inline {
			name = "Inline"
		}
		t.Run(name, func(t *testing.T) {
			hourLinger(t)
			b, c := lingerFake(t, time.Hour, nil)
			fc := b.conn(1)
			ch := stallChannel(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := ch.Qos(ctx, QosOptions{PrefetchCount: 2}); err != nil {
				t.Fatal(err)
			}
			const n = 50
			var tag string
			acked := make(chan uint64, n)
			b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
				if a, ok := m.(*wire.BasicAck); ok && chID == ch.ID() {
					acked <- a.DeliveryTag
					if a.DeliveryTag < n {
						go fc.deliverN(chID, tag, a.DeliveryTag+1, 2048)
					}
					return true
				}
				return false
			})
			var cons *Consumer
			if inline {
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
			for i := uint64(1); i <= n; i++ {
				if !inline {
					d, err := cons.Next(ctx)
					if err != nil {
						t.Fatalf("Next %d: %v", i, err)
					}
					if err := d.Ack(false); err != nil {
						t.Fatal(err)
					}
				}
				select {
				case got := <-acked:
					if got != i {
						t.Fatalf("ack of %d, want %d", got, i)
					}
				case <-ctx.Done():
					t.Fatalf("message %d: the broker's next delivery waits behind a linger", i)
				}
			}
		})
	}
}

// TestReadLingerAckWithCreditLeft: an ack that leaves the prefetch window
// far from full (20 unacked of 1,000) leaves the linger alone.
func TestReadLingerAckWithCreditLeft(t *testing.T) {
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ch.Qos(ctx, QosOptions{PrefetchCount: 1000}); err != nil {
		t.Fatal(err)
	}
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
