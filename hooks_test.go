package pika

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// recorder is a hook of every kind that records what it hears as lines
// ("connect fake:5672 <nil>", ...). Its methods that can reach the
// connection call into it (IsRecovering takes the connection's lock), so a
// hook run under the library's lock deadlocks and the test times out.
type recorder struct {
	mu       sync.Mutex
	events   []string
	outcomes []PublishOutcome
	settles  []SettleEvent
	read     int64
	written  int64
	changed  chan struct{} // cap 1: an event was recorded
	ctxKey   any           // set: OnPublish and OnProcess add this key to ctx
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) probe(c *Conn) {
	if c != nil {
		c.IsRecovering() // deadlocks under the connection's lock
	}
}

func (r *recorder) OnConnect(ev ConnectEvent) {
	r.probe(ev.Conn)
	r.add("connect %s %v", ev.Addr, ev.Err)
}
func (r *recorder) OnDisconnect(ev DisconnectEvent) {
	r.probe(ev.Conn)
	r.add("disconnect %s %v", ev.Addr, ev.Err != nil)
}
func (r *recorder) OnRecovery(c *Conn, ev RecoveryEvent) {
	r.probe(c)
	r.add("recovery %s", ev.Kind)
}
func (r *recorder) OnBlocked(c *Conn, blocked bool, reason string) {
	r.probe(c)
	r.add("blocked %v %s", blocked, reason)
}
func (r *recorder) OnChannelOpen(ch *Channel) {
	r.probe(ch.conn)
	r.add("channel open %d", ch.ID())
}
func (r *recorder) OnChannelClose(ch *Channel, err error) {
	r.probe(ch.conn)
	r.add("channel close %d %v", ch.ID(), err)
}
func (r *recorder) OnPublish(p *Publishing) {
	r.probe(p.Channel.conn)
	p.SetHeader("hooked", "yes")
	if r.ctxKey != nil {
		p.Ctx = context.WithValue(p.Ctx, r.ctxKey, "publish")
	}
	r.add("publish %s %s", p.Exchange, p.RoutingKey)
}
func (r *recorder) OnPublished(p *Publishing, err error) {
	r.probe(p.Channel.conn)
	r.add("published seq=%d %v", p.Seq, err)
}
func (r *recorder) OnPublishOutcome(o PublishOutcome) {
	r.probe(o.Channel.conn)
	r.mu.Lock()
	r.outcomes = append(r.outcomes, o)
	r.mu.Unlock()
	r.add("outcome %d %s", o.Seq, o.Outcome)
}
func (r *recorder) OnDelivery(queue string, d *Delivery) {
	r.probe(d.ch.conn)
	r.add("delivery %s %s", queue, d.Body)
}
func (r *recorder) OnProcess(ctx context.Context, queue string, d *Delivery) (context.Context, func(error)) {
	r.probe(d.ch.conn)
	r.add("process %s %s", queue, d.Body)
	if r.ctxKey != nil {
		ctx = context.WithValue(ctx, r.ctxKey, "process")
	}
	return ctx, func(err error) { r.add("processed %s %v", d.Body, err) }
}
func (r *recorder) OnSettle(ev SettleEvent) {
	r.probe(ev.Channel.conn)
	r.mu.Lock()
	r.settles = append(r.settles, ev)
	r.mu.Unlock()
	r.add("settle %s %d n=%d %v", ev.Kind, ev.Tag, ev.Count, ev.Err)
}
func (r *recorder) OnConsumerStart(cons *Consumer) {
	r.probe(cons.ch.conn)
	r.add("consumer start %s", cons.Tag())
}
func (r *recorder) OnConsumerEnd(cons *Consumer, err error) {
	r.probe(cons.ch.conn)
	r.add("consumer end %s %v", cons.Tag(), err)
}
func (r *recorder) OnBytes(c *Conn, read, written int64) {
	r.probe(c)
	r.mu.Lock()
	r.read += read
	r.written += written
	r.mu.Unlock()
}

