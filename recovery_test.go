package pika

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Unit tests of the recovery policy: the backoff strategy, which losses are
// recovered, the recovery error and event types, and the topology record.
// They need no broker; recovery_integration_test.go covers recovery itself.

// jitterBounds returns the range a delay with base b and jitter j must fall
// in.
func jitterBounds(b time.Duration, j float64) (lo, hi time.Duration) {
	return time.Duration(float64(b) * (1 - j)), time.Duration(float64(b) * (1 + j))
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	tests := []struct {
		name string
		b    Backoff
		base []time.Duration // expected delay before jitter, attempt 1, 2, ...
		jit  float64
	}{
		{
			name: "defaults",
			b:    Backoff{},
			base: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond},
			jit:  0.2,
		},
		{
			name: "custom growth and cap",
			b:    Backoff{Initial: 50 * time.Millisecond, Max: 300 * time.Millisecond, Multiplier: 3, Jitter: 0.1},
			base: []time.Duration{50 * time.Millisecond, 150 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond},
			jit:  0.1,
		},
		{
			name: "constant with multiplier 1",
			b:    Backoff{Initial: time.Second, Multiplier: 1, Jitter: 0.5},
			base: []time.Duration{time.Second, time.Second, time.Second},
			jit:  0.5,
		},
		{
			name: "initial above max is capped",
			b:    Backoff{Initial: time.Minute, Max: 2 * time.Second},
			base: []time.Duration{2 * time.Second, 2 * time.Second},
			jit:  0.2,
		},
		{
			name: "multiplier below 1 means the default 2",
			b:    Backoff{Initial: 10 * time.Millisecond, Multiplier: 0.5},
			base: []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond},
			jit:  0.2,
		},
		{
			name: "jitter above 1 means the default 0.2",
			b:    Backoff{Initial: time.Second, Jitter: 7},
			base: []time.Duration{time.Second, 2 * time.Second},
			jit:  0.2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, base := range tt.base {
				attempt := i + 1
				lo, hi := jitterBounds(base, tt.jit)
				// Jitter is random: sample each attempt many times.
				for range 200 {
					d, ok := tt.b.NextDelay(attempt, nil)
					if !ok {
						t.Fatalf("attempt %d: gave up without MaxAttempts", attempt)
					}
					if d < lo || d > hi {
						t.Fatalf("attempt %d: delay %v outside [%v, %v] (base %v, jitter %v)", attempt, d, lo, hi, base, tt.jit)
					}
				}
			}
		})
	}
}

// TestBackoffJitterSpreads checks that the jitter varies delays (clients
// must not reconnect in step) and covers both sides of the base delay.
func TestBackoffJitterSpreads(t *testing.T) {
	b := Backoff{Initial: time.Second, Jitter: 0.5}
	seen := map[time.Duration]bool{}
	below, above := false, false
	for range 1000 {
		d, _ := b.NextDelay(1, nil)
		seen[d] = true
		below = below || d < 900*time.Millisecond
		above = above || d > 1100*time.Millisecond
	}
	if len(seen) < 100 || !below || !above {
		t.Fatalf("jitter 0.5 around 1s: %d distinct delays, some below 0.9s: %v, some above 1.1s: %v", len(seen), below, above)
	}
}

func TestBackoffMaxAttempts(t *testing.T) {
	b := Backoff{Initial: time.Millisecond, MaxAttempts: 3}
	for attempt := 1; attempt <= 3; attempt++ {
		if _, ok := b.NextDelay(attempt, errors.New("refused")); !ok {
			t.Fatalf("attempt %d of MaxAttempts 3: gave up", attempt)
		}
	}
	for _, attempt := range []int{4, 5, 1000} {
		if d, ok := b.NextDelay(attempt, errors.New("refused")); ok {
			t.Fatalf("attempt %d of MaxAttempts 3: delay %v, want give up", attempt, d)
		}
	}
}

// TestBackoffManyAttempts checks that the delay of a very late attempt is
// the cap, not an overflow: recovery retries forever by default.
func TestBackoffManyAttempts(t *testing.T) {
	for _, b := range []Backoff{
		{},
		{Initial: time.Nanosecond, Max: time.Hour, Multiplier: 1e9},
	} {
		for _, attempt := range []int{64, 1 << 20, math.MaxInt32, math.MaxInt} {
			d, ok := b.NextDelay(attempt, nil)
			max := b.Max
			if max == 0 {
				max = 30 * time.Second
			}
			lo, hi := jitterBounds(max, 0.2)
			if !ok || d < lo || d > hi {
				t.Fatalf("%+v attempt %d: delay %v ok=%v, want within [%v, %v]", b, attempt, d, ok, lo, hi)
			}
		}
	}
}

// TestBackoffHugeMax checks that a cap so large that jitter would take the
// delay past the largest Duration still gives a positive delay: a negative
// one would make recovery retry without pause.
func TestBackoffHugeMax(t *testing.T) {
	b := Backoff{Initial: time.Hour, Max: math.MaxInt64, Multiplier: 1000, Jitter: 1}
	for attempt := 1; attempt <= 20; attempt++ {
		for range 50 {
			d, ok := b.NextDelay(attempt, nil)
			if !ok || d < 0 {
				t.Fatalf("attempt %d: delay %v ok=%v: a huge Max must not overflow into a negative delay", attempt, d, ok)
			}
		}
	}
}

func TestDefaultBackoff(t *testing.T) {
	cfg := Config{}.withDefaults()
	if cfg.Reconnect != DefaultBackoff {
		t.Fatalf("Config{}.withDefaults().Reconnect = %#v, want DefaultBackoff", cfg.Reconnect)
	}
	d, ok := DefaultBackoff.NextDelay(1, nil)
	if lo, hi := jitterBounds(100*time.Millisecond, 0.2); !ok || d < lo || d > hi {
		t.Fatalf("DefaultBackoff first delay %v ok=%v, want about 100ms", d, ok)
	}
	if _, ok := DefaultBackoff.NextDelay(1_000_000, nil); !ok {
		t.Fatal("DefaultBackoff gave up; it must retry forever")
	}
}

