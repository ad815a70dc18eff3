package loop_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/loop"
)

// A publisher on a loop that survives connection losses: recovery
// republishes what the loss left unconfirmed, and the application only
// pauses while the connection recovers (Publish fails with
// pika.ErrRecovering meanwhile) or too many messages await their
// confirmation.
func ExampleConn_OnRecovery() {
	l, err := loop.New()
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := pika.ParseURL("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	cfg.Reconnect = pika.Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second}
	l.DialConfig(cfg, func(c *loop.Conn, err error) {
		if err != nil {
			log.Fatal(err)
		}
		c.OnRecovery(func(ev pika.RecoveryEvent) {
			switch ev.Kind {
			case pika.RecoveryLost:
				log.Printf("connection lost: %v", ev.Err)
			case pika.RecoveryRecovered:
				log.Printf("recovered to %s: %d messages republished", ev.Report.Addr, ev.Report.Republished)
			}
		})
		c.Channel(func(ch *loop.Channel, err error) {
			if err != nil {
				log.Fatal(err)
			}
			ch.ConfirmSelect(nil)
			ch.QueueDeclare("jobs", pika.QueueDeclareOptions{Durable: true}, nil)
			var tick *loop.Timer
			tick = l.AfterFunc(100*time.Millisecond, func() {
				err := ch.PublishConfirm("", "jobs", pika.Message{Body: []byte("job")}, func(err error) {
					if err != nil {
						log.Printf("not confirmed: %v", err) // nacked, or recovery gave up
					}
				})
				// Skipped while recovering, or while Config.MaxUnconfirmed
				// messages await their confirmation.
				if err != nil && !errors.Is(err, pika.ErrRecovering) && !errors.Is(err, loop.ErrTooManyUnconfirmed) {
					log.Printf("publish: %v", err)
				}
				tick.Reset(100 * time.Millisecond)
			})
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = l.Run(ctx)
}

// A publisher that sends as fast as the broker confirms, within
// Config.MaxUnconfirmed: it publishes until the bound refuses a message,
// and each confirmation publishes the next.
func ExampleChannel_PublishConfirm() {
	l, err := loop.New()
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := pika.ParseURL("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	cfg.MaxUnconfirmed = 500
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.DialConfig(cfg, func(c *loop.Conn, err error) {
		if err != nil {
			log.Fatal(err)
		}
		c.Channel(func(ch *loop.Channel, err error) {
			if err != nil {
				log.Fatal(err)
			}
			ch.ConfirmSelect(nil)
			left, sent := 100000, 0
			var fill func()
			confirmed := func(err error) {
				if err != nil {
					log.Printf("not confirmed: %v", err)
				}
				if left--; left == 0 {
					c.Close(func(error) { cancel() })
					return
				}
				fill()
			}
			fill = func() {
				for sent < 100000 {
					err := ch.PublishConfirm("", "jobs", pika.Message{Body: []byte("job")}, confirmed)
					if errors.Is(err, loop.ErrTooManyUnconfirmed) {
						return // the next confirmation calls fill again
					}
					if err != nil {
						log.Printf("publish: %v", err)
						return
					}
					sent++
				}
			}
			fill()
		})
	})
	_ = l.Run(ctx)
}