// lines returns the events recorded so far.
func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// wait waits until every want line was recorded (as a prefix of a line),
// in that order, and fails the test after 10 s.
func (r *recorder) wait(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		got := r.lines()
		if hasInOrder(got, want) {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("hook events:\n  %s\nwant, in this order:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
}

// hasInOrder reports whether got has lines starting with each of want, in
// order.
func hasInOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && strings.HasPrefix(g, want[i]) {
			i++
		}
	}
	return i == len(want)
}

func TestHookSetDiscovery(t *testing.T) {
	type onlyBlocked struct{ BlockedHook }
	s := newHookSet([]Hook{newRecorder(), 42, onlyBlocked{}})
	if len(s.connect) != 1 || len(s.publish) != 1 || len(s.bytes) != 1 || len(s.process) != 1 {
		t.Errorf("a hook of every kind was not found for each: %+v", s)
	}
	if len(s.blocked) != 2 {
		t.Errorf("blocked hooks: %d, want 2", len(s.blocked))
	}
	var empty hookSet
	if s := newHookSet(nil); fmt.Sprint(s) != fmt.Sprint(empty) {
		t.Errorf("no hooks: %+v", s)
	}
}

// TestPublishingSetHeaderCopies: SetHeader never writes into the caller's
// headers table.
func TestPublishingSetHeaderCopies(t *testing.T) {
	for _, h := range []Table{nil, {"a": "b"}} {
		msg := Message{Properties: Properties{Headers: h}}
		p := &Publishing{Message: msg}
		p.SetHeader("traceparent", "00-x")
		p.SetHeader("second", int32(2))
		if len(h) > 1 || h != nil && h["a"] != "b" {
			t.Errorf("caller's headers changed: %v", h)
		}
		if p.Message.Headers["traceparent"] != "00-x" || p.Message.Headers["second"] != int32(2) {
			t.Errorf("published headers: %v", p.Message.Headers)
		}
		if h != nil && p.Message.Headers["a"] != "b" {
			t.Errorf("published headers lost the caller's: %v", p.Message.Headers)
		}
	}
}

// reuseHook checks, in OnPublish, that the Publishing shows this call
// only (nothing left from a call before on a reused one), then leaves
// state behind: a header, a Seq, a context.
type reuseHook struct {
	t    *testing.T
	want Message
	seen []*Publishing
}

func (h *reuseHook) OnPublish(p *Publishing) {
	h.t.Helper()
	h.seen = append(h.seen, p)
	if p.Seq != 0 || p.ownHeaders || p.Ctx.Value(reuseKey{}) != nil || p.RoutingKey != string(h.want.Body) {
		h.t.Errorf("OnPublish: state of an earlier publish: seq %d, own headers %v, ctx %v, key %q",
			p.Seq, p.ownHeaders, p.Ctx.Value(reuseKey{}), p.RoutingKey)
	}
	if fmt.Sprint(p.Message) != fmt.Sprint(h.want) {
		h.t.Errorf("OnPublish: message\n  %+v\nwant\n  %+v", p.Message, h.want)
	}
	p.SetHeader("added", "yes")
	p.Seq = 42
	p.Ctx = context.WithValue(p.Ctx, reuseKey{}, "set")
}
func (h *reuseHook) OnPublished(*Publishing, error) {}

type reuseKey struct{}

// TestPublishingReuse: a Publishing taken again for another Publish shows
// only that call (every field is set at the take), SetHeader still copies
// the caller's table, and once Publish returns the Publishing keeps no
// reference to the caller's body, headers or context.
func TestPublishingReuse(t *testing.T) {
	h := &reuseHook{t: t}
	ch := &Channel{conn: &Conn{hk: newHookSet([]Hook{h})}}
	var ctx context.Context = endedCtx{context.Background()}
	caller := Table{"mine": "x"}
	msgs := []Message{
		{Properties: Properties{ContentType: "text/plain", Headers: caller, MessageID: "m1", Timestamp: time.Unix(5, 0)}, Body: []byte("one"), Mandatory: true},
		{Body: []byte("two")},
		{Properties: Properties{Headers: caller, Priority: 3}, Body: []byte("three")},
	}
	for i := range 60 {
		h.want = msgs[i%len(msgs)]
		if err := ch.Publish(ctx, "", string(h.want.Body), h.want); err != context.Canceled {
			t.Fatal(err)
		}
		p := h.seen[len(h.seen)-1]
		if p.Ctx != nil || p.Channel != nil || p.Message.Body != nil || p.Message.Headers != nil {
			t.Fatalf("after Publish, the Publishing keeps ctx %v, channel %v, body %q, headers %v",
				p.Ctx, p.Channel, p.Message.Body, p.Message.Headers)
		}
	}
	if len(caller) != 1 {
		t.Errorf("the caller's headers were changed: %v", caller)
	}
	reused := map[*Publishing]bool{}
	for _, p := range h.seen {
		reused[p] = true
	}
	t.Logf("%d publishes used %d Publishings", len(h.seen), len(reused))
}

