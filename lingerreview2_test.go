//go:build linux

package pika

import (
	"context"
	"testing"

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

var _ = context.Background