// strategyFunc adapts a function to ReconnectStrategy.
type strategyFunc func(attempt int, lastErr error) (time.Duration, bool)

func (f strategyFunc) NextDelay(attempt int, lastErr error) (time.Duration, bool) {
	return f(attempt, lastErr)
}

// TestReconnectStrategyIsAnInterface checks that a custom strategy can be
// configured in place of Backoff.
func TestReconnectStrategyIsAnInterface(t *testing.T) {
	var s ReconnectStrategy = strategyFunc(func(int, error) (time.Duration, bool) { return 0, false })
	cfg := Config{Reconnect: s}.withDefaults()
	if _, ok := cfg.Reconnect.NextDelay(1, nil); ok {
		t.Fatal("a custom strategy was replaced by the default")
	}
}

func TestRecoverable(t *testing.T) {
	serverClose := func(code wire.ReplyCode) error {
		return &Error{Code: code, Text: "closed by test", Server: true, Conn: true}
	}
	// A handshake refusal as the engine reports it: the broker's
	// connection.close wrapped in the handshake sentinel.
	authFailure := fmt.Errorf("pika: handshake: %w", ErrAuthentication)
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil (the application closed)", nil, false},
		{"EOF", fmt.Errorf("pika: read from 127.0.0.1:5672: %w", io.EOF), true},
		{"connection reset", fmt.Errorf("pika: read: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{"write deadline", fmt.Errorf("pika: write: %w", os.ErrDeadlineExceeded), true},
		{"heartbeat timeout", ErrHeartbeatTimeout, true},
		{"blocked too long", fmt.Errorf("%w (1s): low on memory", ErrBlockedTimeout), true},
		{"handshake timeout", fmt.Errorf("pika: %w", ErrHandshakeTimeout), true},
		{"handshake closed", fmt.Errorf("pika: %w", ErrHandshakeClosed), true},
		{"320 CONNECTION_FORCED (rabbitmqctl close_connection, broker shutdown)", serverClose(wire.ReplyConnectionForced), true},
		{"541 INTERNAL_ERROR", serverClose(wire.ReplyInternalError), true},
		{"506 RESOURCE_ERROR", serverClose(wire.ReplyResourceError), true},
		{"501 FRAME_ERROR from the server", serverClose(wire.ReplyFrameError), true},
		{"505 UNEXPECTED_FRAME from the server", serverClose(wire.ReplyUnexpectedFrame), true},
		{"client-side protocol error", &Error{Code: wire.ReplyFrameError, Text: "bad frame from server", Conn: true}, true},
		{"403 ACCESS_REFUSED", serverClose(wire.ReplyAccessRefused), false},
		{"402 INVALID_PATH", serverClose(wire.ReplyInvalidPath), false},
		{"530 NOT_ALLOWED", serverClose(wire.ReplyNotAllowed), false},
		{"540 NOT_IMPLEMENTED", serverClose(wire.ReplyNotImplemented), false},
		{"wrapped 403", fmt.Errorf("pika: %w", serverClose(wire.ReplyAccessRefused)), false},
		{"authentication refused", authFailure, false},
		{"vhost refused", fmt.Errorf("pika: %w", ErrVhostRefused), false},
		{"no common SASL mechanism", fmt.Errorf("pika: %w", engine.ErrNoMechanism), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := recoverable(tt.err); got != tt.want {
				t.Fatalf("recoverable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestIsTerminal(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, false},
		{ErrHandshakeTimeout, false},
		{fmt.Errorf("x: %w", ErrAuthentication), true},
		{fmt.Errorf("x: %w", ErrVhostRefused), true},
		{engine.ErrNoMechanism, true},
		// Several addresses: terminal when any one refused the credentials.
		{joinDialErrors([]error{errors.New("dial 127.0.0.1:1: refused"), fmt.Errorf("x: %w", ErrAuthentication)}), true},
		{joinDialErrors([]error{errors.New("a"), errors.New("b")}), false},
	}
	for _, tt := range tests {
		if got := isTerminal(tt.err); got != tt.want {
			t.Errorf("isTerminal(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRecoveryErrorUnwrap(t *testing.T) {
	cause := &Error{Code: wire.ReplyConnectionForced, Text: "bye", Server: true, Conn: true}
	last := fmt.Errorf("pika: dial 127.0.0.1:5672: %w", syscall.ECONNREFUSED)
	err := error(&RecoveryError{Attempts: 4, Cause: cause, Last: last})
	if !errors.Is(err, ErrConnectionForced) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("errors.Is does not reach the cause and the last error through %v", err)
	}
	var re *RecoveryError
	if !errors.As(err, &re) || re.Attempts != 4 {
		t.Fatalf("errors.As: %v", err)
	}
	if !errors.Is(err, ErrClosed) {
		t.Errorf("errors.Is(%v, ErrClosed) is false: the connection is closed for good", err)
	}
	for _, want := range []string{"4 attempts", "bye", "refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err.Error(), want)
		}
	}
}

func TestRecoveryKindString(t *testing.T) {
	for k, want := range map[RecoveryKind]string{
		RecoveryLost: "lost", RecoveryAttempt: "attempt", RecoveryRecovered: "recovered",
		RecoveryGaveUp: "gave-up", 0: "recovery-kind(0)", 99: "recovery-kind(99)",
	} {
		if got := k.String(); got != want {
			t.Errorf("RecoveryKind(%d).String() = %q, want %q", k, got, want)
		}
	}
}

// TestOutcomeUnknownIsNotNacked checks the error a confirmation gets when
// its connection is lost: an unknown outcome, never a broker refusal.
func TestOutcomeUnknownIsNotNacked(t *testing.T) {
	for _, cause := range []error{nil, ErrHeartbeatTimeout, &Error{Code: wire.ReplyConnectionForced, Server: true, Conn: true}} {
		err := error(&outcomeError{cause: cause})
		if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNacked) {
			t.Errorf("outcome error with cause %v: Is(ErrOutcomeUnknown)=%v Is(ErrNacked)=%v",
				cause, errors.Is(err, ErrOutcomeUnknown), errors.Is(err, ErrNacked))
		}
		if cause != nil && !errors.Is(err, cause) {
			t.Errorf("outcome error does not wrap its cause %v", cause)
		}
	}
}

func TestTopologyRecord(t *testing.T) {
	var topo topology
	// Server-named queue: recorded under the broker's name, marked
	// server-named.
	topo.AddQueue(&wire.QueueDeclare{Exclusive: true, NoWait: true}, "amq.gen-1", time.Now())
	topo.AddQueue(&wire.QueueDeclare{Queue: "orders", Durable: true, Arguments: Table{"x-max-length": int32(10)}}, "orders", time.Now())
	topo.AddQueue(&wire.QueueDeclare{Queue: "passive", Passive: true}, "passive", time.Now())
	if len(topo.Queues) != 2 {
		t.Fatalf("queues: %d recorded, want 2 (passive declares are not recorded)", len(topo.Queues))
	}
	if q := topo.Queue("amq.gen-1"); q == nil || !q.ServerNamed || q.Decl.NoWait {
		t.Fatalf("server-named queue record: %+v", q)
	}
	if q := topo.Queue("orders"); q == nil || q.ServerNamed {
		t.Fatalf("named queue record: %+v", q)
	}
	// Redeclaring a server-named queue under its current name keeps it
	// server-named.
	topo.AddQueue(&wire.QueueDeclare{Queue: "amq.gen-1", Exclusive: true}, "amq.gen-1", time.Now())
	if q := topo.Queue("amq.gen-1"); q == nil || !q.ServerNamed || len(topo.Queues) != 2 {
		t.Fatalf("redeclared server-named queue: %+v (%d queues)", q, len(topo.Queues))
	}

	topo.AddExchange(&wire.ExchangeDeclare{Exchange: "ex", Type: "topic"})
	topo.AddExchange(&wire.ExchangeDeclare{Exchange: "ex", Type: "topic", Durable: true}) // replaces
	topo.AddExchange(&wire.ExchangeDeclare{Exchange: "", Type: "direct"})                 // the default exchange
	topo.AddExchange(&wire.ExchangeDeclare{Exchange: "p", Passive: true})
	if len(topo.Exchanges) != 1 || !topo.Exchanges[0].Durable {
		t.Fatalf("exchanges: %+v", topo.Exchanges)
	}

	bind := func(dst, src, key string, args Table) *recovery.Binding {
		return &recovery.Binding{Destination: dst, Source: src, Key: key, Args: args}
	}
	topo.AddBinding(bind("amq.gen-1", "ex", "a.*", nil))
	topo.AddBinding(bind("amq.gen-1", "ex", "a.*", nil)) // duplicate
	topo.AddBinding(bind("amq.gen-1", "ex", "a.*", Table{"k": "v"}))
	topo.AddBinding(bind("orders", "ex", "o", nil))
	topo.AddBinding(&recovery.Binding{ToExchange: true, Destination: "ex2", Source: "ex", Key: "#"})
	if len(topo.Bindings) != 4 {
		t.Fatalf("bindings: %d recorded, want 4 (duplicates merged)", len(topo.Bindings))
	}

	// Recovery renames a server-named queue: its bindings follow.
	topo.RenameQueue("amq.gen-1", "amq.gen-2")
	for _, b := range topo.Bindings {
		if b.Destination == "amq.gen-1" {
			t.Fatalf("binding still names the old queue: %+v", b)
		}
	}
	topo.RemoveBinding(bind("amq.gen-2", "ex", "a.*", Table{"k": "v"}))
	if len(topo.Bindings) != 3 {
		t.Fatalf("unbind: %d bindings left, want 3", len(topo.Bindings))
	}

	// Deleting a queue forgets it and its bindings; deleting an exchange
	// forgets the bindings from it and to it.
	topo.RemoveQueue("orders")
	if topo.Queue("orders") != nil || len(topo.Bindings) != 2 {
		t.Fatalf("after deleting orders: queue %v, %d bindings", topo.Queue("orders"), len(topo.Bindings))
	}
	topo.RemoveExchange("ex")
	if len(topo.Exchanges) != 0 || len(topo.Bindings) != 0 {
		t.Fatalf("after deleting ex: %d exchanges, bindings %+v", len(topo.Exchanges), topo.Bindings)
	}
}

// TestTopologyRecordCopiesArguments checks that the record does not share
// the application's argument tables, which it may change after declaring.
func TestTopologyRecordCopiesArguments(t *testing.T) {
	var topo topology
	args := Table{"x-max-length": int32(10)}
	topo.AddQueue(&wire.QueueDeclare{Queue: "q", Arguments: args}, "q", time.Now())
	topo.AddExchange(&wire.ExchangeDeclare{Exchange: "e", Type: "fanout", Arguments: args})
	b := &recovery.Binding{Destination: "q", Source: "e", Args: args}
	topo.AddBinding(b)
	args["x-max-length"] = int32(99)
	if v := topo.Queue("q").Decl.Arguments["x-max-length"]; v != int32(10) {
		t.Errorf("queue arguments follow the application's table: %v", v)
	}
	if v := topo.Exchanges[0].Arguments["x-max-length"]; v != int32(10) {
		t.Errorf("exchange arguments follow the application's table: %v", v)
	}
	if v := topo.Bindings[0].Args["x-max-length"]; v != int32(10) {
		t.Errorf("binding arguments follow the application's table: %v", v)
	}
}

// TestConfirmSetAcrossRecovery checks the publish-tag arithmetic recovery
// relies on: after a loss, client tags keep increasing while the new
// connection's broker tags start again at 1.
func TestConfirmSetAcrossRecovery(t *testing.T) {
	ch := &Channel{conn: &Conn{cfg: Config{DisableRepublish: true}}, confirm: true}
	ch.confirms.Reset(1)
	var before []*Confirmation
	for range 3 {
		before = append(before, ch.recordPublishLocked("", "q", &Message{Body: []byte("x")}, true, nil))
	}
	ch.confirmLocked(1, false, true) // the broker confirms tag 1
	ch.suspendLocked(ErrHeartbeatTimeout)
	for i, f := range before {
		select {
		case <-f.Done():
		default:
			t.Fatalf("confirmation %d unresolved after the loss", i+1)
		}
		if i == 0 {
			if f.Err() != nil {
				t.Fatalf("confirmed message: %v", f.Err())
			}
			continue
		}
		if err := f.Err(); !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNacked) || !errors.Is(err, ErrHeartbeatTimeout) {
			t.Fatalf("unconfirmed message at the loss: %v, want ErrOutcomeUnknown wrapping the cause", err)
		}
	}
	// The new connection: broker tag 1 is client tag 4.
	f := ch.recordPublishLocked("", "q", &Message{Body: []byte("x")}, true, nil)
	if f.Tag() != 4 {
		t.Fatalf("first tag after recovery: %d, want 4", f.Tag())
	}
	ch.confirmLocked(1+ch.pubBase, false, false) // broker nacks its tag 1
	if err := f.Err(); !errors.Is(err, ErrNacked) {
		t.Fatalf("nack after recovery: %v", err)
	}
}

// TestConfirmSetAcrossRecoveryRepublish is TestConfirmSetAcrossRecovery with
// republishing (the default): the unconfirmed messages wait, and a final
// close resolves them.
func TestConfirmSetAcrossRecoveryRepublish(t *testing.T) {
	c := &Conn{}
	ch := &Channel{conn: c, confirm: true, done: make(chan struct{}), consumers: map[string]*Consumer{}}
	ch.confirms.Reset(1)
	f := ch.recordPublishLocked("", "q", &Message{Body: []byte("x")}, true, nil)
	ch.suspendLocked(ErrHeartbeatTimeout)
	if len(ch.republish) != 1 {
		t.Fatalf("%d messages kept for republishing, want 1", len(ch.republish))
	}
	select {
	case <-f.Done():
		t.Fatalf("a message kept for republishing resolved at the loss: %v", f.Err())
	default:
	}
	// Recovery gives up (or the application closes): the kept message must
	// resolve, or its publisher waits forever.
	ch.closedLocked(ErrClosed)
	select {
	case <-f.Done():
		if err := f.Err(); !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("kept message after the close: %v, want ErrOutcomeUnknown", err)
		}
	case <-time.After(time.Second):
		t.Fatal("a message kept for republishing never resolves once its channel closes for good (BUG: closedLocked does not resolve ch.republish)")
	}
}

// TestWaiterCtx checks the behaviour recovery's bounded waits rely on.
func TestWaiterCtx(t *testing.T) {
	c := &Conn{}
	w := newWaiter()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := w.wait(ctx, c); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait: %v", err)
	}
	if !w.abandoned {
		t.Fatal("a waiter whose ctx ended is not marked abandoned")
	}
}

// The tests below drive recovery against fakeBroker, a minimal AMQP broker
// on in-memory pipes (Config.Dial), to reproduce exact interleavings that a
// real broker makes rare: a loss or a Close at a chosen step of the
// restore.

// fakeBroker accepts "connections" through its dial method (use it as
// Config.Dial) and serves each on a goroutine: the handshake, and an
// immediate OK to every synchronous method, unless hook handles the method
// first. It is safe for concurrent use.
type fakeBroker struct {
	t     *testing.T
	mu    sync.Mutex
	conns []*fakeConn
	hook  func(fc *fakeConn, ch uint16, m wire.Method) bool // returns true when it handled m
	// silent, when set, makes the connections it returns true for accept
	// the protocol header and never answer.
	silent func(n int) bool
	// refuse, when set, makes the dials it returns true for fail (n counts
	// every dial, refused ones included).
	refuse func(n int) bool
	dialed int
	// tcp makes dial connect over TCP loopback instead of net.Pipe
	// (tcpPair, readwait_test.go).
	tcp bool
}

func newFakeBroker(t *testing.T) *fakeBroker {
	b := &fakeBroker{t: t}
	t.Cleanup(func() {
		b.mu.Lock()
		conns := b.conns
		b.mu.Unlock()
		for _, fc := range conns {
			fc.kill()
		}
	})
	return b
}

func (b *fakeBroker) setHook(h func(fc *fakeConn, ch uint16, m wire.Method) bool) {
	b.mu.Lock()
	b.hook = h
	b.mu.Unlock()
}

// config returns a recovering Config that dials b, with a short backoff,
// and no heartbeats (b sends none).
func (b *fakeBroker) config() Config {
	return Config{
		Addr:             "fake:5672",
		Dial:             b.dial,
		Heartbeat:        NoHeartbeat,
		Reconnect:        Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond},
		HandshakeTimeout: 2 * time.Second,
		CloseTimeout:     2 * time.Second,
	}
}

