package faultproxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// wait bounds every wait of these tests for something that should happen
// at once; the machine may be loaded, so it is generous.
const wait = 10 * time.Second

// quiet is how long a test watches for something that must not happen.
const quiet = 300 * time.Millisecond

// backend is a local server for the proxy to forward to.
type backend struct {
	ln       net.Listener
	mu       sync.Mutex
	accepted int
	conns    []net.Conn
	wg       sync.WaitGroup
}

// newBackend listens on a loopback port and runs handle for each
// connection; everything is closed in t's cleanup.
func newBackend(t *testing.T, handle func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.accepted++
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.accepted
}

func echo(c net.Conn) { io.Copy(c, c) }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back through an echo.
func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(wait))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read back %d bytes: %v", len(msg), err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo returned other bytes")
	}
}

// expectSilence checks that nothing arrives on c for a while.
func expectSilence(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(quiet))
	defer c.SetReadDeadline(time.Time{})
	var b [64]byte
	n, err := c.Read(b[:])
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: read %q, %v; want nothing", what, b[:n], err)
	}
}

// expectClosed checks that c fails (EOF or reset) soon, and returns the
// bytes read before.
func expectClosed(t *testing.T, c net.Conn, what string) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	got, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: connection still open after %v", what, wait)
	}
	return got
}

// eventually polls cond until it holds or the wait ends.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestForward(t *testing.T) {
	b := newBackend(t, echo)
	p := New(t, b.addr())
	if !strings.HasPrefix(p.Addr(), "127.0.0.1:") || p.Target() != b.addr() {
		t.Fatalf("Addr %q Target %q", p.Addr(), p.Target())
	}
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		c := dial(t, p.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, 200<<10)
			rand.Read(msg)
			roundTrip(t, c, msg)
			c.Close()
		}()
	}
	wg.Wait()
	if p.Accepted() != 3 || b.count() != 3 {
		t.Fatalf("proxy accepted %d, backend %d; want 3 each", p.Accepted(), b.count())
	}
	eventually(t, "connections closed by their clients leave the proxy", func() bool { return p.Live() == 0 })
}

func TestCut(t *testing.T) {
	serverErr := make(chan error, 1)
	b := newBackend(t, func(c net.Conn) {
		_, err := io.Copy(c, c)
		serverErr <- err
	})
	p := New(t, b.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("before"))
	p.Cut()
	expectClosed(t, c, "client after Cut")
	select {
	case err := <-serverErr:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("backend's connection ended with %v; want a reset", err)
		}
	case <-time.After(wait):
		t.Fatal("the backend's connection is still open after Cut")
	}
	if p.Live() != 0 {
		t.Fatalf("Live = %d after Cut", p.Live())
	}
	// The proxy goes on accepting.
	roundTrip(t, dial(t, p.Addr()), []byte("after"))
}

func TestCutAfterMidStream(t *testing.T) {
	got := make(chan []byte, 1)
	b := newBackend(t, func(c net.Conn) {
		data, _ := io.ReadAll(c)
		got <- data
	})
	p := New(t, b.addr())
	c := dial(t, p.Addr())
	if _, err := c.Write([]byte("0123")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "backend connection", func() bool { return b.count() == 1 })
	// Let the first bytes through before arming, so that the limit counts
	// from the call.
	time.Sleep(50 * time.Millisecond)
	p.CutAfter(6)
	msg := bytes.Repeat([]byte("x"), 100)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, "client after CutAfter")
	select {
	case data := <-got:
		if string(data) != "0123xxxxxx" {
			t.Fatalf("backend received %q, want the 4 bytes before CutAfter and 6 after", data)
		}
	case <-time.After(wait):
		t.Fatal("backend connection not cut")
	}
}

func TestCutAfterZeroCutsAtOnce(t *testing.T) {
	b := newBackend(t, echo)
	p := New(t, b.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("x"))
	p.CutAfter(0)
	expectClosed(t, c, "client after CutAfter(0)")
}

func TestCutAfterSparesQuietConnections(t *testing.T) {
	b := newBackend(t, echo)
	p := New(t, b.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("abc"))
	p.CutAfter(10)
	roundTrip(t, c, []byte("12345")) // 5 of 10
	// A connection made after CutAfter is not affected.
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, bytes.Repeat([]byte("y"), 50))
	c.Write([]byte("6789abcdef")) // crosses the limit
	if got := expectClosed(t, c, "client crossing the limit"); len(got) > 5 {
		t.Fatalf("echoed %q after the cut point", got)
	}
	roundTrip(t, c2, []byte("still here"))
}

