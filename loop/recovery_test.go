package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// fastRetry reconnects after about 10 ms, at most five times.
var fastRetry = pika.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Jitter: 0.01, MaxAttempts: 5}

// recoveringConfig returns a Config with recovery on whose every dial
// hands over a new connection played by the next script; dials beyond the
// scripts are refused. wait waits for every script's end.
func recoveringConfig(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn), scripts ...func(p *peer)) (cfg pika.Config, wait func()) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := 0
	cfg = pika.Config{
		Addr:      "scripted:5672",
		Heartbeat: pika.NoHeartbeat,
		Reconnect: fastRetry,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			defer mu.Unlock()
			if next == len(scripts) {
				return nil, errors.New("no more scripted connections")
			}
			script := scripts[next]
			next++
			client, server := pair(t)
			p := &peer{t: t, nc: server}
			p.c = scripted.NewClient(goTB{t, server})
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer server.Close()
				script(p)
			}()
			return client, nil
		},
	}
	return cfg, func() {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("the scripted peers did not finish")
		}
		mu.Lock()
		defer mu.Unlock()
		if next != len(scripts) {
			t.Errorf("%d of %d scripted connections were dialed", next, len(scripts))
		}
	}
}

// answer reads a method of want's type on channel ch and sends reply.
func answer[M wire.Method](p *peer, ch uint16, reply wire.Method) M {
	p.t.Helper()
	m := expect[M](p, ch)
	p.send(scripted.Method(ch, reply))
	return m
}

// expectPublish reads a published message on channel ch and returns its
// body.
func expectPublish(p *peer, ch uint16) string {
	p.t.Helper()
	expect[*wire.BasicPublish](p, ch)
	p.next() // header
	return string(p.next().Payload)
}

// cut drops the peer's side: the client sees its connection lost.
func (p *peer) cut() { p.nc.Close() }

// setupState is the state the recovery tests restore: channel 1 with
// QoS and confirm mode, exchange x, queue q bound to it, consumer c1 of
// q, and one message published and not confirmed. It plays the broker's
// side of the application's calls of setupCalls.
func setupState(p *peer) {
	p.handshake(0)
	p.openChannel(1)
	answer[*wire.BasicQos](p, 1, &wire.BasicQosOk{})
	answer[*wire.ConfirmSelect](p, 1, &wire.ConfirmSelectOk{})
	answer[*wire.ExchangeDeclare](p, 1, &wire.ExchangeDeclareOk{})
	answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "q"})
	answer[*wire.QueueBind](p, 1, &wire.QueueBindOk{})
	answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
	if body := expectPublish(p, 1); body != "m1" {
		p.t.Errorf("published %q, want m1", body)
	}
}

// The restore steps of setupState's state, in their order on the wire.
var restoreSteps = []string{"channel.open", "basic.qos", "confirm.select", "exchange.declare", "queue.declare", "queue.bind", "basic.consume", "republish"}

// playRestore plays the broker's side of the restore of setupState's state,
// cutting the connection when it reaches step cutAt ("" for none). It
// reports whether the restore went through.
func playRestore(p *peer, cutAt string) bool {
	p.handshake(0)
	steps := []func(){
		func() { p.openChannel(1) },
		func() { answer[*wire.BasicQos](p, 1, &wire.BasicQosOk{}) },
		func() { answer[*wire.ConfirmSelect](p, 1, &wire.ConfirmSelectOk{}) },
		func() {
			p.openChannel(2)
			answer[*wire.ExchangeDeclare](p, 2, &wire.ExchangeDeclareOk{})
		},
		func() { answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "q"}) },
		func() {
			answer[*wire.QueueBind](p, 2, &wire.QueueBindOk{})
			answer[*wire.ChannelClose](p, 2, &wire.ChannelCloseOk{})
		},
		func() {
			if m := answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"}); m.ConsumerTag != "c1" || m.Queue != "q" {
				p.t.Errorf("consumer restored as %q on %q, want c1 on q", m.ConsumerTag, m.Queue)
			}
		},
		func() {
			if body := expectPublish(p, 1); body != "m1" {
				p.t.Errorf("republished %q, want m1", body)
			}
		},
	}
	for i, step := range steps {
		if restoreSteps[i] == cutAt {
			p.cut()
			return false
		}
		step()
	}
	return true
}

