// Package memconn is an in-memory, buffered, full-duplex connection: the
// transport of pikatest's Broker.Dial.
//
// Unlike [net.Pipe], whose writes wait for the reader to take every byte,
// a memconn behaves like a TCP connection on loopback for what a protocol
// peer can observe: a Write returns as soon as its bytes fit in the
// direction's buffer (a fixed capacity, like a socket buffer; a writer
// waits only when the reader falls that far behind); bytes written before a
// Close are still delivered, and the reader sees io.EOF after them; CloseWrite
// half-closes; deadlines interrupt
// blocked calls with an error whose Timeout method reports true. Writing to
// a peer that closed is what it is on TCP, where the peer's reset only
// comes back in answer to the first write after its close: that write
// succeeds (its bytes are lost), later ones fail. It makes
// no system call, so a test running many connections spends no CPU time in
// the kernel.
package memconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultBuffer is the capacity of each direction of a pipe made by
// [Pipe]: about what Linux gives a loopback TCP socket.
const DefaultBuffer = 1 << 20

// ErrPeerClosed is the error of a Write after the other end closed (or
// half-closed for reading), except the first one to start after the close:
// the connection reset of a socket.
var ErrPeerClosed = errors.New("memconn: write to a closed peer (connection reset)")

// Addr is the address of both ends of a pipe.
type Addr string

// Network returns "memconn".
func (Addr) Network() string { return "memconn" }

func (a Addr) String() string { return string(a) }

// Pipe returns the two ends of a connection whose directions each buffer
// DefaultBuffer bytes. local and remote name the ends (LocalAddr of the
// first end is local, its RemoteAddr is remote; the other end the reverse).
func Pipe(local, remote string) (net.Conn, net.Conn) {
	return PipeSize(local, remote, DefaultBuffer)
}

// PipeSize is [Pipe] with a capacity of size bytes per direction (at
// least 1).
func PipeSize(local, remote string, size int) (net.Conn, net.Conn) {
	size = max(size, 1)
	ab, ba := newStream(size), newStream(size)
	a := &Conn{in: ba, out: ab, local: Addr(local), remote: Addr(remote), closed: make(chan struct{})}
	b := &Conn{in: ab, out: ba, local: Addr(remote), remote: Addr(local), closed: make(chan struct{})}
	a.rd.init()
	a.wd.init()
	b.rd.init()
	b.wd.init()
	return a, b
}

// stream is one direction of a pipe: bytes written by one end, waiting for
// the other to read them.
type stream struct {
	mu     sync.Mutex
	buf    []byte // unread bytes are buf[off:]
	off    int
	size   int
	eof    bool // the writing end closed or half-closed: reads end after buf
	broken bool // the reading end closed: writes are lost, then fail
	reset  bool // a write was lost to broken: later ones fail

	readable chan struct{} // a token when bytes or eof may have arrived
	writable chan struct{} // a token when room or broken may have appeared
	eofc     chan struct{} // closed with eof
	brokenc  chan struct{} // closed with broken
}

func newStream(size int) *stream {
	return &stream{size: size,
		readable: make(chan struct{}, 1), writable: make(chan struct{}, 1),
		eofc: make(chan struct{}), brokenc: make(chan struct{})}
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// setEOF marks the end of what the writing end sends.
func (s *stream) setEOF() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.eof {
		s.eof = true
		close(s.eofc)
	}
}

// setBroken marks that the reading end reads no more: pending bytes are
// dropped and later writes fail.
func (s *stream) setBroken() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf, s.off = nil, 0
	if !s.broken {
		s.broken = true
		close(s.brokenc)
	}
}

// Conn is one end of a pipe. It is safe for concurrent use as net.Conn
// requires: several goroutines may read or write at once (each Read and
// each Write is atomic with respect to the others of its kind).
type Conn struct {
	in, out       *stream
	local, remote Addr

	rmu, wmu sync.Mutex // serialise Reads, and Writes, so a Write's bytes are not interleaved

	closeOnce sync.Once
	closed    chan struct{}

	rd, wd deadline
}

var _ net.Conn = (*Conn)(nil)

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "memconn", Source: c.local, Addr: c.remote, Err: err}
}

