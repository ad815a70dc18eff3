package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// hookRecorder is a hook of every kind that records what it hears, on the
// loop's goroutine, as lines. It checks that every event names the same
// stand-in connection, and that stand-ins answer for the loop's values.
type hookRecorder struct {
	t         *testing.T
	events    []string
	conn      *pika.Conn
	chans     map[*pika.Channel]bool
	read      int64
	written   int64
	onLoop    func() bool // reports whether it runs on the loop's goroutine
	notOnLoop int
	product   string // the broker's product property
}

func newHookRecorder(t *testing.T) *hookRecorder {
	return &hookRecorder{t: t, chans: map[*pika.Channel]bool{}, product: "scripted"}
}

func (r *hookRecorder) add(format string, args ...any) {
	if r.onLoop != nil && !r.onLoop() {
		r.notOnLoop++
	}
	r.events = append(r.events, fmt.Sprintf(format, args...))
}

func (r *hookRecorder) sameConn(c *pika.Conn) {
	if c == nil {
		r.t.Errorf("hook got a nil *pika.Conn")
		return
	}
	if r.conn == nil {
		r.conn = c
	} else if c != r.conn {
		r.t.Errorf("hooks got two stand-ins for one connection")
	}
}

func (r *hookRecorder) sameChannel(ch *pika.Channel) {
	r.sameConn(ch.Conn())
	if !r.chans[ch] {
		r.t.Errorf("hook got a channel stand-in not reported open: %p", ch)
	}
}

func (r *hookRecorder) OnConnect(ev pika.ConnectEvent) {
	r.sameConn(ev.Conn)
	if ev.Err == nil && (ev.Conn.IsClosed() || ev.Conn.RemoteAddr().String() != ev.Addr ||
		ev.Conn.ServerProperties()["product"] != r.product || ev.Conn.Tuning().FrameMax != 131072) {
		r.t.Errorf("the stand-in connection does not answer for the loop's")
	}
	r.add("connect %s %v", ev.Addr, ev.Err != nil)
}
func (r *hookRecorder) OnDisconnect(ev pika.DisconnectEvent) {
	r.sameConn(ev.Conn)
	if !ev.Conn.IsClosed() {
		r.t.Errorf("disconnect: the stand-in says open")
	}
	r.add("disconnect %s %v", ev.Addr, ev.Err)
}
func (r *hookRecorder) OnRecovery(c *pika.Conn, ev pika.RecoveryEvent) {
	r.add("recovery %s", ev.Kind)
}
func (r *hookRecorder) OnBlocked(c *pika.Conn, blocked bool, reason string) {
	r.sameConn(c)
	if b, why := c.IsBlocked(); b != blocked || why != reason {
		r.t.Errorf("IsBlocked %v %q in OnBlocked(%v, %q)", b, why, blocked, reason)
	}
	r.add("blocked %v %s", blocked, reason)
}
func (r *hookRecorder) OnChannelOpen(ch *pika.Channel) {
	r.chans[ch] = true
	r.sameChannel(ch)
	r.add("channel open %d", ch.ID())
}
func (r *hookRecorder) OnChannelClose(ch *pika.Channel, err error) {
	r.sameChannel(ch)
	if !ch.IsClosed() {
		r.t.Errorf("channel close: the stand-in says open")
	}
	r.add("channel close %d %v", ch.ID(), err)
}
func (r *hookRecorder) OnPublish(p *pika.Publishing) {
	r.sameChannel(p.Channel)
	p.SetHeader("hooked", "yes")
	r.add("publish %s %s", p.RoutingKey, p.Message.Body)
}
func (r *hookRecorder) OnPublished(p *pika.Publishing, err error) {
	r.sameChannel(p.Channel)
	r.add("published seq=%d %v", p.Seq, err)
}
func (r *hookRecorder) OnPublishOutcome(o pika.PublishOutcome) {
	r.sameChannel(o.Channel)
	if o.Latency <= 0 || o.Ctx == nil {
		r.t.Errorf("outcome %d: latency %v, ctx %v", o.Seq, o.Latency, o.Ctx)
	}
	r.add("outcome %d %s %v", o.Seq, o.Outcome, outcomeName(o.Err))
}
func (r *hookRecorder) OnDelivery(queue string, d *pika.Delivery) {
	r.sameChannel(d.Channel())
	r.add("delivery %s %s tag=%d", queue, d.Body, d.DeliveryTag)
}
func (r *hookRecorder) OnProcess(ctx context.Context, queue string, d *pika.Delivery) (context.Context, func(error)) {
	r.sameChannel(d.Channel())
	r.add("process %s %s", queue, d.Body)
	return context.WithValue(ctx, processKey{}, string(d.Body)), func(err error) { r.add("processed %s %v", d.Body, err) }
}

