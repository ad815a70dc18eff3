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

// TestFdConnWriteDeadlineMovedDuringWait: a Write already waiting in ppoll
// for a peer that reads nothing, begun without a deadline, ends at a write
// deadline set meanwhile (what the link's closedLocked does to bound its
// final flush), not at the end of the wait bound (an hour here).
func TestFdConnWriteDeadlineMovedDuringWait(t *testing.T) {
	longWaitSlice(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, server, err := tcpPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	fc := newFdConn(client)
	if fc == nil {
		t.Fatal("newFdConn of a TCP connection: nil")
	}
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
