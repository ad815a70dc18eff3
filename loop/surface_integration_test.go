package loop

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// steps runs named asynchronous steps one after the other on the loop: each
// gets the function that starts the next one.
func steps(t *testing.T, got *[]string, stop func(), fns ...func(next func(string, error))) {
	var step func(i int)
	step = func(i int) {
		if i == len(fns) {
			stop()
			return
		}
		fns[i](func(name string, err error) {
			*got = append(*got, fmt.Sprint(name, ": ", err))
			step(i + 1)
		})
	}
	step(0)
}

// The protocol surface against the broker: exchanges, queues, bindings,
// qos, tx, get, returns, a refused passive declare, and close.
func TestIntegrationSurface(t *testing.T) {
	url := testenv.Broker(t)
	before := snapshot(t)
	ex, ex2, q := testenv.Name(t, "loop-x"), testenv.Name(t, "loop-x2"), testenv.Name(t, "loop-q")
	var got []string
	var returned []string
	run(t, 20*time.Second, func(l *Loop, stop func()) {
		cfg, err := pika.ParseURL(url)
		if err != nil {
			t.Error(err)
			stop()
			return
		}
		withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
			ch.OnReturn(func(r *pika.Return) { returned = append(returned, fmt.Sprint(int(r.ReplyCode), " ", string(r.Body))) })
			steps(t, &got, func() { c.Close(func(error) { stop() }) },
				func(next func(string, error)) {
					ch.ExchangeDeclare(ex, pika.ExchangeTopic, pika.ExchangeDeclareOptions{AutoDelete: true}, func(err error) { next("exchange.declare", err) })
				},
				func(next func(string, error)) {
					ch.ExchangeDeclare(ex2, pika.ExchangeFanout, pika.ExchangeDeclareOptions{}, func(err error) { next("exchange.declare 2", err) })
				},
				func(next func(string, error)) {
					ch.ExchangeBind(ex2, ex, "a.#", pika.BindOptions{}, func(err error) { next("exchange.bind", err) })
				},
				func(next func(string, error)) {
					ch.QueueDeclare(q, pika.QueueDeclareOptions{}, func(qq pika.Queue, err error) { next("queue.declare "+fmt.Sprint(qq.Name == q), err) })
				},
				func(next func(string, error)) {
					ch.QueueBind(q, ex2, "", pika.BindOptions{}, func(err error) { next("queue.bind", err) })
				},
				func(next func(string, error)) {
					ch.Qos(pika.QosOptions{PrefetchCount: 10}, func(err error) { next("basic.qos", err) })
				},
				func(next func(string, error)) {
					ch.Publish(ex, "a.b", pika.Message{Body: []byte("routed")})
					ch.Publish(ex, "b", pika.Message{Body: []byte("unroutable"), Mandatory: true})
					ch.TxSelect(func(err error) { next("tx.select", err) })
				},
				func(next func(string, error)) {
					ch.Publish("", q, pika.Message{Body: []byte("rolled back")})
					ch.TxRollback(func(err error) { next("tx.rollback", err) })
				},
				func(next func(string, error)) {
					ch.Publish("", q, pika.Message{Body: []byte("committed")})
					ch.TxCommit(func(err error) { next("tx.commit", err) })
				},
				func(next func(string, error)) {
					ch.QueueDeclarePassive(q, func(qq pika.Queue, err error) { next(fmt.Sprint("passive: ", qq.Messages, " messages"), err) })
				},
				func(next func(string, error)) {
					ch.Get(q, false, func(d *Delivery, ok bool, err error) {
						if ok {
							err = errors.Join(err, d.Ack(false))
							next("get "+string(d.Body), err)
							return
						}
						next("get nothing", err)
					})
				},
				func(next func(string, error)) {
					ch.QueuePurge(q, pika.PurgeOptions{}, func(n int, err error) { next(fmt.Sprint("purge ", n), err) })
				},
				func(next func(string, error)) {
					ch.QueueUnbind(q, ex2, "", pika.BindOptions{}, func(err error) { next("queue.unbind", err) })
				},
				func(next func(string, error)) {
					ch.ExchangeUnbind(ex2, ex, "a.#", pika.BindOptions{}, func(err error) { next("exchange.unbind", err) })
				},
				func(next func(string, error)) {
					ch.QueueDelete(q, pika.QueueDeleteOptions{}, func(n int, err error) { next(fmt.Sprint("queue.delete ", n), err) })
				},
				func(next func(string, error)) {
					ch.ExchangeDelete(ex2, pika.ExchangeDeleteOptions{}, func(err error) { next("exchange.delete", err) })
				},
				func(next func(string, error)) {
					ch.ExchangeDelete(ex, pika.ExchangeDeleteOptions{}, func(err error) { next("exchange.delete", err) })
				},
				func(next func(string, error)) {
					ch.QueueDeclarePassive(q, func(_ pika.Queue, err error) {
						next(fmt.Sprint("passive of the deleted queue: not found ", errors.Is(err, pika.ErrNotFound), ", channel closed ", ch.IsClosed()), nil)
					})
				},
			)
		})
	})
	want := []string{
		"exchange.declare: <nil>", "exchange.declare 2: <nil>", "exchange.bind: <nil>",
		"queue.declare true: <nil>", "queue.bind: <nil>", "basic.qos: <nil>",
		"tx.select: <nil>", "tx.rollback: <nil>", "tx.commit: <nil>",
		"passive: 2 messages: <nil>", "get routed: <nil>", "purge 1: <nil>",
		"queue.unbind: <nil>", "exchange.unbind: <nil>", "queue.delete 0: <nil>",
		"exchange.delete: <nil>", "exchange.delete: <nil>",
		"passive of the deleted queue: not found true, channel closed true: <nil>",
	}
	expectCalls(t, got, want)
	if !slices.Equal(returned, []string{"312 unroutable"}) {
		t.Errorf("returns: %q", returned)
	}
	expectNoLeak(t, before)
}

