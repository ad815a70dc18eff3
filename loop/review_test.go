package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// closingHooks calls fn from the DisconnectHook and the RecoveryHook.
type closingHooks struct {
	fn func(what string)
}

func (h closingHooks) OnDisconnect(ev pika.DisconnectEvent) {
	h.fn(fmt.Sprint("disconnect ", ev.Conn.IsRecovering()))
}
func (h closingHooks) OnConnect(ev pika.ConnectEvent) {
	h.fn(fmt.Sprint("connect ", ev.Err == nil, " recovering ", ev.Conn.IsRecovering()))
}
func (h closingHooks) OnPublishOutcome(o pika.PublishOutcome) {
	h.fn(fmt.Sprint("outcome ", o.Outcome))
}
func (h closingHooks) OnRecovery(_ *pika.Conn, ev pika.RecoveryEvent) { h.fn(ev.Kind.String()) }

// Close called from inside a hook of the recovery (the DisconnectHook of
// the lost link, a RecoveryHook at the loss, at an attempt, at the end of
// attempts, the ConnectHook of the attempt's link, a PublishOutcomeHook
// told of a message the loss left unknown) ends the Conn once, with nil: no attempt dials after it, no
// recovery event follows it, OnClose runs once, and the message whose
// confirmation the loss cut off resolves once, as unknown.
func TestCloseFromARecoveryHook(t *testing.T) {
	for _, at := range []string{"disconnect true", "lost", "attempt", "gave-up", "connect true recovering true", "outcome unknown"} {
		t.Run(at, func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				scripts := []func(p *peer){func(p *peer) {
					p.confirmChannel()
					expectPublish(p, 1)
					p.cut()
				}}
				if at == "connect true recovering true" {
					// The attempt's link opens: closed from its ConnectHook
					// as Close closes a link (connection.close, close-ok),
					// nothing is restored on it.
					scripts = append(scripts, func(p *peer) {
						p.handshake(0)
						p.closeConn()
					})
				}
				cfg, wait := recoveringConfig(t, pair, scripts...)
				cfg.Reconnect = pika.Backoff{Initial: 20 * time.Millisecond, Max: 20 * time.Millisecond, MaxAttempts: 1}
				// The loss settles m1 as unknown (a PublishOutcomeHook).
				cfg.DisableRepublish = at == "outcome unknown"
				var closedFlag, lateDials atomic.Int32
				dial := cfg.Dial
				cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					if closedFlag.Load() != 0 {
						lateDials.Add(1)
					}
					return dial(ctx, network, addr)
				}
				var got []string
				var conn *Conn
				var stopLoop func()
				cfg.Hooks = []pika.Hook{closingHooks{func(what string) {
					if closedFlag.Load() != 0 {
						if what == "outcome unknown" {
							got = append(got, what) // m1's, at the end
						} else {
							got = append(got, "hook after close: "+what)
						}
						return
					}
					if what != at {
						return
					}
					closedFlag.Store(1)
					got = append(got, "close in "+what)
					conn.Close(func(err error) { got = append(got, fmt.Sprint("close cb ", err)) })
				}}}
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					stopLoop = stop
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						conn = c
						c.OnClose(func(err error) {
							got = append(got, fmt.Sprint("closed ", err))
							// Past any attempt the recovery might still make.
							l.AfterFunc(300*time.Millisecond, stopLoop)
						})
						ch.ConfirmSelect(nil)
						ch.PublishConfirm("", "q", pika.Message{Body: []byte("m1")}, func(err error) {
							got = append(got, fmt.Sprint("m1 unknown ", errors.Is(err, pika.ErrOutcomeUnknown)))
						})
					})
				})
				wait()
				want := []string{"close in " + at, "outcome unknown", "m1 unknown true", "closed <nil>", "close cb <nil>"}
				if at == "outcome unknown" {
					want = slices.Delete(want, 1, 2) // reported once
				}
				if at == "connect true recovering true" {
					// The link that opened ends, by the application's Close.
					want = slices.Insert(want, 3, "hook after close: disconnect false")
				}
				expectCalls(t, got, want)
				if n := lateDials.Load(); n != 0 {
					t.Errorf("%d dials after Close", n)
				}
			})
		})
	}
}

