//go:build linux

package pika

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// Review tests of Config.BlockingRead: deadlines moved while a wait is in
// progress, Close while the broker reads nothing, descriptor counts.

// fdPair is an fdConn and the other end of its TCP connection.
type fdPair struct {
	*fdConn
	peer net.Conn
}

// fdConnPair returns the client end of a TCP loopback connection as an
// fdConn, with the server end, which closes at the test's end.
func fdConnPair(t *testing.T) fdPair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, server, err := tcpPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	fc := newFdConn(client)
	if fc == nil {
		t.Fatal("newFdConn of a TCP connection: nil")
	}
	return fdPair{fc, server}
}

// TestFdConnWriteDeadlineMovedDuringWait: a Write already waiting in ppoll
// for a peer that reads nothing, begun without a deadline, ends at a write
// deadline set meanwhile (what the link's closedLocked does to bound its
// final flush), not at the end of the wait bound (an hour here).
func TestFdConnWriteDeadlineMovedDuringWait(t *testing.T) {
	longWaitSlice(t)
	fc := fdConnPair(t)
	defer fc.Close()
	done := make(chan error, 1)
	go func() {
		_, err := fc.Write(make([]byte, 64<<20))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // let it reach ppoll (passes without too)
	fc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write past its deadline: %v, want the deadline", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Write still waits in ppoll after its deadline")
	}
}

// TestBlockingReadCloseWhileWriteBlocked: the broker stops reading while
// the client publishes, so the writer waits in ppoll on a full socket
// buffer; a Close whose ctx ends returns (the final flush is bounded by a
// second) instead of waiting for the writer's wait bound (an hour here).
func TestBlockingReadCloseWhileWriteBlocked(t *testing.T) {
	longWaitSlice(t)
	stop := make(chan struct{})
	blocked := make(chan struct{}, 1)
	b, c := blockingFake(t, nil)
	t.Cleanup(func() { close(stop) }) // runs before the broker's cleanup
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); ok {
			select {
			case blocked <- struct{}{}:
			default:
			}
			<-stop // the broker reads nothing more
		}
		return false
	})
	ch := stallChannel(t, c)
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	go func() {
		body := make([]byte, 256<<10)
		for pctx.Err() == nil {
			if ch.Publish(pctx, "", "q", Message{Body: body}) != nil {
				return
			}
		}
	}()
	select {
	case <-blocked:
	case <-time.After(20 * time.Second):
		t.Fatal("no publish reached the broker")
	}
	waitFor(t, "the write buffer to fill", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.l.eng.OutgoingLen()+c.l.eng.QueuedLen() >= c.cfg.WriteBufferLimit
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	closeReturns(ctx, t, c)
}

// openFds counts this process's open descriptors.
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("open descriptors: %v", err)
	}
	return len(ents)
}

