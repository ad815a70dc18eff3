package loop

import (
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

// A check of a cancelled consumer's queue that the broker never answers
// (neither the check's channel.open nor its passive queue.declare) fails
// after Config.HandshakeTimeout + Config.DialTimeout, as pika.Conn's does:
// the consumer waits (RecoveryConsumerWaiting with the timeout) and the
// next check brings it back. The late answer to the stalled check closes
// its channel.
func TestRecoveryConsumerCheckTimesOut(t *testing.T) {
	for _, stall := range []string{"channel.open", "queue.declare"} {
		t.Run(stall, func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := recoveringConfig(t, pair, func(p *peer) {
					consumeThenCancel(p)
					s := p.next()
					if _, ok := s.Method.(*wire.ChannelOpen); !ok {
						goTB{p.t, p.nc}.Fatalf("peer: want channel.open, got %v", s)
					}
					stalled := s.Channel
					var late wire.Method = &wire.ChannelOpenOk{}
					if stall == "queue.declare" {
						p.send(scripted.Method(stalled, &wire.ChannelOpenOk{}))
						expect[*wire.QueueDeclare](p, stalled)
						late = &wire.QueueDeclareOk{Queue: "q"}
					}
					// No answer: the next check comes after the bound.
					s = p.next()
					if _, ok := s.Method.(*wire.ChannelOpen); !ok || s.Channel == stalled {
						goTB{p.t, p.nc}.Fatalf("peer: want channel.open of a new check, got %v", s)
					}
					check := s.Channel
					// The late answer closes the stalled check's channel.
					p.send(scripted.Method(stalled, late))
					answer[*wire.ChannelClose](p, stalled, &wire.ChannelCloseOk{})
					p.send(scripted.Method(check, &wire.ChannelOpenOk{}))
					answer[*wire.QueueDeclare](p, check, &wire.QueueDeclareOk{Queue: "q"})
					answer[*wire.ChannelClose](p, check, &wire.ChannelCloseOk{})
					answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
					p.closeConn()
				})
				cfg.HandshakeTimeout = 500 * time.Millisecond // also bounds the handshake: not too short under load
				cfg.DialTimeout = 500 * time.Millisecond
				var got []string
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						ch.Consume("q", ConsumeOptions{Tag: "c1", AutoAck: true, OnEnd: func(err error) {
							got = append(got, fmt.Sprint("ended: ", err))
						}}, func(*Delivery) {}, nil)
						c.OnRecovery(func(ev pika.RecoveryEvent) {
							got = append(got, fmt.Sprint(ev.Kind, " ", ev.Attempt, " ", ev.Err != nil && strings.Contains(ev.Err.Error(), "no answer")))
							if ev.Kind == pika.RecoveryConsumerRestored {
								closeAndStop(t, c, stop)
							}
						})
					})
				})
				wait()
				want := []string{"consumer-waiting 1 true", "consumer-restored 2 false", "ended: pika: connection closed"}
				slices.Sort(got)
				slices.Sort(want)
				expectCalls(t, got, want)
			})
		})
	}
}

// The copy of a message kept for republishing holds its headers as they
// were at PublishConfirm, as pika.Conn's does: an application changing its
// headers table (or a table in it) afterwards does not change the
// republished message.
func TestRepublishKeepsHeadersAsPublished(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		want := fmt.Sprint(wire.Table{"k": "v1", "nested": wire.Table{"x": int32(1)}})
		headers := func(p *peer) string {
			expect[*wire.BasicPublish](p, 1)
			h := p.next().Header
			p.next() // body
			if h == nil {
				goTB{p.t, p.nc}.Fatalf("peer: no content header")
			}
			return fmt.Sprint(h.Properties.Headers)
		}
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.confirmChannel()
				if got := headers(p); got != want {
					p.t.Errorf("published headers %s, want %s", got, want)
				}
				p.cut()
			},
			func(p *peer) {
				p.confirmChannel()
				if got := headers(p); got != want {
					p.t.Errorf("republished headers %s, want %s", got, want)
				}
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}))
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.ConfirmSelect(nil)
				nested := wire.Table{"x": int32(1)}
				h := wire.Table{"k": "v1", "nested": nested}
				msg := pika.Message{Body: []byte("m1")}
				msg.Headers = h
				ch.PublishConfirm("", "k", msg, func(err error) {
					got = append(got, fmt.Sprint("confirm ", err))
					closeAndStop(t, c, stop)
				})
				h["k"] = "v2"
				h["added"] = "yes"
				nested["x"] = int32(2)
			})
		})
		wait()
		expectCalls(t, got, []string{"confirm <nil>"})
	})
}

