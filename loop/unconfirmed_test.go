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

// Config.MaxUnconfirmed applies as pika.DefaultMaxUnconfirmed when zero,
// and not at all when negative.
func TestMaxUnconfirmedDefault(t *testing.T) {
	for _, c := range []struct{ in, want int }{{0, pika.DefaultMaxUnconfirmed}, {-1, 0}, {1, 1}, {20000, 20000}} {
		if got := maxUnconfirmed(c.in); got != c.want {
			t.Errorf("maxUnconfirmed(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

// On a channel in confirm mode with Config.MaxUnconfirmed messages
// awaiting their outcome, Publish and PublishConfirm fail at once with
// ErrTooManyUnconfirmed and send nothing; the message leaves the count when
// its ack arrives, before its callback runs, so publishing from the
// callback succeeds. Without confirm mode, and with a negative
// MaxUnconfirmed, nothing is bounded.
func TestMaxUnconfirmed(t *testing.T) {
	for _, max := range []int{2, -1} {
		t.Run(fmt.Sprint("max ", max), func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := scriptedConfig(t, pair, func(p *peer) {
					p.handshake(0)
					p.openChannel(1)
					for _, want := range []string{"plain 1", "plain 2", "plain 3"} {
						if body := expectPublish(p, 1); body != want {
							p.t.Errorf("published %q, want %q", body, want)
						}
					}
					answer[*wire.ConfirmSelect](p, 1, &wire.ConfirmSelectOk{})
					want := []string{"m1", "m2", "m3"}
					for _, w := range want[:2] {
						if body := expectPublish(p, 1); body != w {
							p.t.Errorf("published %q, want %q", body, w)
						}
					}
					if max < 0 {
						// Unbounded: m3 and m4 went out at once.
						expectPublish(p, 1)
						expectPublish(p, 1)
					}
					p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}))
					if max > 0 {
						// m3, published again from m1's callback.
						if body := expectPublish(p, 1); body != "m3" {
							p.t.Errorf("published %q, want m3", body)
						}
					} else {
						// m1's callback ran: the next ack comes after.
						answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "sync"})
					}
					p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 3, Multiple: true}))
					p.closeConn()
				})
				cfg.MaxUnconfirmed = max
				var got []string
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						// Not in confirm mode: not bounded.
						for i := 1; i <= 3; i++ {
							if err := ch.Publish("", "k", pika.Message{Body: []byte(fmt.Sprint("plain ", i))}); err != nil {
								t.Errorf("publish without confirm mode: %v", err)
							}
						}
						ch.ConfirmSelect(nil)
						left := 3
						var publish func(body string) error
						publish = func(body string) error {
							return ch.PublishConfirm("", "k", pika.Message{Body: []byte(body)}, func(err error) {
								got = append(got, fmt.Sprintf("confirm %s %v (unconfirmed %d)", body, err, ch.Unconfirmed()))
								switch {
								case body == "m1" && max > 0:
									got = append(got, fmt.Sprint("publish m3 again: ", publish("m3")))
								case body == "m1":
									ch.QueueDeclare("sync", pika.QueueDeclareOptions{}, nil)
								}
								if left--; left == 0 {
									closeAndStop(t, c, stop)
								}
							})
						}
						for _, body := range []string{"m1", "m2", "m3"} {
							got = append(got, fmt.Sprintf("publish %s: %v", body, publish(body)))
						}
						got = append(got, fmt.Sprint("publish without callback: ", ch.Publish("", "k", pika.Message{Body: []byte("m4")})),
							fmt.Sprint("unconfirmed ", ch.Unconfirmed()))
					})
				})
				wait()
				want := []string{
					"publish m1: <nil>", "publish m2: <nil>", "publish m3: " + ErrTooManyUnconfirmed.Error(),
					"publish without callback: " + ErrTooManyUnconfirmed.Error(), "unconfirmed 2",
					"confirm m1 <nil> (unconfirmed 1)", "publish m3 again: <nil>",
					"confirm m2 <nil> (unconfirmed 0)", "confirm m3 <nil> (unconfirmed 0)",
				}
				if max < 0 {
					want = []string{
						"publish m1: <nil>", "publish m2: <nil>", "publish m3: <nil>",
						"publish without callback: <nil>", "unconfirmed 4",
						"confirm m1 <nil> (unconfirmed 3)", "confirm m2 <nil> (unconfirmed 1)", "confirm m3 <nil> (unconfirmed 1)",
					}
				}
				expectCalls(t, got, want)
			})
		})
	}
}

