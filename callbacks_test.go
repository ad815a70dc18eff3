package pika

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Tests of issue 10 (callbacks and bounds): no application code under the
// connection's lock, bounded notification queues, the write buffer bound
// with requests in flight, and copies of the broker's tables.

// dialFake dials a fake broker with cfg (the broker's config plus what the
// test set) and closes the Conn at the end of the test.
func dialFake(t *testing.T, cfg Config) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig to the fake broker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// TestServerPropertiesIsACopy checks that the table ServerProperties
// returns belongs to the caller: changing it, nested tables included, does
// not change what the next call returns.
func TestServerPropertiesIsACopy(t *testing.T) {
	b := newFakeBroker(t)
	c := dialFake(t, b.config())
	p := c.ServerProperties()
	if p["product"] != "fake" {
		t.Fatalf("ServerProperties = %v", p)
	}
	p["product"] = "changed"
	p["extra"] = true
	p["capabilities"].(Table)["publisher_confirms"] = false
	q := c.ServerProperties()
	if q["product"] != "fake" || q["extra"] != nil {
		t.Errorf("after changing the returned table, ServerProperties = %v", q)
	}
	if caps, _ := q["capabilities"].(Table); caps["publisher_confirms"] != true {
		t.Errorf("after changing the returned capabilities, ServerProperties()[capabilities] = %v", caps)
	}
}

// TestServerPropertiesCopyFieldValue checks the deep copy behind
// ServerProperties on every kind of nested value.
func TestServerPropertiesCopyFieldValue(t *testing.T) {
	orig := Table{"t": Table{"a": []any{Table{"x": int32(1)}, []byte("b")}}, "n": nil, "s": "str"}
	cp := copyFieldValue(orig).(Table)
	cp["t"].(Table)["a"].([]any)[0].(Table)["x"] = int32(2)
	cp["t"].(Table)["a"].([]any)[1].([]byte)[0] = 'z'
	if orig["t"].(Table)["a"].([]any)[0].(Table)["x"] != int32(1) || string(orig["t"].(Table)["a"].([]any)[1].([]byte)) != "b" {
		t.Errorf("changing the copy changed the original: %v", orig)
	}
	if cp["s"] != "str" || cp["n"] != nil {
		t.Errorf("copy %v", cp)
	}
	if copyFieldValue(Table(nil)).(Table) != nil {
		t.Error("copy of a nil table is not nil")
	}
}

// buffered returns the bytes the Conn holds for the socket: the engine's
// outgoing buffer and what waits on channels behind requests in flight.
func buffered(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.OutgoingLen() + c.eng.QueuedLen()
}

// TestWriteBufferLimitCountsQueuedPublishes checks that publishes queued on
// a channel behind a request the broker has not answered yet count against
// Config.WriteBufferLimit: Publish waits instead of queueing without bound,
// and goes on once the reply comes.
func TestWriteBufferLimitCountsQueuedPublishes(t *testing.T) {
	b := newFakeBroker(t)
	release := make(chan struct{})
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if d, ok := m.(*wire.QueueDeclare); ok && d.Queue == "slow" {
			go func() {
				<-release
				fc.send(ch, &wire.QueueDeclareOk{Queue: "slow"})
			}()
			return true
		}
		return false
	})
	const limit = 32 << 10
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.WriteBufferLimit = limit
	c := dialFake(t, cfg)
	ch, err := c.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	declared := make(chan error, 2)
	go func() {
		_, err := ch.QueueDeclare(ctx, "slow", QueueDeclareOptions{})
		declared <- err
	}()
	// The first declare is in flight once the broker has it.
	waitMethod(t, b, 1, "1:queue.declare")
	go func() {
		_, err := ch.QueueDeclare(ctx, "second", QueueDeclareOptions{})
		declared <- err
	}()
	// The second waits behind it, and so does every publish.
	for buffered(c) == 0 {
		time.Sleep(time.Millisecond)
	}
	body := make([]byte, 1024)
	published, waited := 0, false
	for published < 2000 {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := ch.Publish(pctx, "", "q", Message{Body: body})
		pcancel()
		if err == context.DeadlineExceeded {
			waited = true
			break
		}
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		published++
		if n := buffered(c); n > limit+2*len(body) {
			t.Fatalf("after %d publishes behind an unanswered request, %d bytes wait for the socket; WriteBufferLimit is %d", published, n, limit)
		}
	}
	if !waited {
		t.Fatalf("%d publishes queued behind an unanswered request without Publish waiting (WriteBufferLimit %d)", published, limit)
	}
	// The reply lets everything through, and publishing goes on.
	close(release)
	for range 2 {
		if err := <-declared; err != nil {
			t.Fatalf("QueueDeclare: %v", err)
		}
	}
	if err := ch.Publish(ctx, "", "q", Message{Body: body}); err != nil {
		t.Fatalf("Publish after the reply: %v", err)
	}
}

