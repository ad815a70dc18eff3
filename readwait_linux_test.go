//go:build linux

package pika

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// Tests of Config.BlockingRead against fakeBroker over TCP loopback: the
// reader reads in ppoll and read(2) itself; deliveries arrive in order,
// Close and a heartbeat timeout end its wait, a full consumer buffer
// still pauses it.

// blockingFake returns a fakeBroker serving over TCP and a Conn dialled
// to it with BlockingRead set, after checking that the link uses it.
func blockingFake(t *testing.T, mod func(*fakeBroker, *Config)) (*fakeBroker, *Conn) {
	t.Helper()
	b, cfg := blockingFakeConfig(t, mod)
	c := dialFake(t, cfg)
	c.mu.Lock()
	_, uses := c.l.nc.(*fdConn)
	c.mu.Unlock()
	if !uses {
		t.Fatal("BlockingRead on a TCP connection: the link's socket stays with the poller")
	}
	return b, c
}

// blockingFakeConfig returns a fakeBroker serving over TCP and a Config
// that dials it with BlockingRead set and no recovery, changed by mod.
func blockingFakeConfig(t *testing.T, mod func(*fakeBroker, *Config)) (*fakeBroker, Config) {
	b := newFakeBroker(t)
	b.tcp = true
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.BlockingRead = true
	if mod != nil {
		mod(b, &cfg)
	}
	return b, cfg
}

// longWaitSlice makes a ppoll wait for up to an hour: only the shutdown of
// the socket's read side can end it in a test's time. Call it before
// dialling (its cleanup then runs after the Conn's).
func longWaitSlice(t *testing.T) {
	old := blockingWaitSlice
	blockingWaitSlice = time.Hour
	t.Cleanup(func() { blockingWaitSlice = old })
}

// readerEnds fails the test when the reader of c's current link has not
// ended within 20 s (a hang bound).
func readerEnds(t *testing.T, c *Conn) {
	t.Helper()
	c.mu.Lock()
	l := c.l
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the reader still waits in ppoll")
	}
}

// closeReturns runs c.Close(ctx) and fails the test when it does not
// return within 20 s (a hang bound, not a timing assertion); Close waits
// for the reader to end.
func closeReturns(ctx context.Context, t *testing.T, c *Conn) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Close(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return: the reader still waits in ppoll")
		return nil
	}
}

// TestBlockingReadConsume: deliveries of small and large bodies (the
// reader's small and large buffers) reach an Inline handler and Next in
// order, and the handler's acks reach the broker.
func TestBlockingReadConsume(t *testing.T) {
	sizes := []int{10, 600, 100 << 10, 0, 3000}
	for _, inline := range []bool{true, false} {
		name := "Next"
		if inline {
			name = "Inline"
		}
		t.Run(name, func(t *testing.T) {
			b, c := blockingFake(t, nil)
			fc := b.conn(1)
			ch := stallChannel(t, c)
			const n = 200
			var mu sync.Mutex
			var got []uint64
			var cons *Consumer
			if inline {
				cons = inlineConsume(t, ch, ConsumeOptions{}, func(d *Delivery) {
					if len(d.Body) != sizes[int(d.DeliveryTag)%len(sizes)] {
						t.Errorf("delivery %d: body of %d bytes", d.DeliveryTag, len(d.Body))
					}
					mu.Lock()
					got = append(got, d.DeliveryTag)
					mu.Unlock()
					if d.DeliveryTag%50 == 0 {
						if err := d.Ack(true); err != nil {
							t.Errorf("Ack: %v", err)
						}
					}
				})
			} else {
				cons = stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 1000})
			}
			go func() {
				for i := uint64(1); i <= n; i++ {
					fc.deliverN(ch.ID(), cons.Tag(), i, sizes[int(i)%len(sizes)])
				}
			}()
			if !inline {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				for i := 0; i < n; i++ {
					d, err := cons.Next(ctx)
					if err != nil {
						t.Fatalf("Next after %d deliveries: %v", i, err)
					}
					if len(d.Body) != sizes[int(d.DeliveryTag)%len(sizes)] {
						t.Fatalf("delivery %d: body of %d bytes", d.DeliveryTag, len(d.Body))
					}
					got = append(got, d.DeliveryTag)
				}
			}
			waitFor(t, "every delivery", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) == n
			})
			mu.Lock()
			if !slices.IsSorted(got) || got[0] != 1 {
				t.Errorf("delivery order %v", got)
			}
			mu.Unlock()
			if inline {
				waitFor(t, "the handler's acks at the broker", func() bool {
					acks := 0
					for _, m := range fc.methods() {
						if m == "1:basic.ack" {
							acks++
						}
					}
					return acks == n/50
				})
			}
		})
	}
}