func (b *fakeBroker) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	b.mu.Lock()
	b.dialed++
	if b.refuse != nil && b.refuse(b.dialed) {
		b.mu.Unlock()
		return nil, syscall.ECONNREFUSED
	}
	b.mu.Unlock()
	client, server := net.Pipe()
	if b.tcp {
		var err error
		if client, server, err = tcpPair(ctx); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	fc := &fakeConn{b: b, nc: server, n: len(b.conns) + 1, done: make(chan struct{})}
	b.conns = append(b.conns, fc)
	b.mu.Unlock()
	go fc.serve()
	return client, nil
}

// conn returns the n-th connection (from 1).
func (b *fakeBroker) conn(n int) *fakeConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > len(b.conns) {
		return nil
	}
	return b.conns[n-1]
}

// count returns the number of connections made so far.
func (b *fakeBroker) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// fakeConn is one connection of a fakeBroker.
type fakeConn struct {
	b    *fakeBroker
	nc   net.Conn
	n    int           // 1 for the first connection
	done chan struct{} // closed when serve returns

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex
	log     []string // "channel:method" of every method received, in order
	queueNo int
}

// send writes a method frame to the client.
func (fc *fakeConn) send(ch uint16, m wire.Method) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.nc.Write(scripted.Method(ch, m))
}