// fdsBackTo waits until the process has at most base descriptors open
// (the fake broker's ends close on their own goroutines).
func fdsBackTo(t *testing.T, what string, base int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for openFds(t) > base {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d descriptors open, %d before", what, openFds(t), base)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBlockingReadNoFdLeak: dials that succeed and close, dials whose
// handshake times out (a broker that never answers) and recoveries of a
// dropped or half-closed connection leave no descriptor open; a recovered link uses
// BlockingRead too, and the dropped link's descriptor is closed.
func TestBlockingReadNoFdLeak(t *testing.T) {
	const rounds = 20
	cycle := func(t *testing.T, mod func(*fakeBroker, *Config), run func(*fakeBroker, Config)) {
		b, cfg := blockingFakeConfig(t, mod)
		run(b, cfg) // warm up: the runtime's own descriptors (epoll, timers)
		base := openFds(t)
		for range rounds {
			run(b, cfg)
		}
		fdsBackTo(t, "after the rounds", base)
	}
	t.Run("DialClose", func(t *testing.T) {
		cycle(t, nil, func(b *fakeBroker, cfg Config) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := DialConfig(ctx, cfg)
			if err != nil {
				t.Fatalf("DialConfig: %v", err)
			}
			if _, ok := c.l.nc.(*fdConn); !ok {
				t.Fatal("BlockingRead: the link's socket stays with the poller")
			}
			if err := c.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	})
	t.Run("HandshakeTimeout", func(t *testing.T) {
		cycle(t, func(b *fakeBroker, cfg *Config) {
			b.silent = func(int) bool { return true }
			cfg.HandshakeTimeout = 100 * time.Millisecond
		}, func(b *fakeBroker, cfg Config) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := DialConfig(ctx, cfg); err == nil {
				t.Fatal("DialConfig to a broker that never answers: no error")
			}
		})
	})
	t.Run("DialCtxEnds", func(t *testing.T) {
		cycle(t, func(b *fakeBroker, cfg *Config) {
			b.silent = func(int) bool { return true }
		}, func(b *fakeBroker, cfg Config) {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if _, err := DialConfig(ctx, cfg); err == nil {
				t.Fatal("DialConfig to a broker that never answers: no error")
			}
		})
	})
	t.Run("Recovery", func(t *testing.T) {
		b := newFakeBroker(t)
		b.tcp = true
		cfg := b.config()
		cfg.BlockingRead = true
		c := dialFake(t, cfg)
		current := func() *link {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.l
		}
		// recoverOnce drops the connection, or half-closes it (the broker
		// sends a FIN and reads on), and waits for the recovered link.
		recoverOnce := func(halfClose bool) {
			old := current()
			if fc := b.conn(b.count()); halfClose {
				fc.nc.(*net.TCPConn).CloseWrite()
			} else {
				fc.kill()
			}
			waitFor(t, "a recovered link", func() bool {
				l := current()
				return l != nil && l != old && l.isOpen() && !c.IsRecovering()
			})
			if _, ok := current().nc.(*fdConn); !ok {
				t.Fatal("the recovered link's socket stays with the poller")
			}
			ofc := old.nc.(*fdConn)
			waitFor(t, "the dropped link's descriptor closed", func() bool {
				ofc.mu.Lock()
				defer ofc.mu.Unlock()
				return ofc.fdClosed
			})
		}
		recoverOnce(false)
		base := openFds(t)
		for range rounds {
			recoverOnce(false)
		}
		fdsBackTo(t, "after the recoveries", base)
	})
}

// TestBlockingReadHeartbeatTimeoutWhileWriteBlocked: a broker that
// neither reads nor sends is found dead by the heartbeat timer while the
// writer waits in ppoll on a full socket buffer, and both of the link's
// goroutines end (the writer at the final flush's bound, not the wait
// bound of an hour).
func TestBlockingReadHeartbeatTimeoutWhileWriteBlocked(t *testing.T) {
	longWaitSlice(t)
	stop := make(chan struct{})
	_, c := blockingFake(t, func(b *fakeBroker, cfg *Config) {
		cfg.Heartbeat = time.Second
		b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
			switch m.(type) {
			case *wire.ConnectionStartOk:
				fc.send(0, &wire.ConnectionTune{ChannelMax: 2047, FrameMax: 128 << 10, Heartbeat: 1})
				return true
			case *wire.BasicPublish:
				<-stop // the broker reads nothing more
			}
			return false
		})
	})
	t.Cleanup(func() { close(stop) })
	ch := stallChannel(t, c)
	go func() {
		body := make([]byte, 256<<10)
		for ch.Publish(context.Background(), "", "q", Message{Body: body}) == nil {
		}
	}()
	heartbeatTimeoutEnds(t, c)
}

