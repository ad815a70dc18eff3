// Package faultproxy is a TCP proxy for tests that puts real network faults
// between an AMQP client and a broker: it cuts live connections (also in the
// middle of a frame), stalls them like a dead network path, injects bytes
// into them (corrupt or unexpected frames), refuses new ones, or accepts
// them and never answers. It records every AMQP frame that passes, in each
// direction, and can terminate TLS so that a client speaking amqps reaches a
// broker that only listens for plain AMQP.
//
// A Proxy is made with [New] or [NewTLS] inside a test, listens on a
// loopback port ([Proxy.Addr]) and forwards each accepted connection to its
// target; it is closed in the test's cleanup. [GenerateCerts] makes the CA
// and certificates the TLS mode and TLS tests need.
//
// The proxy never calls the testing.TB it was given from its own
// goroutines, so it cannot log after a test has finished.
package faultproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// Bounds of the proxy's own waits.
const (
	// dialTimeout bounds the connection to the target.
	dialTimeout = 10 * time.Second
	// tlsHandshakeTimeout bounds the TLS handshake with a client.
	tlsHandshakeTimeout = 30 * time.Second
	// copyBufferSize is the size of each direction's read buffer.
	copyBufferSize = 32 << 10
)

// Proxy is a fault-injecting TCP proxy. Its methods are safe for concurrent
// use, also while connections are being forwarded.
//
// Each connection accepted on Addr is forwarded to the target over a new
// TCP connection, one goroutine per direction. The controls act on the
// connections at the moment of the call (Cut, CutAfter) or until they are
// undone (Stall, Refuse, AcceptButNeverAnswer).
type Proxy struct {
	target string
	tls    *tls.Config // nil: plain TCP from the client
	ln     net.Listener
	wg     sync.WaitGroup

	mu        sync.Mutex
	conns     map[*pconn]struct{}
	accepted  int
	resumed   chan struct{} // non-nil while stalled; closed by Resume
	refuse    bool
	blackhole bool
	closed    bool
	tlsErrs   []error
	dialErrs  []error

	rec recording
}

// pconn is one proxied connection.
type pconn struct {
	id     int
	client net.Conn // the accepted TCP connection (under TLS when the proxy terminates it)
	done   chan struct{}

	// guarded by Proxy.mu
	server  net.Conn // the connection to the target; nil until dialled
	closed  bool
	cutLeft int64 // client-to-server bytes still to forward before a cut; -1: no cut armed
	started bool  // forwarding runs: out is set

	// out is each direction's output (index Direction-1): set before
	// forwarding starts, then used under its own mutex, so that a
	// forwarded chunk and an injected one never interleave.
	out [2]output
}

// output is one direction's recorder stream and destination.
type output struct {
	mu  sync.Mutex
	st  *stream
	dst net.Conn
}

// write records data and writes it to the direction's destination.
func (o *output) write(rec *recording, data []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	rec.add(o.st, data, time.Now())
	_, err := o.dst.Write(data)
	return err
}

// New starts a proxy for target (host:port) listening on 127.0.0.1 on a
// free port, and closes it in t's cleanup. It fails t when it cannot
// listen.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	return start(t, target, nil)
}

// NewTLS is like New for a proxy that terminates TLS: clients connect with
// TLS configured by serverTLS (which holds the proxy's certificate and,
// for mutual TLS, ClientAuth and ClientCAs), and their decrypted stream is
// forwarded in plain TCP to target. The frames recorded are the decrypted
// ones. A client whose TLS handshake fails is disconnected, and the
// proxy's side of the error is kept for HandshakeErrors.
func NewTLS(t testing.TB, target string, serverTLS *tls.Config) *Proxy {
	t.Helper()
	if serverTLS == nil {
		t.Fatalf("faultproxy.NewTLS: nil *tls.Config")
	}
	return start(t, target, serverTLS.Clone())
}

func start(t testing.TB, target string, tcfg *tls.Config) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{target: target, tls: tcfg, ln: ln, conns: make(map[*pconn]struct{})}
	p.rec.init()
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's address, 127.0.0.1:port, for the client to
// connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Accepted returns how many connections the proxy has accepted so far,
// refused and unanswered ones included.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Live returns how many accepted connections are still open.
func (p *Proxy) Live() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Cut closes every live connection abruptly, both the client's and the
// target's side, with a TCP reset: data not yet forwarded is lost, and
// both peers see their connection fail. New connections are accepted as
// before.
func (p *Proxy) Cut() {
	for _, pc := range p.live() {
		pc.close(p, true)
	}
}