// kill drops the connection without a close handshake.
func (fc *fakeConn) kill() { fc.nc.Close() }

// methods returns the log of methods received.
func (fc *fakeConn) methods() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]string(nil), fc.log...)
}

func (fc *fakeConn) serve() {
	defer close(fc.done)
	defer fc.nc.Close()
	var hdr [8]byte
	if _, err := io.ReadFull(fc.nc, hdr[:]); err != nil {
		return
	}
	fc.b.mu.Lock()
	silent := fc.b.silent != nil && fc.b.silent(fc.n)
	fc.b.mu.Unlock()
	if silent {
		io.Copy(io.Discard, fc.nc)
		return
	}
	fc.send(0, &wire.ConnectionStart{VersionMajor: 0, VersionMinor: 9,
		ServerProperties: Table{"product": "fake", "capabilities": Table{"publisher_confirms": true, "basic.nack": true}},
		Mechanisms:       "PLAIN", Locales: "en_US"})
	buf := make([]byte, 0, 64<<10)
	tmp := make([]byte, 32<<10)
	for {
		n, err := fc.nc.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:n]...)
		for {
			f, size, err := wire.ParseFrame(buf, 1<<20)
			if err != nil {
				fc.b.t.Errorf("fake broker: bad frame from the client: %v", err)
				return
			}
			if size == 0 {
				break
			}
			if f.Type == wire.FrameMethod {
				m, err := wire.DecodeMethod(f.Payload)
				if err != nil {
					fc.b.t.Errorf("fake broker: bad method from the client: %v", err)
					return
				}
				if !fc.handle(f.Channel, m) {
					return
				}
			}
			buf = buf[:copy(buf, buf[size:])]
		}
	}
}

