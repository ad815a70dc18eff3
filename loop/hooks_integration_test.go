package loop

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// Against the broker, a Conn's hooks see the connect, the channel, the
// consumer, publishes and their outcomes (a mandatory message returned), a
// delivery and its ack, the consumer's and channel's end and the
// disconnect, on the loop's goroutine, each event after those it follows
// from.
func TestIntegrationHooks(t *testing.T) {
	url := testenv.Broker(t)
	before := snapshot(t)
	q := testenv.Name(t, "loop-hooks")
	nowhere := q + ".nowhere"
	rec := newHookRecorder(t)
	rec.product = "RabbitMQ"
	var remote string
	run(t, 20*time.Second, func(l *Loop, stop func()) {
		goroutine := goid()
		rec.onLoop = func() bool { return goid() == goroutine }
		fail := func(what string, err error) bool {
			if err != nil {
				t.Errorf("%s: %v", what, err)
				stop()
				return true
			}
			return false
		}
		cfg, err := pika.ParseURL(url)
		if fail("url", err) {
			return
		}
		cfg.Hooks = []pika.Hook{rec}
		l.DialConfig(cfg, func(c *Conn, err error) {
			if fail("dial", err) {
				return
			}
			remote = c.remote
			c.Channel(func(ch *Channel, err error) {
				if fail("channel", err) {
					return
				}
				ch.QueueDeclare(q, pika.QueueDeclareOptions{Exclusive: true}, func(_ pika.Queue, err error) { fail("declare", err) })
				var cons *Consumer
				ch.Consume(q, ConsumeOptions{Tag: "hooked"}, func(d *Delivery) {
					fail("ack", d.Ack(false))
					cons.Cancel(func(err error) {
						fail("cancel", err)
						ch.Close(func(err error) {
							fail("channel close", err)
							c.Close(func(err error) { fail("close", err); stop() })
						})
					})
				}, func(c *Consumer, err error) { cons = c; fail("consume", err) })
				ch.ConfirmSelect(func(err error) { fail("confirm.select", err) })
				ch.PublishConfirm("", nowhere, pika.Message{Body: []byte("m1"), Mandatory: true}, func(err error) {
					if !errors.Is(err, pika.ErrReturned) {
						t.Errorf("unroutable mandatory message: %v, want ErrReturned", err)
					}
				})
				ch.PublishConfirm("", q, pika.Message{Body: []byte("m2"), Mandatory: true}, func(err error) { fail("publish m2", err) })
			})
		})
	})
	expectNoLeak(t, before)
	// Events that follow from one another come in that order (the broker
	// decides how the rest interleave).
	chains := [][]string{
		{"connect " + remote + " false", "channel open 1", "publish " + nowhere + " m1", "published seq=1 <nil>",
			"publish " + q + " m2", "published seq=2 <nil>", "outcome 2 acked ack"},
		{"published seq=1 <nil>", "outcome 1 returned returned m1"},
		{"channel open 1", "consumer start hooked", "delivery " + q + " m2 tag=1", "process " + q + " m2", "settle ack 1 n=1 library=false <nil>", "processed m2 <nil>",
			"consumer end hooked " + pika.ErrConsumerClosed.Error(), "channel close 1 <nil>", "disconnect " + remote + " <nil>"},
	}
	for _, chain := range chains {
		at := -1
		for _, ev := range chain {
			i := slices.Index(rec.events, ev)
			if i <= at {
				t.Errorf("event %q missing or out of order in\n\t%q", ev, rec.events)
				break
			}
			at = i
		}
	}
	if n := 16; len(rec.events) != n {
		t.Errorf("%d events, want %d: %q", len(rec.events), n, rec.events)
	}
	if rec.notOnLoop > 0 {
		t.Errorf("%d hook calls off the loop's goroutine", rec.notOnLoop)
	}
	if rec.read == 0 || rec.written == 0 {
		t.Errorf("OnBytes: %d read, %d written", rec.read, rec.written)
	}
}