// Read reads what the other end wrote, waiting for at least one byte. It
// returns io.EOF once the other end has closed (or half-closed) and every
// byte it wrote has been read.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	s := c.in
	for {
		select {
		case <-c.closed:
			return 0, c.opError("read", net.ErrClosed)
		case <-c.rd.wait():
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		default:
		}
		s.mu.Lock()
		if s.off < len(s.buf) {
			n := copy(p, s.buf[s.off:])
			s.off += n
			if s.off == len(s.buf) {
				s.buf, s.off = s.buf[:0], 0
			}
			s.mu.Unlock()
			notify(s.writable)
			return n, nil
		}
		if len(p) == 0 {
			s.mu.Unlock()
			return 0, nil
		}
		eof := s.eof || s.broken
		s.mu.Unlock()
		if eof {
			return 0, io.EOF
		}
		select {
		case <-s.readable:
		case <-s.eofc:
		case <-s.brokenc:
		case <-c.closed:
		case <-c.rd.wait():
		}
	}
}

// Write copies p into the pipe, waiting while the buffer is full. It fails
// once this end closed or half-closed, when the write deadline passes, and
// when the other end has closed, except (as on TCP) the first write to
// start after that close, whose bytes are dropped; n says how much of p
// went in.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	s := c.out
	n := 0
	for {
		select {
		case <-c.closed:
			return n, c.opError("write", net.ErrClosed)
		case <-c.wd.wait():
			return n, c.opError("write", os.ErrDeadlineExceeded)
		default:
		}
		s.mu.Lock()
		switch {
		case s.broken && n == 0 && !s.reset:
			s.reset = true
			s.mu.Unlock()
			return len(p), nil
		case s.broken:
			s.mu.Unlock()
			return n, c.opError("write", ErrPeerClosed)
		case s.eof:
			s.mu.Unlock()
			return n, c.opError("write", net.ErrClosed)
		}
		if s.off > 0 && len(s.buf)+len(p)-n > cap(s.buf) {
			// Move the unread bytes to the front rather than grow.
			s.buf = s.buf[:copy(s.buf, s.buf[s.off:])]
			s.off = 0
		}
		room := s.size - (len(s.buf) - s.off)
		k := min(room, len(p)-n)
		s.buf = append(s.buf, p[n:n+k]...)
		n += k
		s.mu.Unlock()
		if k > 0 {
			notify(s.readable)
		}
		if n == len(p) {
			return n, nil
		}
		select {
		case <-s.writable:
		case <-s.brokenc:
		case <-c.closed:
		case <-c.wd.wait():
		}
	}
}

// Close closes this end: its blocked and later calls fail with
// net.ErrClosed; the other end reads what this end wrote and then io.EOF;
// its writes are dropped and then fail with ErrPeerClosed (see Write). Close
// is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.out.setEOF()
		c.in.setBroken()
		c.rd.stop()
		c.wd.stop()
	})
	return nil
}

// CloseWrite half-closes the connection as TCP's shutdown(SHUT_WR): the
// other end reads what was written and then io.EOF; this end may still
// read, and its writes fail.
func (c *Conn) CloseWrite() error {
	c.out.setEOF()
	return nil
}

// CloseRead half-closes the reading side: pending and later bytes from the
// other end are dropped and its writes fail as after Close; reads on this
// end return io.EOF.
func (c *Conn) CloseRead() error {
	c.in.setBroken()
	return nil
}

// LocalAddr returns the name given to this end.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the name given to the other end.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline sets the time after which Read fails with a timeout
// (os.ErrDeadlineExceeded), including a Read already waiting. The zero time
// removes the deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline sets the time after which Write fails with a timeout,
// including a Write already waiting for room.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return nil
}

// deadline is a channel that closes when a settable time passes.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	c     chan struct{} // closed once the deadline has passed
}

func (d *deadline) init() { d.c = make(chan struct{}) }

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// The timer fired: its function closes (or closed) the current
		// channel; the new deadline gets a channel of its own.
		d.c = make(chan struct{})
	}
	d.timer = nil
	passed := isClosed(d.c)
	if t.IsZero() {
		if passed {
			d.c = make(chan struct{})
		}
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		if !passed {
			close(d.c)
		}
		return
	}
	if passed {
		d.c = make(chan struct{})
	}
	c := d.c
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !isClosed(c) {
			close(c)
		}
	})
}

// stop releases the timer of a closed end.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