func TestStallResume(t *testing.T) {
	b := newBackend(t, echo)
	p := New(t, b.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("before"))

	p.Stall()
	p.Stall() // idempotent
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	expectSilence(t, c, "stalled connection")
	// A new connection during the stall is accepted, but nothing flows.
	c2 := dial(t, p.Addr())
	c2.Write([]byte("new"))
	expectSilence(t, c2, "connection made during the stall")

	p.Resume()
	p.Resume() // idempotent
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after Resume: %q, %v; want the held bytes", buf, err)
	}
	c2.SetReadDeadline(time.Now().Add(wait))
	buf = make([]byte, 3)
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "new" {
		t.Fatalf("new connection after Resume: %q, %v", buf, err)
	}
	roundTrip(t, c, []byte("after"))
}

func TestStallHoldsClose(t *testing.T) {
	serverDone := make(chan struct{})
	b := newBackend(t, func(c net.Conn) {
		io.Copy(io.Discard, c)
		close(serverDone)
	})
	p := New(t, b.addr())
	c := dial(t, p.Addr())
	c.Write([]byte("x"))
	eventually(t, "backend connection", func() bool { return b.count() == 1 })
	p.Stall()
	c.Close()
	select {
	case <-serverDone:
		t.Fatal("the client's close passed a stalled proxy")
	case <-time.After(quiet):
	}
	p.Resume()
	select {
	case <-serverDone:
	case <-time.After(wait):
		t.Fatal("the client's close did not pass after Resume")
	}
}

func TestCutWhileStalled(t *testing.T) {
	b := newBackend(t, echo)
	p := New(t, b.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("x"))
	p.Stall()
	c.Write([]byte("held"))
	p.Cut()
	if got := expectClosed(t, c, "stalled client after Cut"); len(got) != 0 {
		t.Fatalf("held bytes %q were forwarded after a Cut", got)
	}
	p.Resume()
}

func TestRefuse(t *testing.T) {
	b := newBackend(t, echo)
	p := New(t, b.addr())
	live := dial(t, p.Addr())
	roundTrip(t, live, []byte("x"))
	p.Refuse(true)
	for i := 0; i < 3; i++ {
		c, err := net.DialTimeout("tcp", p.Addr(), wait)
		if err != nil {
			continue // the reset can beat the end of connect
		}
		c.Write([]byte("hello"))
		expectClosed(t, c, "refused connection")
		c.Close()
	}
	roundTrip(t, live, []byte("live connections go on"))
	if b.count() != 1 {
		t.Fatalf("backend saw %d connections; refused ones must not reach it", b.count())
	}
	p.Refuse(false)
	roundTrip(t, dial(t, p.Addr()), []byte("accepted again"))
}

func TestAcceptButNeverAnswer(t *testing.T) {
	b := newBackend(t, echo)
	p := New(t, b.addr())
	p.AcceptButNeverAnswer(true)
	c := dial(t, p.Addr())
	if _, err := c.Write(bytes.Repeat([]byte("z"), 1<<20)); err != nil {
		t.Fatalf("writes to an unanswered connection must be read: %v", err)
	}
	expectSilence(t, c, "unanswered connection")
	if b.count() != 0 || p.Live() != 1 {
		t.Fatalf("backend connections %d, live %d; want 0 and 1", b.count(), p.Live())
	}
	p.AcceptButNeverAnswer(false)
	roundTrip(t, dial(t, p.Addr()), []byte("answered"))
	p.Cut()
	expectClosed(t, c, "unanswered connection after Cut")
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := New(t, addr)
	// The reset can beat the end of connect.
	if c, err := net.DialTimeout("tcp", p.Addr(), wait); err == nil {
		expectClosed(t, c, "connection to a proxy whose target is down")
		c.Close()
	}
	eventually(t, "dial error recorded", func() bool { return len(p.DialErrors()) == 1 })
}