// A hundred connections on one loop publish with confirms and consume
// their own messages; everything is confirmed and delivered, and nothing
// is left behind.
func TestIntegrationManyConnections(t *testing.T) {
	url := testenv.Broker(t)
	before := snapshot(t)
	const conns, each = 100, 20
	confirmed, delivered, closed := 0, 0, 0
	run(t, 60*time.Second, func(l *Loop, stop func()) {
		for i := 0; i < conns; i++ {
			q := testenv.Name(t, fmt.Sprintf("loop-many-%d", i))
			l.Dial(url, func(c *Conn, err error) {
				if err != nil {
					t.Errorf("dial %d: %v", i, err)
					stop()
					return
				}
				got, conf := 0, 0
				finish := func() {
					if got != each || conf != each {
						return
					}
					c.Close(func(err error) {
						if err != nil {
							t.Errorf("close: %v", err)
						}
						if closed++; closed == conns {
							stop()
						}
					})
				}
				c.Channel(func(ch *Channel, err error) {
					if err != nil {
						t.Errorf("channel: %v", err)
						return
					}
					// Publishes on another channel are not ordered after the
					// declare: publish once it is done.
					ch.QueueDeclare(q, pika.QueueDeclareOptions{AutoDelete: true}, func(_ pika.Queue, err error) {
						if err != nil {
							t.Errorf("declare: %v", err)
						}
					})
					ch.Consume(q, ConsumeOptions{AutoAck: true}, func(d *Delivery) {
						delivered++
						got++
						finish()
					}, func(*Consumer, error) {
						c.Channel(func(pub *Channel, err error) {
							if err != nil {
								t.Errorf("channel: %v", err)
								return
							}
							pub.ConfirmSelect(nil)
							for j := 0; j < each; j++ {
								pub.PublishConfirm("", q, pika.Message{Body: []byte("m")}, func(err error) {
									if err != nil {
										t.Errorf("confirm: %v", err)
									}
									confirmed++
									conf++
									finish()
								})
							}
						})
					})
				})
			})
		}
	})
	if confirmed != conns*each || delivered != conns*each || closed != conns {
		t.Errorf("confirmed %d, delivered %d, closed %d; want %d, %d, %d", confirmed, delivered, closed, conns*each, conns*each, conns)
	}
	expectNoLeak(t, before)
}