// playFinal plays a whole restore, then confirms the republished message,
// delivers m2 with tag 1, and expects its ack and the close.
func playFinal(p *peer) {
	if !playRestore(p, "") {
		return
	}
	p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}),
		scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1, RoutingKey: "k"}, nil, []byte("m2"), 0))
	if m := expect[*wire.BasicAck](p, 1); m.DeliveryTag != 1 {
		p.t.Errorf("ack of tag %d, want 1", m.DeliveryTag)
	}
	p.closeConn()
}

// setupCalls makes the application's calls that setupState answers. The
// consumer's handler acknowledges, records the delivery in got and calls
// delivered.
func setupCalls(t *testing.T, l *Loop, cfg pika.Config, stop func(), got *[]string, ready func(c *Conn, ch *Channel), delivered func(c *Conn, d *Delivery)) {
	withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
		ch.Qos(pika.QosOptions{PrefetchCount: 5}, nil)
		ch.ConfirmSelect(nil)
		ch.ExchangeDeclare("x", "direct", pika.ExchangeDeclareOptions{}, nil)
		ch.QueueDeclare("q", pika.QueueDeclareOptions{}, nil)
		ch.QueueBind("q", "x", "k", pika.BindOptions{}, nil)
		ch.Consume("q", ConsumeOptions{Tag: "c1"}, func(d *Delivery) {
			*got = append(*got, fmt.Sprintf("delivery %s tag %d ack %v", d.Body, d.DeliveryTag, d.Ack(false)))
			delivered(c, d)
		}, nil)
		if err := ch.PublishConfirm("x", "k", pika.Message{Body: []byte("m1")}, func(err error) {
			if errors.Is(err, pika.ErrOutcomeUnknown) {
				*got = append(*got, "confirm m1 unknown")
				return
			}
			*got = append(*got, fmt.Sprint("confirm m1 ", err))
		}); err != nil {
			t.Errorf("publish: %v", err)
		}
		ready(c, ch)
	})
}

// closeAndStop closes c and stops the loop once it is closed.
func closeAndStop(t *testing.T, c *Conn, stop func()) {
	c.Close(func(err error) {
		if err != nil {
			t.Errorf("close: %v", err)
		}
		stop()
	})
}

// recoveryEvents records a Conn's recovery events as strings; at the
// recovery, it calls recovered.
func recoveryEvents(c *Conn, got *[]string, recovered func(rep *pika.RecoveryReport)) {
	c.OnRecovery(func(ev pika.RecoveryEvent) {
		switch ev.Kind {
		case pika.RecoveryAttempt, pika.RecoveryRecovered:
			*got = append(*got, fmt.Sprint(ev.Kind, " ", ev.Attempt))
		default:
			*got = append(*got, ev.Kind.String())
		}
		if ev.Kind == pika.RecoveryRecovered {
			recovered(ev.Report)
		}
	})
}

// A connection lost at each step of its restore recovers at the next
// attempt: the channel with its QoS and confirm mode, the exchange, queue
// and binding, the consumer with its tag, and the unconfirmed message
// republished and confirmed once; the events tell each attempt.
func TestRecoveryFaultAtEachStep(t *testing.T) {
	for _, cutAt := range append([]string{""}, restoreSteps...) {
		t.Run(cutAt, func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				scripts := []func(p *peer){func(p *peer) { setupState(p); p.cut() }}
				if cutAt != "" {
					scripts = append(scripts, func(p *peer) { playRestore(p, cutAt) })
				}
				cfg, wait := recoveringConfig(t, pair, append(scripts, playFinal)...)
				var got []string
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					setupCalls(t, l, cfg, stop, &got, func(c *Conn, ch *Channel) {
						recoveryEvents(c, &got, func(rep *pika.RecoveryReport) {
							if rep.Channels != 1 || rep.Consumers != 1 || rep.Republished != 1 || len(rep.Failed) != 0 {
								t.Errorf("report %+v, want 1 channel, 1 consumer, 1 republished, no failure", rep)
							}
						})
					}, func(c *Conn, d *Delivery) { closeAndStop(t, c, stop) })
				})
				wait()
				want := []string{"lost", "attempt 1", "attempt 2", "recovered 2", "confirm m1 <nil>", "delivery m2 tag 1 ack <nil>"}
				if cutAt == "republish" {
					// The restore was over when the republished message
					// went out: the cut is a new loss, and the message is
					// republished again.
					want = []string{"lost", "attempt 1", "recovered 1", "lost", "attempt 1", "recovered 1", "confirm m1 <nil>", "delivery m2 tag 1 ack <nil>"}
				}
				if cutAt == "" {
					want = []string{"lost", "attempt 1", "recovered 1", "confirm m1 <nil>", "delivery m2 tag 1 ack <nil>"}
				}
				expectCalls(t, got, want)
			})
		})
	}
}