// Close while a recovery attempt dials ends the Conn with nil, and the
// dial that completes afterwards changes nothing: Err stays nil, a later
// Close reports the clean close, and the dialed connection is dropped.
func TestCloseWhileARecoveryDialCompletes(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.cut()
			},
			func(p *peer) {
				// The client drops the connection without a word.
				if s := p.nextOrEOF(); s != nil {
					p.t.Errorf("peer: the closed Conn sent %v", s)
				}
			})
		release := make(chan struct{})
		dial := cfg.Dial
		var dials, dropped atomic.Int32
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) != 2 {
				return dial(ctx, network, addr)
			}
			<-release
			nc, err := dial(ctx, network, addr)
			return &closeFlagConn{nc, &dropped}, err
		}
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					if ev.Kind != pika.RecoveryAttempt {
						return
					}
					// The dial starts after the attempt's delay.
					l.AfterFunc(100*time.Millisecond, func() {
						c.Close(func(err error) {
							got = append(got, fmt.Sprint("close: ", err))
							close(release)
							waitFor(l, func() bool { return dropped.Load() != 0 }, func() {
								got = append(got, fmt.Sprint("err: ", c.Err()))
								c.Close(func(err error) {
									got = append(got, fmt.Sprint("close again: ", err))
									stop()
								})
							})
						})
					})
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"close: <nil>", "err: <nil>", "close again: <nil>"})
	})
}

// closeFlagConn notes its Close in a flag.
type closeFlagConn struct {
	net.Conn
	closed *atomic.Int32
}

func (c *closeFlagConn) Close() error {
	c.closed.Store(1)
	return c.Conn.Close()
}

// A recovery attempt whose broker stops answering during the restore,
// heartbeats included, fails with the heartbeat timeout (well before the
// restore's step timeout) and the next attempt recovers.
func TestRecoveryHeartbeatTimeoutDuringRestore(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.cut()
			},
			func(p *peer) {
				p.handshake(1)
				expect[*wire.ChannelOpen](p, 1)
				// Silent from now on: the client hangs up.
				for p.nextOrEOF() != nil {
				}
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.closeConn()
			})
		// The silent attempt's broker proposes 1 s; the others propose
		// none, and the client's 10 s keeps them clear of a timeout under
		// load.
		cfg.Heartbeat = 10 * time.Second
		cfg.HandshakeTimeout = time.Minute // the restore's step timeout
		var got []string
		run(t, 30*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					switch ev.Kind {
					case pika.RecoveryAttempt:
						got = append(got, fmt.Sprint(ev.Kind, " ", errors.Is(ev.Err, pika.ErrHeartbeatTimeout)))
					default:
						got = append(got, ev.Kind.String())
					}
					if ev.Kind == pika.RecoveryRecovered {
						closeAndStop(t, c, stop)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"lost", "attempt false", "attempt true", "recovered"})
	})
}

// A consumer the broker cancelled, then cancelled by the application
// while the loop opens the channel that checks its queue: the check
// stops, and the channel it opened is closed (not left open for the
// connection's life).
func TestCancelDuringARevivalClosesItsChannel(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair, func(p *peer) {
			consumeThenCancel(p)
			s := p.next()
			if _, ok := s.Method.(*wire.ChannelOpen); !ok {
				p.t.Errorf("peer: want the check's channel.open, got %v", s)
				return
			}
			check := s.Channel
			// The application's cancel comes before the channel opens.
			expect[*wire.BasicCancel](p, 1)
			p.send(scripted.Method(check, &wire.ChannelOpenOk{}),
				scripted.Method(1, &wire.BasicCancelOk{ConsumerTag: "c1"}))
			answer[*wire.ChannelClose](p, check, &wire.ChannelCloseOk{})
			p.closeConn()
		})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.Consume("q", ConsumeOptions{Tag: "c1", OnEnd: func(err error) {
					got = append(got, fmt.Sprint("end: ", err))
					closeAndStop(t, c, stop)
				}}, func(*Delivery) {}, func(cons *Consumer, err error) {
					waitFor(l, func() bool { return cons.rv != nil }, func() {
						cons.Cancel(func(err error) { got = append(got, fmt.Sprint("cancel: ", err)) })
					})
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"cancel: <nil>", "end: " + pika.ErrConsumerClosed.Error()})
	})
}