// bytesCounter is a BytesHook that adds up what it is told.
type bytesCounter struct {
	mu            sync.Mutex
	calls         int
	read, written int64
}

func (h *bytesCounter) OnBytes(_ *Conn, read, written int64) {
	h.mu.Lock()
	h.calls++
	h.read += read
	h.written += written
	h.mu.Unlock()
}

// TestBytesHookThrottled: reads close together are reported in few
// OnBytes calls (not one per read, each starting the hook goroutine), and
// no count is lost: flushBytes (Close) reports the last ones at once.
func TestBytesHookThrottled(t *testing.T) {
	h := &bytesCounter{}
	c := &Conn{hk: newHookSet([]Hook{h})}
	c.initHookQueue()
	ctx := context.Background()
	start := time.Now()
	const n = 2000
	for range n {
		c.addBytes(10, 1)
		c.hookBox.wait(ctx) // the hook goroutine idle before the next read
	}
	c.flushBytes()
	c.hookBox.wait(ctx)
	elapsed := time.Since(start)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.read != 10*n || h.written != n {
		t.Errorf("OnBytes added up to %d read, %d written; want %d, %d", h.read, h.written, 10*n, n)
	}
	// One call at the first read, then at most one per bytesEvery, and the
	// flush's.
	if max := 2 + int(elapsed/bytesEvery); h.calls > max {
		t.Errorf("%d OnBytes calls for %d reads in %v, want at most %d", h.calls, n, elapsed, max)
	}
}

// TestHooksConnectionLifecycle drives connect, channel open, blocked,
// loss, recovery, unblock and close through the fake broker, and checks
// the hook events and their order.
func TestHooksConnectionLifecycle(t *testing.T) {
	b := newFakeBroker(t)
	rec := newRecorder()
	cfg := b.config()
	cfg.Hooks = []Hook{rec}
	c, ch, rlog := fakeSetup(t, b, cfg)
	rec.wait(t, "connect fake:5672 <nil>", "channel open 1")

	b.conn(1).send(0, &wire.ConnectionBlocked{Reason: "low on memory"})
	rec.wait(t, "blocked true low on memory")
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	// The loss of a blocked connection unblocks it.
	rec.wait(t, "blocked true", "disconnect fake:5672 true", "blocked false", "recovery lost",
		"recovery attempt", "connect fake:5672 <nil>", "recovery recovered")
	for _, l := range rec.lines() {
		if strings.HasPrefix(l, "channel close") || strings.Count(strings.Join(rec.lines(), "\n"), "channel open") != 1 {
			t.Fatalf("recovery reported the channel closed or opened again: %q", rec.lines())
		}
	}
	if err := ch.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "recovery recovered", "channel close 1 <nil>")
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Close waits for the hooks' events: the last disconnect is there.
	if got := rec.lines(); !hasInOrder(got, []string{"recovery recovered", "disconnect fake:5672 false"}) {
		t.Errorf("when Close returned, the hooks had heard:\n  %s", strings.Join(got, "\n  "))
	}
}