// Across a recovery, callbacks keep the order of the calls: a call in
// flight at the loss fails with the loss, after the confirmation of a
// message published before it, which waits for its republished copy.
// Calls made while recovering fail with pika.ErrRecovering. A server-named
// queue gets a new name, its binding and consumer follow; an
// acknowledgement of a delivery from before the loss is refused with
// pika.ErrStaleDelivery and not sent, and delivery tags go on from the
// last one.
func TestRecoveryOrderRenamesAndStaleTags(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.confirmChannel()
				answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "amq.gen-1"})
				answer[*wire.QueueBind](p, 1, &wire.QueueBindOk{})
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				p.send(scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1}, nil, []byte("d1"), 0))
				expectPublish(p, 1)
				expect[*wire.QueueDeclare](p, 1) // left unanswered
				p.cut()
			},
			func(p *peer) {
				p.confirmChannel()
				p.openChannel(2)
				if m := answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "amq.gen-2"}); m.Queue != "" || !m.Exclusive {
					p.t.Errorf("server-named queue declared again as %q (exclusive %v), want a new name", m.Queue, m.Exclusive)
				}
				if m := answer[*wire.QueueBind](p, 2, &wire.QueueBindOk{}); m.Queue != "amq.gen-2" || m.Exchange != "amq.direct" {
					p.t.Errorf("binding restored for %q to %q, want amq.gen-2 to amq.direct", m.Queue, m.Exchange)
				}
				answer[*wire.ChannelClose](p, 2, &wire.ChannelCloseOk{})
				if m := answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"}); m.Queue != "amq.gen-2" || m.ConsumerTag != "c1" {
					p.t.Errorf("consumer restored on %q with tag %q", m.Queue, m.ConsumerTag)
				}
				expectPublish(p, 1)
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}),
					scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1}, nil, []byte("d2"), 0))
				if m := expect[*wire.BasicAck](p, 1); m.DeliveryTag != 1 {
					p.t.Errorf("ack of tag %d, want 1 (the first delivery of the new connection)", m.DeliveryTag)
				}
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				var first *Delivery
				ch.ConfirmSelect(nil)
				ch.QueueDeclare("", pika.QueueDeclareOptions{Exclusive: true}, nil)
				ch.QueueBind("amq.gen-1", "amq.direct", "k", pika.BindOptions{}, nil)
				ch.Consume("amq.gen-1", ConsumeOptions{}, func(d *Delivery) {
					got = append(got, fmt.Sprintf("delivery %s tag %d", d.Body, d.DeliveryTag))
					if first == nil {
						first = d
						ch.PublishConfirm("", "k", pika.Message{Body: []byte("m1")}, func(err error) {
							got = append(got, fmt.Sprint("confirm m1 ", err))
						})
						ch.QueueDeclare("pending", pika.QueueDeclareOptions{}, func(_ pika.Queue, err error) {
							got = append(got, fmt.Sprint("declare pending: in flight at the loss: ", err != nil))
						})
						return
					}
					got = append(got, fmt.Sprint("ack before the loss: ", first.Ack(false)), fmt.Sprint("ack: ", d.Ack(false)))
					closeAndStop(t, c, stop)
				}, nil)
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					got = append(got, ev.Kind.String())
					switch ev.Kind {
					case pika.RecoveryLost:
						got = append(got, fmt.Sprint("publish: ", ch.Publish("", "k", pika.Message{})))
						ch.QueueDeclare("during", pika.QueueDeclareOptions{}, func(_ pika.Queue, err error) {
							got = append(got, fmt.Sprint("declare during: ", err))
						})
						c.Channel(func(_ *Channel, err error) { got = append(got, fmt.Sprint("channel during: ", err)) })
					case pika.RecoveryRecovered:
						if ev.Report.RenamedQueues["amq.gen-1"] != "amq.gen-2" {
							t.Errorf("renamed queues %v", ev.Report.RenamedQueues)
						}
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{
			"delivery d1 tag 1", "lost", "publish: " + pika.ErrRecovering.Error(), "attempt", "channel during: " + pika.ErrRecovering.Error(),
			"recovered", "confirm m1 <nil>", "declare pending: in flight at the loss: true",
			"declare during: " + pika.ErrRecovering.Error(), "delivery d2 tag 2",
			"ack before the loss: " + pika.ErrStaleDelivery.Error(), "ack: <nil>",
		})
	})
}