// CutAfter arms a cut on every live connection: each forwards n more bytes
// from the client to the target (responses still flow) and is then cut as
// by Cut, so with a suitable n the target sees half a frame. The bytes of
// the read that crosses the limit beyond the n-th are dropped. A
// connection whose client sends fewer than n more bytes is not cut.
// Connections accepted later are not affected. n <= 0 cuts at once.
func (p *Proxy) CutAfter(n int) {
	if n <= 0 {
		p.Cut()
		return
	}
	p.mu.Lock()
	for pc := range p.conns {
		pc.cutLeft = int64(n)
	}
	p.mu.Unlock()
}

// Stall stops forwarding in both directions while keeping every socket
// open, like a network path that silently drops everything: bytes read
// from either side are held, not forwarded, and a peer's close is not
// passed on, until Resume. New connections are accepted and connected to
// the target, but nothing flows on them either (in TLS mode, their
// handshake waits). A chunk that was being forwarded when Stall was called
// may still arrive. Cut and Close work while stalled.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil && !p.closed {
		p.resumed = make(chan struct{})
	}
}

// Resume ends a Stall: held bytes are forwarded in order, and forwarding
// goes on.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
}

// Refuse, when on, makes the proxy close every new connection as soon as
// it accepts it, with a TCP reset, before reading anything or contacting
// the target: the client's connect succeeds and its first read or write
// fails, as with a broker that drops connections at once. Live connections
// are not affected. Refuse(false) accepts connections normally again.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
}

// AcceptButNeverAnswer, when on, makes the proxy accept new connections,
// read and discard everything their clients send, and never answer nor
// contact the target (in TLS mode the TLS handshake never starts): a
// broker that hangs. The connections stay open until Cut or Close. Refuse
// takes precedence. Live connections are not affected.
func (p *Proxy) AcceptButNeverAnswer(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = on
}

// Inject writes data into every live, forwarding connection in direction
// dir, as if the sending side had sent it: ClientToServer bytes reach the
// target, ServerToClient bytes the client. The bytes land between two
// chunks the proxy forwards (on an idle connection, between two frames),
// are recorded like forwarded ones, and pass even while the proxy is
// stalled. Inject waits for a forwarded chunk being written. It returns
// how many connections it wrote to; connections still connecting and
// unanswered ones are skipped.
func (p *Proxy) Inject(dir Direction, data []byte) int {
	if dir != ClientToServer && dir != ServerToClient {
		return 0
	}
	n := 0
	for _, pc := range p.live() {
		p.mu.Lock()
		started := pc.started
		p.mu.Unlock()
		if started && pc.out[dir-1].write(&p.rec, data) == nil {
			n++
		}
	}
	return n
}

// HandshakeErrors returns the errors of the TLS handshakes with clients
// that failed, as the proxy saw them, in order.
func (p *Proxy) HandshakeErrors() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.tlsErrs...)
}

// DialErrors returns the errors of the proxy's connections to the target
// that failed (each one's client was disconnected), in order.
func (p *Proxy) DialErrors() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.dialErrs...)
}

// Close stops the proxy: it stops listening, cuts every live connection
// and waits for its goroutines. It runs in the cleanup of the test that
// made the proxy; calling it again does nothing.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return
	}
	p.closed = true
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// live returns the live connections.
func (p *Proxy) live() []*pconn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*pconn, 0, len(p.conns))
	for pc := range p.conns {
		out = append(out, pc)
	}
	return out
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		raw, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of file descriptors and the like: wait a little.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			abort(raw)
			continue
		}
		p.accepted++
		id := p.accepted
		refuse, blackhole := p.refuse, p.blackhole
		if refuse {
			p.mu.Unlock()
			abort(raw)
			continue
		}
		pc := &pconn{id: id, client: raw, done: make(chan struct{}), cutLeft: -1}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		if blackhole {
			go p.drain(pc)
		} else {
			go p.serve(pc)
		}
	}
}