// outcomeHook calls fn with each publish outcome.
type outcomeHook func(pika.PublishOutcome)

func (h outcomeHook) OnPublishOutcome(o pika.PublishOutcome) { h(o) }

// A PublishOutcomeHook that closes the channel when the loss settles a
// returned message (the channel then ends at once: no link) does not make
// the loss settle the outstanding messages twice: each outcome is reported
// once, and the message kept for republishing resolves as unknown (its
// channel is gone) instead of waiting forever.
func TestChannelClosedFromAnOutcomeHookAtALoss(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			returnedThenCut,
			func(p *peer) {
				p.handshake(0)
				// The channel was closed: nothing to restore.
				p.closeConn()
			})
		var got []string
		var channel *Channel
		cfg.Hooks = []pika.Hook{outcomeHook(func(o pika.PublishOutcome) {
			got = append(got, fmt.Sprint("hook seq ", o.Seq, " ", o.Outcome))
			if o.Outcome == pika.OutcomeReturned && channel != nil {
				channel.Close(nil)
			}
		})}
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				channel = ch
				ch.ConfirmSelect(nil)
				ch.PublishConfirm("", "nowhere", pika.Message{Mandatory: true, Body: []byte("m1")}, func(err error) {
					got = append(got, fmt.Sprint("m1 returned ", errors.Is(err, pika.ErrReturned)))
				})
				ch.PublishConfirm("", "q", pika.Message{Body: []byte("m2")}, func(err error) {
					got = append(got, fmt.Sprint("m2 unknown ", errors.Is(err, pika.ErrOutcomeUnknown)))
				})
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					if ev.Kind == pika.RecoveryRecovered {
						closeAndStop(t, c, stop)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"m1 returned true", "hook seq 1 returned", "hook seq 2 unknown", "m2 unknown true"})
	})
}

// Posts racing the end of Run: every function whose Post reported true
// runs exactly once (before Run returns), and none whose Post reported
// false does; the posters see the refusal and stop.
func TestPostDuringShutdown(t *testing.T) {
	before := snapshot(t)
	for round := 0; round < 5; round++ {
		var accepted, ran atomic.Int64
		var wg sync.WaitGroup
		l, err := New()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		for p := 0; p < 4; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if !l.Post(func() { ran.Add(1) }) {
						return
					}
					accepted.Add(1)
				}
			}()
		}
		l.Post(func() { l.AfterFunc(time.Duration(round)*5*time.Millisecond, cancel) })
		l.Run(ctx)
		ranAtReturn := ran.Load()
		wg.Wait()
		// More would be refused Posts that ran, fewer accepted ones lost.
		if got, want := ranAtReturn, accepted.Load(); got != want {
			t.Errorf("round %d: %d posted functions ran by the end of Run, %d Posts accepted", round, got, want)
		}
		if ran.Load() != ranAtReturn {
			t.Errorf("round %d: posted functions ran after Run returned", round)
		}
		cancel()
	}
	expectNoLeak(t, before)
}