// TestBlockingReadCloseWakesReader: a Close whose close-ok never comes
// ends the link at its ctx's end, and the reader, waiting in ppoll for
// data that will not come, ends too (the socket's read side is shut
// down): Close returns.
func TestBlockingReadCloseWakesReader(t *testing.T) {
	longWaitSlice(t)
	b, c := blockingFake(t, nil)
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		_, ok := m.(*wire.ConnectionClose)
		return ok // no close-ok
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := closeReturns(ctx, t, c); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close without a close-ok: %v, want the ctx's deadline", err)
	}
}

// TestBlockingReadHeartbeatTimeout: a broker that goes silent is found
// dead by the heartbeat timer although the reader waits in ppoll, and the
// reader ends.
func TestBlockingReadHeartbeatTimeout(t *testing.T) {
	longWaitSlice(t)
	_, c := blockingFake(t, func(b *fakeBroker, cfg *Config) {
		cfg.Heartbeat = time.Second
		b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
			if _, ok := m.(*wire.ConnectionStartOk); ok {
				fc.send(0, &wire.ConnectionTune{ChannelMax: 2047, FrameMax: 128 << 10, Heartbeat: 1})
				return true
			}
			return false
		})
	})
	heartbeatTimeoutEnds(t, c)
}

// heartbeatTimeoutEnds fails the test unless c ends with a heartbeat
// timeout and its link's goroutines end, each within 20 s.
func heartbeatTimeoutEnds(t *testing.T, c *Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("no heartbeat timeout from a silent broker")
	}
	if err := c.Err(); !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("Err = %v, want ErrHeartbeatTimeout", err)
	}
	readerEnds(t, c)
}

// TestBlockingReadPausedReader: a full consumer buffer still stops the
// reader (it reads nothing more), and taking a delivery lets it go on.
func TestBlockingReadPausedReader(t *testing.T) {
	b, c := blockingFake(t, nil)
	fc := b.conn(1)
	ch := stallChannel(t, c)
	cons := stallConsume(t, ch, "q", ConsumeOptions{AutoAck: true, BufferSize: 2})
	fillToPause(t, fc, ch, cons, 2)
	c.mu.Lock()
	reads := c.reads
	c.mu.Unlock()
	fc.deliverN(ch.ID(), cons.Tag(), 3, 100)
	time.Sleep(200 * time.Millisecond)
	c.mu.Lock()
	readsAfter, paused := c.reads, c.readPaused
	c.mu.Unlock()
	if readsAfter != reads || !paused || cons.Stats().Buffered != 2 {
		t.Fatalf("the paused reader read on: reads %d -> %d, paused %v, buffered %d", reads, readsAfter, paused, cons.Stats().Buffered)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if d, err := cons.Next(ctx); err != nil || d.DeliveryTag != 1 {
		t.Fatalf("Next = %v, %v", d, err)
	}
	waitFor(t, "the third delivery after the buffer drained", func() bool { return cons.Stats().Buffered == 2 })
	for want := uint64(2); want <= 3; want++ {
		if d, err := cons.Next(ctx); err != nil || d.DeliveryTag != want {
			t.Fatalf("Next = %v, %v; want delivery %d", d, err, want)
		}
	}
}

// TestFdConnDeadlinesAndClose: fdConn on its own over TCP loopback: a
// write to a peer that reads nothing stops at the write deadline (the
// link's final flush relies on it; the wait bound is an hour here), a read deadline already passed ends a
// waiting Read, Close ends another, and calls after Close fail with
// net.ErrClosed.
func TestFdConnDeadlinesAndClose(t *testing.T) {
	longWaitSlice(t)
	fc := fdConnPair(t)
	fc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := fc.Write(make([]byte, 64<<20)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a peer that reads nothing: %v, want the deadline", err)
	}
	read := func() <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := fc.Read(make([]byte, 10))
			done <- err
		}()
		return done
	}
	wait := func(what string, done <-chan error) error {
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: Read still waits", what)
			return nil
		}
	}
	done := read()
	time.Sleep(50 * time.Millisecond) // let it reach ppoll (passes without too)
	fc.SetReadDeadline(time.Now())
	if err := wait("read deadline", done); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read after the read deadline: %v", err)
	}
	fc.SetReadDeadline(time.Time{})
	done = read()
	time.Sleep(50 * time.Millisecond)
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait("Close", done); err == nil {
		t.Fatal("Read across Close returned no error")
	}
	if _, err := fc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if _, err := fc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := fc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}
