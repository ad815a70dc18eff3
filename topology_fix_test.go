package pika

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/wire"
)

// declLog records, per fake connection, the names of the queues and
// exchanges declared (non-passive), bound and consumed.
type declLog struct {
	mu  sync.Mutex
	got map[int][]string
}

func (d *declLog) add(n int, s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got[n] = append(d.got[n], s)
}

func (d *declLog) on(n int) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.got[n])
}

// topoHook records declarations on b; notFound names the queues for which a
// passive declare gets NOT_FOUND (on every connection).
func topoHook(b *fakeBroker, notFound ...string) *declLog {
	d := &declLog{got: map[int][]string{}}
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.QueueDeclare:
			if m.Passive {
				if slices.Contains(notFound, m.Queue) {
					fc.send(ch, &wire.ChannelClose{ReplyCode: uint16(wire.ReplyNotFound), ReplyText: "NOT_FOUND - no queue '" + m.Queue + "' in vhost '/'"})
					return true
				}
				return false
			}
			d.add(fc.n, "queue "+m.Queue)
		case *wire.ExchangeDeclare:
			d.add(fc.n, "exchange "+m.Exchange)
		case *wire.QueueBind:
			if m.Exchange == "missing-ex" {
				fc.send(ch, &wire.ChannelClose{ReplyCode: uint16(wire.ReplyNotFound), ReplyText: "NOT_FOUND - no exchange 'missing-ex' in vhost '/'"})
				return true
			}
			d.add(fc.n, "bind "+m.Queue+" "+m.Exchange+" "+m.RoutingKey)
		case *wire.BasicConsume:
			d.add(fc.n, "consume "+m.Queue+" "+m.ConsumerTag)
		}
		return false
	})
	return d
}

