package loop

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Returns, flow, blocked and a broker's cancel reach their callbacks, on
// the loop, in the order they arrived among the calls' callbacks; a
// delivery for an unknown consumer is rejected with requeue.
func TestNotifications(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.openChannel(1)
			expect[*wire.BasicConsume](p, 1)
			p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c1"}))
			expect[*wire.BasicPublish](p, 1)
			p.next()
			p.next()
			p.send(
				scripted.Message(1, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nowhere"}, nil, []byte("r"), 0),
				scripted.Method(0, &wire.ConnectionBlocked{Reason: "low on memory"}),
				scripted.Method(1, &wire.ChannelFlow{Active: false}),
				scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "ghost", DeliveryTag: 1}, nil, []byte("o"), 0),
				scripted.Method(0, &wire.ConnectionUnblocked{}),
				scripted.Method(1, &wire.BasicCancel{ConsumerTag: "c1", NoWait: true}),
			)
			expect[*wire.ChannelFlowOk](p, 1)
			rej := expect[*wire.BasicReject](p, 1)
			if rej.DeliveryTag != 1 || !rej.Requeue {
				t.Errorf("orphan rejected with %+v", rej)
			}
			expect[*wire.QueueDeclare](p, 1)
			p.send(scripted.Method(1, &wire.QueueDeclareOk{Queue: "q"}))
			p.closeConn()
		})
		var got []string
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				c.OnBlocked(func(blocked bool, reason string) { got = append(got, fmt.Sprint("blocked ", blocked, " ", reason)) })
				ch.OnReturn(func(r *pika.Return) {
					got = append(got, fmt.Sprint("return ", int(r.ReplyCode), " ", r.RoutingKey, " ", string(r.Body)))
				})
				unflow := ch.OnFlow(func(active bool) { got = append(got, fmt.Sprint("flow ", active)) })
				ch.OnFlow(func(active bool) { got = append(got, fmt.Sprint("flow2 ", active)); unflow() })
				ch.Consume("q", ConsumeOptions{OnEnd: func(err error) {
					got = append(got, fmt.Sprint("end ", errors.Is(err, pika.ErrConsumerCancelled)))
					ch.QueueDeclare("q", pika.QueueDeclareOptions{}, func(q pika.Queue, err error) {
						got = append(got, fmt.Sprint("declare ", err))
						c.Close(func(error) { stop() })
					})
				}}, func(*Delivery) {}, nil)
				ch.Publish("", "nowhere", pika.Message{Body: []byte("r"), Mandatory: true})
			})
		})
		wait()
		want := []string{
			"blocked true low on memory", "blocked false ", // connection-level: at once
			"return 312 nowhere r", "flow false", "flow2 false", "end true", "declare <nil>",
		}
		expectCalls(t, got, want)
	})
}

// Get, Ack, Cancel, tx and a wrong tag.
func TestGetAckCancelTx(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.openChannel(1)
			expect[*wire.BasicGet](p, 1)
			p.send(scripted.Message(1, &wire.BasicGetOk{DeliveryTag: 1, MessageCount: 4, RoutingKey: "q"}, &wire.Properties{MessageID: "id1"}, []byte("g"), 0))
			expect[*wire.BasicGet](p, 1)
			p.send(scripted.Method(1, &wire.BasicGetEmpty{}))
			if ack := expect[*wire.BasicAck](p, 1); ack.DeliveryTag != 1 {
				t.Errorf("ack %+v", ack)
			}
			expect[*wire.TxSelect](p, 1)
			p.send(scripted.Method(1, &wire.TxSelectOk{}))
			expect[*wire.TxCommit](p, 1)
			p.send(scripted.Method(1, &wire.TxCommitOk{}))
			expect[*wire.TxRollback](p, 1)
			p.send(scripted.Method(1, &wire.TxRollbackOk{}))
			expect[*wire.BasicConsume](p, 1)
			p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "amq.ctag-1"}),
				scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "amq.ctag-1", DeliveryTag: 2}, nil, []byte("d"), 0))
			expect[*wire.BasicCancel](p, 1)
			p.send(scripted.Method(1, &wire.BasicCancelOk{ConsumerTag: "amq.ctag-1"}))
			if n := expect[*wire.BasicNack](p, 1); n.DeliveryTag != 2 || !n.Requeue {
				t.Errorf("nack %+v", n)
			}
			expect[*wire.ChannelClose](p, 1)
			p.send(scripted.Method(1, &wire.ChannelCloseOk{}))
			p.closeConn()
		})
		var got []string
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				var last *Delivery
				ch.Get("q", false, func(d *Delivery, ok bool, err error) {
					got = append(got, fmt.Sprint("get ", ok, " ", err, " ", string(d.Body), " ", d.MessageID, " ", d.MessageCount))
					last = d
				})
				ch.Get("q", false, func(d *Delivery, ok bool, err error) {
					got = append(got, fmt.Sprint("get ", ok, " ", err, " ", d == nil))
					if err := last.Ack(false); err != nil {
						t.Errorf("ack: %v", err)
					}
					if err := last.Ack(false); !errors.Is(err, pika.ErrUnknownTag) {
						t.Errorf("second ack: %v, want ErrUnknownTag", err)
					}
					ch.TxSelect(func(err error) { got = append(got, fmt.Sprint("tx.select ", err)) })
					ch.TxCommit(func(err error) { got = append(got, fmt.Sprint("tx.commit ", err)) })
					ch.TxRollback(func(err error) { got = append(got, fmt.Sprint("tx.rollback ", err)) })
					ch.Consume("q", ConsumeOptions{OnEnd: func(err error) {
						got = append(got, fmt.Sprint("end ", errors.Is(err, pika.ErrConsumerClosed)))
					}}, func(d *Delivery) {
						got = append(got, "delivery "+string(d.Body))
						d.Nack(false, true)
					}, func(cons *Consumer, err error) {
						got = append(got, fmt.Sprint("consume ", cons.Tag(), " ", err))
						cons.Cancel(func(err error) {
							got = append(got, fmt.Sprint("cancel ", err))
							ch.Close(func(err error) {
								got = append(got, fmt.Sprint("channel close ", err))
								c.Close(func(err error) { stop() })
							})
						})
					})
				})
			})
		})
		wait()
		want := []string{
			"get true <nil> g id1 4", "get false <nil> true",
			"tx.select <nil>", "tx.commit <nil>", "tx.rollback <nil>",
			"consume amq.ctag-1 <nil>", "delivery d", "cancel <nil>", "end true", "channel close <nil>",
		}
		expectCalls(t, got, want)
	})
}

// A broker that never answers connection.close is dropped after
// CloseTimeout; Close's callback says so.
func TestCloseTimeout(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			expect[*wire.ConnectionClose](p, 0)
			p.nextOrEOF() // no answer; wait for the hang-up
		})
		cfg.CloseTimeout = 100 * time.Millisecond
		var closeErr error
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			l.DialConfig(cfg, func(c *Conn, err error) {
				if err != nil {
					t.Errorf("dial: %v", err)
					stop()
					return
				}
				c.Close(func(err error) { closeErr = err; stop() })
			})
		})
		wait()
		if !errors.Is(closeErr, ErrCloseTimeout) {
			t.Errorf("Close: %v, want ErrCloseTimeout", closeErr)
		}
	})
}