// TestHooksConnectFailure: a failed attempt is reported with its error,
// and no disconnect follows it.
func TestHooksConnectFailure(t *testing.T) {
	rec := newRecorder()
	refused := errors.New("refused by the test")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := DialConfig(ctx, Config{
		Addr:  "nowhere:5672",
		Dial:  func(context.Context, string, string) (net.Conn, error) { return nil, refused },
		Hooks: []Hook{rec},
	})
	if !errors.Is(err, refused) {
		t.Fatalf("DialConfig: %v", err)
	}
	rec.wait(t, "connect nowhere:5672 ")
	for _, l := range rec.lines() {
		if !strings.Contains(l, "refused by the test") || strings.HasPrefix(l, "disconnect") {
			t.Errorf("event %q", l)
		}
	}
}

// TestHooksPublishOutcomes: each outcome (ack, nack, return, unknown)
// reaches the PublishOutcomeHook with the publishing's context, its
// sequence number and a latency, and the hook's header goes out.
func TestHooksPublishOutcomes(t *testing.T) {
	b := newFakeBroker(t)
	type key struct{}
	rec := newRecorder()
	rec.ctxKey = key{}
	var mu sync.Mutex
	var published []string
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if p, ok := m.(*wire.BasicPublish); ok {
			mu.Lock()
			published = append(published, p.RoutingKey)
			n := uint64(len(published))
			mu.Unlock()
			switch p.RoutingKey {
			case "ack":
				fc.send(ch, &wire.BasicAck{DeliveryTag: n})
			case "nack":
				fc.send(ch, &wire.BasicNack{DeliveryTag: n})
			case "return":
				fc.wmu.Lock()
				fc.nc.Write(returnFrames(ch, "x", "return", nil, "m"))
				fc.wmu.Unlock()
				fc.send(ch, &wire.BasicAck{DeliveryTag: n})
			}
			return true
		}
		return false
	})
	cfg := b.config()
	cfg.Hooks = []Hook{rec}
	cfg.DisableRepublish = true
	_, ch, rlog := fakeSetup(t, b, cfg)
	ctx := context.Background()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	caller := Table{"mine": "x"}
	for _, key := range []string{"ack", "nack", "return", "silent"} {
		conf, err := ch.PublishWithConfirm(ctx, "x", key, Message{Body: []byte("m"), Mandatory: true, Properties: Properties{Headers: caller}})
		if err != nil {
			t.Fatal(err)
		}
		if key != "silent" {
			if err := conf.Wait(ctx); (err == nil) != (key == "ack") {
				t.Fatalf("%s: %v", key, err)
			}
		}
	}
	if len(caller) != 1 {
		t.Errorf("the caller's headers were changed by the hook: %v", caller)
	}
	b.conn(1).kill() // the silent one's outcome becomes unknown
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	rec.wait(t, "publish x ack", "published seq=1 <nil>", "outcome 1 acked", "outcome 2 nacked",
		"outcome 3 returned", "outcome 4 unknown")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, o := range rec.outcomes {
		if o.Ctx.Value(key{}) != "publish" {
			t.Errorf("outcome %d: ctx lacks the publish hook's value", o.Seq)
		}
		if o.Latency <= 0 || o.Latency > time.Minute {
			t.Errorf("outcome %d: latency %v", o.Seq, o.Latency)
		}
		if (o.Err == nil) != (o.Outcome == OutcomeAcked) {
			t.Errorf("outcome %d %s: err %v", o.Seq, o.Outcome, o.Err)
		}
	}
	if !errors.Is(rec.outcomes[1].Err, ErrNacked) || !errors.Is(rec.outcomes[2].Err, ErrReturned) || !errors.Is(rec.outcomes[3].Err, ErrOutcomeUnknown) {
		t.Errorf("outcome errors: %v %v %v", rec.outcomes[1].Err, rec.outcomes[2].Err, rec.outcomes[3].Err)
	}
}

