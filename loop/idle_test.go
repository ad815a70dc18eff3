package loop

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// recoveryHook is a pika.RecoveryHook calling a function.
type recoveryHook func(ev pika.RecoveryEvent)

func (h recoveryHook) OnRecovery(_ *pika.Conn, ev pika.RecoveryEvent) { h(ev) }

// An idle connection with recovery on holds no recovery state until there
// is something to recover besides its channels: a call that records
// nothing (basic.qos) leaves none; a loss makes it and the recovery goes
// through as always (the channel and its QoS restored); on another
// connection, the first declaration to record makes it.
func TestRecoveryStateMadeOnFirstUse(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := recoveringConfig(t, pair,
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.BasicQos](p, 1, &wire.BasicQosOk{})
				p.cut()
			},
			func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				if m := answer[*wire.BasicQos](p, 1, &wire.BasicQosOk{}); m.PrefetchCount != 7 {
					p.t.Errorf("QoS restored with prefetch %d, want 7", m.PrefetchCount)
				}
				p.closeConn()
			},
			func(p *peer) { // a second connection
				p.handshake(0)
				p.openChannel(1)
				answer[*wire.QueueDeclare](p, 1, &wire.QueueDeclareOk{Queue: "q"})
				p.closeConn()
			})
		var got []string
		recovered := make(chan struct{}, 1)
		cfg.Hooks = []pika.Hook{recoveryHook(func(ev pika.RecoveryEvent) {
			got = append(got, ev.Kind.String())
			if ev.Kind == pika.RecoveryRecovered {
				recovered <- struct{}{}
			}
		})}
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				if c.rec != nil {
					t.Errorf("recovery state made at dial")
				}
				ch.Qos(pika.QosOptions{PrefetchCount: 7}, func(err error) {
					if err != nil {
						t.Errorf("qos: %v", err)
					}
					if c.rec != nil {
						t.Errorf("recovery state made by basic.qos")
					}
					// Wait for the recovery (the peer cuts the link).
					var poll func()
					poll = func() {
						select {
						case <-recovered:
						default:
							l.AfterFunc(5*time.Millisecond, poll)
							return
						}
						if c.rec == nil {
							t.Errorf("no recovery state after a recovery")
						}
						c.Close(func(err error) {
							if err != nil {
								t.Errorf("close: %v", err)
							}
							declareOnNew(t, l, cfg, stop)
						})
					}
					poll()
				})
			})
		})
		wait()
		if want := []string{"lost", "attempt", "recovered"}; !slices.Equal(got, want) {
			t.Errorf("recovery events %q, want %q", got, want)
		}
	})
}

// declareOnNew dials a connection, declares queue q on a channel and
// checks that the declaration made the recovery state that records it.
func declareOnNew(t *testing.T, l *Loop, cfg pika.Config, stop func()) {
	withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
		if c.rec != nil {
			t.Errorf("recovery state made at dial")
		}
		ch.QueueDeclare("q", pika.QueueDeclareOptions{}, func(q pika.Queue, err error) {
			if err != nil {
				t.Errorf("declare: %v", err)
			}
			if c.rec == nil || c.rec.topo.Queue("q") == nil {
				t.Errorf("queue q not recorded after its declaration")
			}
			closeAndStop(t, c, stop)
		})
	})
}

// Handler lists start empty (nil), keep their order, and let a handler
// unregister itself or another while the list runs.
func TestHandlersAddAndUnregister(t *testing.T) {
	var h handlers[func(*[]string)]
	if h.p != nil || h.list() != nil {
		t.Fatalf("a new handler list is not empty")
	}
	var offB func()
	h.add(func(s *[]string) { *s = append(*s, "a"); offB() })
	offB = h.add(func(s *[]string) { *s = append(*s, "b") })
	var offC func()
	offC = h.add(func(s *[]string) { *s = append(*s, "c"); offC() })
	for round, want := range [][]string{{"a", "b", "c"}, {"a"}} {
		var got []string
		for _, fn := range h.list() {
			fn(&got)
		}
		if !slices.Equal(got, want) {
			t.Errorf("round %d: ran %q, want %q", round, got, want)
		}
	}
	offB() // a second unregistration changes nothing
	if n := len(h.list()); n != 1 {
		t.Errorf("%d handlers left, want 1", n)
	}
}

// Connections of a loop to one broker share its server-properties table.
func TestServerPropertiesShared(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		script := func(p *peer) {
			p.handshake(0)
			p.closeConn()
		}
		cfg, wait := recoveringConfig(t, pair, script, script)
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			var first *Conn
			dial := func(then func(c *Conn)) {
				l.DialConfig(cfg, func(c *Conn, err error) {
					if err != nil {
						t.Errorf("dial: %v", err)
						stop()
						return
					}
					then(c)
				})
			}
			dial(func(c *Conn) {
				first = c
				dial(func(c *Conn) {
					a, b := first.ServerProperties(), c.ServerProperties()
					if a["product"] != "scripted" || fmt.Sprintf("%p", a) != fmt.Sprintf("%p", b) {
						t.Errorf("server properties %v and %v, want one shared table", a, b)
					}
					if first.cfg == c.cfg {
						t.Errorf("a Config with a Dial function shared (two functions cannot be compared)")
					}
					first.Close(func(error) { closeAndStop(t, c, stop) })
				})
			})
		})
		wait()
	})
}

// A Loop's connections share a Config only when it is the same field by
// field, references compared by identity and no function set.
func TestShareConfig(t *testing.T) {
	base, err := pika.ParseURL("amqp://u:p@h1:5672/v?heartbeat=10")
	if err != nil {
		t.Fatal(err)
	}
	base.Hooks = []pika.Hook{recoveryHook(nil)}
	base.Reconnect = pika.Backoff{Initial: time.Second}
	setRecoveryDefaults(&base)
	cases := []struct {
		name  string
		edit  func(c *pika.Config)
		share bool
	}{
		{"same", func(c *pika.Config) {}, true},
		{"same strategy value", func(c *pika.Config) { c.Reconnect = pika.Backoff{Initial: time.Second} }, true},
		{"other vhost", func(c *pika.Config) { c.Vhost = "w" }, false},
		{"other heartbeat", func(c *pika.Config) { c.Heartbeat = 5 * time.Second }, false},
		{"other strategy", func(c *pika.Config) { c.Reconnect = pika.Backoff{Initial: 2 * time.Second} }, false},
		{"a Dial function", func(c *pika.Config) {
			c.Dial = func(context.Context, string, string) (net.Conn, error) { return nil, nil }
		}, false},
		{"a recovery filter", func(c *pika.Config) { c.RecoveryFilter.Queue = func(string, bool) bool { return true } }, false},
		{"equal hooks, other slice", func(c *pika.Config) { c.Hooks = slices.Clone(c.Hooks) }, false},
		{"other client properties", func(c *pika.Config) { c.ClientProperties = pika.Table{"x": 1} }, false},
		{"no addresses vs empty", func(c *pika.Config) { c.Addrs = []string{} }, false},
	}
	for _, tc := range cases {
		l := &Loop{}
		a := base
		first := l.shareConfig(&a)
		b := base
		tc.edit(&b)
		second := l.shareConfig(&b)
		if got := second == first; got != tc.share {
			t.Errorf("%s: shared %v, want %v", tc.name, got, tc.share)
		}
		if !tc.share && l.cfg != &b {
			t.Errorf("%s: the loop does not offer the newer Config to later connections", tc.name)
		}
	}
}