// Recovery gives up after Config.Reconnect's last attempt: the
// connection closes with a *pika.RecoveryError (matching pika.ErrClosed),
// and a message whose confirmation the loss cut off resolves with
// pika.ErrOutcomeUnknown. Close during a recovery ends it with nil.
func TestRecoveryGivesUpOrIsClosed(t *testing.T) {
	for _, closeIt := range []bool{false, true} {
		t.Run(fmt.Sprint("close ", closeIt), func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := recoveringConfig(t, pair, func(p *peer) { setupState(p); p.cut() })
				cfg.Reconnect = pika.Backoff{Initial: time.Millisecond, Max: time.Millisecond, MaxAttempts: 3}
				var got []string
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					setupCalls(t, l, cfg, stop, &got, func(c *Conn, ch *Channel) {
						c.OnRecovery(func(ev pika.RecoveryEvent) {
							got = append(got, ev.Kind.String())
							if closeIt && ev.Kind == pika.RecoveryAttempt && ev.Attempt == 2 {
								c.Close(func(err error) { got = append(got, fmt.Sprint("close cb ", err)) })
							}
						})
						c.OnClose(func(err error) {
							var re *pika.RecoveryError
							got = append(got, fmt.Sprint("closed ", errors.As(err, &re) && errors.Is(err, pika.ErrClosed) && re.Attempts == 3, " ", err == nil))
							stop()
						})
					}, func(*Conn, *Delivery) {})
				})
				wait()
				want := []string{"lost", "attempt", "attempt", "attempt", "gave-up", "confirm m1 unknown", "closed true false"}
				if closeIt {
					want = []string{"lost", "attempt", "attempt", "confirm m1 unknown", "closed false true", "close cb <nil>"}
				}
				expectCalls(t, got, want)
			})
		})
	}
}

// While a recovery attempt's dial hangs, calls fail with
// pika.ErrRecovering at once (their callbacks do not wait for the dial),
// and Close ends the connection with nil; Run then leaves nothing behind
// (the dial is abandoned).
func TestRecoveryCallsWhileDialing(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.openChannel(1)
			p.cut()
		})
		dial := cfg.Dial
		dials := 0
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials++; dials == 1 {
				return dial(ctx, network, addr)
			}
			<-ctx.Done() // hangs until Run returns
			return nil, ctx.Err()
		}
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					got = append(got, ev.Kind.String())
					if ev.Kind != pika.RecoveryAttempt {
						return
					}
					// The dial starts after the attempt's delay: call once
					// it runs.
					l.AfterFunc(100*time.Millisecond, func() {
						ch.QueueDeclare("q", pika.QueueDeclareOptions{}, func(_ pika.Queue, err error) {
							got = append(got, fmt.Sprint("declare: ", err))
							c.Close(func(err error) {
								got = append(got, fmt.Sprint("close: ", err))
								stop()
							})
						})
					})
				})
				c.OnClose(func(err error) { got = append(got, fmt.Sprint("closed: ", err)) })
			})
		})
		wait()
		expectCalls(t, got, []string{"lost", "attempt", "declare: " + pika.ErrRecovering.Error(), "closed: <nil>", "close: <nil>"})
	})
}

