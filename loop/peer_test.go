package loop

import (
	"context"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// goTB is the testing.TB of a peer goroutine: a failed assertion ends the
// goroutine (FailNow is for the test's own goroutine only) and closes the
// peer's side, which fails the client's connection.
type goTB struct {
	*testing.T
	nc net.Conn
}

func (g goTB) Fatalf(format string, args ...any) {
	g.T.Helper()
	g.T.Errorf(format, args...)
	g.nc.Close()
	runtime.Goexit()
}

func (g goTB) Fatal(args ...any) {
	g.T.Helper()
	g.T.Error(args...)
	g.nc.Close()
	runtime.Goexit()
}

func (g goTB) FailNow() { g.nc.Close(); g.T.Fail(); runtime.Goexit() }

// peer plays the broker on the other end of a connection, in a goroutine
// of its own, frame by frame.
type peer struct {
	t  *testing.T
	nc net.Conn
	c  *scripted.Client
}

// expect reads until a whole frame arrived and returns it.
func (p *peer) next() scripted.Sent {
	p.t.Helper()
	buf := make([]byte, 4096)
	for {
		if s, ok := p.c.TryNext(); ok {
			return s
		}
		p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := p.nc.Read(buf)
		p.c.Write(buf[:n])
		if err != nil && n == 0 {
			if s, ok := p.c.TryNext(); ok {
				return s
			}
			goTB{p.t, p.nc}.Fatalf("peer: reading the client: %v", err)
		}
	}
}

// method reads the next frame, which must be a method on channel ch.
func (p *peer) method(ch uint16) wire.Method {
	p.t.Helper()
	s := p.next()
	if s.Method == nil || s.Channel != ch {
		goTB{p.t, p.nc}.Fatalf("peer: want a method on channel %d, got %v", ch, s)
	}
	return s.Method
}

// expect reads a method of want's type on channel ch and returns it.
func expect[M wire.Method](p *peer, ch uint16) M {
	p.t.Helper()
	m := p.method(ch)
	got, ok := m.(M)
	if !ok {
		var zero M
		goTB{p.t, p.nc}.Fatalf("peer: want %T on channel %d, got %s %+v", zero, ch, m.ID(), m)
	}
	return got
}

// send writes frames to the client.
func (p *peer) send(frames ...[]byte) {
	p.t.Helper()
	p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.nc.Write(scripted.Concat(frames...)); err != nil {
		goTB{p.t, p.nc}.Fatalf("peer: writing to the client: %v", err)
	}
}

// handshake plays the broker's side of the handshake, offering heartbeat
// seconds, and returns the client's start-ok.
func (p *peer) handshake(heartbeat uint16) *wire.ConnectionStartOk {
	p.t.Helper()
	hdr := make([]byte, 8)
	for got := 0; got < 8; {
		p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := p.nc.Read(hdr[got:])
		if err != nil {
			goTB{p.t, p.nc}.Fatalf("peer: reading the protocol header: %v", err)
		}
		got += n
	}
	if string(hdr) != wire.ProtocolHeader {
		goTB{p.t, p.nc}.Fatalf("peer: protocol header %q", hdr)
	}
	p.send(scripted.Method(0, &wire.ConnectionStart{
		VersionMajor: 0, VersionMinor: 9, Mechanisms: "PLAIN AMQPLAIN", Locales: "en_US",
		ServerProperties: wire.Table{"product": "scripted", "capabilities": wire.Table{"publisher_confirms": true}},
	}))
	startOk := expect[*wire.ConnectionStartOk](p, 0)
	p.send(scripted.Method(0, &wire.ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: heartbeat}))
	expect[*wire.ConnectionTuneOk](p, 0)
	expect[*wire.ConnectionOpen](p, 0)
	p.send(scripted.Method(0, &wire.ConnectionOpenOk{}))
	return startOk
}

// openChannel answers the channel.open of channel ch.
func (p *peer) openChannel(ch uint16) {
	p.t.Helper()
	expect[*wire.ChannelOpen](p, ch)
	p.send(scripted.Method(ch, &wire.ChannelOpenOk{}))
}

// confirmChannel plays the handshake (no heartbeats), the opening of
// channel 1 and its confirm.select.
func (p *peer) confirmChannel() {
	p.handshake(0)
	p.openChannel(1)
	answer[*wire.ConfirmSelect](p, 1, &wire.ConfirmSelectOk{})
}

// closeConn answers the client's connection.close.
func (p *peer) closeConn() {
	p.t.Helper()
	expect[*wire.ConnectionClose](p, 0)
	p.send(scripted.Method(0, &wire.ConnectionCloseOk{}))
}

// transports are the two I/O paths a scripted test runs over.
var transports = []struct {
	name string
	pair func(t *testing.T) (client, server net.Conn)
}{
	{"fd", socketPair},
	{"goroutines", func(t *testing.T) (net.Conn, net.Conn) { c, s := net.Pipe(); return c, s }},
}

// scriptedConfig returns a Config whose dial hands over client and runs
// script as the broker on server, in a goroutine. wait waits for the
// script's end.
func scriptedConfig(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn), script func(p *peer)) (cfg pika.Config, wait func()) {
	client, server := pair(t)
	done := make(chan struct{})
	p := &peer{t: t, nc: server}
	p.c = scripted.NewClient(goTB{t, server})
	go func() {
		defer close(done)
		defer server.Close()
		script(p)
	}()
	cfg = pika.Config{
		Addr:      "scripted:5672",
		Heartbeat: pika.NoHeartbeat,
		// The scripted conversations end with the connection; recovery
		// tests turn it on.
		DisableRecovery: true,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return client, nil
		},
	}
	return cfg, func() {
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("the scripted peer did not finish")
		}
	}
}

// both runs test over each transport, with leak checks.
func both(t *testing.T, test func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn))) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			before := snapshot(t)
			test(t, tr.pair)
			expectNoLeak(t, before)
		})
	}
}

// nextOrEOF is next that returns nil when the client hung up.
func (p *peer) nextOrEOF() *scripted.Sent {
	p.t.Helper()
	buf := make([]byte, 4096)
	for {
		if s, ok := p.c.TryNext(); ok {
			return &s
		}
		p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := p.nc.Read(buf)
		p.c.Write(buf[:n])
		if err != nil && n == 0 {
			return nil
		}
	}
}

// expectCalls compares the callbacks that ran with those expected.
func expectCalls(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("callbacks ran\n\t%q\nwant\n\t%q", got, want)
	}
}
