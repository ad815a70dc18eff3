package loop

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// transport moves a connection's bytes. Its methods run on the loop
// goroutine; it reports inbound bytes with Conn.receive and failures with
// Conn.transportFailed.
type transport interface {
	write(b []byte) // b is not retained
	pending() int   // bytes accepted by write and not yet sent
	closeAfterFlush()
	closeNow()
}

// goConn is the fallback path, for TLS, for connections made by
// Config.Dial that are not plain sockets, and for platforms without a
// poller: a reader goroutine that hands each read to the loop (with Post)
// and waits until the loop has fed it to the engine, and a writer
// goroutine that writes what the loop queued. Two goroutines and a read
// buffer per connection.
type goConn struct {
	l  *Loop
	c  *Conn
	nc net.Conn

	mu      sync.Mutex
	out     []byte // queued by the loop, taken by the writer
	closing bool   // the writer closes nc after its last write

	// Owned by the loop goroutine.
	queued int  // bytes handed to the writer and not reported written
	dead   bool // no more calls into c

	wake     chan struct{} // cap 1: out has bytes, or closing
	ack      chan struct{} // cap 1: the loop took the reader's bytes
	done     chan struct{} // closed by closeNow
	doneOnce sync.Once
}

// closeFlushTimeout bounds the last write (a close-ok, say) of a connection
// that ended.
const closeFlushTimeout = time.Second

// goReadBufferSize is the read buffer of each fallback connection.
const goReadBufferSize = 32 << 10

func newGoConn(l *Loop, c *Conn, nc net.Conn) *goConn {
	t := &goConn{
		l: l, c: c, nc: nc,
		wake: make(chan struct{}, 1),
		ack:  make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	l.wg.Add(2)
	go t.readLoop()
	go t.writeLoop()
	return t
}

func (t *goConn) readLoop() {
	defer t.l.wg.Done()
	buf := make([]byte, goReadBufferSize)
	for {
		n, err := t.nc.Read(buf)
		data := buf[:n]
		ok := t.l.Post(func() {
			if !t.dead {
				if len(data) > 0 {
					t.c.receive(data)
				}
				if err != nil {
					t.c.transportFailed(fmt.Errorf("pika: read from %s: %w", t.nc.RemoteAddr(), err))
				}
			}
			t.ack <- struct{}{}
		})
		if !ok {
			return
		}
		select {
		case <-t.ack:
		case <-t.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (t *goConn) writeLoop() {
	defer t.l.wg.Done()
	defer t.nc.Close()
	var spare []byte
	for {
		select {
		case <-t.wake:
		case <-t.done:
			return
		}
		t.mu.Lock()
		b := t.out
		t.out = spare[:0]
		closing := t.closing
		t.mu.Unlock()
		if len(b) > 0 {
			_, err := t.nc.Write(b)
			n := len(b)
			t.l.Post(func() {
				t.queued -= n
				if err != nil && !t.dead {
					t.c.transportFailed(fmt.Errorf("pika: write to %s: %w", t.nc.RemoteAddr(), err))
				}
			})
			if err != nil {
				return
			}
		}
		if closing {
			return
		}
		if cap(b) > 1<<20 {
			b = nil
		}
		spare = b[:0]
	}
}

func (t *goConn) pending() int { return t.queued }

func (t *goConn) write(b []byte) {
	if t.dead || len(b) == 0 {
		return
	}
	t.mu.Lock()
	t.out = append(t.out, b...)
	t.mu.Unlock()
	t.queued += len(b)
	t.signal()
}

func (t *goConn) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *goConn) closeAfterFlush() {
	if t.dead {
		return
	}
	t.dead = true
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	t.nc.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	t.nc.SetReadDeadline(time.Now())
	t.signal()
}

func (t *goConn) closeNow() {
	t.dead = true
	t.doneOnce.Do(func() { close(t.done) })
	t.nc.Close()
}