// A transaction open at a loss is lost with the connection: recovery
// selects transaction mode again, and the next TxCommit rolls back and
// fails with pika.ErrTxLost; the one after commits.
func TestRecoveryLosesTheOpenTransaction(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.TxSelect](p, 1, &wire.TxSelectOk{})
				expectPublish(p, 1)
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.TxSelect](p, 1, &wire.TxSelectOk{})
				answer[*wire.TxRollback](p, 1, &wire.TxRollbackOk{})
				answer[*wire.TxCommit](p, 1, &wire.TxCommitOk{})
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.TxSelect(func(err error) {
					if err != nil {
						t.Errorf("tx.select: %v", err)
					}
					if err := ch.Publish("", "q", pika.Message{Body: []byte("in the transaction")}); err != nil {
						t.Errorf("publish: %v", err)
					}
				})
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					if ev.Kind != pika.RecoveryRecovered {
						return
					}
					ch.TxCommit(func(err error) { got = append(got, fmt.Sprint("commit: ", err)) })
					ch.TxCommit(func(err error) {
						got = append(got, fmt.Sprint("commit: ", err))
						closeAndStop(t, c, stop)
					})
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"commit: " + pika.ErrTxLost.Error(), "commit: <nil>"})
	})
}

// A declaration the broker refuses during a restore is reported, not
// fatal: the restore goes on on a new channel, the consumer of the queue
// that could not be declared ends with the refusal (no basic.consume is
// sent, which would close its channel), and the rest is restored.
func TestRecoveryRefusedQueueEndsItsConsumer(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) { setupState(p); p.cut() },
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.BasicQos](p, 1, &wire.BasicQosOk{})
				answer[*wire.ConfirmSelect](p, 1, &wire.ConfirmSelectOk{})
				p.openChannel(2)
				answer[*wire.ExchangeDeclare](p, 2, &wire.ExchangeDeclareOk{})
				answer[*wire.QueueDeclare](p, 2, &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q'", ClassID: 50, MethodID: 10})
				expect[*wire.ChannelCloseOk](p, 2)
				// The engine takes the next number for the new channel.
				p.openChannel(3)
				answer[*wire.QueueBind](p, 3, &wire.QueueBindOk{})
				answer[*wire.ChannelClose](p, 3, &wire.ChannelCloseOk{})
				// No basic.consume: the republished message comes next.
				expectPublish(p, 1)
				p.send(scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}))
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.Qos(pika.QosOptions{PrefetchCount: 5}, nil)
				ch.ConfirmSelect(nil)
				ch.ExchangeDeclare("x", "direct", pika.ExchangeDeclareOptions{}, nil)
				ch.QueueDeclare("q", pika.QueueDeclareOptions{}, nil)
				ch.QueueBind("q", "x", "k", pika.BindOptions{}, nil)
				ch.Consume("q", ConsumeOptions{Tag: "c1", OnEnd: func(err error) {
					got = append(got, fmt.Sprint("consumer ended: ", errors.Is(err, pika.ErrPreconditionFailed)))
				}}, func(*Delivery) {}, nil)
				ch.PublishConfirm("x", "k", pika.Message{Body: []byte("m1")}, func(err error) {
					got = append(got, fmt.Sprint("confirm m1 ", err))
					closeAndStop(t, c, stop)
				})
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					if ev.Kind != pika.RecoveryRecovered {
						return
					}
					r := ev.Report
					var failed []string
					for _, f := range r.Failed {
						failed = append(failed, f.Entity)
					}
					got = append(got, fmt.Sprintf("recovered: %d channel, %d consumers, %d republished, failed %q", r.Channels, r.Consumers, r.Republished, failed))
				})
			})
		})
		wait()
		expectCalls(t, got, []string{
			`recovered: 1 channel, 0 consumers, 1 republished, failed ["queue \"q\"" "consumer \"c1\" on channel 1"]`,
			// The consumer's end takes its place after the callbacks of
			// the calls made before: the publish, whose copy was confirmed.
			"confirm m1 <nil>", "consumer ended: true",
		})
	})
}

