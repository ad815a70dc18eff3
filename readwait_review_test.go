//go:build linux

package pika

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// Review tests of Config.BlockingRead: deadlines moved while a wait is in
// progress, Close while the broker reads nothing, descriptor counts.

// fdConnPair returns the client end of a TCP loopback connection as an
// fdConn; the server end, which reads nothing, closes at the test's end.
func fdConnPair(t *testing.T) *fdConn {
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
	return fc
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
// dropped connection leave no descriptor open; a recovered link uses
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
		recoverOnce := func() {
			old := current()
			b.conn(b.count()).kill()
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
		recoverOnce()
		base := openFds(t)
		for range rounds {
			recoverOnce()
		}
		fdsBackTo(t, "after the recoveries", base)
	})
}