// handle answers one method; false ends the connection.
func (fc *fakeConn) handle(ch uint16, m wire.Method) bool {
	fc.mu.Lock()
	fc.log = append(fc.log, fmt.Sprintf("%d:%s", ch, m.ID()))
	fc.mu.Unlock()
	fc.b.mu.Lock()
	hook := fc.b.hook
	fc.b.mu.Unlock()
	if hook != nil && hook(fc, ch, m) {
		return true
	}
	switch m := m.(type) {
	case *wire.ConnectionStartOk:
		fc.send(0, &wire.ConnectionTune{ChannelMax: 2047, FrameMax: 128 << 10})
	case *wire.ConnectionOpen:
		fc.send(0, &wire.ConnectionOpenOk{})
	case *wire.ConnectionClose:
		fc.send(0, &wire.ConnectionCloseOk{})
		return false
	case *wire.ChannelOpen:
		fc.send(ch, &wire.ChannelOpenOk{})
	case *wire.ChannelClose:
		fc.send(ch, &wire.ChannelCloseOk{})
	case *wire.QueueDeclare:
		name := m.Queue
		if name == "" {
			fc.mu.Lock()
			fc.queueNo++
			name = fmt.Sprintf("amq.gen-%d-%d", fc.n, fc.queueNo)
			fc.mu.Unlock()
		}
		fc.send(ch, &wire.QueueDeclareOk{Queue: name})
	case *wire.QueueBind:
		fc.send(ch, &wire.QueueBindOk{})
	case *wire.QueueDelete:
		fc.send(ch, &wire.QueueDeleteOk{})
	case *wire.ExchangeDeclare:
		fc.send(ch, &wire.ExchangeDeclareOk{})
	case *wire.BasicQos:
		fc.send(ch, &wire.BasicQosOk{})
	case *wire.ConfirmSelect:
		fc.send(ch, &wire.ConfirmSelectOk{})
	case *wire.BasicConsume:
		fc.send(ch, &wire.BasicConsumeOk{ConsumerTag: m.ConsumerTag})
	case *wire.BasicCancel:
		fc.send(ch, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag})
	}
	return true
}

// fakeSetup dials b and declares a server-named queue through a channel,
// recorded for recovery.
func fakeSetup(t *testing.T, b *fakeBroker, cfg Config) (*Conn, *Channel, *recoveryLog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig to the fake broker: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	rlog := watchRecovery(t, c)
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	return c, ch, rlog
}

// TestFakeBrokerRecovery checks the fake broker itself: a dropped
// connection is recovered, and the new connection sees the restore in
// order.
func TestFakeBrokerRecovery(t *testing.T) {
	b := newFakeBroker(t)
	c, ch, rlog := fakeSetup(t, b, b.config())
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.conn(1).kill()
	rep := rlog.wait(RecoveryRecovered, 1, 10*time.Second).Report
	if rep.Channels != 1 || rep.RenamedQueues["amq.gen-1-1"] != "amq.gen-2-1" {
		t.Fatalf("report %+v", rep)
	}
	got := strings.Join(b.conn(2).methods(), " ")
	want := "0:connection.start-ok 0:connection.tune-ok 0:connection.open 1:channel.open 1:confirm.select 2:channel.open 2:queue.declare 2:channel.close"
	if got != want {
		t.Fatalf("restore on the new connection:\n got %s\nwant %s", got, want)
	}
	if c.IsRecovering() {
		t.Fatal("still recovering")
	}
}