// The copies kept for republishing count against Config.MaxUnconfirmed:
// while the connection recovers they are the channel's unconfirmed
// messages (publishes fail with pika.ErrRecovering first), and once they
// are republished a new publish fails with ErrTooManyUnconfirmed until the
// broker confirms one of them.
func TestMaxUnconfirmedAcrossRecovery(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.confirmChannel()
				expectPublish(p, 1)
				expectPublish(p, 1)
				p.cut()
			},
			func(p *peer) {
				p.confirmChannel()
				for _, want := range []string{"m1", "m2"} {
					if body := expectPublish(p, 1); body != want {
						p.t.Errorf("republished %q, want %q", body, want)
					}
				}
				// The application checks the bound once recovered, then
				// declares: only then is m1 confirmed.
				answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "sync"})
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}))
				if body := expectPublish(p, 1); body != "m3" {
					p.t.Errorf("published %q, want m3", body)
				}
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 3, Multiple: true}))
				p.closeConn()
			})
		cfg.MaxUnconfirmed = 2
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.ConfirmSelect(nil)
				left := 3
				var publish func(body string) error
				publish = func(body string) error {
					return ch.PublishConfirm("", "k", pika.Message{Body: []byte(body)}, func(err error) {
						got = append(got, fmt.Sprintf("confirm %s %v", body, err))
						if body == "m1" {
							got = append(got, fmt.Sprint("publish m3 from m1's callback: ", publish("m3")))
						}
						if left--; left == 0 {
							closeAndStop(t, c, stop)
						}
					})
				}
				publish("m1")
				publish("m2")
				got = append(got, fmt.Sprint("publish m3: ", publish("m3")))
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					switch ev.Kind {
					case pika.RecoveryLost:
						err := publish("m3")
						got = append(got, fmt.Sprintf("lost: unconfirmed %d, publish m3: recovering %v", ch.Unconfirmed(), errors.Is(err, pika.ErrRecovering)))
					case pika.RecoveryRecovered:
						got = append(got, fmt.Sprintf("recovered: unconfirmed %d, publish m3: %v", ch.Unconfirmed(), publish("m3")))
						ch.QueueDeclare("sync", pika.QueueDeclareOptions{}, nil)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{
			"publish m3: " + ErrTooManyUnconfirmed.Error(),
			"lost: unconfirmed 2, publish m3: recovering true",
			"recovered: unconfirmed 2, publish m3: " + ErrTooManyUnconfirmed.Error(),
			"confirm m1 <nil>", "publish m3 from m1's callback: <nil>", "confirm m2 <nil>", "confirm m3 <nil>",
		})
	})
}

// outageSizes lists what a Conn and its Loop hold that could grow while
// the connection is lost: timers, requests, channels, kept copies; the
// capacity of the loop's lists of deferred and posted functions and of
// channels to drain (which depends on how the work of a round batched, so
// is only bounded) in lists; and the callbacks waiting in the channel's
// order in waiting.
func outageSizes(l *Loop, c *Conn, ch *Channel) (sizes string, lists, waiting int) {
	l.mu.Lock()
	lists = cap(l.posted) + cap(l.spare)
	l.mu.Unlock()
	lists += cap(l.later) + cap(c.drains)
	if c.hk != nil {
		lists += cap(c.hk.failed)
	}
	return fmt.Sprintf("timers %d reqs %d chans %d conns %d unconfirmed %d",
		len(l.timers), len(c.reqs), len(c.chans), len(l.conns), ch.Unconfirmed()), lists, len(ch.slots) - ch.head
}

