package loop

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// withChannel dials cfg and opens a channel, then calls fn with both.
func withChannel(t *testing.T, l *Loop, cfg pika.Config, stop func(), fn func(c *Conn, ch *Channel)) {
	l.DialConfig(cfg, func(c *Conn, err error) {
		if err != nil {
			t.Errorf("dial: %v", err)
			stop()
			return
		}
		c.Channel(func(ch *Channel, err error) {
			if err != nil {
				t.Errorf("channel: %v", err)
				stop()
				return
			}
			fn(c, ch)
		})
	})
}

// A confirmation that arrives after the reply of a later call still runs
// first: callbacks follow the order of the calls. A delivery waits too.
func TestCallbackOrderFollowsCalls(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.openChannel(1)
			expect[*wire.ConfirmSelect](p, 1)
			p.send(scripted.Method(1, &wire.ConfirmSelectOk{}))
			expect[*wire.BasicPublish](p, 1)
			p.next() // header
			p.next() // body
			expect[*wire.QueueDeclare](p, 1)
			// declare-ok, a delivery and the ack come in the "wrong" order.
			p.send(scripted.Method(1, &wire.QueueDeclareOk{Queue: "q2"}))
			expect[*wire.BasicConsume](p, 1)
			p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "ctag"}),
				scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 1, RoutingKey: "q2"}, nil, []byte("m"), 0),
				scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}))
			p.closeConn()
		})
		var got []string
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.ConfirmSelect(func(err error) { got = append(got, fmt.Sprint("select ", err)) })
				err := ch.PublishConfirm("", "q1", pika.Message{Body: []byte("x")}, func(err error) {
					got = append(got, fmt.Sprint("confirm ", err))
				})
				if err != nil {
					t.Errorf("publish: %v", err)
				}
				ch.QueueDeclare("q2", pika.QueueDeclareOptions{}, func(q pika.Queue, err error) {
					got = append(got, fmt.Sprint("declare ", q.Name, " ", err))
				})
				ch.Consume("q2", ConsumeOptions{AutoAck: true}, func(d *Delivery) {
					got = append(got, "delivery "+string(d.Body))
					c.Close(func(err error) {
						got = append(got, fmt.Sprint("close ", err))
						stop()
					})
				}, func(cons *Consumer, err error) {
					got = append(got, fmt.Sprint("consume ", cons.Tag(), " ", err))
				})
				got = append(got, "calls made")
			})
		})
		wait()
		want := []string{"calls made", "select <nil>", "confirm <nil>", "declare q2 <nil>", "consume ctag <nil>", "delivery m", "close <nil>"}
		expectCalls(t, got, want)
	})
}

