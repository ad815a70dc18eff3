package loop

import (
	"strconv"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// A hundred connections on one loop publish with confirms from timers, 10
// messages a second each for 2 s (the shape of the bench's many mode, in
// small): every message is confirmed, each connection's confirmations come
// in publish order, the queue receives every message, every connection
// closes cleanly, and nothing is left behind. No timing is asserted: on a
// busy machine the schedule may slip, the outcome may not.
func TestIntegrationPacedConfirms(t *testing.T) {
	url := testenv.Broker(t)
	cfg, err := pika.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnectionName = testenv.Name(t, "loop-paced")
	before := snapshot(t)
	const conns, rate, perConn = 100, 10, 20
	const total = conns * perConn
	period := time.Second / rate
	q := testenv.Name(t, "loop-paced")
	var (
		published, confirmed, delivered, closed int
		pubs                                    []*Conn
		pubChans                                []*Channel
		owner                                   *Conn
	)
	run(t, 90*time.Second, func(l *Loop, stop func()) {
		fail := func(what string, err error) bool {
			if err != nil {
				t.Errorf("%s: %v", what, err)
				stop()
				return true
			}
			return false
		}
		// finish closes the publishers, then the queue's owner (which
		// deletes the queue), once everything is confirmed and delivered.
		finish := func() {
			if confirmed != total || delivered != total {
				return
			}
			for _, c := range pubs {
				c.Close(func(err error) {
					fail("close", err)
					if closed++; closed == conns {
						owner.Close(func(err error) {
							fail("close of the queue's owner", err)
							stop()
						})
					}
				})
			}
		}
		// publishFrom runs connection i's schedule: message k is due at
		// t0 + i*period/conns + k*period; a late timer catches up.
		publishFrom := func(i int, ch *Channel, t0 time.Time) {
			due := func(k int) time.Time {
				return t0.Add(period*time.Duration(i)/conns + period*time.Duration(k))
			}
			k, confirmedHere := 0, 0
			var tm *Timer
			tm = l.AfterFunc(time.Until(due(0)), func() {
				now := time.Now()
				for ; k < perConn && !due(k).After(now); k++ {
					k := k
					err := ch.PublishConfirm("", q, pika.Message{Body: []byte(strconv.Itoa(k))}, func(err error) {
						if fail("confirmation", err) {
							return
						}
						if k != confirmedHere {
							t.Errorf("connection %d: confirmation of message %d, want %d", i, k, confirmedHere)
						}
						confirmedHere++
						confirmed++
						finish()
					})
					if fail("publish", err) {
						return
					}
					published++
				}
				if k < perConn {
					tm.Reset(due(k).Sub(now))
				}
			})
		}
		withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
			owner = c
			// Exclusive: the broker deletes the queue with its owner,
			// whatever happens to the test.
			ch.QueueDeclare(q, pika.QueueDeclareOptions{Exclusive: true}, func(_ pika.Queue, err error) {
				if fail("declare", err) {
					return
				}
				ch.Consume(q, ConsumeOptions{AutoAck: true}, func(*Delivery) {
					delivered++
					finish()
				}, func(_ *Consumer, err error) {
					if fail("consume", err) {
						return
					}
					opened := 0
					for i := 0; i < conns; i++ {
						withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
							pubs = append(pubs, c)
							pubChans = append(pubChans, ch)
							ch.ConfirmSelect(func(err error) {
								if fail("confirm.select", err) {
									return
								}
								// Every connection starts on the same
								// schedule once the last one is ready.
								if opened++; opened == conns {
									t0 := time.Now()
									for j, ch := range pubChans {
										publishFrom(j, ch, t0)
									}
								}
							})
						})
					}
				})
			})
		})
	})
	if published != total || confirmed != total || delivered != total || closed != conns {
		t.Errorf("published %d, confirmed %d, delivered %d, closed %d; want %d, %d, %d, %d",
			published, confirmed, delivered, closed, total, total, total, conns)
	}
	expectNoLeak(t, before)
}