// processKey is the context key of hookRecorder.OnProcess.
type processKey struct{}

func (r *hookRecorder) OnSettle(ev pika.SettleEvent) {
	r.sameChannel(ev.Channel)
	r.add("settle %s %d n=%d library=%v %v", ev.Kind, ev.Tag, ev.Count, ev.ByLibrary, ev.Err)
}
func (r *hookRecorder) OnConsumerStart(cons *pika.Consumer) {
	r.sameChannel(cons.Channel())
	r.add("consumer start %s", cons.Tag())
}
func (r *hookRecorder) OnConsumerEnd(cons *pika.Consumer, err error) {
	r.sameChannel(cons.Channel())
	r.add("consumer end %s %v", cons.Tag(), err)
}
func (r *hookRecorder) OnBytes(c *pika.Conn, read, written int64) {
	r.sameConn(c)
	if read < 0 || written < 0 || read == 0 && written == 0 {
		r.t.Errorf("OnBytes(%d, %d)", read, written)
	}
	r.read += read
	r.written += written
}

// countConn counts the bytes through the peer's side of a connection.
type countConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

// A Conn reports every event to the hooks of Config.Hooks, in order, on
// the loop's goroutine, with stand-ins that answer for its values: a
// failed address, the connect, a channel, a consumer, publishes (whose
// hook adds a header that is sent), their outcomes (a return included),
// blocked and unblocked, a delivery for an unknown consumer that the
// library rejects, a delivery and its ack, a Get, the consumer's and the
// channel's end, the disconnect, and every byte.
func TestHooksSeeEveryEventInOrder(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		var peerSide *countConn
		counted := func(t *testing.T) (net.Conn, net.Conn) {
			c, s := pair(t)
			peerSide = &countConn{Conn: s}
			return c, peerSide
		}
		cfg, wait := scriptedConfig(t, counted, func(p *peer) {
			p.handshake(0)
			p.openChannel(1)
			expect[*wire.BasicConsume](p, 1)
			p.send(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c1"}))
			expect[*wire.ConfirmSelect](p, 1)
			p.send(scripted.Method(1, &wire.ConfirmSelectOk{}))
			for range 2 {
				expect[*wire.BasicPublish](p, 1)
				if h := p.next().Header; h == nil || h.Properties.Headers["hooked"] != "yes" {
					t.Errorf("the header a PublishHook set was not sent: %+v", h)
				}
				p.next()
			}
			p.send(
				scripted.Message(1, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nowhere"}, &wire.Properties{Headers: wire.Table{"hooked": "yes"}}, []byte("m1"), 0),
				scripted.Method(1, &wire.BasicAck{DeliveryTag: 1}),
				scripted.Method(1, &wire.BasicAck{DeliveryTag: 2}),
				scripted.Method(0, &wire.ConnectionBlocked{Reason: "low on memory"}),
				scripted.Method(0, &wire.ConnectionUnblocked{}),
				scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "ghost", DeliveryTag: 1}, nil, []byte("o"), 0),
				scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 2, RoutingKey: "q"}, nil, []byte("d1"), 0),
			)
			if rej := expect[*wire.BasicReject](p, 1); rej.DeliveryTag != 1 || !rej.Requeue {
				t.Errorf("orphan rejected with %+v", rej)
			}
			if ack := expect[*wire.BasicAck](p, 1); ack.DeliveryTag != 2 {
				t.Errorf("ack %+v", ack)
			}
			expect[*wire.BasicGet](p, 1)
			p.send(scripted.Message(1, &wire.BasicGetOk{DeliveryTag: 3, RoutingKey: "q"}, nil, []byte("g1"), 0))
			p.openChannel(2)
			expect[*wire.BasicCancel](p, 1)
			p.send(scripted.Method(1, &wire.BasicCancelOk{ConsumerTag: "c1"}))
			expect[*wire.ChannelClose](p, 1)
			p.send(scripted.Method(1, &wire.ChannelCloseOk{}))
			p.closeConn()
		})
		rec := newHookRecorder(t)
		dial := cfg.Dial
		cfg.Addrs = []string{"refused:5672", "scripted:5672"}
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == "refused:5672" {
				return nil, errors.New("connection refused")
			}
			return dial(ctx, network, addr)
		}
		cfg.Hooks = []pika.Hook{rec}
		run(t, 10*time.Second, func(l *Loop, stop func()) {
			goroutine := goid()
			rec.onLoop = func() bool { return goid() == goroutine }
			withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
				var cons *Consumer
				ch.Consume("q", ConsumeOptions{}, func(d *Delivery) {
					if v := d.Context().Value(processKey{}); v != "d1" {
						t.Errorf("the handler's context has %v, want the ProcessHook's", v)
					}
					d.Ack(false)
					ch.Get("q", true, func(d *Delivery, ok bool, err error) {
						c.Channel(func(*Channel, error) { // left open: Conn.Close closes it
							cons.Cancel(func(error) {
								ch.Close(func(error) { c.Close(func(error) { stop() }) })
							})
						})
					})
				}, func(c *Consumer, err error) { cons = c })
				ch.ConfirmSelect(nil)
				ch.PublishConfirm("", "nowhere", pika.Message{Body: []byte("m1"), Mandatory: true}, func(error) {})
				ch.PublishConfirm("", "q", pika.Message{Body: []byte("m2")}, func(error) {})
			})
		})
		wait()
		want := []string{
			"connect refused:5672 true",
			"connect scripted:5672 false",
			"channel open 1",
			"publish nowhere m1", // the calls are made at once; the broker's answers follow
			"published seq=1 <nil>",
			"publish q m2",
			"published seq=2 <nil>",
			"consumer start c1",
			"outcome 1 returned returned m1",
			"outcome 2 acked ack",
			"blocked true low on memory",
			"blocked false ",
			"settle reject 1 n=1 library=true <nil>",
			"delivery q d1 tag=2",
			"process q d1",
			"settle ack 2 n=1 library=false <nil>",
			"processed d1 <nil>",
			"delivery q g1 tag=3",
			"channel open 2",
			"consumer end c1 " + pika.ErrConsumerClosed.Error(),
			"channel close 1 <nil>",
			"channel close 2 <nil>",
			"disconnect scripted:5672 <nil>",
		}
		expectCalls(t, rec.events, want)
		if rec.notOnLoop > 0 {
			t.Errorf("%d hook calls off the loop's goroutine", rec.notOnLoop)
		}
		if r, w := peerSide.written.Load(), peerSide.read.Load(); rec.read != r || rec.written != w {
			t.Errorf("OnBytes counted %d read, %d written; the peer wrote %d and read %d", rec.read, rec.written, r, w)
		}
	})
}