// TestFakeLinkLostAtEndOfRestore: the new connection dies while recovery
// waits for the last step of the topology restore (the close of its
// temporary channel). Recovery must notice and try again, not declare the
// Conn recovered on a dead connection, which would leave it unusable and
// never recovered.
func TestFakeLinkLostAtEndOfRestore(t *testing.T) {
	b := newFakeBroker(t)
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.ChannelClose); ok && fc.n == 2 {
			fc.kill()
			return true
		}
		return false
	})
	c, _, rlog := fakeSetup(t, b, b.config())
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Channel(ctx); err != nil {
		t.Fatalf("Channel after the recovered event: %v (recovering %v, closed %v, %d connections made); events:\n%s",
			err, c.IsRecovering(), c.IsClosed(), b.count(), rlog)
	}
	if b.count() < 3 {
		t.Fatalf("%d connections: the one lost during the restore was not replaced", b.count())
	}
}

// TestFakeCloseDuringRestore: Close called while recovery restores the
// topology on a new connection stops the recovery at once: Close returns
// nil promptly, no recovered event follows, and the new connection is
// closed.
func TestFakeCloseDuringRestore(t *testing.T) {
	b := newFakeBroker(t)
	stuck := make(chan struct{})
	var once sync.Once
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.ChannelClose); ok && fc.n == 2 {
			once.Do(func() { close(stuck) })
			return true // never answered
		}
		return false
	})
	baseline := runtime.NumGoroutine()
	c, _, rlog := fakeSetup(t, b, b.config())
	b.conn(1).kill()
	select {
	case <-stuck:
	case <-time.After(10 * time.Second):
		t.Fatalf("recovery did not reach the topology channel's close; events:\n%s", rlog)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	err := c.Close(ctx)
	took := time.Since(start)
	if err != nil || took > 1500*time.Millisecond {
		t.Errorf("Close during the restore: %v after %v, want nil at once", err, took.Round(time.Millisecond))
	}
	if n := rlog.count(RecoveryRecovered); n != 0 {
		t.Errorf("a recovered event after Close stopped the recovery; events:\n%s", rlog)
	}
	select {
	case <-b.conn(2).done:
	case <-time.After(5 * time.Second):
		t.Error("the connection being restored is still open after Close")
	}
	checkGoroutines(t, baseline)
}

// TestFakeChannelCloseAtLoss: Channel.Close waiting for the broker's
// close-ok when the connection is lost returns (the channel is gone with
// the connection), and recovery does not open that channel again.
func TestFakeChannelCloseAtLoss(t *testing.T) {
	b := newFakeBroker(t)
	closing := make(chan struct{})
	var once sync.Once
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.ChannelClose); ok && fc.n == 1 && ch == 1 {
			once.Do(func() { close(closing) })
			return true // the close-ok never comes
		}
		return false
	})
	c, ch, rlog := fakeSetup(t, b, b.config())
	done := make(chan error, 1)
	go func() { done <- ch.Close(context.Background()) }()
	<-closing
	b.conn(1).kill()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Channel.Close across the loss: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Channel.Close(context.Background()) still blocked 5s after the connection was lost; events:\n%s", rlog)
	}
	rep := rlog.wait(RecoveryRecovered, 1, 10*time.Second).Report
	if rep.Channels != 0 || !ch.IsClosed() {
		t.Errorf("recovery restored %d channels (the closed one is closed: %v), want none", rep.Channels, ch.IsClosed())
	}
	if c.IsClosed() {
		t.Fatal("the connection closed")
	}
}

// TestFakeChannelOpenAtLoss: Conn.Channel waiting for channel.open-ok when
// the connection is lost fails, and recovery does not open a channel that
// nobody holds.
func TestFakeChannelOpenAtLoss(t *testing.T) {
	b := newFakeBroker(t)
	opening := make(chan struct{})
	var once sync.Once
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.ChannelOpen); ok && fc.n == 1 && ch == 2 {
			once.Do(func() { close(opening) })
			return true // the open-ok never comes
		}
		return false
	})
	c, _, rlog := fakeSetup(t, b, b.config())
	res := make(chan error, 1)
	go func() {
		_, err := c.Channel(context.Background())
		res <- err
	}()
	<-opening
	b.conn(1).kill()
	select {
	case err := <-res:
		t.Logf("Channel across the loss: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Channel(context.Background()) blocked across the loss")
	}
	rep := rlog.wait(RecoveryRecovered, 1, 10*time.Second).Report
	if rep.Channels != 1 {
		t.Errorf("recovery restored %d channels, want 1: the channel whose open failed came back", rep.Channels)
	}
}

// TestFakeHandshakeTimeoutBoundsAttempts: a reconnection attempt to a
// server that accepts and never answers ends after Config.HandshakeTimeout,
// and attempts continue.
func TestFakeHandshakeTimeoutBoundsAttempts(t *testing.T) {
	b := newFakeBroker(t)
	b.silent = func(n int) bool { return n >= 2 }
	cfg := b.config()
	cfg.HandshakeTimeout = 200 * time.Millisecond
	c, _, rlog := fakeSetup(t, b, cfg)
	b.conn(1).kill()
	ev := rlog.wait(RecoveryAttempt, 4, 20*time.Second)
	if !errors.Is(ev.Err, ErrHandshakeTimeout) {
		t.Errorf("attempt 4 follows %v, want ErrHandshakeTimeout", ev.Err)
	}
	if !c.IsRecovering() {
		t.Fatal("not recovering")
	}
}