// waitMethod waits (up to 10 s) until connection n of b has received
// method ("channel:name").
func waitMethod(t *testing.T, b *fakeBroker, n int, method string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if fc := b.conn(n); fc != nil && slices.Contains(fc.methods(), method) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("connection %d of the fake broker did not receive %s", n, method)
}

// returnMandatory makes b return every mandatory publish at once, as a
// broker does for a message no queue matches.
func returnMandatory(b *fakeBroker) {
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if p, ok := m.(*wire.BasicPublish); ok && p.Mandatory {
			fc.wmu.Lock()
			fc.nc.Write(scripted.Message(ch, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE",
				Exchange: p.Exchange, RoutingKey: p.RoutingKey}, nil, []byte("returned"), 0))
			fc.wmu.Unlock()
			return true
		}
		return false
	})
}

// waitFor polls cond (up to 10 s) and fails the test with what when it
// does not become true.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNotifyBufferBoundsReturns checks the bound on a channel's
// notification queue: with its OnReturn callback blocked, the returns of
// unroutable mandatory publishes queue up to Config.NotifyBuffer, then
// Publish on that channel waits (and returns ctx.Err() when its ctx ends)
// while the reader goes on serving the other channels; releasing the
// callback lets everything through.
func TestNotifyBufferBoundsReturns(t *testing.T) {
	b := newFakeBroker(t)
	returnMandatory(b)
	const limit = 4
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.NotifyBuffer = limit
	c := dialFake(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var returns []string
	ch.OnReturn(func(r *Return) {
		mu.Lock()
		returns = append(returns, r.RoutingKey)
		first := len(returns) == 1
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
	})
	queued := func() int { return ch.notify.box.len() }
	publish := func(ctx context.Context, i int) error {
		return ch.Publish(ctx, "", fmt.Sprint(i), Message{Mandatory: true, Body: []byte("x")})
	}
	if err := publish(ctx, 0); err != nil {
		t.Fatal(err)
	}
	<-entered
	// One at a time, so that no return is in flight when Publish looks.
	for i := 1; i <= limit; i++ {
		if err := publish(ctx, i); err != nil {
			t.Fatalf("Publish %d with %d returns queued: %v", i, i-1, err)
		}
		waitFor(t, fmt.Sprintf("return %d queued", i), func() bool { return queued() == i })
	}
	// The queue is full: Publish waits until its ctx ends.
	pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = publish(pctx, limit+1)
	pcancel()
	if err != context.DeadlineExceeded {
		t.Fatalf("Publish with %d returns queued (NotifyBuffer %d) = %v, want it to wait and return context.DeadlineExceeded", queued(), limit, err)
	}
	if n := queued(); n != limit {
		t.Errorf("%d returns queued, want %d", n, limit)
	}
	// The reader still serves the other channels, and publishing there
	// does not wait.
	if _, err := other.QueueDeclare(ctx, "other", QueueDeclareOptions{}); err != nil {
		t.Fatalf("QueueDeclare on another channel while the callback is blocked: %v", err)
	}
	if err := other.Publish(ctx, "", "k", Message{Body: []byte("x")}); err != nil {
		t.Fatalf("Publish on another channel: %v", err)
	}
	// Releasing the callback lets everything through.
	close(release)
	if err := publish(ctx, limit+2); err != nil {
		t.Fatalf("Publish after the callback was released: %v", err)
	}
	waitFor(t, "every return delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(returns) == limit+2
	})
	mu.Lock()
	defer mu.Unlock()
	want := []string{"0", "1", "2", "3", "4", "6"}
	if !slices.Equal(returns, want) {
		t.Errorf("returns %v, want %v", returns, want)
	}
}