// TestHooksSlowOutcomeHookBoundsPublish: a PublishOutcomeHook that does not
// return never stalls the reader (other channels' replies arrive), and
// Publish waits once MaxUnconfirmed outcomes queue up behind it.
func TestHooksSlowOutcomeHookBoundsPublish(t *testing.T) {
	b := newFakeBroker(t)
	var mu sync.Mutex
	n := uint64(0)
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); ok {
			mu.Lock()
			n++
			tag := n
			mu.Unlock()
			fc.send(ch, &wire.BasicAck{DeliveryTag: tag})
			return true
		}
		return false
	})
	release := make(chan struct{})
	slow := &slowOutcome{release: release}
	cfg := b.config()
	cfg.Hooks = []Hook{slow}
	cfg.MaxUnconfirmed = 4
	c, ch, _ := fakeSetup(t, b, cfg)
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	// The first outcome holds the hook goroutine; then up to
	// MaxUnconfirmed wait in the queue.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	published := 0
	var err error
	for published < 20 {
		if err = ch.Publish(short, "", "q", Message{Body: []byte("m")}); err != nil {
			break
		}
		published++
		if published > 1 {
			// Let the ack come back before the next publish.
			time.Sleep(5 * time.Millisecond)
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) || published > 1+4+4 {
		t.Fatalf("published %d messages behind a stuck outcome hook (err %v): want Publish to wait", published, err)
	}
	// Another channel's request still gets its reply: the reader runs.
	other, err := c.Channel(ctx)
	if err != nil {
		t.Fatalf("opening a channel while the outcome hook is stuck: %v", err)
	}
	other.Close(ctx)
}

type slowOutcome struct{ release chan struct{} }

func (s *slowOutcome) OnPublishOutcome(PublishOutcome) { <-s.release }

// TestProcessHookSeesPanic: a ProcessHook's finish function learns that
// the handler panicked, and the panic goes on.
func TestProcessHookSeesPanic(t *testing.T) {
	rec := newRecorder()
	c := &Conn{hk: newHookSet([]Hook{rec})}
	ch := &Channel{conn: c}
	cons := &Consumer{ch: ch, handler: func(context.Context, *Delivery) { panic("handler bug") }}
	func() {
		defer func() {
			if r := recover(); r != "handler bug" {
				t.Errorf("recovered %v, want the handler's panic", r)
			}
		}()
		cons.process(context.Background(), "q", &Delivery{ch: ch, Body: []byte("m")})
	}()
	rec.wait(t, "process q m", "processed m "+ErrHandlerPanicked.Error())
}

// TestSettleHookLibrarySettles: deliveries the library rejects past a
// ConsumerDiscard buffer's hard limit, and the buffered ones dropped when
// the channel closes under a manual-ack consumer, reach the SettleHooks
// with ByLibrary set; the application's own ack does not have it.
func TestSettleHookLibrarySettles(t *testing.T) {
	b := newFakeBroker(t)
	rec := newRecorder()
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.Heartbeat = NoHeartbeat
	cfg.Hooks = []Hook{rec}
	c := dialFake(t, cfg)
	fc := b.conn(1)
	release := withheldReply(b, "slow", nil)
	defer release()
	ch := stallChannel(t, c)
	other := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{BufferSize: 2, Overflow: ConsumerDiscard})
	declared := awaitDeclare(other, "slow")
	waitFor(t, "the declare to be awaited", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.l.waiters) > 0
	})
	for i := 1; i <= 6; i++ {
		fc.deliverN(ch.ID(), cons.Tag(), uint64(i), 10)
	}
	rec.wait(t, "settle reject 5 n=1 <nil>", "settle reject 6 n=1 <nil>")
	release()
	if err := <-declared; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Three taken (the buffer is no longer full: the reader reads on),
	// one acked; the fourth is left buffered.
	for i := 1; i <= 3; i++ {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
		}
	}
	fc.send(ch.ID(), &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - test"})
	rec.wait(t, "settle ack 1 n=1 <nil>", "settle reject 4 n=0")

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var got []string
	for _, ev := range rec.settles {
		got = append(got, fmt.Sprintf("%s %d requeue=%v lib=%v err=%v", ev.Kind, ev.Tag, ev.Requeue, ev.ByLibrary, errors.Is(ev.Err, ErrPreconditionFailed)))
	}
	want := []string{
		"reject 5 requeue=true lib=true err=false",
		"reject 6 requeue=true lib=true err=false",
		"ack 1 requeue=false lib=false err=false",
		"reject 4 requeue=true lib=true err=true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("settle events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}