// TestFakeCloseWhileReconnectStalled: Close while a reconnection attempt
// waits for a silent server returns within its ctx, resolves every pending
// confirmation with an error, and leaves no goroutine, with and without
// republishing (the default).
func TestFakeCloseWhileReconnectStalled(t *testing.T) {
	for _, republish := range []bool{false, true} {
		t.Run(fmt.Sprintf("republish=%v", republish), func(t *testing.T) {
			baseline := runtime.NumGoroutine()
			b := newFakeBroker(t)
			b.silent = func(n int) bool { return n >= 2 }
			cfg := b.config()
			cfg.HandshakeTimeout = time.Minute
			cfg.DisableRepublish = !republish
			c, ch, _ := fakeSetup(t, b, cfg)
			if err := ch.ConfirmSelect(context.Background()); err != nil {
				t.Fatal(err)
			}
			var confs []*Confirmation
			for i := range 10 {
				f, err := ch.PublishWithConfirm(context.Background(), "", "q", Message{Body: []byte{byte(i)}})
				if err != nil {
					t.Fatal(err)
				}
				confs = append(confs, f) // the fake broker never confirms
			}
			b.conn(1).kill()
			waitConn(t, b, 2, 10*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			c.Close(ctx)
			if took := time.Since(start); took > 2500*time.Millisecond {
				t.Errorf("Close took %v with a 2s ctx", took)
			}
			for i, f := range confs {
				select {
				case <-f.Done():
					if err := f.Err(); !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNacked) {
						t.Errorf("confirmation %d: %v, want ErrOutcomeUnknown", i, err)
					}
				default:
					t.Errorf("confirmation %d unresolved after Close", i)
				}
			}
			for n := 1; n <= b.count(); n++ {
				b.conn(n).kill()
			}
			checkGoroutines(t, baseline)
		})
	}
}

// waitConn waits up to d for the n-th connection to the fake broker.
func waitConn(t *testing.T, b *fakeBroker, n int, d time.Duration) *fakeConn {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if fc := b.conn(n); fc != nil {
			return fc
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection %d to the fake broker within %v", n, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deliver sends a basic.deliver with body to the client.
func (fc *fakeConn) deliver(ch uint16, consumerTag string, tag uint64, body string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.nc.Write(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: consumerTag, DeliveryTag: tag, RoutingKey: "q"}, nil, []byte(body), 0))
}

// TestFakeRestoreFailsAfterDeliveries: an attempt that restarted a
// consumer, which received a delivery, and then failed (the connection
// died before the next consumer was restored) is followed by another; the
// delivery from the failed attempt is stale there: acking it must not ack
// the message that the next connection delivers under the same broker tag.
func TestFakeRestoreFailsAfterDeliveries(t *testing.T) {
	b := newFakeBroker(t)
	_, ch, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c1, err := ch.Consume(ctx, "q", ConsumeOptions{Tag: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume(ctx, "q", ConsumeOptions{Tag: "c2"}); err != nil {
		t.Fatal(err)
	}
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		cons, ok := m.(*wire.BasicConsume)
		if !ok || fc.n != 2 {
			return false
		}
		if cons.ConsumerTag == "c1" {
			fc.send(chID, &wire.BasicConsumeOk{ConsumerTag: "c1"})
			fc.deliver(chID, "c1", 1, "early")
			return true
		}
		fc.kill() // before c2's consume-ok
		return true
	})
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	fc3 := b.conn(3)
	if fc3 == nil {
		t.Fatalf("recovered on connection %d; want the third; events:\n%s", b.count(), rlog)
	}
	fc3.deliver(1, "c1", 1, "fresh")
	var early *Delivery
	for {
		d, err := c1.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for the fresh delivery: %v", err)
		}
		if string(d.Body) == "early" {
			early = d
			continue
		}
		if early != nil && d.DeliveryTag == early.DeliveryTag {
			t.Errorf("the delivery of the failed attempt and the next connection's share client tag %d", d.DeliveryTag)
		}
		if early != nil {
			if err := early.Ack(false); !errors.Is(err, ErrStaleDelivery) {
				t.Errorf("Ack of the failed attempt's delivery: %v, want ErrStaleDelivery", err)
			}
			time.Sleep(50 * time.Millisecond)
			for _, m := range fc3.methods() {
				if m == "1:basic.ack" {
					t.Fatal("acking the failed attempt's delivery sent basic.ack on the new connection: it acked a message the application never saw")
				}
			}
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("Ack of the fresh delivery: %v", err)
		}
		return
	}
}

// TestFakeRepublishAcrossFailedAttempt: with republishing, a
// message republished by an attempt whose connection then died is
// published again by the next attempt, and its confirmation is the one
// the broker gives there.
func TestFakeRepublishAcrossFailedAttempt(t *testing.T) {
	b := newFakeBroker(t)
	cfg := b.config()
	cfg.DisableRepublish = false
	c, ch, rlog := fakeSetup(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte("m1")})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	published := map[int]uint64{} // publishes per connection
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); !ok {
			return false
		}
		switch fc.n {
		case 1:
			return true // never confirmed
		case 2:
			fc.kill() // dies right after the republish
			return true
		}
		mu.Lock()
		published[fc.n]++
		tag := published[fc.n]
		mu.Unlock()
		fc.send(chID, &wire.BasicAck{DeliveryTag: tag})
		return true
	})
	b.conn(1).kill()
	select {
	case <-f.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("the unconfirmed message was never confirmed after the recovery (connections: %d, recovering %v); events:\n%s", b.count(), c.IsRecovering(), rlog)
	}
	if err := f.Err(); err != nil {
		t.Fatalf("confirmation: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if published[3] != 1 {
		t.Fatalf("publishes per connection: %v, want the message republished once on the third", published)
	}
}

