package loop

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
)

// recoveryTestConfig is a Config through proxy p that detects a dead path
// within seconds and retries quickly.
func recoveryTestConfig(t *testing.T, brokerURL string, p *faultproxy.Proxy) pika.Config {
	cfg := proxied(t, brokerURL, p)
	cfg.Heartbeat = time.Second
	cfg.HandshakeTimeout = 3 * time.Second
	cfg.Reconnect = pika.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	return cfg
}

// deleteQueues deletes the test's queues through a connection of package
// pika that bypasses the proxy.
func deleteQueues(t *testing.T, brokerURL string, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pika.Dial(ctx, brokerURL)
	if err != nil {
		t.Errorf("cleanup dial: %v", err)
		return
	}
	defer c.Close(ctx)
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Errorf("cleanup channel: %v", err)
		return
	}
	for _, name := range names {
		if _, err := ch.QueueDelete(ctx, name, pika.QueueDeleteOptions{}); err != nil {
			t.Errorf("cleanup: deleting %s: %v", name, err)
		}
	}
}

// A connection cut by the network recovers against the real broker: a
// server-named exclusive queue is declared again under a new name, its
// binding to an auto-delete exchange (deleted by the broker with the
// queue's binding, and declared again) follows, and the consumer gets
// what is published after the recovery.
func TestIntegrationRecoveryRestoresTopology(t *testing.T) {
	brokerURL := testenv.Broker(t)
	p := faultproxy.New(t, brokerAddr(t, brokerURL))
	before := snapshot(t)
	cfg := recoveryTestConfig(t, brokerURL, p)
	x := testenv.Name(t, "loop-rec-x")
	var got []string
	run(t, 60*time.Second, func(l *Loop, stop func()) {
		withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
			fail := func(what string, err error) {
				if err != nil {
					t.Errorf("%s: %v", what, err)
					stop()
				}
			}
			ch.ExchangeDeclare(x, pika.ExchangeDirect, pika.ExchangeDeclareOptions{AutoDelete: true}, func(err error) { fail("exchange", err) })
			var first string
			ch.QueueDeclare("", pika.QueueDeclareOptions{Exclusive: true}, func(q pika.Queue, err error) {
				fail("queue", err)
				first = q.Name
				ch.QueueBind(q.Name, x, "k", pika.BindOptions{}, func(err error) { fail("bind", err) })
				ch.Consume(q.Name, ConsumeOptions{AutoAck: true}, func(d *Delivery) {
					got = append(got, string(d.Body))
					closeAndStop(t, c, stop)
				}, func(_ *Consumer, err error) {
					fail("consume", err)
					p.Cut()
				})
			})
			c.OnRecovery(func(ev pika.RecoveryEvent) {
				got = append(got, ev.Kind.String())
				if ev.Kind != pika.RecoveryRecovered {
					return
				}
				if r := ev.Report; r.Channels != 1 || r.Consumers != 1 || len(r.Failed) != 0 || r.RenamedQueues[first] == "" {
					t.Errorf("report %+v", r)
				}
				if err := ch.Publish(x, "k", pika.Message{Body: []byte("after")}); err != nil {
					t.Errorf("publish: %v", err)
				}
			})
		})
	})
	if !slices.Equal(got, []string{"lost", "attempt", "recovered", "after"}) {
		t.Errorf("events and deliveries %q", got)
	}
	expectNoLeak(t, before)
}

// recConns is the number of connections of the many-connections test.
const recConns = 100