// TestNotifyCallbackPublishesOnItsChannel checks that a callback may
// publish on its own channel while the channel's notification queue is
// full: it does not wait for itself.
func TestNotifyCallbackPublishesOnItsChannel(t *testing.T) {
	b := newFakeBroker(t)
	returnMandatory(b)
	const limit = 2
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.NotifyBuffer = limit
	c := dialFake(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	published := make(chan error, 1)
	var calls int
	ch.OnReturn(func(r *Return) {
		calls++
		if calls > 1 {
			return
		}
		close(entered)
		<-release
		// The queue is full now; a Publish from here must not wait for
		// this callback to return.
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		published <- ch.Publish(pctx, "", "from-callback", Message{Body: []byte("x")})
	})
	for i := 0; i <= limit; i++ {
		if err := ch.Publish(ctx, "", "k", Message{Mandatory: true, Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-entered
		}
	}
	waitFor(t, "the queue full", func() bool { return ch.notify.box.len() == limit })
	close(release)
	if err := <-published; err != nil {
		t.Fatalf("Publish from the channel's own callback with its queue full: %v", err)
	}
}

// TestNotifyBufferBoundsRecoveryEvents checks the bound on the
// connection's notification queue: with the OnRecovery callback blocked,
// recovery makes no further attempt (each one is notified) once
// Config.NotifyBuffer notifications wait, and goes on when the callback
// returns.
func TestNotifyBufferBoundsRecoveryEvents(t *testing.T) {
	b := newFakeBroker(t)
	const limit = 2
	cfg := b.config()
	cfg.NotifyBuffer = limit
	c := dialFake(t, cfg)
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var events []RecoveryKind
	c.OnRecovery(func(ev RecoveryEvent) {
		mu.Lock()
		events = append(events, ev.Kind)
		first := len(events) == 1
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
	})
	b.mu.Lock()
	b.refuse = func(n int) bool { return true } // every reconnection fails
	b.mu.Unlock()
	b.conn(1).kill()
	<-entered
	queued := func() int { return c.notify.box.len() }
	waitFor(t, "the connection's notification queue full", func() bool { return queued() >= limit })
	dialed := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.dialed
	}
	// The first dial, then one per notified attempt.
	waitFor(t, "the attempts notified so far to dial", func() bool { return dialed() >= 1+limit })
	before := dialed()
	time.Sleep(100 * time.Millisecond) // attempts come every few milliseconds
	if n, d := queued(), dialed(); n != limit || d != before {
		t.Errorf("with the OnRecovery callback blocked: %d notifications queued (NotifyBuffer %d), %d reconnection attempts made meanwhile", n, limit, d-before)
	}
	close(release)
	waitFor(t, "recovery to go on", func() bool { return dialed() > before+limit })
}

// TestNotifyInCallback checks the detection behind "callbacks never wait
// for a full notification queue".
func TestNotifyInCallback(t *testing.T) {
	if mailboxRun != "github.com/pika-go/pika.(*mailbox).run" {
		t.Errorf("mailboxRun = %q", mailboxRun)
	}
	if inCallback() {
		t.Error("inCallback true in a test goroutine")
	}
	var m mailbox
	got := make(chan bool, 1)
	m.post(func() { got <- inCallback() })
	if !<-got {
		t.Error("inCallback false in a callback")
	}
}

// gateHandler is a slog.Handler that records every record and, once armed
// for a direction ("send" or "recv" frames, or "" for any record), blocks
// in Handle until released.
type gateHandler struct {
	mu      sync.Mutex
	recs    []slog.Record
	armed   string // "": not armed
	any     bool   // armed for every record
	entered chan struct{}
	release chan struct{}
}

func newGateHandler() *gateHandler {
	return &gateHandler{entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *gateHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *gateHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *gateHandler) WithGroup(string) slog.Handler            { return h }

func (h *gateHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	block := h.any || h.armed != "" && recordAttr(r, "dir") == h.armed
	if block {
		h.armed, h.any = "", false
	}
	h.mu.Unlock()
	if block {
		close(h.entered)
		<-h.release
	}
	return nil
}

func (h *gateHandler) arm(dir string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if dir == "" {
		h.any = true
	}
	h.armed = dir
}

// frames returns "dir method" for every method frame logged.
func (h *gateHandler) frames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if m := recordAttr(r, "method"); m != "" {
			out = append(out, recordAttr(r, "dir")+" "+m)
		}
	}
	return out
}