// During a long outage (hundreds of failed attempts) with the application
// calling at each attempt, a recovering Conn holds no more than after a
// few attempts: the calls fail at once and nothing (timers, deferred or
// posted functions, requests, kept copies) piles up. The one thing that
// grows is what the application asks for: the callback of a call refused
// with pika.ErrRecovering keeps its place in the channel's order, so while
// a message published in confirm mode before the loss awaits its
// republished copy's confirmation, the callbacks of later calls on its
// channel wait for it (one slot each, Publish and PublishConfirm refused
// hold none); without such a message they run at once. At the end of
// attempts the kept message resolves with pika.ErrOutcomeUnknown and every
// callback has run once.
func TestLongOutageHoldsNothingMore(t *testing.T) {
	const attempts = 300
	for _, tc := range []struct{ kept, hooked bool }{{false, false}, {true, false}, {true, true}} {
		kept := tc.kept
		t.Run(fmt.Sprintf("kept %v hooks %v", kept, tc.hooked), func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := recoveringConfig(t, pair, func(p *peer) {
					p.confirmChannel()
					if kept {
						expectPublish(p, 1)
					}
					p.cut()
				})
				cfg.Reconnect = pika.Backoff{Initial: time.Millisecond, Max: time.Millisecond, MaxAttempts: attempts}
				hooks := &outageHooks{}
				if tc.hooked {
					cfg.Hooks = []pika.Hook{hooks}
				}
				var early, late, outcome string
				var waitEarly, waitLate, lists int
				calls, done := 0, 0
				run(t, 60*time.Second, func(l *Loop, stop func()) {
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						ch.ConfirmSelect(nil)
						if kept {
							ch.PublishConfirm("", "k", pika.Message{Body: []byte("m1")}, func(err error) {
								outcome = fmt.Sprint("unknown ", errors.Is(err, pika.ErrOutcomeUnknown))
							})
						}
						refused := func(err error) {
							if !errors.Is(err, pika.ErrRecovering) {
								t.Errorf("a call while recovering failed with %v, want pika.ErrRecovering", err)
							}
							done++
						}
						c.OnRecovery(func(ev pika.RecoveryEvent) {
							if ev.Kind != pika.RecoveryAttempt {
								return
							}
							switch ev.Attempt {
							case 10:
								early, _, waitEarly = outageSizes(l, c, ch)
							case attempts:
								late, lists, waitLate = outageSizes(l, c, ch)
							}
							refused(ch.Publish("", "k", pika.Message{Body: []byte("x")}))
							refused(ch.PublishConfirm("", "k", pika.Message{Body: []byte("x")}, func(error) { t.Error("the callback of a refused publish ran") }))
							ch.QueueDeclare("q", pika.QueueDeclareOptions{}, func(_ pika.Queue, err error) { refused(err) })
							ch.Qos(pika.QosOptions{PrefetchCount: 1}, refused)
							c.Channel(func(_ *Channel, err error) { refused(err) })
							calls += 5
						})
						c.OnClose(func(error) { stop() })
					})
				})
				wait()
				if early == "" || late != early {
					t.Errorf("after 10 attempts:\n\t%s\nafter %d:\n\t%s", early, attempts, late)
				}
				if tc.hooked && (hooks.connects != attempts+1 || hooks.published != 2*attempts+1 || hooks.events != attempts+2) {
					t.Errorf("hooks heard of %d connection attempts, %d publishes, %d recovery events; want %d, %d, %d",
						hooks.connects, hooks.published, hooks.events, attempts+1, 2*attempts+1, attempts+2)
				}
				if lists > 64 {
					t.Errorf("the loop's lists of functions hold room for %d after %d attempts", lists, attempts)
				}
				// Waiting: m1's confirmation, and the declare and qos of
				// each attempt before.
				wantEarly, wantLate := 0, 0
				if kept {
					wantEarly, wantLate = 1+2*9, 1+2*(attempts-1)
				}
				if waitEarly != wantEarly || waitLate != wantLate {
					t.Errorf("callbacks waiting after 10 and %d attempts: %d and %d, want %d and %d", attempts, waitEarly, waitLate, wantEarly, wantLate)
				}
				if calls != 5*attempts || done != calls {
					t.Errorf("%d calls, %d callbacks ran; want %d of each", calls, done, 5*attempts)
				}
				if want := map[bool]string{true: "unknown true"}[kept]; outcome != want {
					t.Errorf("the kept message's outcome: %q, want %q", outcome, want)
				}
			})
		})
	}
}

// outageHooks counts what the hooks hear during an outage.
type outageHooks struct{ connects, published, events int }

func (h *outageHooks) OnConnect(pika.ConnectEvent)                    { h.connects++ }
func (h *outageHooks) OnPublish(*pika.Publishing)                     {}
func (h *outageHooks) OnPublished(*pika.Publishing, error)            { h.published++ }
func (h *outageHooks) OnRecovery(_ *pika.Conn, ev pika.RecoveryEvent) { h.events++ }

// With Config.DisableRepublish nothing is kept at a loss: the messages
// outstanding then resolve with pika.ErrOutcomeUnknown and leave the
// count, and once recovered the channel publishes up to the bound again.
func TestMaxUnconfirmedWithoutRepublish(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.confirmChannel()
				expectPublish(p, 1)
				expectPublish(p, 1)
				p.cut()
			},
			func(p *peer) {
				p.confirmChannel()
				for _, want := range []string{"m3", "m4"} {
					if body := expectPublish(p, 1); body != want {
						p.t.Errorf("published %q, want %q (nothing republished)", body, want)
					}
				}
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 2, Multiple: true}))
				p.closeConn()
			})
		cfg.MaxUnconfirmed = 2
		cfg.DisableRepublish = true
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.ConfirmSelect(nil)
				publish := func(body string) error {
					return ch.PublishConfirm("", "k", pika.Message{Body: []byte(body)}, func(err error) {
						got = append(got, fmt.Sprintf("confirm %s unknown %v", body, errors.Is(err, pika.ErrOutcomeUnknown)))
						if body == "m4" {
							closeAndStop(t, c, stop)
						}
					})
				}
				publish("m1")
				publish("m2")
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					switch ev.Kind {
					case pika.RecoveryLost:
						got = append(got, fmt.Sprintf("lost: unconfirmed %d", ch.Unconfirmed()))
					case pika.RecoveryRecovered:
						got = append(got, fmt.Sprintf("recovered: unconfirmed %d, publish m3: %v, m4: %v, m5: %v",
							ch.Unconfirmed(), publish("m3"), publish("m4"), publish("m5")))
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{
			"confirm m1 unknown true", "confirm m2 unknown true", "lost: unconfirmed 0",
			"recovered: unconfirmed 0, publish m3: <nil>, m4: <nil>, m5: " + ErrTooManyUnconfirmed.Error(),
			"confirm m3 unknown false", "confirm m4 unknown false",
		})
	})
}
