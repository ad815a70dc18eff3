package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// linkHooks records the connect, disconnect and recovery hooks.
type linkHooks struct{ got *[]string }

func (h linkHooks) OnConnect(ev pika.ConnectEvent) {
	*h.got = append(*h.got, fmt.Sprint("hook connect ", ev.Err == nil))
}
func (h linkHooks) OnDisconnect(ev pika.DisconnectEvent) {
	*h.got = append(*h.got, fmt.Sprint("hook disconnect ", ev.Err != nil, " recovering ", ev.Conn.IsRecovering()))
}
func (h linkHooks) OnRecovery(_ *pika.Conn, ev pika.RecoveryEvent) {
	*h.got = append(*h.got, fmt.Sprint("hook ", ev.Kind))
}

// Across a recovery, the hooks hear of each link (a disconnect for the
// lost one, a connect for the new one) and of each recovery event; a
// mandatory message the broker returned before the loss keeps its
// outcome (pika.ErrReturned) and is not republished, while the other
// unconfirmed message is.
func TestRecoveryHooksAndReturnedMessage(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			returnedThenCut,
			func(p *peer) {
				p.confirmChannel()
				if body := expectPublish(p, 1); body != "m2" {
					p.t.Errorf("republished %q, want m2 only", body)
				}
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}))
				p.closeConn()
			})
		var got []string
		cfg.Hooks = []pika.Hook{linkHooks{&got}}
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.ConfirmSelect(nil)
				ch.PublishConfirm("", "nowhere", pika.Message{Mandatory: true, Body: []byte("m1")}, func(err error) {
					got = append(got, fmt.Sprint("m1 returned: ", errors.Is(err, pika.ErrReturned)))
				})
				ch.PublishConfirm("", "q", pika.Message{Body: []byte("m2")}, func(err error) {
					got = append(got, fmt.Sprint("m2: ", err))
					closeAndStop(t, c, stop)
				})
			})
		})
		wait()
		expectCalls(t, got, []string{
			"hook connect true", "m1 returned: true",
			"hook disconnect true recovering true", "hook lost", "hook attempt",
			"hook connect true", "hook recovered", "m2: <nil>", "hook disconnect false recovering false",
		})
	})
}

// Config.SecretRefresh goes on after a recovery: the new link gets its
// refreshes too, and UpdateSecret while the Conn has no link fails with
// pika.ErrRecovering.
func TestRecoverySecretRefresh(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		refreshed := func(p *peer) {
			expect[*wire.ConnectionUpdateSecret](p, 0)
			p.send(scripted.Method(0, &wire.ConnectionUpdateSecretOk{}))
		}
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				refreshed(p)
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				refreshes := 0
				for {
					switch m := p.method(0).(type) {
					case *wire.ConnectionUpdateSecret:
						refreshes++
						p.send(scripted.Method(0, &wire.ConnectionUpdateSecretOk{}))
						continue
					case *wire.ConnectionClose:
						p.send(scripted.Method(0, &wire.ConnectionCloseOk{}))
					default:
						p.t.Errorf("peer: %s", m.ID())
					}
					break
				}
				if refreshes == 0 {
					p.t.Errorf("no secret refresh on the recovered connection")
				}
			})
		cfg.Credentials = func(context.Context) (string, string, error) { return "guest", "token", nil }
		cfg.SecretRefresh = 100 * time.Millisecond
		// A refresh comes due while the Conn waits to reconnect.
		cfg.Reconnect = pika.Backoff{Initial: 300 * time.Millisecond, Max: 300 * time.Millisecond, MaxAttempts: 5}
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					got = append(got, ev.Kind.String())
					switch ev.Kind {
					case pika.RecoveryLost:
						c.UpdateSecret("s", "test", func(err error) { got = append(got, fmt.Sprint("update: ", err)) })
					case pika.RecoveryRecovered:
						// Past a refresh of the new link: the peer expects
						// it before the close.
						l.AfterFunc(time.Second, func() { closeAndStop(t, c, stop) })
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"lost", "attempt", "update: " + pika.ErrRecovering.Error(), "recovered"})
	})
}

// consumerHooks keeps the stand-ins the ConsumerHooks get.
type consumerHooks struct{ started *[]*pika.Consumer }

func (h consumerHooks) OnConsumerStart(cons *pika.Consumer)          { *h.started = append(*h.started, cons) }
func (h consumerHooks) OnConsumerEnd(cons *pika.Consumer, err error) {}

// A consumer of a server-named queue that recovery declares again under a
// new name follows it, and so does the stand-in the ConsumerHooks got:
// both report the new name as their Queue.
func TestRecoveryRenamedQueueOfHookConsumer(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "amq.gen-1"})
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.openChannel(2)
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "amq.gen-2"})
				answer[*wire.ChannelClose](p, 2, &wire.ChannelCloseOk{})
				if m := answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"}); m.Queue != "amq.gen-2" {
					p.t.Errorf("consumer restored on %q, want amq.gen-2", m.Queue)
				}
				p.closeConn()
			})
		var started []*pika.Consumer
		cfg.Hooks = []pika.Hook{consumerHooks{&started}}
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.QueueDeclare("", pika.QueueDeclareOptions{Exclusive: true}, func(q pika.Queue, err error) {
					ch.Consume(q.Name, ConsumeOptions{}, func(*Delivery) {}, func(cons *Consumer, err error) {
						if err != nil || len(started) != 1 {
							t.Errorf("consume: %v, %d consumers started", err, len(started))
							stop()
							return
						}
						got = append(got, fmt.Sprintf("before: %s, stand-in %s", cons.Queue(), started[0].Queue()))
						c.OnRecovery(func(ev pika.RecoveryEvent) {
							if ev.Kind == pika.RecoveryRecovered {
								got = append(got, fmt.Sprintf("after: %s, stand-in %s", cons.Queue(), started[0].Queue()))
								closeAndStop(t, c, stop)
							}
						})
					})
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"before: amq.gen-1, stand-in amq.gen-1", "after: amq.gen-2, stand-in amq.gen-2"})
	})
}