// A recovery attempt that the broker ends with a code the first loss
// treats as final (the login refused with 403 ACCESS_REFUSED during the
// handshake, or a connection.close 530 NOT_ALLOWED or 403 during the
// restore) ends the recovery: no further attempt, RecoveryGaveUp with the
// broker's error, as pika.Conn does.
func TestRecoveryAttemptRefusedGivesUp(t *testing.T) {
	refusals := []struct {
		name string
		code uint16
		play func(p *peer, refusal *wire.ConnectionClose)
	}{
		{"login 403", 403, func(p *peer, refusal *wire.ConnectionClose) {
			hdr := make([]byte, 8)
			p.nc.Read(hdr)
			p.send(scripted.Method(0, &wire.ConnectionStart{VersionMajor: 0, VersionMinor: 9, Mechanisms: "PLAIN", Locales: "en_US"}))
			expect[*wire.ConnectionStartOk](p, 0)
			p.send(scripted.Method(0, refusal))
		}},
		{"restore 530", 530, func(p *peer, refusal *wire.ConnectionClose) {
			p.handshake(0)
			expect[*wire.ChannelOpen](p, 1)
			p.send(scripted.Method(0, refusal))
		}},
		{"restore 403", 403, func(p *peer, refusal *wire.ConnectionClose) {
			p.handshake(0)
			p.openChannel(1)
			p.openChannel(2)
			expect[*wire.QueueDeclare](p, 2)
			p.send(scripted.Method(0, refusal))
		}},
	}
	for _, rf := range refusals {
		t.Run(rf.name, func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				refusal := &wire.ConnectionClose{ReplyCode: rf.code, ReplyText: fmt.Sprintf("REFUSED %d", rf.code)}
				cfg, wait := recoveringConfig(t, pair,
					func(p *peer) {
						p.handshake(0)
						p.openChannel(1)
						answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "q"})
						p.cut()
					},
					func(p *peer) {
						rf.play(p, refusal)
						if s := p.nextOrEOF(); s != nil {
							if _, ok := s.Method.(*wire.ConnectionCloseOk); !ok {
								p.t.Errorf("peer: want connection.close-ok, got %v", s)
							}
						}
					})
				var got []string
				var ended error
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						ch.QueueDeclare("q", pika.QueueDeclareOptions{}, nil)
						c.OnRecovery(func(ev pika.RecoveryEvent) {
							got = append(got, fmt.Sprint(ev.Kind, " ", ev.Attempt))
						})
						c.OnClose(func(err error) {
							ended = err
							stop()
						})
					})
				})
				wait()
				expectCalls(t, got, []string{"lost 0", "attempt 1", "gave-up 0"})
				if ended == nil || !strings.Contains(ended.Error(), fmt.Sprintf("REFUSED %d", rf.code)) {
					t.Errorf("the Conn ended with %v, want the broker's refusal", ended)
				}
			})
		})
	}
}

// A reviving consumer's basic.consume that the broker does not answer
// within Config.HandshakeTimeout ends the revival, as pika.Conn's does: the
// consumer stays, left to its late consume-ok (no RecoveryConsumerRestored
// then).
func TestRecoveryConsumerReconsumeTimesOut(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		stalled, late := make(chan struct{}), make(chan struct{})
		cfg, wait := recoveringConfig(t, pair, func(p *peer) {
			consumeThenCancel(p)
			check := p.openAnyChannel()
			answer[*wire.QueueDeclare](p, check, &wire.QueueDeclareOk{Queue: "q"})
			answer[*wire.ChannelClose](p, check, &wire.ChannelCloseOk{})
			expect[*wire.BasicConsume](p, 1) // not answered in time
			close(stalled)
			select {
			case <-late:
			case <-time.After(15 * time.Second):
				goTB{p.t, p.nc}.Fatalf("peer: the revival did not end")
			}
			p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c1"}),
				scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1}, nil, []byte("late"), 0))
			p.closeConn()
		})
		cfg.HandshakeTimeout = 500 * time.Millisecond
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				c.OnRecovery(func(ev pika.RecoveryEvent) { got = append(got, ev.Kind.String()) })
				ch.Consume("q", ConsumeOptions{Tag: "c1", AutoAck: true}, func(d *Delivery) {
					got = append(got, "delivery "+string(d.Body))
					closeAndStop(t, c, stop)
				}, func(cons *Consumer, err error) {
					if err != nil {
						t.Errorf("consume: %v", err)
						stop()
						return
					}
					waitFor(l, func() bool {
						select {
						case <-stalled:
							return cons.rv == nil
						default:
							return false
						}
					}, func() { close(late) })
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"delivery late"})
	})
}