func TestTLS(t *testing.T) {
	certs := GenerateCerts(t)
	b := newBackend(t, echo)

	t.Run("server only", func(t *testing.T) {
		p := NewTLS(t, b.addr(), certs.ServerTLS())
		for _, name := range []string{"localhost", "127.0.0.1"} {
			c, err := tls.Dial("tcp", p.Addr(), &tls.Config{RootCAs: certs.CAPool, ServerName: name})
			if err != nil {
				t.Fatalf("TLS dial verifying %s: %v", name, err)
			}
			roundTrip(t, c, []byte("over TLS"))
			c.Close()
		}
		other := GenerateCerts(t)
		_, err := tls.Dial("tcp", p.Addr(), &tls.Config{RootCAs: other.CAPool, ServerName: "localhost"})
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Fatalf("dial trusting another CA: %v; want an unknown authority error", err)
		}
	})

	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run("mutual/"+tls.VersionName(version), func(t *testing.T) {
			cfg := certs.MutualServerTLS()
			cfg.MaxVersion = version
			p := NewTLS(t, b.addr(), cfg)

			// Without a client certificate: with TLS 1.2 the handshake
			// fails; with TLS 1.3 the client learns it at its first read.
			c, err := tls.Dial("tcp", p.Addr(), &tls.Config{RootCAs: certs.CAPool, ServerName: "localhost"})
			if err == nil {
				c.SetDeadline(time.Now().Add(wait))
				c.Write([]byte("x"))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			// Go's server alerts "handshake failure" in TLS 1.2 and
			// "certificate required" in TLS 1.3.
			if err == nil || !strings.Contains(err.Error(), "remote error: tls: ") {
				t.Fatalf("client without a certificate: %v; want a TLS alert", err)
			}
			eventually(t, "proxy-side handshake error", func() bool { return len(p.HandshakeErrors()) == 1 })
			if msg := p.HandshakeErrors()[0].Error(); !strings.Contains(msg, "certificate") {
				t.Fatalf("proxy's handshake error %q does not mention the certificate", msg)
			}

			cc := certs.ClientTLS()
			cc.ServerName = "localhost"
			c, err = tls.Dial("tcp", p.Addr(), cc)
			if err != nil {
				t.Fatalf("client with a certificate: %v", err)
			}
			defer c.Close()
			roundTrip(t, c, []byte("mutual"))
			if st := c.ConnectionState(); st.Version != version {
				t.Fatalf("negotiated %s, want %s", tls.VersionName(st.Version), tls.VersionName(version))
			}
		})
	}

	t.Run("stall holds the handshake", func(t *testing.T) {
		p := NewTLS(t, b.addr(), certs.ServerTLS())
		p.Stall()
		raw := dial(t, p.Addr())
		c := tls.Client(raw, &tls.Config{RootCAs: certs.CAPool, ServerName: "localhost"})
		done := make(chan error, 1)
		go func() { done <- c.Handshake() }()
		select {
		case err := <-done:
			t.Fatalf("handshake finished through a stalled proxy: %v", err)
		case <-time.After(quiet):
		}
		p.Resume()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("handshake after Resume: %v", err)
			}
		case <-time.After(wait):
			t.Fatal("handshake did not finish after Resume")
		}
		roundTrip(t, c, []byte("resumed"))
	})
}

func TestCloseLeavesNothing(t *testing.T) {
	b := newBackend(t, echo)
	before := runtime.NumGoroutine()
	p := New(t, b.addr())
	var clients []net.Conn
	for i := 0; i < 3; i++ {
		c := dial(t, p.Addr())
		roundTrip(t, c, []byte("x"))
		clients = append(clients, c)
	}
	p.Stall()
	clients = append(clients, dial(t, p.Addr()))
	p.Resume()
	p.AcceptButNeverAnswer(true)
	clients = append(clients, dial(t, p.Addr()))
	p.Stall()
	eventually(t, "5 accepted", func() bool { return p.Accepted() == 5 })

	p.Close()
	p.Close() // idempotent
	for _, c := range clients {
		expectClosed(t, c, "client after Close")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("the proxy still accepts connections after Close")
	}
	// The backend's handlers end when the proxy's connections to it close.
	eventually(t, "goroutines back to the count before New", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

func TestInject(t *testing.T) {
	got := make(chan []byte, 1)
	b := newBackend(t, func(c net.Conn) {
		c.Write([]byte("hello"))
		data, _ := io.ReadAll(c)
		got <- data
	})
	p := New(t, b.addr())
	if n := p.Inject(ClientToServer, []byte("nobody")); n != 0 {
		t.Fatalf("Inject without connections wrote to %d", n)
	}
	c := dial(t, p.Addr())
	c.SetDeadline(time.Now().Add(wait))
	hello := make([]byte, 5)
	if _, err := io.ReadFull(c, hello); err != nil {
		t.Fatal(err)
	}
	heartbeat := []byte{8, 0, 0, 0, 0, 0, 0, 0xce}
	if _, err := c.Write([]byte(wireHeader + string(heartbeat))); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFrame(wait, func(r Recorded) bool { return r.Dir == ClientToServer }); err != nil {
		t.Fatal(err)
	}
	p.Stall() // injected bytes pass anyway
	if n := p.Inject(ClientToServer, heartbeat); n != 1 {
		t.Fatalf("Inject wrote to %d connections, want 1", n)
	}
	if n := p.Inject(ServerToClient, []byte("injected")); n != 1 {
		t.Fatalf("Inject wrote to %d connections, want 1", n)
	}
	if n := p.Inject(Direction(9), []byte("x")); n != 0 {
		t.Fatalf("Inject in an unknown direction wrote to %d", n)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "injected" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	p.Resume()
	c.Close()
	select {
	case data := <-got:
		if want := wireHeader + string(heartbeat) + string(heartbeat); string(data) != want {
			t.Fatalf("backend received %q, want %q", data, want)
		}
	case <-time.After(wait):
		t.Fatal("backend connection did not end")
	}
	var beats int
	for _, r := range p.Frames() {
		if r.Dir == ClientToServer && r.Frame.Type == 8 {
			beats++
		}
	}
	if beats != 2 {
		t.Fatalf("recorded %d heartbeats client->server, want 2 (one forwarded, one injected): %v", beats, p.Frames())
	}
}

const wireHeader = "AMQP\x00\x00\x09\x01"