// A broker that sends a bad frame during a recovery's restore (an unknown
// method, a body without its header, a broken frame end) fails that
// attempt with a protocol error, without a panic, and the next attempt
// recovers.
func TestRecoveryBadFrameDuringRestore(t *testing.T) {
	bad := map[string][]byte{
		"unknown method": scripted.RawFrame(wire.FrameMethod, 1, []byte{0, 99, 0, 7}),
		"body first":     scripted.RawFrame(wire.FrameBody, 1, []byte("x")),
		"frame end":      brokenFrameEnd(scripted.Method(1, &wire.ChannelOpenOk{})),
	}
	for name, frame := range bad {
		t.Run(name, func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := recoveringConfig(t, pair,
					func(p *peer) {
						p.handshake(0)
						p.openChannel(1)
						p.cut()
					},
					func(p *peer) {
						p.handshake(0)
						expect[*wire.ChannelOpen](p, 1)
						p.send(frame)
						for p.nextOrEOF() != nil {
						}
					},
					func(p *peer) {
						p.handshake(0)
						p.openChannel(1)
						p.closeConn()
					})
				var got []string
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						c.OnRecovery(func(ev pika.RecoveryEvent) {
							got = append(got, fmt.Sprint(ev.Kind, " ", ev.Attempt))
							if ev.Kind == pika.RecoveryAttempt && ev.Attempt == 2 {
								var pe *pika.Error
								if !errors.As(ev.Err, &pe) {
									t.Errorf("attempt 1 failed with %v, want a protocol error", ev.Err)
								}
							}
							if ev.Kind == pika.RecoveryRecovered {
								closeAndStop(t, c, stop)
							}
						})
					})
				})
				wait()
				expectCalls(t, got, []string{"lost 0", "attempt 1", "attempt 2", "recovered 2"})
			})
		})
	}
}

// brokenFrameEnd returns frame with its frame-end octet replaced.
func brokenFrameEnd(frame []byte) []byte {
	frame[len(frame)-1] = 0
	return frame
}

// Confirmation tags after a republish: of m1 (PublishConfirm), m2
// (Publish in confirm mode, no callback) and m3 (mandatory PublishConfirm),
// the broker confirmed m2 before the loss; m1 and m3 are republished as
// tags 1 and 2 of the new link, m4 published after the recovery takes tag
// 3, and one multiple ack of tag 3 confirms them all, each once, in order.
func TestRecoveryConfirmTagsAfterRepublish(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.confirmChannel()
				for _, want := range []string{"m1", "m2", "m3"} {
					if body := expectPublish(p, 1); body != want {
						p.t.Errorf("published %q, want %q", body, want)
					}
				}
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 2}))
				// Past the ack: the client has it before the cut.
				answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "sync"})
				p.cut()
			},
			func(p *peer) {
				p.confirmChannel()
				// "sync" was declared through the Conn: restored.
				p.openChannel(2)
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "sync"})
				answer[*wire.ChannelClose](p, 2, &wire.ChannelCloseOk{})
				for _, want := range []string{"m1", "m3", "m4"} {
					if body := expectPublish(p, 1); body != want {
						p.t.Errorf("published %q, want %q", body, want)
					}
				}
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 3, Multiple: true}))
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				confirm := func(name string) func(error) {
					return func(err error) { got = append(got, fmt.Sprint(name, ": ", err)) }
				}
				ch.ConfirmSelect(nil)
				ch.PublishConfirm("", "q", pika.Message{Body: []byte("m1")}, confirm("m1"))
				ch.Publish("", "q", pika.Message{Body: []byte("m2")})
				ch.PublishConfirm("", "q", pika.Message{Mandatory: true, Body: []byte("m3")}, confirm("m3"))
				ch.QueueDeclare("sync", pika.QueueDeclareOptions{}, func(pika.Queue, error) {})
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					if ev.Kind != pika.RecoveryRecovered {
						return
					}
					if ev.Report.Republished != 2 {
						t.Errorf("republished %d, want 2", ev.Report.Republished)
					}
					ch.PublishConfirm("", "q", pika.Message{Body: []byte("m4")}, func(err error) {
						got = append(got, fmt.Sprint("m4: ", err))
						closeAndStop(t, c, stop)
					})
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"m1: <nil>", "m3: <nil>", "m4: <nil>"})
	})
}

