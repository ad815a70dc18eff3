//go:build linux

package pika

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Second review of Config.ReadLinger: confirmation waits while the reader
// lingers (an hour: a missed wake-up hangs, bounded by the calls' ctx of
// 20 s).

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
				older, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("second")})
				if err != nil {
					t.Fatal(err)
				}
				newest, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("third")})
				if err != nil {
					t.Fatal(err)
				}
				res := make(chan error, 1)
				wait := func() { go func() { res <- older.Wait(ctx) }() }
				if waitFirst {
					wait()
					waitFor(t, "the wait for the older confirmation to start", func() bool {
						older.mu.Lock()
						defer older.mu.Unlock()
						return older.wake != nil
					})
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
				waitFor(t, "no confirmation wait counted", func() bool { return c.confirmWaits.Load() == 0 })
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
			hourLinger(t)
			b, c := lingerFake(t, time.Hour, nil)
			fc := b.conn(1)
			ch := stallChannel(t, c)
			ctx := lingerCtx(t)
			// The broker holds the next delivery back for the ack only
			// under a prefetch count; without one it would not wait.
			if err := ch.Qos(ctx, QosOptions{PrefetchCount: 1}); err != nil {
				t.Fatal(err)
			}
			const total = 50
			var tag string
			var mu sync.Mutex
			next := uint64(1)
			b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
				switch m.(type) {
				case *wire.BasicAck, *wire.BasicNack, *wire.BasicReject:
				default:
					return false
				}
				mu.Lock()
				next++
				n := next
				mu.Unlock()
				if n <= total {
					go fc.deliverN(chID, tag, n, 2048)
				}
				return true
			})
			got := make(chan uint64, total)
			var cons *Consumer
			var err error
			if mode == "inline" {
				cons, err = ch.ConsumeFunc(ctx, "q", ConsumeOptions{Inline: true}, func(_ context.Context, d *Delivery) {
					got <- d.DeliveryTag
					if err := d.Ack(false); err != nil {
						t.Error(err)
					}
				})
			} else {
				cons, err = ch.Consume(ctx, "q", ConsumeOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			tag = cons.Tag()
			fc.deliverN(ch.ID(), tag, 1, 2048)
			for i := uint64(1); i <= total; i++ {
				if mode == "inline" {
					select {
					case d := <-got:
						if d != i {
							t.Fatalf("delivery %d, want %d", d, i)
						}
					case <-ctx.Done():
						t.Fatalf("delivery %d: %v (lingers %d)", i, ctx.Err(), lingers(c))
					}
					continue
				}
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
	pub := stallChannel(t, c)
	ctx := lingerCtx(t)
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seq uint64
	rng := rand.New(rand.NewPCG(1, 2))
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); !ok || chID != pub.ID() {
			return false
		}
		mu.Lock()
		seq++
		tag := seq
		delay := time.Duration(rng.IntN(300)) * time.Microsecond
		nack := rng.IntN(7) == 0
		mu.Unlock()
		go func() {
			time.Sleep(delay) // shuffles the order, not a timing assert
			if nack {
				fc.send(chID, &wire.BasicNack{DeliveryTag: tag})
			} else {
				fc.send(chID, &wire.BasicAck{DeliveryTag: tag})
			}
		}()
		return true
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
					select {
					case <-conf.Done():
					case <-ctx.Done():
					}
					err = ctx.Err()
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
	waitFor(t, "no confirmation wait counted", func() bool { return c.confirmWaits.Load() == 0 })
}

// TestLingerReview2WaitCounts: every way a confirmation wait ends leaves
// no wait counted (a count left behind would forbid lingering for good),
// and each wait for the newest message ends the hour-long linger.
func TestLingerReview2WaitCounts(t *testing.T) {
	publish := func(t *testing.T, pub *Channel) *Confirmation {
		t.Helper()
		conf, err := pub.PublishWithConfirm(lingerCtx(t), "", "x", Message{Body: []byte("m")})
		if err != nil {
			t.Fatal(err)
		}
		return conf
	}
	zero := func(t *testing.T, c *Conn) {
		t.Helper()
		waitFor(t, "no confirmation wait counted", func() bool { return c.confirmWaits.Load() == 0 })
	}
	t.Run("Wait ends by ctx, then Wait again", func(t *testing.T) {
		_, c, pub, acks := lingeringPublisher(t, nil)
		conf := publish(t, pub)
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, 1)
		go func() { res <- conf.Wait(ctx) }()
		waitFor(t, "the wait to be counted", func() bool { return c.confirmWaits.Load() == 1 })
		cancel()
		if err := <-res; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait: %v", err)
		}
		zero(t, c)
		acks <- 2
		if err := conf.Wait(lingerCtx(t)); err != nil {
			t.Fatal(err)
		}
		zero(t, c)
	})
	t.Run("Done twice, Wait and Wait ending by ctx", func(t *testing.T) {
		_, c, pub, acks := lingeringPublisher(t, nil)
		conf := publish(t, pub)
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
		zero(t, c)
	})
	t.Run("Wait and Done concurrently", func(t *testing.T) {
		_, c, pub, acks := lingeringPublisher(t, nil)
		for tag := uint64(2); tag < 200; tag++ {
			conf := publish(t, pub)
			ctx, cancel := context.WithCancel(lingerCtx(t))
			res := make(chan error, 1)
			go func() { res <- conf.Wait(ctx) }()
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
			zero(t, c)
		}
	})
	for _, how := range []string{"Channel.Close", "Conn.Close", "channel closed by the broker"} {
		t.Run(how, func(t *testing.T) {
			b, c, pub, _ := lingeringPublisher(t, nil)
			older, newest := publish(t, pub), publish(t, pub)
			res := make(chan error, 2)
			go func() { res <- older.Wait(lingerCtx(t)) }()
			go func() {
				select {
				case <-newest.Done():
					res <- newest.Err()
				case <-lingerCtx(t).Done():
					res <- lingerCtx(t).Err()
				}
			}()
			waitFor(t, "the newest's wait to be counted", func() bool { return c.confirmWaits.Load() == 1 })
			var err error
			switch how {
			case "Channel.Close":
				err = pub.Close(lingerCtx(t))
			case "Conn.Close":
				err = closeReturns(lingerCtx(t), t, c)
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
			zero(t, c)
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
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, func(_ *fakeBroker, cfg *Config) { cfg.DisableRecovery = false })
	pub := stallChannel(t, c)
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
	older, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("older")})
	if err != nil {
		t.Fatal(err)
	}
	newest, err := pub.PublishWithConfirm(ctx, "", "nowhere", Message{Body: []byte("newest"), Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	<-published
	<-published
	fc := b.conn(1)
	fc.wmu.Lock()
	fc.nc.Write(scripted.Message(pub.ID(), &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nowhere"}, &wire.Properties{}, []byte("newest"), 128<<10))
	fc.wmu.Unlock()
	if err := newest.Wait(ctx); !errors.Is(err, ErrReturned) {
		t.Fatalf("the returned message: %v", err)
	}
	res := make(chan error, 1)
	go func() { res <- older.Wait(ctx) }()
	waitFor(t, "the wait for the older confirmation to start", func() bool {
		older.mu.Lock()
		defer older.mu.Unlock()
		return older.wake != nil
	})
	fc.kill()
	if n := <-published; n != 2 {
		t.Fatalf("republished on connection %d", n)
	}
	waitFor(t, "the recovery", func() bool { return b.count() == 2 && !c.IsRecovering() })
	fc = b.conn(2)
	before := lingers(c)
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	takeN(t, cons, 20)
	fc.send(pub.ID(), &wire.BasicAck{DeliveryTag: 1})
	if err := <-res; err != nil {
		t.Fatalf("Wait for the republished message (lingers since the recovery: %d): %v", lingers(c)-before, err)
	}
	waitFor(t, "no confirmation wait counted", func() bool { return c.confirmWaits.Load() == 0 })
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
	hourLinger(t)
	b, c := lingerFake(t, time.Hour, func(_ *fakeBroker, cfg *Config) { cfg.WriteBufferLimit = 8 << 10 })
	ch := stallChannel(t, c)
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
	lingerAfterBurst(t, b.conn(1), c, ch, cons, 1)
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
		var err error
		if round%2 == 0 {
			err = tx.TxCommit(ctx)
		} else {
			err = tx.TxRollback(ctx)
		}
		if err != nil {
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
				return
			}
			wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			if err := conf.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Wait in an inline handler: %v, want the ctx's end (the reader runs the handler)", err)
			}
			confs <- conf
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	fc.deliverBurst(ch.ID(), cons.Tag(), 1, 20, 100)
	conf := <-confs
	waitFor(t, "no confirmation wait counted", func() bool { return c.confirmWaits.Load() == 0 })
	if err := conf.Wait(ctx); err != nil {
		t.Fatalf("confirmation waited for outside the handler: %v", err)
	}
	waitFor(t, "no confirmation wait counted", func() bool { return c.confirmWaits.Load() == 0 })
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
		older, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("older")})
		if err != nil {
			t.Fatal(err)
		}
		newer, err := pub.PublishWithConfirm(ctx, "", "x", Message{Body: []byte("newer")})
		if err != nil {
			t.Fatal(err)
		}
		res := make(chan error, 1)
		acks <- tag + 1
		if tag%4 == 0 {
			go func() { res <- older.Wait(ctx) }()
		} else {
			go func() {
				select {
				case <-older.Done():
					res <- older.Err()
				case <-ctx.Done():
					res <- ctx.Err()
				}
			}()
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
	waitFor(t, "no confirmation wait counted", func() bool { return c.confirmWaits.Load() == 0 })
}