// One loop, 100 connections through one fault proxy, each publishing with
// confirms to its own queue and consuming it on a second channel; the
// proxy cuts them all, stalls them all (the heartbeat timeout detects it),
// or cuts them and refuses new connections for a while. Every connection
// recovers, and nothing is lost: every message published either got its
// confirmation and was consumed, or its failure was reported (Publish's
// error while recovering, or its confirmation callback's). Nothing is left
// open after Run.
func TestIntegrationRecoveryOnManyConnections(t *testing.T) {
	brokerURL := testenv.Broker(t)
	for _, tc := range []struct {
		name  string
		fault func(p *faultproxy.Proxy) // on the loop
		undo  func(p *faultproxy.Proxy) // on the loop, once every connection saw its loss
	}{
		{"cut", (*faultproxy.Proxy).Cut, nil},
		// The heartbeat timeout detects the dead path; reconnections hang
		// in their handshake (Config.HandshakeTimeout) until Resume.
		{"stall", (*faultproxy.Proxy).Stall, (*faultproxy.Proxy).Resume},
		{"refuse", func(p *faultproxy.Proxy) {
			p.Refuse(true)
			p.Cut()
		}, func(p *faultproxy.Proxy) { p.Refuse(false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := faultproxy.New(t, brokerAddr(t, brokerURL))
			base := testenv.Name(t, "loop-rec")
			var names []string
			for i := range recConns {
				names = append(names, fmt.Sprintf("%s-%d", base, i))
			}
			t.Cleanup(func() { deleteQueues(t, brokerURL, names...) })
			before := snapshot(t)
			cfg := recoveryTestConfig(t, brokerURL, p)
			var undo func()
			if tc.undo != nil {
				undo = func() { tc.undo(p) }
			}
			s := runManyRecovering(t, cfg, names, func() { tc.fault(p) }, undo)
			p.Resume()
			t.Logf("%d published: %d confirmed, %d failed; %d recoveries", s.published, s.confirmed, s.failed, s.recoveries)
			if s.recoveries < recConns {
				t.Errorf("%d recoveries, want every one of the %d connections recovered", s.recoveries, recConns)
			}
			if s.confirmed == 0 {
				t.Errorf("no message confirmed")
			}
			expectNoLeak(t, before)
		})
	}
}

// publisher is one connection of the many-connections test.
type publisher struct {
	c          *Conn
	pub, sub   *Channel
	queue      string
	next       int          // messages published so far
	outcome    map[int]bool // per message: confirmed (true) or failed (false)
	received   map[int]bool
	losses     int
	recoveries int
}

type recStats struct{ published, confirmed, failed, recoveries int }

// perConn is the number of messages each connection publishes, one every
// pubEvery.
const (
	perConn  = 40
	pubEvery = 50 * time.Millisecond
)

// runManyRecovering runs the connections of the many-connections test on
// one loop, calls fault once every connection has published a quarter of
// its messages, undo (when set) a second after every connection saw its
// loss, and ends when every message has its outcome and every confirmed
// one was consumed.
func runManyRecovering(t *testing.T, cfg pika.Config, names []string, fault, undo func()) recStats {
	var st recStats
	var pubs []*publisher
	run(t, 120*time.Second, func(l *Loop, stop func()) {
		faulted, undone := false, false
		var check *Timer
		done := func() bool {
			for _, p := range pubs {
				if p.next < perConn || len(p.outcome) < perConn || p.recoveries == 0 {
					return false
				}
				for id, ok := range p.outcome {
					if ok && !p.received[id] {
						return false
					}
				}
			}
			return true
		}
		finish := func() {
			closed := 0
			for _, p := range pubs {
				p.c.Close(func(err error) {
					if err != nil {
						t.Errorf("close: %v", err)
					}
					if closed++; closed == len(pubs) {
						stop()
					}
				})
			}
		}
		check = l.AfterFunc(100*time.Millisecond, func() {
			if len(pubs) == recConns && !faulted {
				ready := true
				for _, p := range pubs {
					ready = ready && p.next >= perConn/4
				}
				if ready {
					faulted = true
					fault()
				}
			}
			if faulted && !undone && undo != nil {
				lost := true
				for _, p := range pubs {
					lost = lost && p.losses > 0
				}
				if lost {
					undone = true
					l.AfterFunc(time.Second, undo)
				}
			}
			if faulted && done() {
				finish()
				return
			}
			check.Reset(100 * time.Millisecond)
		})
		for _, q := range names {
			p := &publisher{queue: q, outcome: map[int]bool{}, received: map[int]bool{}}
			openPublisher(t, l, cfg, p, stop, func() { pubs = append(pubs, p) })
		}
	})
	for _, p := range pubs {
		st.published += p.next
		st.recoveries += p.recoveries
		for id, ok := range p.outcome {
			if ok {
				st.confirmed++
				if !p.received[id] {
					t.Errorf("%s: message %d confirmed and never consumed", p.queue, id)
				}
			} else {
				st.failed++
			}
		}
		if len(p.outcome) != p.next {
			t.Errorf("%s: %d messages published, %d outcomes reported", p.queue, p.next, len(p.outcome))
		}
		if p.c.IsClosed() && p.c.Err() != nil {
			t.Errorf("%s: connection ended with %v", p.queue, p.c.Err())
		}
	}
	if len(pubs) != recConns {
		t.Errorf("%d of %d connections opened", len(pubs), recConns)
	}
	return st
}

// openPublisher opens p's connection, its two channels, queue and
// consumer, starts its publishing timer and calls ready.
func openPublisher(t *testing.T, l *Loop, cfg pika.Config, p *publisher, stop func(), ready func()) {
	fail := func(what string, err error) bool {
		if err != nil {
			t.Errorf("%s %s: %v", p.queue, what, err)
			stop()
			return true
		}
		return false
	}
	l.DialConfig(cfg, func(c *Conn, err error) {
		if fail("dial", err) {
			return
		}
		p.c = c
		c.OnRecovery(func(ev pika.RecoveryEvent) {
			switch ev.Kind {
			case pika.RecoveryLost:
				p.losses++
			case pika.RecoveryRecovered:
				p.recoveries++
			case pika.RecoveryGaveUp:
				t.Errorf("%s: recovery gave up: %v", p.queue, ev.Err)
			}
		})
		c.Channel(func(pub *Channel, err error) {
			if fail("channel", err) {
				return
			}
			p.pub = pub
			pub.ConfirmSelect(func(err error) { fail("confirm.select", err) })
			pub.QueueDeclare(p.queue, pika.QueueDeclareOptions{Arguments: pika.Table{"x-expires": int32(300000)}}, func(_ pika.Queue, err error) {
				if fail("declare", err) {
					return
				}
				c.Channel(func(sub *Channel, err error) {
					if fail("channel 2", err) {
						return
					}
					p.sub = sub
					sub.Qos(pika.QosOptions{PrefetchCount: 50}, nil)
					sub.Consume(p.queue, ConsumeOptions{}, func(d *Delivery) {
						var id int
						if _, err := fmt.Sscan(string(d.Body), &id); err != nil {
							t.Errorf("%s: body %q", p.queue, d.Body)
						}
						p.received[id] = true
						if err := d.Ack(false); err != nil && !errors.Is(err, pika.ErrStaleDelivery) {
							t.Errorf("%s: ack: %v", p.queue, err)
						}
					}, func(_ *Consumer, err error) {
						if fail("consume", err) {
							return
						}
						publishEvery(t, l, p)
						ready()
					})
				})
			})
		})
	})
}

// publishEvery publishes p's messages, one every pubEvery.
func publishEvery(t *testing.T, l *Loop, p *publisher) {
	var tick *Timer
	tick = l.AfterFunc(pubEvery, func() {
		if p.next == perConn {
			return
		}
		id := p.next
		p.next++
		err := p.pub.PublishConfirm("", p.queue, pika.Message{Body: []byte(fmt.Sprint(id))}, func(err error) {
			if _, dup := p.outcome[id]; dup {
				t.Errorf("%s: message %d: a second outcome %v", p.queue, id, err)
			}
			p.outcome[id] = err == nil
		})
		if err != nil {
			if !errors.Is(err, pika.ErrRecovering) {
				t.Errorf("%s: publish %d: %v", p.queue, id, err)
			}
			p.outcome[id] = false
		}
		tick.Reset(pubEvery)
	})
}

// A connection the broker forces closed (rabbitmqctl close_connection:
// 320 CONNECTION_FORCED) recovers: its consumer, restored with its tag,
// gets what is published after the recovery. Only the test's own
// connection, found by its name, is closed.
func TestIntegrationRecoveryFromForcedClose(t *testing.T) {
	brokerURL := testenv.Broker(t)
	name := testenv.Name(t, "loop-forced")
	q := testenv.Name(t, "loop-forced-q")
	t.Cleanup(func() { deleteQueues(t, brokerURL, q) })
	cfg, err := pika.ParseURL(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnectionName = name
	cfg.Reconnect = pika.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}
	before := snapshot(t)
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The loop runs on a goroutine of its own: rabbitmqctl blocks, and
	// runs on the test's.
	events := make(chan string, 16)
	note := func(s string) {
		select {
		case events <- s:
		default:
			t.Errorf("event %q dropped", s)
		}
	}
	l.Post(func() {
		l.DialConfig(cfg, func(c *Conn, err error) {
			if err != nil {
				note(fmt.Sprint("dial: ", err))
				return
			}
			c.Channel(func(ch *Channel, err error) {
				if err != nil {
					note(fmt.Sprint("channel: ", err))
					return
				}
				ch.QueueDeclare(q, pika.QueueDeclareOptions{Arguments: pika.Table{"x-expires": int32(300000)}}, nil)
				ch.Consume(q, ConsumeOptions{AutoAck: true}, func(d *Delivery) {
					note("delivery " + string(d.Body))
					c.Close(func(err error) { note(fmt.Sprint("closed ", err)) })
				}, func(_ *Consumer, err error) { note(fmt.Sprint("ready ", err)) })
				c.OnRecovery(func(ev pika.RecoveryEvent) {
					switch ev.Kind {
					case pika.RecoveryLost:
						note(fmt.Sprint("lost ", errors.Is(ev.Err, pika.ErrConnectionForced)))
					case pika.RecoveryRecovered:
						note(fmt.Sprint("recovered ", ev.Report.Consumers))
						if err := ch.Publish("", q, pika.Message{Body: []byte("after")}); err != nil {
							note(fmt.Sprint("publish: ", err))
						}
					}
				})
			})
		})
	})
	ran := make(chan error, 1)
	go func() { ran <- l.Run(ctx) }()
	next := func() string {
		select {
		case s := <-events:
			return s
		case <-ctx.Done():
			return "timed out"
		}
	}
	var got []string
	if s := next(); s != "ready <nil>" {
		t.Fatalf("setup: %s", s)
	}
	testenv.CloseConnection(t, name, "loop recovery test: forced close", 30*time.Second)
	for len(got) < 4 {
		s := next()
		got = append(got, s)
		if s == "timed out" {
			break
		}
	}
	cancel()
	<-ran
	if !slices.Equal(got, []string{"lost true", "recovered 1", "delivery after", "closed <nil>"}) {
		t.Errorf("events %q", got)
	}
	expectNoLeak(t, before)
}