// A broker's basic.cancel of a consumer that the restore has just started
// again, while the restore still waits for another consumer: the restore
// ends (the cancelled consumer counts as restored), and the consumer is
// checked and started again on the recovered link, with its tag.
func TestRecoveryCancelDuringRestore(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			twoConsumersThenCut,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.openChannel(2)
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "q1"})
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "q2"})
				answer[*wire.ChannelClose](p, 2, &wire.ChannelCloseOk{})
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				p.send(scripted.Method(1, &wire.BasicCancel{ConsumerTag: "c1"}))
				// The restore's consume of c2, the cancel-ok, and the
				// check's channel.open, in whatever order.
				check := uint16(0)
				for range 3 {
					s := p.next()
					switch m := s.Method.(type) {
					case *wire.BasicConsume:
						if m.ConsumerTag != "c2" {
							p.t.Errorf("peer: consume of %q", m.ConsumerTag)
						}
					case *wire.BasicCancelOk:
					case *wire.ChannelOpen:
						check = s.Channel
					default:
						p.t.Errorf("peer: unexpected %v", s)
					}
				}
				if check == 0 {
					return
				}
				p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c2"}))
				p.send(scripted.Method(check, &wire.ChannelOpenOk{}))
				answer[*wire.QueueDeclare](p, check, &wire.QueueDeclareOk{Queue: "q1"})
				answer[*wire.ChannelClose](p, check, &wire.ChannelCloseOk{})
				if m := answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"}); m.ConsumerTag != "c1" || m.Queue != "q1" {
					p.t.Errorf("peer: consume of %q on %q, want c1 on q1", m.ConsumerTag, m.Queue)
				}
				p.send(scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1}, nil, []byte("d"), 0))
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.Consume("q1", ConsumeOptions{Tag: "c1", AutoAck: true, OnEnd: func(err error) {
					got = append(got, fmt.Sprint("c1 end: ", err))
				}}, func(d *Delivery) {
					got = append(got, fmt.Sprint("c1 delivery ", string(d.Body)))
					closeAndStop(t, c, stop)
				}, nil)
				ch.Consume("q2", ConsumeOptions{Tag: "c2", AutoAck: true}, func(*Delivery) {}, nil)
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					switch ev.Kind {
					case pika.RecoveryRecovered:
						got = append(got, fmt.Sprint(ev.Kind, " consumers ", ev.Report.Consumers))
					case pika.RecoveryConsumerRestored:
						got = append(got, fmt.Sprint(ev.Kind, " ", ev.ConsumerTag))
					default:
						got = append(got, ev.Kind.String())
					}
				})
			})
		})
		wait()
		// The delivery to the restarted consumer may come before the
		// event that reports its restart (see the package doc).
		want1 := []string{"lost", "attempt", "recovered consumers 2", "consumer-restored c1", "c1 delivery d", "c1 end: " + pika.ErrClosed.Error()}
		want2 := []string{"lost", "attempt", "recovered consumers 2", "c1 delivery d", "consumer-restored c1", "c1 end: " + pika.ErrClosed.Error()}
		if !slices.Equal(got, want1) {
			expectCalls(t, got, want2)
		}
	})
}

// Close while a consumer waits for its queue (called from the
// RecoveryHook that reports the wait), with a broker slow to confirm the
// close: the consumer's checks stop at the Close, no recovery event
// follows it, and the consumer ends with the Conn's close, not with its
// queue's unavailability.
func TestCloseWhileAConsumerWaits(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair, func(p *peer) {
			consumeThenCancel(p)
			check := p.openAnyChannel()
			answer[*wire.QueueDeclare](p, check, nodeDown("q"))
			expect[*wire.ChannelCloseOk](p, check)
			expect[*wire.ConnectionClose](p, 0)
			// Slow: several of the consumer's retry delays.
			time.Sleep(300 * time.Millisecond)
			p.send(scripted.Method(0, &wire.ConnectionCloseOk{}))
		})
		cfg.Reconnect = pika.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, MaxAttempts: 3}
		var got []string
		closed := false
		var conn *Conn
		cfg.Hooks = []pika.Hook{closingHooks{func(what string) {
			if closed {
				got = append(got, "hook after close: "+what)
				return
			}
			if what == "consumer-waiting" {
				closed = true
				got = append(got, "close in "+what)
				conn.Close(nil)
			}
		}}}
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				conn = c
				ch.Consume("q", ConsumeOptions{Tag: "c1", AutoAck: true, OnEnd: func(err error) {
					got = append(got, fmt.Sprint("ended: ", err))
				}}, func(*Delivery) {}, nil)
				c.OnClose(func(err error) {
					got = append(got, fmt.Sprint("closed: ", err))
					stop()
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"close in consumer-waiting", "ended: " + pika.ErrClosed.Error(), "hook after close: disconnect false", "closed: <nil>"})
	})
}

