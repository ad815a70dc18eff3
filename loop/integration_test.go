package loop

import (
	"fmt"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

func TestIntegrationPublishConfirmConsume(t *testing.T) {
	url := testenv.Broker(t)
	before := snapshot(t)
	q := testenv.Name(t, "loop-pcc")
	const n = 200
	var confirmed, delivered int
	run(t, 20*time.Second, func(l *Loop, stop func()) {
		fail := func(what string, err error) bool {
			if err != nil {
				t.Errorf("%s: %v", what, err)
				stop()
				return true
			}
			return false
		}
		l.Dial(url, func(c *Conn, err error) {
			if fail("dial", err) {
				return
			}
			c.Channel(func(pub *Channel, err error) {
				if fail("channel", err) {
					return
				}
				pub.QueueDeclare(q, pika.QueueDeclareOptions{}, func(_ pika.Queue, err error) {
					if fail("declare", err) {
						return
					}
					c.Channel(func(sub *Channel, err error) {
						if fail("channel 2", err) {
							return
						}
						sub.Consume(q, ConsumeOptions{}, func(d *Delivery) {
							if want := fmt.Sprint(delivered); string(d.Body) != want {
								t.Errorf("delivery %d: body %q", delivered, d.Body)
							}
							delivered++
							if err := d.Ack(false); err != nil {
								t.Errorf("ack: %v", err)
							}
							if delivered == n {
								pub.QueueDelete(q, pika.QueueDeleteOptions{}, func(_ int, err error) {
									fail("delete", err)
									c.Close(func(err error) {
										fail("close", err)
										stop()
									})
								})
							}
						}, func(_ *Consumer, err error) { fail("consume", err) })
					})
					pub.ConfirmSelect(func(err error) { fail("confirm.select", err) })
					for i := 0; i < n; i++ {
						i := i
						err := pub.PublishConfirm("", q, pika.Message{Body: []byte(fmt.Sprint(i))}, func(err error) {
							if err != nil {
								t.Errorf("confirm %d: %v", i, err)
							}
							if i != confirmed {
								t.Errorf("confirm callback of message %d, want %d", i, confirmed)
							}
							confirmed++
						})
						if err != nil {
							t.Errorf("publish: %v", err)
						}
					}
				})
			})
		})
	})
	if confirmed != n || delivered != n {
		t.Errorf("confirmed %d, delivered %d, want %d each", confirmed, delivered, n)
	}
	expectNoLeak(t, before)
}
