package pika

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// Heartbeats as the broker sees them: each test connects through a
// recording faultproxy and looks at the frames on the wire.

// hbTuneOk returns the client's connection.tune-ok recorded by p.
func hbTuneOk(t *testing.T, p *faultproxy.Proxy) *wire.ConnectionTuneOk {
	t.Helper()
	r, err := p.WaitFrame(fxWait, func(r faultproxy.Recorded) bool {
		return r.Dir == faultproxy.ClientToServer && r.IsMethod(wire.MethodConnectionTuneOk)
	})
	if err != nil {
		t.Fatalf("connection.tune-ok: %v", err)
	}
	m, err := r.Method()
	if err != nil {
		t.Fatal(err)
	}
	return m.(*wire.ConnectionTuneOk)
}

func isHeartbeat(dir faultproxy.Direction) func(faultproxy.Recorded) bool {
	return func(r faultproxy.Recorded) bool { return r.Dir == dir && r.Frame.Type == wire.FrameHeartbeat }
}

func TestHeartbeatOnTheWire(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())
	cfg.Heartbeat = 2 * time.Second
	c := fxDial(t, cfg)

	if tune := hbTuneOk(t, p); tune.Heartbeat != 2 {
		t.Fatalf("tune-ok heartbeat = %d, want 2 (the smaller of the client's 2 s and the broker's proposal)", tune.Heartbeat)
	}
	if got := c.Tuning().Heartbeat; got != 2*time.Second {
		t.Fatalf("Tuning().Heartbeat = %v, want 2s", got)
	}
	// The idle connection heartbeats both ways: the client every second
	// (H/2), the broker about as often.
	for _, dir := range []faultproxy.Direction{faultproxy.ClientToServer, faultproxy.ServerToClient} {
		if _, err := p.WaitFrame(fxWait, isHeartbeat(dir)); err != nil {
			t.Fatalf("heartbeat %s: %v", dir, err)
		}
	}
	if c.IsClosed() {
		t.Fatalf("connection closed: %v", c.Err())
	}
	for _, r := range p.Frames() {
		if r.Frame.Type == wire.FrameHeartbeat && r.Frame.Channel != 0 {
			t.Fatalf("heartbeat on channel %d: %v", r.Frame.Channel, r)
		}
	}
}

// TestHeartbeatDefault checks the default against RabbitMQ, which proposes
// 60 s: the client answers DefaultHeartbeat (10 s) in tune-ok, and the
// connection uses it.
func TestHeartbeatDefault(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())
	cfg.Heartbeat = 0
	c := fxDial(t, cfg)
	if tune := hbTuneOk(t, p); tune.Heartbeat != 10 {
		t.Fatalf("tune-ok heartbeat = %d, want 10 (DefaultHeartbeat, below RabbitMQ's 60)", tune.Heartbeat)
	}
	if got := c.Tuning().Heartbeat; got != DefaultHeartbeat {
		t.Fatalf("Tuning().Heartbeat = %v, want %v", got, DefaultHeartbeat)
	}
}

func TestHeartbeatDisabled(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())
	cfg.Heartbeat = NoHeartbeat
	c := fxDial(t, cfg)

	if tune := hbTuneOk(t, p); tune.Heartbeat != 0 {
		t.Fatalf("tune-ok heartbeat = %d, want 0 with NoHeartbeat", tune.Heartbeat)
	}
	if got := c.Tuning().Heartbeat; got != 0 {
		t.Fatalf("Tuning().Heartbeat = %v, want 0", got)
	}
	// Nothing for three seconds, in either direction.
	if r, err := p.WaitFrame(3*time.Second, func(r faultproxy.Recorded) bool {
		return r.Frame.Type == wire.FrameHeartbeat
	}); !errors.Is(err, faultproxy.ErrNoFrame) {
		t.Fatalf("heartbeat frame with heartbeats disabled: %v", r)
	}
	if c.IsClosed() {
		t.Fatalf("connection closed: %v", c.Err())
	}
}

// TestHeartbeatTimeoutOnStalledPath stalls the network path under a
// connection with a 1 s heartbeat: the client hears nothing for two
// intervals and closes the connection with ErrHeartbeatTimeout (at 2 to
// 2.5 s; the bound checked is a generous one).
func TestHeartbeatTimeoutOnStalledPath(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())
	cfg.Heartbeat = time.Second
	c := fxDial(t, cfg)
	closed := make(chan error, 1)
	c.OnClose(func(err error) { closed <- err })
	if tune := hbTuneOk(t, p); tune.Heartbeat != 1 {
		t.Fatalf("tune-ok heartbeat = %d, want 1", tune.Heartbeat)
	}

	p.Stall()
	start := time.Now()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection is still open 10 s into a stall with a 1 s heartbeat")
	}
	t.Logf("closed %v into the stall", time.Since(start).Round(time.Millisecond))
	if err := c.Err(); !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("Conn.Err() = %v, want ErrHeartbeatTimeout", err)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, ErrHeartbeatTimeout) {
			t.Fatalf("OnClose got %v", err)
		}
	case <-time.After(fxWait):
		t.Fatal("OnClose not called")
	}
	if _, err := c.Channel(t.Context()); !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("Channel after the timeout: %v", err)
	}
}

// TestHeartbeatSurvivesPausedReader lets a consumer without a prefetch
// limit fill its buffer and not read for several heartbeat intervals: the
// connection stops reading its socket, yet the broker is alive, so the
// connection must not end with a heartbeat timeout, and every message
// arrives once the application reads again.
func TestHeartbeatSurvivesPausedReader(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())
	cfg.Heartbeat = time.Second
	c := fxDial(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	ch := openChannel(t, c)
	q := fxQueue(t, ch)
	// The publishing channel is opened first: the reader pauses for the
	// full buffer only while nothing is awaited on the connection (an
	// AutoAck consumer of an auto-delete queue discards what arrives past
	// twice its buffer meanwhile).
	pub := openChannel(t, c)
	cons, err := ch.Consume(ctx, q, ConsumeOptions{AutoAck: true, BufferSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		if err := pub.Publish(ctx, "", q, Message{Body: make([]byte, 10000)}); err != nil {
			t.Fatal(err)
		}
	}
	// Four heartbeat intervals without reading.
	time.Sleep(4 * time.Second)
	if c.IsClosed() {
		t.Fatalf("connection closed while the application did not read: %v", c.Err())
	}
	for i := 0; i < n; i++ {
		if _, err := cons.Next(ctx); err != nil {
			t.Fatalf("delivery %d: %v (stats %+v)", i+1, err, cons.Stats())
		}
	}
	if c.IsClosed() {
		t.Fatalf("connection closed: %v", c.Err())
	}
	if s := cons.Stats(); s.Dropped != 0 {
		t.Fatalf("dropped deliveries: %+v", s)
	}
}