// Acknowledgements with multiple across a recovery: a multiple ack of a
// delivery from the recovered link covers only that link's deliveries
// (sent with its own tags), a multiple nack of one from before the loss
// is refused with pika.ErrStaleDelivery and sends nothing.
func TestRecoveryMultipleAckAcrossTheLoss(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		deliver := func(p *peer, tag uint64, body string) {
			p.send(scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: tag}, nil, []byte(body), 0))
		}
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				deliver(p, 1, "a")
				deliver(p, 2, "b")
				// Past the deliveries: the client has them before the cut.
				answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "sync"})
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.openChannel(2)
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "sync"})
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "q"})
				answer[*wire.ChannelClose](p, 2, &wire.ChannelCloseOk{})
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				deliver(p, 1, "a")
				deliver(p, 2, "c")
				if m := expect[*wire.BasicAck](p, 1); m.DeliveryTag != 2 || !m.Multiple {
					p.t.Errorf("peer: ack of tag %d multiple %v, want 2 multiple", m.DeliveryTag, m.Multiple)
				}
				p.closeConn()
			})
		var got []string
		var old []*Delivery
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.Consume("q", ConsumeOptions{Tag: "c1"}, func(d *Delivery) {
					got = append(got, fmt.Sprint(string(d.Body), " ", d.DeliveryTag))
					switch {
					case !c.Recovering() && len(old) < 2 && d.DeliveryTag <= 2:
						old = append(old, d)
					case string(d.Body) == "c":
						got = append(got, fmt.Sprint("nack b: ", old[1].Nack(true, true)))
						got = append(got, fmt.Sprint("ack c: ", d.Ack(true)))
						closeAndStop(t, c, stop)
					}
				}, nil)
				ch.QueueDeclare("sync", pika.QueueDeclareOptions{}, func(pika.Queue, error) {})
			})
		})
		wait()
		expectCalls(t, got, []string{"a 1", "b 2", "a 3", "c 4",
			"nack b: " + pika.ErrStaleDelivery.Error(), "ack c: <nil>"})
	})
}

// A broker's channel.close racing the confirmations of PublishConfirm:
// the returned mandatory message keeps its outcome, the other resolves
// as unknown with the broker's error, a publish after the close fails at
// once (no callback), and a later loss does not bring the channel or its
// messages back.
func TestChannelCloseRacingPublishConfirm(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.confirmChannel()
				expectPublish(p, 1)
				expectPublish(p, 1)
				p.send(scripted.Message(1, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nowhere"}, nil, []byte("m0"), 0),
					scripted.Method(1, &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - test", ClassID: 60, MethodID: 40}))
				expect[*wire.ChannelCloseOk](p, 1)
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				// No channel to restore, nothing to republish.
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.ConfirmSelect(nil)
				ch.PublishConfirm("", "nowhere", pika.Message{Mandatory: true, Body: []byte("m0")}, func(err error) {
					got = append(got, fmt.Sprint("m0 returned ", errors.Is(err, pika.ErrReturned)))
				})
				ch.PublishConfirm("", "q", pika.Message{Body: []byte("m1")}, func(err error) {
					var pe *pika.Error
					got = append(got, fmt.Sprint("m1 unknown ", errors.Is(err, pika.ErrOutcomeUnknown), " ", errors.As(err, &pe) && pe.Code == 406))
				})
				ch.OnClose(func(err error) {
					err2 := ch.PublishConfirm("", "q", pika.Message{Body: []byte("m2")}, func(error) {
						got = append(got, "m2 callback")
					})
					got = append(got, fmt.Sprint("channel closed, publish: ", err2 != nil))
				})
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					got = append(got, ev.Kind.String())
					if ev.Kind == pika.RecoveryRecovered {
						if ev.Report.Channels != 0 || ev.Report.Republished != 0 {
							t.Errorf("report %+v, want no channel, nothing republished", ev.Report)
						}
						closeAndStop(t, c, stop)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"m0 returned true", "m1 unknown true true", "channel closed, publish: true", "lost", "attempt", "recovered"})
	})
}