// A broker's channel.close fails the calls in flight and queued, resolves
// outstanding confirmations as unknown, ends consumers and closes the
// channel, in order; the connection and its other channels go on.
func TestChannelCloseFailsEverythingInOrder(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.openChannel(1)
			expect[*wire.BasicConsume](p, 1)
			p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c1"}))
			expect[*wire.ConfirmSelect](p, 1)
			p.send(scripted.Method(1, &wire.ConfirmSelectOk{}))
			expect[*wire.BasicPublish](p, 1)
			p.next()
			p.next()
			expect[*wire.QueueDeclare](p, 1)
			p.send(scripted.Method(1, &wire.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no queue 'nope'", ClassID: 50, MethodID: 10}))
			expect[*wire.ChannelCloseOk](p, 1)
			p.openChannel(2)
			p.closeConn()
		})
		var got []string
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.OnClose(func(err error) { got = append(got, fmt.Sprint("channel closed: ", errors.Is(err, pika.ErrNotFound))) })
				ch.Consume("q", ConsumeOptions{OnEnd: func(err error) {
					got = append(got, fmt.Sprint("consumer ended: ", errors.Is(err, pika.ErrNotFound)))
				}}, func(*Delivery) {}, nil)
				ch.ConfirmSelect(nil)
				ch.PublishConfirm("", "q", pika.Message{Body: []byte("b")}, func(err error) {
					got = append(got, fmt.Sprint("confirm: unknown ", errors.Is(err, pika.ErrOutcomeUnknown), ", cause ", errors.Is(err, pika.ErrNotFound)))
				})
				ch.QueueDeclarePassive("nope", func(_ pika.Queue, err error) {
					got = append(got, fmt.Sprint("declare: ", errors.Is(err, pika.ErrNotFound)))
				})
				ch.QueueBind("q", "x", "k", pika.BindOptions{}, func(err error) {
					got = append(got, fmt.Sprint("bind: ", errors.Is(err, pika.ErrNotFound)))
					// The channel is gone: a call now fails, later, in order.
					ch.QueueDelete("q", pika.QueueDeleteOptions{}, func(_ int, err error) {
						got = append(got, fmt.Sprint("delete after close: ", errors.Is(err, pika.ErrChannelClosed)))
					})
					if err := ch.Publish("", "q", pika.Message{}); !errors.Is(err, pika.ErrChannelClosed) {
						t.Errorf("Publish on a closed channel: %v", err)
					}
				})
				l.AfterFunc(100*time.Millisecond, func() {
					c.Channel(func(ch2 *Channel, err error) {
						got = append(got, fmt.Sprint("channel 2: ", err))
						c.Close(func(err error) { stop() })
					})
				})
			})
		})
		wait()
		want := []string{
			"confirm: unknown true, cause true", // published before the declare
			"declare: true",
			"bind: true",
			"consumer ended: true",
			"channel closed: true",
			"delete after close: true",
			"channel 2: <nil>",
		}
		expectCalls(t, got, want)
	})
}

// Bad input from the broker ends the connection with an error naming it;
// every callback gets the error, nothing panics, and nothing is left open.
func TestBadFramesFailTheConnection(t *testing.T) {
	cases := []struct {
		name  string
		bytes []byte
		want  string
	}{
		{"garbage", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), "frame"},
		{"unknown channel", scripted.Method(9, &wire.BasicAck{DeliveryTag: 1}), "channel"},
		{"truncated method", scripted.RawFrame(wire.FrameMethod, 1, scripted.MethodPayload(&wire.QueueDeclareOk{Queue: "abc"})[:6]), ""},
		{"body without header", scripted.Body(1, []byte("x")), ""},
		{"huge body announced", scripted.Concat(
			scripted.Method(1, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}),
			scripted.Header(1, 1<<62, nil)), ""},
		{"reply to nothing", scripted.Method(1, &wire.QueueDeclareOk{Queue: "x"}), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := scriptedConfig(t, pair, func(p *peer) {
					p.handshake(0)
					p.openChannel(1)
					expect[*wire.BasicConsume](p, 1)
					p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c"}))
					expect[*wire.BasicQos](p, 1)
					p.send(tc.bytes)
					// The client may send connection.close; read until it hangs up.
					buf := make([]byte, 4096)
					for {
						p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
						if _, err := p.nc.Read(buf); err != nil {
							return
						}
					}
				})
				var qosErr, connErr, endErr error
				var order []string
				run(t, 10*time.Second, func(l *Loop, stop func()) {
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						ch.Consume("q", ConsumeOptions{OnEnd: func(err error) { endErr = err; order = append(order, "end") }},
							func(*Delivery) {}, nil)
						ch.Qos(pika.QosOptions{PrefetchCount: 1}, func(err error) { qosErr = err; order = append(order, "qos") })
						c.OnClose(func(err error) {
							connErr = err
							order = append(order, "conn")
							stop()
						})
					})
				})
				wait()
				if connErr == nil || qosErr == nil || endErr == nil {
					t.Fatalf("connection error %v, qos error %v, consumer end %v: want errors", connErr, qosErr, endErr)
				}
				if !strings.Contains(strings.ToLower(connErr.Error()), tc.want) {
					t.Errorf("connection error %q does not mention %q", connErr, tc.want)
				}
				if !slices.Equal(order, []string{"qos", "end", "conn"}) {
					t.Errorf("order %q", order)
				}
			})
		})
	}
}