// goid returns the id of the calling goroutine.
func goid() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// noopPublishHook is a PublishHook that does nothing.
type noopPublishHook struct{}

func (noopPublishHook) OnPublish(*pika.Publishing)          {}
func (noopPublishHook) OnPublished(*pika.Publishing, error) {}

// Publish allocates nothing without hooks, and a no-op PublishHook adds
// no allocation (the Publishing is reused).
func TestHooksNoAllocations(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hooks []pika.Hook
	}{
		{"none", nil},
		{"noop-publish", []pika.Hook{noopPublishHook{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, wait := scriptedConfig(t, socketPair, func(p *peer) {
				p.handshake(0)
				p.openChannel(1)
				for {
					s := p.nextOrEOF()
					if s == nil {
						return
					}
					if _, ok := s.Method.(*wire.ConnectionClose); ok {
						p.send(scripted.Method(0, &wire.ConnectionCloseOk{}))
						return
					}
				}
			})
			cfg.Hooks = tc.hooks
			run(t, 10*time.Second, func(l *Loop, stop func()) {
				withChannel(t, l, cfg, stop, func(c *Conn, ch *Channel) {
					body := make([]byte, 64)
					allocs := testing.AllocsPerRun(1000, func() {
						if err := ch.Publish("", "q", pika.Message{Body: body}); err != nil {
							t.Fatal(err)
						}
					})
					if allocs > 0 {
						t.Errorf("Publish: %.2f allocations, want 0", allocs)
					}
					c.Close(func(error) { stop() })
				})
			})
			wait()
		})
	}
}

// A handler that panics ends its ProcessHooks' calls with
// pika.ErrHandlerPanicked, and the panic goes on.
func TestProcessHookSeesPanic(t *testing.T) {
	rec := newHookRecorder(t)
	c := &Conn{}
	c.hk = newHookSet(c, []pika.Hook{rec})
	ch := &Channel{c: c, id: 1}
	rec.chans[ch.standIn()] = true
	cons := &Consumer{ch: ch, queue: "q", handler: func(*Delivery) { panic("boom") }}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the handler's panic", p)
			}
		}()
		cons.deliver(&Delivery{ch: ch, Body: []byte("d")})
	}()
	expectCalls(t, rec.events, []string{"delivery q d tag=0", "process q d", "processed d " + pika.ErrHandlerPanicked.Error()})
}