// Run returning while a connection recovers ends it with ErrStopped, with
// its attempt's dial hanging or between attempts, and leaves no goroutine
// and no descriptor.
func TestRunEndDuringRecovery(t *testing.T) {
	for _, hang := range []bool{true, false} {
		t.Run(fmt.Sprint("dial hangs ", hang), func(t *testing.T) {
			both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
				cfg, wait := recoveringConfig(t, pair, func(p *peer) {
					p.handshake(0)
					p.openChannel(1)
					p.cut()
				})
				if hang {
					dial := cfg.Dial
					dials := 0
					cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
						if dials++; dials == 1 {
							return dial(ctx, network, addr)
						}
						<-ctx.Done()
						return nil, ctx.Err()
					}
				} else {
					cfg.Reconnect = pika.Backoff{Initial: time.Hour}
				}
				var got []string
				run(t, 20*time.Second, func(l *Loop, stop func()) {
					withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
						c.OnRecovery(func(ev pika.RecoveryEvent) {
							got = append(got, ev.Kind.String())
							if ev.Kind == pika.RecoveryAttempt {
								l.AfterFunc(100*time.Millisecond, stop)
							}
						})
						c.OnClose(func(err error) { got = append(got, fmt.Sprint("closed: ", err)) })
						ch.OnClose(func(err error) { got = append(got, fmt.Sprint("channel closed: ", err)) })
					})
				})
				wait()
				expectCalls(t, got, []string{"lost", "attempt", "channel closed: " + ErrStopped.Error(), "closed: " + ErrStopped.Error()})
			})
		})
	}
}

// A delivery to a consumer restored on the new link can be acknowledged
// before the restore ends (another consumer still being restarted).
func TestRecoveryAckDuringRestore(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			twoConsumersThenCut,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				// The consumed queues were not declared here: checked.
				p.openChannel(2)
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "q1"})
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "q2"})
				answer[*wire.ChannelClose](p, 2, &wire.ChannelCloseOk{})
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				p.send(scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1}, nil, []byte("d"), 0))
				expect[*wire.BasicConsume](p, 1)
				if m := expect[*wire.BasicAck](p, 1); m.DeliveryTag != 1 {
					p.t.Errorf("ack of tag %d", m.DeliveryTag)
				}
				p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c2"}))
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.Consume("q1", ConsumeOptions{Tag: "c1"}, func(d *Delivery) {
					got = append(got, fmt.Sprint("recovering ", c.Recovering(), ", ack: ", d.Ack(false)))
				}, nil)
				ch.Consume("q2", ConsumeOptions{Tag: "c2"}, func(*Delivery) {}, nil)
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					if ev.Kind == pika.RecoveryRecovered {
						got = append(got, "recovered")
						closeAndStop(t, c, stop)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"recovering true, ack: <nil>", "recovered"})
	})
}