// TestFakeDisableRecovery: with Config.DisableRecovery a lost connection
// closes the Conn for good with the cause, its channels with it, and
// outstanding confirmations resolve with ErrOutcomeUnknown.
func TestFakeDisableRecovery(t *testing.T) {
	b := newFakeBroker(t)
	cfg := b.config()
	cfg.DisableRecovery = true
	c, ch, rlog := fakeSetup(t, b, cfg)
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := ch.PublishWithConfirm(context.Background(), "", "q", Message{Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	b.conn(1).kill()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the Conn did not close after the loss")
	}
	// The transport's error: a read or write on the closed pipe.
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "pipe") {
		t.Errorf("Conn.Err() = %v, want the transport error", err)
	}
	if !ch.IsClosed() || ch.Err() != c.Err() {
		t.Errorf("channel: closed %v, err %v; want the connection's cause", ch.IsClosed(), ch.Err())
	}
	if err := f.Wait(context.Background()); !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNacked) {
		t.Errorf("confirmation: %v, want ErrOutcomeUnknown", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(rlog.all()); n != 0 || b.count() != 1 {
		t.Errorf("%d recovery events, %d connections: recovery ran though disabled", n, b.count())
	}
}

// TestFakeServerCloseNotRecovered: a broker close with a code that
// reconnecting cannot fix (403 ACCESS_REFUSED: permissions revoked) ends
// the Conn without reconnection attempts; 320 CONNECTION_FORCED is
// recovered.
func TestFakeServerCloseNotRecovered(t *testing.T) {
	for _, tt := range []struct {
		code    wire.ReplyCode
		recover bool
	}{
		{wire.ReplyAccessRefused, false},
		{wire.ReplyNotAllowed, false},
		{wire.ReplyConnectionForced, true},
		{wire.ReplyInternalError, true},
	} {
		t.Run(tt.code.String(), func(t *testing.T) {
			b := newFakeBroker(t)
			c, _, rlog := fakeSetup(t, b, b.config())
			b.conn(1).send(0, &wire.ConnectionClose{ReplyCode: uint16(tt.code), ReplyText: "closed by the fake broker"})
			if tt.recover {
				rlog.wait(RecoveryRecovered, 1, 10*time.Second)
				return
			}
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("the Conn did not close; events:\n%s", rlog)
			}
			var e *Error
			if !errors.As(c.Err(), &e) || e.Code != tt.code || !e.Server {
				t.Errorf("Conn.Err() = %v, want the broker's %v", c.Err(), tt.code)
			}
			if n := rlog.count(RecoveryAttempt); n != 0 || b.count() != 1 {
				t.Errorf("%d attempts, %d connections: want no reconnection", n, b.count())
			}
		})
	}
}

// TestFakeMaxAttemptsGivesUp: when the strategy gives up, the Conn closes
// with a *RecoveryError that counts the attempts and wraps the loss and
// the last failure; a gave-up event says so.
func TestFakeMaxAttemptsGivesUp(t *testing.T) {
	b := newFakeBroker(t)
	b.refuse = func(n int) bool { return n > 1 }
	cfg := b.config()
	cfg.Reconnect = Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 3}
	c, ch, rlog := fakeSetup(t, b, cfg)
	b.conn(1).kill()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("recovery did not give up; events:\n%s", rlog)
	}
	var re *RecoveryError
	if !errors.As(c.Err(), &re) || re.Attempts != 3 {
		t.Fatalf("Conn.Err() = %v, want a *RecoveryError after 3 attempts", c.Err())
	}
	if !errors.Is(c.Err(), io.EOF) || !errors.Is(c.Err(), syscall.ECONNREFUSED) {
		t.Errorf("Conn.Err() = %v: want it to wrap the loss (EOF) and the last failure (refused)", c.Err())
	}
	ev := rlog.wait(RecoveryGaveUp, 1, 5*time.Second)
	if !errors.As(ev.Err, &re) {
		t.Errorf("gave-up event: %v", ev.Err)
	}
	if n := rlog.count(RecoveryAttempt); n != 3 {
		t.Errorf("%d attempt events, want 3", n)
	}
	if !ch.IsClosed() || !errors.As(ch.Err(), &re) {
		t.Errorf("channel after giving up: closed %v, err %v", ch.IsClosed(), ch.Err())
	}
	if _, err := c.Channel(context.Background()); !errors.As(err, &re) || !errors.Is(err, ErrClosed) {
		t.Errorf("Channel after giving up: %v, want the *RecoveryError matching ErrClosed", err)
	}
	if err := ch.Publish(context.Background(), "", "q", Message{}); !errors.Is(err, ErrClosed) || !errors.As(err, &re) {
		t.Errorf("Publish after giving up: %v, want the *RecoveryError matching ErrClosed", err)
	}
}

// TestFakeCloseFromRecoveryCallback: Close called from an OnRecovery
// callback (say, on the loss, to stop instead of reconnecting) returns
// promptly.
func TestFakeCloseFromRecoveryCallback(t *testing.T) {
	b := newFakeBroker(t)
	c, _, _ := fakeSetup(t, b, b.config())
	took := make(chan time.Duration, 1)
	c.OnRecovery(func(ev RecoveryEvent) {
		if ev.Kind == RecoveryLost {
			start := time.Now()
			c.Close(context.Background())
			took <- time.Since(start)
		}
	})
	b.conn(1).kill()
	select {
	case d := <-took:
		if d > 2*time.Second {
			t.Errorf("Close from an OnRecovery callback took %v", d.Round(time.Millisecond))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close from an OnRecovery callback hung")
	}
	if !c.IsClosed() {
		t.Error("not closed")
	}
}