// TestFdConnSignalsAndPartialWrites: 8 MiB each way through fdConn
// while the threads of its Read and Write receive a stream of SIGURG (the
// runtime's preemption signal, which ends a ppoll with EINTR), against a
// peer that reads and writes in small slow steps, so that both wait in
// ppoll often: every byte arrives, in order, although most writes are
// partial (the socket buffers are far smaller).
func TestFdConnSignalsAndPartialWrites(t *testing.T) {
	fc := fdConnPair(t)
	server := fc.peer
	defer fc.Close()
	const size = 8 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	fc.SetDeadline(time.Now().Add(60 * time.Second))
	server.SetDeadline(time.Now().Add(60 * time.Second))
	tids := make(chan int, 2)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		var ts []int
		for {
			select {
			case <-stop:
				return
			case tid := <-tids:
				ts = append(ts, tid)
			default:
			}
			for _, tid := range ts {
				syscall.Tgkill(os.Getpid(), tid, syscall.SIGURG)
			}
			time.Sleep(20 * time.Microsecond)
		}
	}()
	// onThread runs f on a thread of its own, which receives the signals.
	onThread := func(f func() error) <-chan error {
		done := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			tids <- syscall.Gettid()
			done <- f()
			// the thread is not unlocked: it exits with the goroutine
		}()
		return done
	}
	const step = 64 << 10
	wrote := onThread(func() error { _, err := fc.Write(data); return err })
	read := onThread(func() error {
		got := make([]byte, size)
		if _, err := io.ReadFull(fc, got); err != nil {
			return fmt.Errorf("fdConn Read: %w", err)
		}
		if !bytes.Equal(got, data) {
			return errors.New("fdConn Read: the bytes differ from the peer's")
		}
		return nil
	})
	peer := make(chan error, 2)
	go func() {
		for off := 0; off < size; off += step {
			time.Sleep(time.Millisecond)
			if _, err := server.Write(data[off : off+step]); err != nil {
				peer <- err
				return
			}
		}
		peer <- nil
	}()
	go func() {
		got := make([]byte, size)
		for off := 0; off < size; off += step {
			time.Sleep(time.Millisecond)
			if _, err := io.ReadFull(server, got[off:off+step]); err != nil {
				peer <- err
				return
			}
		}
		if !bytes.Equal(got, data) {
			peer <- errors.New("the peer's bytes differ from fdConn's Write")
			return
		}
		peer <- nil
	}()
	for _, ch := range []<-chan error{wrote, read, peer, peer} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
}

// TestFdConnCloseEndsBlockedWrite: Close from another goroutine ends a
// Write waiting in ppoll for a peer that reads nothing (no deadline, a
// wait bound of an hour), and the descriptor is closed once that Write
// has returned, not before.
func TestFdConnCloseEndsBlockedWrite(t *testing.T) {
	longWaitSlice(t)
	fc := fdConnPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := fc.Write(make([]byte, 64<<20))
		done <- err
	}()
	waitFor(t, "the Write in progress", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.ops == 1
	})
	time.Sleep(50 * time.Millisecond) // let it reach ppoll (passes without too)
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	early := fc.fdClosed && fc.ops > 0
	fc.mu.Unlock()
	if early {
		t.Fatal("the descriptor closed while a Write used it")
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Write across Close: no error")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Write still waits in ppoll after Close")
	}
	fc.mu.Lock()
	closed := fc.fdClosed
	fc.mu.Unlock()
	if !closed {
		t.Fatal("the descriptor stays open after Close and the Write's end")
	}
}

// pipeConn is a net.Conn over a pipe, which offers SyscallConn like a
// socket but cannot be shut down.
type pipeConn struct{ *os.File }

func (pipeConn) LocalAddr() net.Addr  { return &net.UnixAddr{Name: "pipe", Net: "unix"} }
func (pipeConn) RemoteAddr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// TestFdConnOnlyForSockets: a Dial's connection that offers SyscallConn
// but is no stream socket (here a pipe) stays with the runtime's poller:
// fdConn ends waits by shutting its socket down, which a pipe cannot do,
// so its Close would leave a Read waiting.
func TestFdConnOnlyForSockets(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nc := pipeConn{r}
	defer nc.Close()
	if fc := newFdConn(nc); fc != nil {
		fc.Close()
		t.Fatal("newFdConn took over a pipe")
	}
	// nc is untouched: it still reads.
	w.Write([]byte("x"))
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the pipe after newFdConn: %v", err)
	}
}
