package pika

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// Fault tests: real faults between the client and the broker. Tests that
// disturb the broker for everyone (rabbitmqctl close_connection, memory
// alarms) take the exclusive lock with testenv.Disruptive and put the
// broker back in t.Cleanup; tests whose fault stays inside a proxy of
// their own (faultproxy) only need testenv.Broker. Every wait has a
// generous bound; no test asserts how fast something happens, only that it
// happens before the bound.

// fxWait bounds every wait for something that should happen soon.
const fxWait = 30 * time.Second

// fxConfig returns the configuration of a test connection to url with
// recovery disabled (a fault then closes the Conn for good) and a
// connection name unique to the test; addr, when set, replaces the
// broker's address (a proxy's).
func fxConfig(t *testing.T, url, addr string) Config {
	t.Helper()
	cfg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	if addr != "" {
		cfg.Addr = addr
	}
	cfg.ConnectionName = testenv.Name(t, "conn")
	cfg.DisableRecovery = true
	return cfg
}

// fxBrokerAddr returns the host:port of the test broker, for a proxy's
// target.
func fxBrokerAddr(t *testing.T, url string) string {
	t.Helper()
	cfg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Addr
}

// fxDial connects with cfg and closes the connection in t's cleanup.
func fxDial(t *testing.T, cfg Config) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), fxWait)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// fxQueue declares a server-named exclusive queue on ch.
func fxQueue(t *testing.T, ch *Channel) string {
	t.Helper()
	q, err := ch.QueueDeclare(context.Background(), "", QueueDeclareOptions{Exclusive: true, AutoDelete: true})
	if err != nil {
		t.Fatalf("QueueDeclare: %v", err)
	}
	return q.Name
}

// fxWaitDone waits for c to close for good.
func fxWaitDone(t *testing.T, c *Conn, what string) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(fxWait):
		t.Fatalf("%s: the connection is still open after %v", what, fxWait)
	}
}

// fxGoroutines waits (bounded) until no more goroutines run than before,
// and reports the library's goroutines still running otherwise.
func fxGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(fxWait)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			var ours []string
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "pika-go/pika") && !strings.Contains(g, "fxGoroutines") && !strings.Contains(g, "testing.tRunner") {
					ours = append(ours, g)
				}
			}
			t.Errorf("%d goroutines, %d before the test; the library's:\n%s", runtime.NumGoroutine(), before, strings.Join(ours, "\n\n"))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fxForceClose closes the broker's connection named name with rabbitmqctl
// close_connection (the client then gets connection.close with 320
// CONNECTION_FORCED).
func fxForceClose(t *testing.T, name string) {
	t.Helper()
	testenv.CloseConnection(t, name, "pika fault test: forced close", fxWait)
}

// fxErrs collects the final error of each concurrent caller, by kind, and
// which callers are still running.
type fxErrs struct {
	mu      sync.Mutex
	errs    map[string][]error
	running map[string]int
}

func (e *fxErrs) start(kind string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running == nil {
		e.running = make(map[string]int)
	}
	e.running[kind]++
}

func (e *fxErrs) add(kind string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.errs == nil {
		e.errs = make(map[string][]error)
	}
	e.errs[kind] = append(e.errs[kind], err)
	if e.running[kind]--; e.running[kind] == 0 {
		delete(e.running, kind)
	}
}

func (e *fxErrs) stillRunning() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.running)
}