func mustDo(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestFakeTopologyForgetsWhatTheBrokerSaysIsGone: a queue whose consumer
// the broker cancelled (it was deleted: a passive declare then finds it
// missing), a queue a passive declare found
// missing and an exchange a bind found missing are not declared again by
// recovery, nor are their bindings; the rest is.
func TestFakeTopologyForgetsWhatTheBrokerSaysIsGone(t *testing.T) {
	b := newFakeBroker(t)
	d := topoHook(b, "gone", "deleted")
	c, ch, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mustDo(t, "exchange", ch.ExchangeDeclare(ctx, "ex", "direct", ExchangeDeclareOptions{}))
	mustDo(t, "exchange", ch.ExchangeDeclare(ctx, "missing-ex", "direct", ExchangeDeclareOptions{}))
	for _, q := range []string{"kept", "deleted", "gone"} {
		rtDeclareQueue(t, ch, q, QueueDeclareOptions{})
		rtBind(t, ch, q, "ex", q)
	}
	cons, err := ch.Consume(ctx, "deleted", ConsumeOptions{Tag: "c-deleted"})
	mustDo(t, "consume", err)
	// Deleted by another connection: the broker cancels the consumer.
	b.conn(1).send(ch.ID(), &wire.BasicCancel{ConsumerTag: "c-deleted", NoWait: true})
	if _, err := cons.Next(ctx); !errors.Is(err, ErrConsumerCancelled) {
		t.Fatalf("consumer after the broker's cancel: %v", err)
	}
	if _, err := ch.QueueDeclarePassive(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("passive declare of gone: %v", err)
	}
	ch2, err := c.Channel(ctx)
	mustDo(t, "channel", err)
	if err := ch2.QueueBind(ctx, "kept", "missing-ex", "k", BindOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bind to missing-ex: %v", err)
	}
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	got := d.on(2)
	for _, bad := range []string{"queue deleted", "queue gone", "bind deleted ex deleted", "bind gone ex gone", "exchange missing-ex"} {
		if slices.Contains(got, bad) {
			t.Errorf("recovery restored %q; restored: %q", bad, got)
		}
	}
	for _, good := range []string{"exchange ex", "queue kept", "bind kept ex kept"} {
		if !slices.Contains(got, good) {
			t.Errorf("recovery did not restore %q; restored: %q", good, got)
		}
	}
}

// TestFakeTopologyExpiredQueues: a queue with x-expires unused (as far as
// the Conn knows) for longer than its expiry when recovery runs, and that
// the broker no longer has, is not declared again, and is listed in the
// report as expired; one with a consumer active until the loss, one with a
// long expiry, and one the broker still has are declared again.
func TestFakeTopologyExpiredQueues(t *testing.T) {
	b := newFakeBroker(t)
	d := topoHook(b, "short")
	cfg := b.config()
	cfg.Reconnect = strategyFunc(func(int, error) (time.Duration, bool) { return 100 * time.Millisecond, true })
	_, ch, rlog := fakeSetup(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expires := func(ms int64) QueueDeclareOptions {
		return QueueDeclareOptions{Arguments: Table{"x-expires": ms}}
	}
	rtDeclareQueue(t, ch, "short", expires(150))
	rtDeclareQueue(t, ch, "still-there", expires(150))
	rtDeclareQueue(t, ch, "busy", QueueDeclareOptions{Arguments: Table{"x-expires": int32(150)}})
	rtDeclareQueue(t, ch, "long", expires(3600_000))
	_, err := ch.Consume(ctx, "busy", ConsumeOptions{Tag: "c-busy"})
	mustDo(t, "consume", err)
	time.Sleep(300 * time.Millisecond) // longer than the short expiries; busy stays in use
	b.conn(1).kill()
	rep := rlog.wait(RecoveryRecovered, 1, 10*time.Second).Report
	got := d.on(2)
	if slices.Contains(got, "queue short") {
		t.Errorf("the expired queue was declared again: %q", got)
	}
	for _, want := range []string{"queue still-there", "queue busy", "queue long", "consume busy c-busy"} {
		if !slices.Contains(got, want) {
			t.Errorf("recovery did not restore %q; restored: %q", want, got)
		}
	}
	if !slices.Equal(rep.Expired, []string{"short"}) {
		t.Errorf("report.Expired = %q, want [short]", rep.Expired)
	}
}

// TestFakeRecoveryFilter: what Config.RecoveryFilter excludes is not
// restored; an excluded consumer ends with ErrNotRecovered.
func TestFakeRecoveryFilter(t *testing.T) {
	b := newFakeBroker(t)
	d := topoHook(b)
	cfg := b.config()
	var filtered sync.Map
	cfg.RecoveryFilter = RecoveryFilter{
		Exchange: func(name string) bool { filtered.Store("exchange "+name, true); return name != "ex-skip" },
		Queue:    func(name string, _ bool) bool { return name != "q-skip" },
		Binding:  func(src, dst, key string, toEx bool) bool { return key != "k-skip" },
		Consumer: func(queue, tag string) bool { return tag != "c-skip" },
	}
	_, ch, rlog := fakeSetup(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mustDo(t, "exchange", ch.ExchangeDeclare(ctx, "ex-skip", "direct", ExchangeDeclareOptions{}))
	mustDo(t, "exchange", ch.ExchangeDeclare(ctx, "ex", "direct", ExchangeDeclareOptions{}))
	rtDeclareQueue(t, ch, "q-skip", QueueDeclareOptions{})
	rtDeclareQueue(t, ch, "q", QueueDeclareOptions{})
	rtBind(t, ch, "q", "ex", "k-skip")
	rtBind(t, ch, "q", "ex", "k")
	skipped, err := ch.Consume(ctx, "q", ConsumeOptions{Tag: "c-skip"})
	mustDo(t, "consume", err)
	_, err = ch.Consume(ctx, "q", ConsumeOptions{Tag: "c"})
	mustDo(t, "consume", err)
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	got := d.on(2)
	for _, bad := range []string{"exchange ex-skip", "queue q-skip", "bind q ex k-skip", "consume q c-skip"} {
		if slices.Contains(got, bad) {
			t.Errorf("recovery restored the excluded %q: %q", bad, got)
		}
	}
	for _, good := range []string{"exchange ex", "queue q", "bind q ex k", "consume q c"} {
		if !slices.Contains(got, good) {
			t.Errorf("recovery did not restore %q: %q", good, got)
		}
	}
	if _, err := skipped.Next(ctx); !errors.Is(err, ErrNotRecovered) {
		t.Errorf("excluded consumer: %v, want ErrNotRecovered", err)
	}
}

// TestTopologyExpiry is a unit test of the record's x-expires bookkeeping.
func TestTopologyExpiry(t *testing.T) {
	for _, tt := range []struct {
		v    any
		want time.Duration
	}{
		{int32(1500), 1500 * time.Millisecond}, {int64(10), 10 * time.Millisecond}, {uint16(7), 7 * time.Millisecond},
		{int8(1), time.Millisecond}, {int32(0), 0}, {int32(-5), 0}, {"100", 0}, {nil, 0}, {int64(1) << 62, 0},
	} {
		if got := recovery.ExpiresOf(Table{"x-expires": tt.v}); got != tt.want {
			t.Errorf("recovery.ExpiresOf(%#v) = %v, want %v", tt.v, got, tt.want)
		}
	}
	var topo topology
	topo.AddQueue(&wire.QueueDeclare{Queue: "q", Arguments: Table{"x-expires": int32(1000)}}, "q", time.Now())
	topo.AddQueue(&wire.QueueDeclare{Queue: "plain"}, "plain", time.Now())
	q := topo.Queue("q")
	t0 := q.LastUsed
	if q.Expired(t0.Add(999*time.Millisecond), time.Time{}) || !q.Expired(t0.Add(1001*time.Millisecond), time.Time{}) {
		t.Error("expiry not measured from the declaration")
	}
	if q.Expired(t0.Add(1500*time.Millisecond), t0.Add(time.Second)) {
		t.Error("a queue in use until 0.5s ago counted as expired")
	}
	topo.TouchQueue("q", t0.Add(2*time.Second))
	if q.Expired(t0.Add(2500*time.Millisecond), time.Time{}) {
		t.Error("a use did not reset the expiry")
	}
	if topo.Queue("plain").Expired(t0.Add(time.Hour*1000), time.Time{}) {
		t.Error("a queue without x-expires expired")
	}
}

// TestTopologyForgetNotFound is a unit test of what a NOT_FOUND makes the
// record forget.
func TestTopologyForgetNotFound(t *testing.T) {
	c := &Conn{}
	c.topo.AddExchange(&wire.ExchangeDeclare{Exchange: "x", Type: "direct"})
	c.topo.AddExchange(&wire.ExchangeDeclare{Exchange: "y", Type: "direct"})
	c.topo.AddQueue(&wire.QueueDeclare{Queue: "q"}, "q", time.Now())
	c.topo.AddQueue(&wire.QueueDeclare{Queue: "r"}, "r", time.Now())
	c.topo.AddBinding(&recovery.Binding{Destination: "q", Source: "x", Key: "k"})
	notFound := func(text string) error {
		return &Error{Code: wire.ReplyNotFound, Text: "NOT_FOUND - " + text, Server: true}
	}
	// A bind that failed because of the exchange forgets the exchange only.
	c.topologyObserver(&wire.QueueBind{Queue: "r", Exchange: "y"})(engineErr(notFound("no exchange 'y' in vhost '/'")))
	if len(c.topo.Exchanges) != 1 || c.topo.Queue("r") == nil {
		t.Fatalf("after a bind's missing exchange: exchanges %d, queue r %v", len(c.topo.Exchanges), c.topo.Queue("r"))
	}
	// Another error code forgets nothing.
	c.topologyObserver(&wire.QueueDeclare{Queue: "q", Passive: true})(engineErr(&Error{Code: wire.ReplyResourceLocked, Server: true}))
	if c.topo.Queue("q") == nil {
		t.Fatal("a 405 forgot the queue")
	}
	// A passive declare's 404 forgets the queue and its bindings.
	c.topologyObserver(&wire.QueueDeclare{Queue: "q", Passive: true})(engineErr(notFound("no queue 'q' in vhost '/'")))
	if c.topo.Queue("q") != nil || len(c.topo.Bindings) != 0 {
		t.Fatalf("after a passive declare's 404: queue %v, bindings %d", c.topo.Queue("q"), len(c.topo.Bindings))
	}
	// A basic.get's 404 too.
	c.topologyObserver(&wire.BasicGet{Queue: "r"})(engineErr(notFound("no queue 'r' in vhost '/'")))
	if c.topo.Queue("r") != nil {
		t.Fatal("a basic.get's 404 did not forget the queue")
	}
}

func engineErr(err error) engine.Event { return engine.Event{Kind: engine.EventReply, Err: err} }

// TestFakeRecoveryFilterServerNamedQueue: when the filter leaves out a
// server-named (or exclusive) queue, which went with the lost connection,
// its consumers are not restarted on a queue that is not there: they end
// with ErrNotRecovered instead of a basic.consume that would close the
// channel with NOT_FOUND.
func TestFakeRecoveryFilterServerNamedQueue(t *testing.T) {
	b := newFakeBroker(t)
	d := topoHook(b)
	cfg := b.config()
	cfg.RecoveryFilter = RecoveryFilter{
		Queue: func(_ string, serverNamed bool) bool { return !serverNamed },
	}
	_, ch, rlog := fakeSetup(t, b, cfg) // declares a server-named queue too
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	cons, err := ch.Consume(ctx, q, ConsumeOptions{Tag: "on-gone"})
	mustDo(t, "consume", err)
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	if got := d.on(2); slices.Contains(got, "consume "+q+" on-gone") {
		t.Errorf("recovery restarted a consumer on the left-out server-named queue: %q", got)
	}
	if _, err := cons.Next(ctx); !errors.Is(err, ErrNotRecovered) {
		t.Errorf("consumer of the left-out queue: %v, want ErrNotRecovered", err)
	}
	if ch.IsClosed() {
		t.Errorf("the channel closed: %v", ch.Err())
	}
}