func recordAttr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// TestLogHandlerBlockedDoesNotStallConnection checks that the Logger's
// handler, application code, never runs while the library holds the
// connection's lock or on the socket's goroutines: with the handler
// blocked in the record of a frame sent, or of a frame received, an RPC on
// another channel completes; every frame is logged, in order, once the
// handler returns.
func TestLogHandlerBlockedDoesNotStallConnection(t *testing.T) {
	for _, dir := range []string{"send", "recv"} {
		t.Run(dir, func(t *testing.T) {
			b := newFakeBroker(t)
			h := newGateHandler()
			cfg := b.config()
			cfg.DisableRecovery = true
			cfg.Logger = slog.New(h)
			c := dialFake(t, cfg)
			ch1, err := c.Channel(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ch2, err := c.Channel(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			h.arm(dir)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := ch1.QueueDeclare(ctx, "one", QueueDeclareOptions{}); err != nil {
				close(h.release)
				t.Fatalf("QueueDeclare on channel 1 (the log handler blocks in one of its frames): %v", err)
			}
			<-h.entered
			// The handler is blocked now.
			if _, err := ch2.QueueDeclare(ctx, "two", QueueDeclareOptions{}); err != nil {
				close(h.release)
				t.Fatalf("QueueDeclare on channel 2 with the log handler blocked: %v", err)
			}
			close(h.release)
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			if err := c.Close(cctx); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(h.frames(), ", ")
			for _, want := range []string{
				"send queue.declare, recv queue.declare-ok, send queue.declare, recv queue.declare-ok, send connection.close, recv connection.close-ok",
			} {
				if !strings.HasSuffix(got, want) {
					t.Errorf("frames logged:\n  %s\nwant them to end with\n  %s", got, want)
				}
			}
		})
	}
}

// TestLogHandlerFallsBehind checks that a handler too slow for the
// connection costs bounded memory: records beyond the log queue's bound
// are dropped and a Warn record says how many.
func TestLogHandlerFallsBehind(t *testing.T) {
	b := newFakeBroker(t)
	h := newGateHandler()
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.Logger = slog.New(h)
	c := dialFake(t, cfg)
	ch, err := c.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h.arm("")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = logQueueRecords // three frames each
	for i := 0; i < n; i++ {
		if err := ch.Publish(ctx, "", "q", Message{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	<-h.entered
	waitFor(t, "the log queue full", func() bool {
		c.logs.mu.Lock()
		defer c.logs.mu.Unlock()
		return len(c.logs.recs) == logQueueRecords && c.logs.dropped > 0
	})
	close(h.release)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	dropped := 0
	for _, r := range h.recs {
		if r.Level == slog.LevelWarn && strings.Contains(r.Message, "dropped") {
			d, _ := strconv.Atoi(recordAttr(r, "dropped"))
			dropped += d
		}
	}
	if dropped == 0 || len(h.recs)+dropped < 3*n {
		t.Errorf("%d records handled, %d reported dropped; want drops reported, and at least %d frames accounted for", len(h.recs), dropped, 3*n)
	}
}

// lockProbeMech is a SASL mechanism named PLAIN (what the fake broker
// offers) that, once armed, checks in each step that the Conn's lock is
// free: it calls IsRecovering, which takes the lock, and reports whether
// that returned within a bound.
type lockProbeMech struct {
	conn  atomic.Pointer[Conn]
	steps chan string // "start: ok", "challenge c: lock held", ...
}

func (m *lockProbeMech) Name() string { return "PLAIN" }

func (m *lockProbeMech) probe(step string) {
	c := m.conn.Load()
	if c == nil {
		return
	}
	done := make(chan bool, 1)
	go func() { done <- c.IsRecovering() }()
	select {
	case recovering := <-done:
		m.steps <- fmt.Sprintf("%s: ok, recovering %v", step, recovering)
	case <-time.After(5 * time.Second):
		m.steps <- step + ": the Conn's lock is held while the mechanism runs"
	}
}

func (m *lockProbeMech) Start() ([]byte, error) {
	m.probe("start")
	return []byte("\x00guest\x00guest"), nil
}

func (m *lockProbeMech) Challenge(c []byte) ([]byte, error) {
	m.probe("challenge " + string(c))
	return append([]byte("re:"), c...), nil
}

// TestMechanismRunsWithoutTheLock checks that an application's SASL
// mechanism runs without the connection's lock: during a recovery's
// handshake (the Conn exists and is recovering), its Start and Challenge
// can call the Conn.
func TestMechanismRunsWithoutTheLock(t *testing.T) {
	b := newFakeBroker(t)
	mech := &lockProbeMech{steps: make(chan string, 4)}
	cfg := b.config()
	cfg.Mechanisms = []Mechanism{mech}
	c := dialFake(t, cfg)
	// From now on the broker challenges once, and the mechanism probes.
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.ConnectionStartOk:
			if m.Response != "\x00guest\x00guest" {
				t.Errorf("start-ok response %q", m.Response)
			}
			fc.send(0, &wire.ConnectionSecure{Challenge: "c1"})
			return true
		case *wire.ConnectionSecureOk:
			if m.Response != "re:c1" {
				t.Errorf("secure-ok response %q", m.Response)
			}
			fc.send(0, &wire.ConnectionTune{ChannelMax: 2047, FrameMax: 128 << 10})
			return true
		}
		return false
	})
	mech.conn.Store(c)
	recovered := make(chan struct{}, 1)
	c.OnRecovery(func(ev RecoveryEvent) {
		if ev.Kind == RecoveryRecovered {
			recovered <- struct{}{}
		}
	})
	b.conn(1).kill()
	for _, want := range []string{"start: ok, recovering true", "challenge c1: ok, recovering true"} {
		select {
		case got := <-mech.steps:
			if got != want {
				t.Errorf("mechanism step: %s; want %s", got, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no mechanism step %q", want)
		}
	}
	select {
	case <-recovered:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not recover")
	}
}

// blockingMech blocks in Start until release is closed.
type blockingMech struct{ entered, release chan struct{} }

func (m *blockingMech) Name() string { return "PLAIN" }
func (m *blockingMech) Start() ([]byte, error) {
	close(m.entered)
	<-m.release
	return []byte("\x00guest\x00guest"), nil
}
func (m *blockingMech) Challenge([]byte) ([]byte, error) { return nil, fmt.Errorf("no challenge") }

// TestMechanismBlockedHandshakeTimesOut checks that a mechanism that does
// not return does not stop the connection's timer: the handshake times
// out and Dial returns ErrHandshakeTimeout without waiting for it.
func TestMechanismBlockedHandshakeTimesOut(t *testing.T) {
	b := newFakeBroker(t)
	mech := &blockingMech{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { close(mech.release) })
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.HandshakeTimeout = 200 * time.Millisecond
	cfg.Mechanisms = []Mechanism{mech}
	dialed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := DialConfig(ctx, cfg)
		if err == nil {
			c.Close(ctx)
		}
		dialed <- err
	}()
	<-mech.entered
	select {
	case err := <-dialed:
		if !errors.Is(err, ErrHandshakeTimeout) {
			t.Errorf("DialConfig with the mechanism blocked: %v, want ErrHandshakeTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("DialConfig did not time out while the mechanism was blocked")
	}
}

// TestNotifyBufferPublishWakesOnChannelClose checks that a Publish waiting
// for a full notification queue returns the channel's close cause when the
// broker closes the channel, without waiting for the callbacks.
func TestNotifyBufferPublishWakesOnChannelClose(t *testing.T) {
	b := newFakeBroker(t)
	returnMandatory(b)
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.NotifyBuffer = 1
	c := dialFake(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	var once sync.Once
	ch.OnReturn(func(*Return) {
		once.Do(func() {
			close(entered)
			<-release
		})
	})
	for i := 0; i < 2; i++ {
		if err := ch.Publish(ctx, "", "k", Message{Mandatory: true, Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-entered
		}
	}
	waitFor(t, "the queue full", func() bool { return ch.notify.box.len() == 1 })
	published := make(chan error, 1)
	go func() { published <- ch.Publish(ctx, "", "k", Message{Body: []byte("x")}) }()
	waitFor(t, "Publish to wait for the queue", func() bool {
		ch.notify.box.mu.Lock()
		defer ch.notify.box.mu.Unlock()
		return ch.notify.box.space != nil
	})
	b.conn(1).send(ch.ID(), &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - test"})
	select {
	case err := <-published:
		if !errors.Is(err, ErrPreconditionFailed) {
			t.Errorf("Publish waiting on a full queue when the channel closed: %v, want the close cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Publish still waits for the callbacks after its channel closed")
	}
}

// overlapMech blocks in its first Start until release, and records the
// most steps it ever ran at once.
type overlapMech struct {
	entered, release chan struct{}
	calls, active    atomic.Int32
	maxActive        atomic.Int32
}

func (m *overlapMech) Name() string { return "PLAIN" }
func (m *overlapMech) Start() ([]byte, error) {
	n := m.active.Add(1)
	defer m.active.Add(-1)
	for {
		mx := m.maxActive.Load()
		if n <= mx || m.maxActive.CompareAndSwap(mx, n) {
			break
		}
	}
	if m.calls.Add(1) == 1 {
		close(m.entered)
		<-m.release
	}
	return []byte("\x00guest\x00guest"), nil
}
func (m *overlapMech) Challenge([]byte) ([]byte, error) { return nil, fmt.Errorf("no challenge") }

// TestMechanismStepsNeverOverlap checks that a mechanism step abandoned by
// a handshake timeout does not run at the same time as the next attempt's
// step: mechanisms need not be safe for concurrent use.
func TestMechanismStepsNeverOverlap(t *testing.T) {
	b := newFakeBroker(t)
	mech := &overlapMech{entered: make(chan struct{}), release: make(chan struct{})}
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.Addrs = []string{"fake-a:5672", "fake-b:5672"}
	cfg.HandshakeTimeout = 200 * time.Millisecond
	cfg.Mechanisms = []Mechanism{mech}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err == nil {
		c.Close(ctx)
	}
	if !errors.Is(err, ErrHandshakeTimeout) {
		t.Errorf("DialConfig: %v, want ErrHandshakeTimeout", err)
	}
	if n := b.count(); n != 2 {
		t.Errorf("%d connections, want one per address", n)
	}
	if n := mech.maxActive.Load(); n != 1 {
		t.Errorf("%d mechanism steps ran at once", n)
	}
	close(mech.release)
	waitFor(t, "the abandoned steps to end", func() bool { return mech.calls.Load() == 2 && mech.active.Load() == 0 })
	if n := mech.maxActive.Load(); n != 1 {
		t.Errorf("%d mechanism steps ran at once", n)
	}
}