// abort closes c with a TCP reset.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// close closes both sides of pc, with a reset when abrupt.
func (pc *pconn) close(p *Proxy, abrupt bool) {
	p.mu.Lock()
	if pc.closed {
		p.mu.Unlock()
		return
	}
	pc.closed = true
	delete(p.conns, pc)
	server := pc.server
	p.mu.Unlock()
	close(pc.done)
	for _, c := range []net.Conn{pc.client, server} {
		if c == nil {
			continue
		}
		if abrupt {
			abort(c)
		} else {
			c.Close()
		}
	}
}

// drain reads and discards what a client of an unanswered connection
// sends.
func (p *Proxy) drain(pc *pconn) {
	defer p.wg.Done()
	buf := make([]byte, copyBufferSize)
	for {
		if _, err := pc.client.Read(buf); err != nil {
			pc.close(p, false)
			return
		}
	}
}

// serve completes the TLS handshake when the proxy terminates TLS,
// connects to the target and starts forwarding.
func (p *Proxy) serve(pc *pconn) {
	defer p.wg.Done()
	// ctx ends when pc is closed (Cut, Close) or serve returns.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case <-pc.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	client := pc.client
	if p.tls != nil {
		if !p.gate(pc) {
			return
		}
		tc := tls.Server(client, p.tls)
		hctx, hcancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		hcancel()
		if err != nil {
			p.mu.Lock()
			p.tlsErrs = append(p.tlsErrs, err)
			p.mu.Unlock()
			// A normal close, so that the client gets the alert the
			// handshake sent before the connection ends.
			pc.close(p, false)
			return
		}
		client = tc
	}
	d := net.Dialer{Timeout: dialTimeout}
	server, err := d.DialContext(ctx, "tcp", p.target)
	if err != nil {
		p.mu.Lock()
		p.dialErrs = append(p.dialErrs, err)
		p.mu.Unlock()
		pc.close(p, true)
		return
	}
	p.mu.Lock()
	if pc.closed {
		p.mu.Unlock()
		abort(server)
		return
	}
	pc.server = server
	pc.out[ClientToServer-1] = output{st: p.rec.stream(pc.id, ClientToServer), dst: server}
	pc.out[ServerToClient-1] = output{st: p.rec.stream(pc.id, ServerToClient), dst: client}
	pc.started = true
	p.wg.Add(2)
	p.mu.Unlock()
	go p.pump(pc, ClientToServer, client)
	go p.pump(pc, ServerToClient, server)
}

// gate waits while the proxy is stalled. It returns false when pc closed
// meanwhile.
func (p *Proxy) gate(pc *pconn) bool {
	for {
		p.mu.Lock()
		resumed := p.resumed
		p.mu.Unlock()
		if resumed == nil {
			select {
			case <-pc.done:
				return false
			default:
				return true
			}
		}
		select {
		case <-resumed:
		case <-pc.done:
			return false
		}
	}
}

// pump forwards one direction of pc, recording its frames, until either
// side fails or closes; then it closes both.
func (p *Proxy) pump(pc *pconn, dir Direction, src net.Conn) {
	defer p.wg.Done()
	out := &pc.out[dir-1]
	buf := make([]byte, copyBufferSize)
	for {
		n, err := src.Read(buf)
		if !p.gate(pc) {
			return
		}
		if n > 0 {
			data := buf[:n]
			cut := false
			if dir == ClientToServer {
				data, cut = p.limit(pc, data)
			}
			if len(data) > 0 {
				if werr := out.write(&p.rec, data); werr != nil {
					pc.close(p, false)
					return
				}
			}
			if cut {
				pc.close(p, true)
				return
			}
		}
		if err != nil {
			pc.close(p, false)
			return
		}
	}
}

// limit applies an armed CutAfter to data read from pc's client: it returns
// what may still be forwarded, and whether the connection is to be cut
// after it.
func (p *Proxy) limit(pc *pconn, data []byte) ([]byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc.cutLeft < 0 {
		return data, false
	}
	if int64(len(data)) >= pc.cutLeft {
		data = data[:pc.cutLeft]
		pc.cutLeft = 0
		return data, true
	}
	pc.cutLeft -= int64(len(data))
	return data, false
}