// TestFaultForcedCloseFailsEveryCaller closes a busy connection from the
// broker (rabbitmqctl close_connection) while many goroutines have calls
// in flight on it: RPCs on shared and private channels, channel opens,
// publishes waiting for confirmations, WaitConfirms, a consumer's Next and
// a ConsumeFunc handler. Every caller must get the broker's close cause
// (ErrConnectionForced; ErrOutcomeUnknown for confirmations), nothing may
// hang, and no goroutine of the library may be left.
func TestFaultForcedCloseFailsEveryCaller(t *testing.T) {
	url := testenv.Disruptive(t)
	before := runtime.NumGoroutine()
	cfg := fxConfig(t, url, "")
	c, err := DialConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	c.OnClose(func(err error) { closed <- err })
	ctx, cancel := context.WithTimeout(context.Background(), 2*fxWait)
	defer cancel()

	shared := openChannel(t, c)
	q := fxQueue(t, shared)
	pub := openChannel(t, c)
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	consCh := openChannel(t, c)
	idle := fxQueue(t, consCh)
	cons, err := consCh.Consume(ctx, idle, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{}, 1)
	fnCons, err := consCh.ConsumeFunc(ctx, q, ConsumeOptions{AutoAck: true}, func(context.Context, *Delivery) {
		select {
		case handled <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	var (
		wg     sync.WaitGroup
		errs   fxErrs
		ops    atomic.Int64
		ready  sync.WaitGroup // each looper has done one operation
		confMu sync.Mutex
		confs  []*Confirmation
	)
	// looper runs op until it fails, pausing a little between calls to
	// leave CPU to rabbitmqctl on a small machine.
	looper := func(kind string, op func() error) {
		wg.Add(1)
		ready.Add(1)
		errs.start(kind)
		go func() {
			defer wg.Done()
			first := true
			for {
				err := op()
				if first {
					ready.Done()
					first = false
				}
				if err != nil {
					errs.add(kind, err)
					return
				}
				ops.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	for i := 0; i < 4; i++ {
		looper("rpc on a shared channel", func() error {
			_, err := shared.QueueDeclarePassive(ctx, q)
			return err
		})
		own := openChannel(t, c)
		looper("rpc on its own channel", func() error {
			_, err := own.QueueDeclarePassive(ctx, q)
			return err
		})
		looper("publish", func() error {
			// A batch, then wait for the last one's confirmation (nil, or
			// the outcome when the close comes first).
			var f *Confirmation
			for j := 0; j < 10; j++ {
				var err error
				if f, err = pub.PublishWithConfirm(ctx, "", q, Message{Body: []byte("m")}); err != nil {
					return err
				}
				confMu.Lock()
				confs = append(confs, f)
				confMu.Unlock()
			}
			return f.Wait(ctx)
		})
	}
	looper("channel open", func() error {
		ch, err := c.Channel(ctx)
		if err != nil {
			return err
		}
		return ch.Close(ctx)
	})
	looper("wait confirms", func() error { return pub.WaitConfirms(ctx) })
	for i := 0; i < 2; i++ {
		wg.Add(1)
		errs.start("consumer next")
		go func() {
			defer wg.Done()
			_, err := cons.Next(ctx) // nothing is ever published to idle
			errs.add("consumer next", err)
		}()
	}
	readyDone := make(chan struct{})
	go func() { ready.Wait(); close(readyDone) }()
	select {
	case <-readyDone:
	case <-time.After(fxWait):
		t.Fatal("the callers did not get going")
	}
	select {
	case <-handled:
	case <-time.After(fxWait):
		t.Fatal("the ConsumeFunc handler got no delivery")
	}

	fxForceClose(t, cfg.ConnectionName)

	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	hung := false
	select {
	case <-allDone:
	case <-time.After(15 * time.Second):
		// Report the callers that hang, then release them through their
		// ctx to check the rest.
		hung = true
		t.Errorf("callers still blocked 15s after the forced close: %v", errs.stillRunning())
		cancel()
		select {
		case <-allDone:
		case <-time.After(fxWait):
			buf := make([]byte, 1<<20)
			t.Fatalf("callers blocked even after their ctx was cancelled:\n%s", buf[:runtime.Stack(buf, true)])
		}
	}
	fxWaitDone(t, c, "after close_connection")
	ctx, cancel = context.WithTimeout(context.Background(), fxWait)
	defer cancel()

	var e *Error
	if err := c.Err(); !errors.Is(err, ErrConnectionForced) || !errors.As(err, &e) || !e.Conn || !e.Server {
		t.Fatalf("Conn.Err() = %#v; want the broker's connection.close with 320 CONNECTION_FORCED", err)
	}
	if !strings.Contains(e.Text, "pika fault test: forced close") {
		t.Errorf("close text %q does not carry the reason given to rabbitmqctl", e.Text)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, ErrConnectionForced) {
			t.Errorf("OnClose got %v", err)
		}
	case <-time.After(fxWait):
		t.Error("OnClose was not called")
	}

	total := 0
	for kind, list := range errs.errs {
		for _, err := range list {
			total++
			if hung && errors.Is(err, context.Canceled) {
				continue // reported above
			}
			if !errors.Is(err, ErrConnectionForced) {
				t.Errorf("%s: %v; want the connection's close cause (CONNECTION_FORCED)", kind, err)
			}
		}
	}
	if want := 4*3 + 1 + 1 + 2; total != want {
		t.Errorf("%d callers reported, want %d: %v", total, want, errs.errs)
	}
	var acked, unknown int
	for _, f := range confs {
		select {
		case <-f.Done():
		case <-time.After(fxWait):
			t.Fatalf("confirmation %d still unresolved after the close", f.Tag())
		}
		switch err := f.Err(); {
		case err == nil:
			acked++
		case errors.Is(err, ErrOutcomeUnknown) && errors.Is(err, ErrConnectionForced):
			unknown++
		default:
			t.Errorf("confirmation %d: %v; want nil or ErrOutcomeUnknown caused by CONNECTION_FORCED", f.Tag(), err)
		}
	}
	select {
	case <-fnCons.Done():
	case <-time.After(fxWait):
		t.Fatal("the ConsumeFunc consumer did not end")
	}
	if err := fnCons.Err(); !errors.Is(err, ErrConnectionForced) {
		t.Errorf("ConsumeFunc consumer ended with %v", err)
	}
	// Calls made after the close fail at once with the same cause.
	if err := shared.Publish(ctx, "", q, Message{}); !errors.Is(err, ErrConnectionForced) {
		t.Errorf("Publish after the close: %v", err)
	}
	if _, err := c.Channel(ctx); !errors.Is(err, ErrConnectionForced) {
		t.Errorf("Channel after the close: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("Close after the broker closed the connection: %v", err)
	}
	t.Logf("%d operations before the close; confirmations: %d acked, %d outcome unknown", ops.Load(), acked, unknown)
	fxGoroutines(t, before)
}

// TestFaultCutMidFrame cuts the connection in the middle of a published
// message's body frame, with an RPC and a consumer waiting: the client sees
// a read error, every waiter fails with it, the message's confirmation is
// ErrOutcomeUnknown, and nothing is left running.
func TestFaultCutMidFrame(t *testing.T) {
	url := testenv.Broker(t)
	before := runtime.NumGoroutine()
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	p.Record(false)
	c, err := DialConfig(context.Background(), fxConfig(t, url, p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	ch := openChannel(t, c)
	q := fxQueue(t, ch)
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	other := openChannel(t, c)
	cons, err := other.Consume(ctx, fxQueue(t, other), ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// Hold everything the client sends; queue a message whose body fits
	// the socket buffers, then an RPC; let 1000 bytes through (the cut
	// falls in the body frame) and cut. The RPC's request, behind the
	// message, never reaches the broker, so nothing can answer it.
	p.Stall()
	f, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: make([]byte, 20000)})
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 2)
	go func() {
		_, err := other.QueueDeclarePassive(ctx, q)
		results <- err
	}()
	go func() {
		_, err := cons.Next(ctx)
		results <- err
	}()
	time.Sleep(50 * time.Millisecond) // let both wait
	p.CutAfter(1000)
	p.Resume()

	start := time.Now()
	fxWaitDone(t, c, "after the cut")
	t.Logf("closed %v after the cut", time.Since(start))
	cause := c.Err()
	if !strings.HasPrefix(fmt.Sprint(cause), "pika: read from ") ||
		!(errors.Is(cause, syscall.ECONNRESET) || errors.Is(cause, io.EOF)) {
		t.Fatalf("Conn.Err() = %v; want a read error (connection reset)", cause)
	}
	var ne net.Error
	if !errors.As(cause, &ne) && !errors.Is(cause, io.EOF) {
		t.Errorf("Conn.Err() %v does not wrap the net.Error", cause)
	}
	if err := f.Wait(ctx); !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, cause) {
		t.Errorf("confirmation of the cut message: %v; want ErrOutcomeUnknown caused by %v", err, cause)
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-results:
			if !errors.Is(err, cause) {
				t.Errorf("waiter got %v, want the close cause %v", err, cause)
			}
		case <-time.After(fxWait):
			t.Fatal("a waiter is still blocked after the cut")
		}
	}
	if err := ch.Publish(ctx, "", q, Message{}); !errors.Is(err, cause) {
		t.Errorf("Publish after the cut: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("Close after the cut: %v", err)
	}
	p.Close()
	fxGoroutines(t, before)
}

// TestFaultCutWakesEveryNext cuts a connection while several goroutines
// wait in Next on one consumer: every one of them must return the close
// cause.
func TestFaultCutWakesEveryNext(t *testing.T) {
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	c := fxDial(t, fxConfig(t, url, p.Addr()))
	ch := openChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	cons, err := ch.Consume(ctx, fxQueue(t, ch), ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 3
	results := make(chan error, waiters)
	// The waiters' own ctx ends only with the test, to release them if
	// they hang.
	waitCtx, release := context.WithCancel(context.Background())
	defer release()
	for i := 0; i < waiters; i++ {
		go func() {
			_, err := cons.Next(waitCtx)
			results <- err
		}()
	}
	time.Sleep(100 * time.Millisecond) // let them all wait
	p.Cut()
	fxWaitDone(t, c, "after the cut")
	for i := 0; i < waiters; i++ {
		select {
		case err := <-results:
			if err == nil || !errors.Is(err, c.Err()) {
				t.Errorf("Next returned %v, want the close cause %v", err, c.Err())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d goroutines in Consumer.Next still blocked 10s after the connection closed", waiters-i, waiters)
		}
	}
}

// TestFaultCorruptStream injects bytes into live, idle connections (so
// they land between frames): a broken or unexpected frame from the broker
// makes the client close the connection with the matching reply code,
// telling the broker with connection.close, and garbage from the client
// makes the broker close it.
func TestFaultCorruptStream(t *testing.T) {
	url := testenv.Broker(t)
	method := func(ch uint16, m wire.Method) []byte {
		b, err := wire.AppendMethodFrame(nil, ch, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	badEnd := wire.AppendHeartbeatFrame(nil)
	badEnd[len(badEnd)-1] = 0
	tests := []struct {
		name   string
		dir    faultproxy.Direction
		data   []byte
		code   wire.ReplyCode
		detail string // in the error text
	}{
		{"unknown frame type", faultproxy.ServerToClient, []byte{9, 0, 0, 0, 0, 0, 0, wire.FrameEnd}, wire.ReplyFrameError, "unknown frame type"},
		{"frame larger than frame_max", faultproxy.ServerToClient, []byte{byte(wire.FrameMethod), 0, 0, 0x7f, 0xff, 0xff, 0xff}, wire.ReplyFrameError, "too large"},
		{"bad frame end", faultproxy.ServerToClient, badEnd, wire.ReplyFrameError, "frame-end"},
		{"unknown method", faultproxy.ServerToClient, []byte{byte(wire.FrameMethod), 0, 0, 0, 0, 0, 4, 0, 99, 0, 99, wire.FrameEnd}, wire.ReplyCommandInvalid, "method"},
		{"body without a header", faultproxy.ServerToClient, append([]byte{byte(wire.FrameBody), 0, 1, 0, 0, 0, 1, 'x'}, wire.FrameEnd), wire.ReplyUnexpectedFrame, "header"},
		{"delivery on a channel never opened", faultproxy.ServerToClient, method(999, &wire.BasicDeliver{ConsumerTag: "x", DeliveryTag: 1}), wire.ReplyChannelError, "999"},
		{"client-only method from the server", faultproxy.ServerToClient, method(0, &wire.ConnectionOpen{}), wire.ReplyCommandInvalid, "connection.open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := faultproxy.New(t, fxBrokerAddr(t, url))
			cfg := fxConfig(t, url, p.Addr())
			cfg.Heartbeat = NoHeartbeat
			c := fxDial(t, cfg)
			ch := openChannel(t, c)
			fxQueue(t, ch) // a round trip: the connection is idle after it
			if n := p.Inject(tc.dir, tc.data); n != 1 {
				t.Fatalf("Inject reached %d connections", n)
			}
			fxWaitDone(t, c, "after the corrupt frame")
			err := c.Err()
			t.Logf("Conn.Err() = %v", err)
			var e *Error
			if !errors.As(err, &e) || !e.Conn || e.Server {
				t.Fatalf("Conn.Err() = %#v; want a connection-level *Error raised by the client", err)
			}
			if e.Code != tc.code {
				t.Errorf("reply code %v, want %v", e.Code, tc.code)
			}
			if !strings.Contains(e.Error(), tc.detail) {
				t.Errorf("error %q does not say %q", e, tc.detail)
			}
			// The client told the broker why.
			r, werr := p.WaitFrame(fxWait, func(r faultproxy.Recorded) bool {
				return r.Dir == faultproxy.ClientToServer && r.IsMethod(wire.MethodConnectionClose)
			})
			if werr != nil {
				t.Fatalf("no connection.close sent to the broker: %v", werr)
			}
			m, _ := r.Method()
			if cl := m.(*wire.ConnectionClose); cl.ReplyCode != uint16(e.Code) {
				t.Errorf("connection.close sent with code %d, the Conn reports %v", cl.ReplyCode, e.Code)
			}
			if err := ch.Publish(context.Background(), "", "x", Message{}); !errors.Is(err, ErrClosed) {
				t.Errorf("Publish after the protocol error: %v", err)
			}
		})
	}

	t.Run("garbage to the broker", func(t *testing.T) {
		p := faultproxy.New(t, fxBrokerAddr(t, url))
		cfg := fxConfig(t, url, p.Addr())
		cfg.Heartbeat = NoHeartbeat
		c := fxDial(t, cfg)
		fxQueue(t, openChannel(t, c))
		p.Inject(faultproxy.ClientToServer, []byte{9, 0, 0, 0, 0, 0, 0, wire.FrameEnd})
		fxWaitDone(t, c, "after sending garbage")
		err := c.Err()
		t.Logf("Conn.Err() = %v", err)
		var e *Error
		if errors.As(err, &e) {
			if !e.Server || !e.Conn || e.Code != wire.ReplyFrameError {
				t.Errorf("Conn.Err() = %#v; want the broker's connection.close with 501 FRAME_ERROR", err)
			}
		} else if !strings.HasPrefix(fmt.Sprint(err), "pika: read from ") {
			t.Errorf("Conn.Err() = %v; want the broker's close or a read error", err)
		}
	})
}

// TestFaultCutDuringHandshake cuts new connections after every few bytes
// of the client's side of the handshake: Dial must fail with an error, not
// hang, and leave nothing running.
func TestFaultCutDuringHandshake(t *testing.T) {
	url := testenv.Broker(t)
	before := runtime.NumGoroutine()
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())

	// A clean handshake first, to learn how many bytes the client sends.
	c, err := DialConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	total := len(wire.ProtocolHeader)
	for _, r := range p.Frames() {
		if r.Dir == faultproxy.ClientToServer {
			total += len(r.Frame.Payload) + 8
		}
	}
	c.Close(context.Background())
	cuts := []int{1, 7, 8, 9, total - 1}
	for n := 16; n < total; n += total / 10 {
		cuts = append(cuts, n)
	}
	for _, n := range cuts {
		p.Stall()
		done := make(chan error, 1)
		accepted := p.Accepted()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), fxWait)
			defer cancel()
			c, err := DialConfig(ctx, cfg)
			if c != nil {
				c.Close(ctx)
			}
			done <- err
		}()
		deadline := time.Now().Add(fxWait)
		for p.Accepted() == accepted {
			if time.Now().After(deadline) {
				t.Fatal("Dial did not reach the proxy")
			}
			time.Sleep(time.Millisecond)
		}
		p.CutAfter(n)
		p.Resume()
		select {
		case err := <-done:
			switch {
			case err == nil:
				t.Errorf("cut after %d of %d handshake bytes: Dial succeeded", n, total)
			case !strings.HasPrefix(err.Error(), "pika: "):
				t.Errorf("cut after %d of %d handshake bytes: %v", n, total, err)
			case isTerminal(err):
				// Recovery would give up on a network failure.
				t.Errorf("cut after %d of %d handshake bytes: %v is reported as a refusal (authentication or vhost)", n, total, err)
			}
		case <-time.After(fxWait):
			t.Fatalf("cut after %d of %d handshake bytes: Dial hangs", n, total)
		}
	}
	p.Close()
	fxGoroutines(t, before)
}

// TestFaultStallTimesOutCallsOnly stalls the network path (heartbeats off)
// under a call with a short ctx: the call returns DeadlineExceeded, and
// after the path comes back the late reply is absorbed and the connection
// works on.
func TestFaultStallTimesOutCallsOnly(t *testing.T) {
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())
	cfg.Heartbeat = NoHeartbeat
	c := fxDial(t, cfg)
	ch := openChannel(t, c)
	q := fxQueue(t, ch)

	p.Stall()
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := ch.QueueDeclarePassive(short, q)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call over a stalled path: %v; want context.DeadlineExceeded", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	if err := ch.Publish(ctx, "", q, Message{Body: []byte("held")}); err != nil {
		t.Fatalf("Publish over a stalled path (it only queues): %v", err)
	}
	p.Resume()
	if got, err := ch.QueueDeclarePassive(ctx, q); err != nil || got.Name != q {
		t.Fatalf("call after Resume: %+v, %v", got, err)
	}
	for {
		d, ok, err := ch.Get(ctx, q, GetOptions{AutoAck: true})
		if err != nil {
			t.Fatalf("Get after Resume: %v", err)
		}
		if ok {
			if string(d.Body) != "held" {
				t.Fatalf("got %q, want the message published while stalled", d.Body)
			}
			break
		}
		time.Sleep(20 * time.Millisecond) // the broker routes asynchronously
	}
	if c.IsClosed() {
		t.Fatalf("connection closed: %v", c.Err())
	}
}

// TestFaultCloseOnStalledPath closes a connection whose network path is
// stalled: connection.close can get no answer, so Close returns the end of
// its ctx, and the connection is closed with nothing left running.
func TestFaultCloseOnStalledPath(t *testing.T) {
	url := testenv.Broker(t)
	before := runtime.NumGoroutine()
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	p.Record(false)
	cfg := fxConfig(t, url, p.Addr())
	cfg.Heartbeat = NoHeartbeat
	c, err := DialConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := openChannel(t, c)
	q := fxQueue(t, ch)
	p.Stall()
	// Work queued behind the stall.
	if err := ch.Publish(context.Background(), "", q, Message{Body: make([]byte, 1000)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- c.Close(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close over a stalled path: %v; want context.DeadlineExceeded", err)
		}
	case <-time.After(fxWait):
		t.Fatal("Close over a stalled path hangs")
	}
	t.Logf("Close returned after %v", time.Since(start).Round(time.Millisecond))
	if !c.IsClosed() {
		t.Fatal("connection not closed")
	}
	if err := ch.Publish(context.Background(), "", q, Message{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v; want ErrClosed", err)
	}
	p.Close()
	fxGoroutines(t, before)
}

// TestFaultDialRefusedOrUnanswered dials through a proxy that drops
// connections at once, or accepts them and never answers: Dial fails with
// a clear error and does not hang. No broker is involved.
func TestFaultDialRefusedOrUnanswered(t *testing.T) {
	t.Parallel()
	certs := faultproxy.GenerateCerts(t)
	tests := []struct {
		name  string
		setup func(p *faultproxy.Proxy, cfg *Config)
		check func(t *testing.T, err error)
		tls   bool
	}{
		{
			name:  "refused",
			setup: func(p *faultproxy.Proxy, cfg *Config) { p.Refuse(true) },
			check: func(t *testing.T, err error) {
				if !strings.HasPrefix(err.Error(), "pika: ") {
					t.Errorf("error %q does not say it is pika's", err)
				}
			},
		},
		{
			name: "never answers: handshake timeout",
			setup: func(p *faultproxy.Proxy, cfg *Config) {
				p.AcceptButNeverAnswer(true)
				cfg.HandshakeTimeout = time.Second
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrHandshakeTimeout) {
					t.Errorf("error %v; want ErrHandshakeTimeout", err)
				}
			},
		},
		{
			name:  "never answers: dial ctx",
			setup: func(p *faultproxy.Proxy, cfg *Config) { p.AcceptButNeverAnswer(true) },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error %v; want context.DeadlineExceeded", err)
				}
				if !strings.Contains(err.Error(), "pika: handshake with 127.0.0.1:") {
					t.Errorf("error %q does not name the address (host:port) whose handshake timed out", err)
				}
			},
		},
		{
			name: "never answers the TLS handshake",
			tls:  true,
			setup: func(p *faultproxy.Proxy, cfg *Config) {
				p.AcceptButNeverAnswer(true)
				cfg.DialTimeout = time.Second
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "TLS handshake") {
					t.Errorf("error %v; want a TLS handshake deadline error", err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var p *faultproxy.Proxy
			scheme := "amqp"
			if tc.tls {
				p = faultproxy.NewTLS(t, "127.0.0.1:1", certs.ServerTLS())
				scheme = "amqps"
			} else {
				p = faultproxy.New(t, "127.0.0.1:1")
			}
			cfg, err := ParseURL(scheme + "://" + p.Addr() + "/")
			if err != nil {
				t.Fatal(err)
			}
			cfg.TLS = nil
			if tc.tls {
				cfg.TLS = certs.ClientTLS()
			}
			cfg.DisableRecovery = true
			tc.setup(p, &cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				c, err := DialConfig(ctx, cfg)
				if c != nil {
					c.Close(context.Background())
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Dial succeeded")
				}
				t.Logf("Dial: %v", err)
				tc.check(t, err)
			case <-time.After(fxWait):
				t.Fatal("Dial hangs")
			}
			if p.Accepted() == 0 {
				t.Error("the client never reached the proxy")
			}
		})
	}
}

// fxAlarms returns the broker's current alarms as rabbitmqctl status
// reports them ("[]" when none).
func fxAlarms(t *testing.T) string {
	t.Helper()
	out := testenv.Rabbitmqctl(t, "status", "--formatter", "json")
	var st struct {
		Alarms json.RawMessage `json:"alarms"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("rabbitmqctl status: %v", err)
	}
	return string(st.Alarms)
}

// fxBlockLog records OnBlocked notifications.
type fxBlockLog struct {
	ch chan string // "blocked: reason" or "unblocked"
}

func fxWatchBlocked(c *Conn) *fxBlockLog {
	l := &fxBlockLog{ch: make(chan string, 64)}
	c.OnBlocked(func(blocked bool, reason string) {
		if blocked {
			l.ch <- "blocked: " + reason
		} else {
			l.ch <- "unblocked"
		}
	})
	return l
}

func (l *fxBlockLog) next(t *testing.T, what string) string {
	t.Helper()
	select {
	case s := <-l.ch:
		return s
	case <-time.After(fxWait):
		t.Fatalf("%s: no OnBlocked notification within %v", what, fxWait)
		return ""
	}
}

// fxPublishUntilBlocked publishes on ch until the broker blocks the
// connection (RabbitMQ blocks a connection when it publishes during an
// alarm). Each publish has a short ctx: once blocked, Publish waits.
func fxPublishUntilBlocked(t *testing.T, c *Conn, ch *Channel) {
	t.Helper()
	deadline := time.Now().Add(fxWait)
	for {
		if b, _ := c.IsBlocked(); b {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker did not block the connection within %v of the alarm", fxWait)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := ch.Publish(ctx, "", "pika-fault-test-nowhere", Message{Body: []byte("x")})
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Publish during the alarm: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFaultMemoryAlarm sets a memory alarm (high watermark 0) and checks
// what a blocked connection does: OnBlocked fires with the broker's
// reason, IsBlocked says so, Publish waits (bounded by its ctx), Close
// still closes, Config.BlockedTimeout closes with ErrBlockedTimeout, and
// after the alarm clears OnBlocked fires again and publishing resumes.
func TestFaultMemoryAlarm(t *testing.T) {
	url := testenv.Disruptive(t)
	before := runtime.NumGoroutine()
	orig := testenv.MemoryWatermark(t)
	t.Logf("memory high watermark before the test: %v", orig)
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		testenv.Rabbitmqctl(t, append([]string{"set_vm_memory_high_watermark"}, orig...)...)
		deadline := time.Now().Add(fxWait)
		for a := fxAlarms(t); a != "[]"; a = fxAlarms(t) {
			if time.Now().After(deadline) {
				t.Errorf("the broker still reports alarms %s after restoring the watermark", a)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	c1 := fxDial(t, fxConfig(t, url, ""))
	log1 := fxWatchBlocked(c1)
	ch1 := openChannel(t, c1)
	q := fxQueue(t, ch1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*fxWait)
	defer cancel()
	if err := ch1.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	c2 := fxDial(t, fxConfig(t, url, ""))
	ch2 := openChannel(t, c2)
	cfg3 := fxConfig(t, url, "")
	cfg3.BlockedTimeout = time.Second
	c3 := fxDial(t, cfg3)
	ch3 := openChannel(t, c3)

	// Registered after the connections' cleanups, so that it runs before
	// them: closing a blocked connection waits for its ctx.
	t.Cleanup(restore)
	testenv.Rabbitmqctl(t, "set_vm_memory_high_watermark", "0")

	fxPublishUntilBlocked(t, c1, ch1)
	ev := log1.next(t, "after the alarm")
	if !strings.HasPrefix(ev, "blocked: ") || ev == "blocked: " {
		t.Fatalf("OnBlocked: %q; want blocked with the broker's reason", ev)
	}
	if b, reason := c1.IsBlocked(); !b || "blocked: "+reason != ev {
		t.Fatalf("IsBlocked() = %v, %q after %q", b, reason, ev)
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	err := ch1.Publish(short, "", q, Message{Body: []byte("while blocked")})
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish while blocked: %v; want context.DeadlineExceeded", err)
	}

	// Close works on a blocked connection (the broker reads nothing from
	// it until the alarm clears, so close-ok may never come).
	fxPublishUntilBlocked(t, c2, ch2)
	closeCtx, cancelClose := context.WithTimeout(ctx, 2*time.Second)
	start := time.Now()
	err = c2.Close(closeCtx)
	cancelClose()
	if !c2.IsClosed() {
		t.Fatal("Close left the blocked connection open")
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close of a blocked connection: %v", err)
	}
	t.Logf("Close of a blocked connection returned %v after %v", err, time.Since(start).Round(time.Millisecond))

	// BlockedTimeout closes a connection blocked for too long.
	fxPublishUntilBlocked(t, c3, ch3)
	fxWaitDone(t, c3, "BlockedTimeout")
	if err := c3.Err(); !errors.Is(err, ErrBlockedTimeout) {
		t.Fatalf("connection blocked beyond BlockedTimeout closed with %v; want ErrBlockedTimeout", err)
	}

	restore()
	if ev := log1.next(t, "after restoring the watermark"); ev != "unblocked" {
		t.Fatalf("OnBlocked after the alarm cleared: %q; want unblocked", ev)
	}
	if b, reason := c1.IsBlocked(); b || reason != "" {
		t.Fatalf("IsBlocked() = %v, %q after the alarm cleared", b, reason)
	}
	f, err := ch1.PublishWithConfirm(ctx, "", q, Message{Body: []byte("after")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(ctx); err != nil {
		t.Fatalf("publish after the alarm cleared: %v", err)
	}
	n, err := ch1.QueueDeclarePassive(ctx, q)
	if err != nil || n.Messages < 1 {
		t.Fatalf("queue after the alarm: %+v, %v", n, err)
	}
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c3.Close(ctx)
	fxGoroutines(t, before)
}
