//go:build linux

package pika

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

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