// A recovery attempt tries every address of Config.Addrs, as a dial does:
// one that refuses the connection, then one whose handshake fails, then
// one that works, all in the same attempt. Config.RecoveryFilter leaves a
// consumer out: it ends with pika.ErrNotRecovered.
func TestRecoveryAddressesAndFilter(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "kept"})
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "left-out"})
				p.cut()
			},
			func(p *peer) { // "broken": the handshake fails
				hdr := make([]byte, 8)
				p.nc.Read(hdr)
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.openChannel(2)
				answer[*wire.QueueDeclare](p, 2, &wire.QueueDeclareOk{Queue: "q"})
				answer[*wire.ChannelClose](p, 2, &wire.ChannelCloseOk{})
				if m := answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "kept"}); m.ConsumerTag != "kept" {
					p.t.Errorf("restored consumer %q", m.ConsumerTag)
				}
				p.closeConn()
			})
		scripted := cfg.Dial
		var dialed []string
		cfg.Addrs = []string{"first:5672", "refusing:5672", "broken:5672", "good:5672"}
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed = append(dialed, addr) // the dial goroutines run one after the other
			if addr == "refusing:5672" || len(dialed) > 1 && addr == "first:5672" {
				return nil, errors.New("connection refused")
			}
			return scripted(ctx, network, addr)
		}
		cfg.RecoveryFilter.Consumer = func(queue, tag string) bool { return tag != "left-out" }
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				for _, tag := range []string{"kept", "left-out"} {
					ch.Consume("q", ConsumeOptions{Tag: tag, OnEnd: func(err error) {
						got = append(got, fmt.Sprint(tag, " ended: ", errors.Is(err, pika.ErrNotRecovered)))
					}}, func(*Delivery) {}, nil)
				}
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					got = append(got, fmt.Sprint(ev.Kind, " ", ev.Attempt))
					if ev.Kind == pika.RecoveryRecovered {
						got = append(got, "to "+ev.Report.Addr)
						closeAndStop(t, c, stop)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"lost 0", "attempt 1", "left-out ended: true", "recovered 1", "to good:5672", "kept ended: false"})
		if want := []string{"first:5672", "first:5672", "refusing:5672", "broken:5672", "good:5672"}; !slices.Equal(dialed, want) {
			t.Errorf("dialed %q, want %q", dialed, want)
		}
	})
}

// A connection blocked by the broker's alarm when it is lost is unblocked
// (OnBlocked false): the block was the lost connection's.
func TestRecoveryEndsTheBlock(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.send(scripted.Method(0, &wire.ConnectionBlocked{Reason: "low on memory"}))
				expect[*wire.BasicQos](p, 1) // the client's sign it saw the block
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				c.OnBlocked(func(blocked bool, reason string) {
					got = append(got, fmt.Sprint("blocked ", blocked, " ", reason))
					if blocked {
						ch.Qos(pika.QosOptions{PrefetchCount: 1}, nil)
					}
				})
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					got = append(got, ev.Kind.String())
					if ev.Kind == pika.RecoveryRecovered {
						got = append(got, fmt.Sprint("blocked: ", c.Blocked()))
						closeAndStop(t, c, stop)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{"blocked true low on memory", "blocked false ", "lost", "attempt", "recovered", "blocked: false"})
	})
}

// The topology record follows the rules of pika.Conn: an auto-delete
// queue whose last consumer the application cancelled is forgotten (the
// broker deleted it), and a queue whose x-expires ran out while the
// connection was lost is checked, found gone and forgotten
// (RecoveryReport.Expired) instead of being declared again.
func TestRecoveryForgetsAutoDeleteAndExpiredQueues(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "ad"})
				answer[*wire.BasicConsume](p, 1, &wire.BasicConsumeOk{ConsumerTag: "c1"})
				answer[*wire.BasicCancel](p, 1, &wire.BasicCancelOk{ConsumerTag: "c1"})
				answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "exp"})
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				p.openChannel(2)
				if m := answer[*wire.QueueDeclare](p, 2, &wire.ChannelClose{ReplyCode: 404, ClassID: 50, MethodID: 10,
					ReplyText: "NOT_FOUND - no queue 'exp' in vhost '/'"}); m.Queue != "exp" || !m.Passive {
					p.t.Errorf("declared %q (passive %v), want a check of exp", m.Queue, m.Passive)
				}
				expect[*wire.ChannelCloseOk](p, 2)
				p.closeConn()
			})
		var got []string
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				ch.QueueDeclare("ad", pika.QueueDeclareOptions{AutoDelete: true}, nil)
				ch.Consume("ad", ConsumeOptions{Tag: "c1"}, func(*Delivery) {}, func(cons *Consumer, err error) {
					cons.Cancel(nil)
					ch.QueueDeclare("exp", pika.QueueDeclareOptions{Arguments: pika.Table{"x-expires": int32(1)}}, nil)
				})
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					if ev.Kind == pika.RecoveryRecovered {
						got = append(got, fmt.Sprintf("expired %q, failed %d", ev.Report.Expired, len(ev.Report.Failed)))
						closeAndStop(t, c, stop)
					}
				})
			})
		})
		wait()
		expectCalls(t, got, []string{`expired ["exp"], failed 0`})
	})
}
