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
// pika.ErrRecovering meanwhile).
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
				if err != nil && !errors.Is(err, pika.ErrRecovering) {
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
