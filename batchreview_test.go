package pika

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// Adversarial tests of the day's root-package changes (task batchreview):
// the byte counts' timer, the final recovery codes, and the batched
// hand-over to Next.

// lateBytes is a BytesHook that adds up what it is told and notes a call
// made after the test marked Close as returned.
type lateBytes struct {
	mu     sync.Mutex
	read   int64
	wrote  int64
	closed bool // Close returned
	late   int  // OnBytes calls after that
}

func (h *lateBytes) OnBytes(_ *Conn, read, written int64) {
	h.mu.Lock()
	h.read += read
	h.wrote += written
	if h.closed {
		h.late++
	}
	h.mu.Unlock()
}

// TestReviewBytesAfterOwnEndThenClose: a connection that ended on its own
// (the broker closed it, recovery off) and is then closed by the
// application reports its last byte counts before Close returns, as a
// Close of a live connection does: none reaches the BytesHooks afterwards.
// It failed twice: the throttle's timer held the counts of the last reads
// (the broker's connection.close among them) for up to bytesEvery after
// Close returned, and Close did not wait for the link's writer, which
// still wrote the close-ok (and counted it) after Close returned.
func TestReviewBytesAfterOwnEndThenClose(t *testing.T) {
	for round := range 3 {
		b := newFakeBroker(t)
		h := &lateBytes{}
		cfg := b.config()
		cfg.DisableRecovery = true
		cfg.Hooks = []Hook{h}
		c := dialFake(t, cfg)
		// Within bytesEvery of the first read (whose drain is not
		// delayed): the close's bytes wait for the timer.
		b.conn(1).send(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - test"})
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the broker's close did not end the connection")
		}
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		h.mu.Lock()
		h.closed = true
		atClose, wroteAtClose := h.read, h.wrote
		h.mu.Unlock()
		// Nothing may come later: wait well past the throttle's delay.
		time.Sleep(3 * bytesEvery)
		h.mu.Lock()
		late, total, wrote := h.late, h.read, h.wrote
		h.mu.Unlock()
		if late != 0 {
			t.Fatalf("round %d: %d OnBytes calls after Close returned (read %d reported at Close, %d in all; written %d at Close, %d in all)", round, late, atClose, total, wroteAtClose, wrote)
		}
	}
}

// TestReviewForcedCloseDuringRestoreRecovers: a recovery attempt that the
// broker closes with 320 CONNECTION_FORCED (what a broker shutting down or
// restarting sends), at the login or during the restore, is not final: the
// next attempt recovers.
func TestReviewForcedCloseDuringRestoreRecovers(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func(m wire.Method) bool
	}{
		{"login", func(m wire.Method) bool { _, ok := m.(*wire.ConnectionStartOk); return ok }},
		{"connection.open", func(m wire.Method) bool { _, ok := m.(*wire.ConnectionOpen); return ok }},
		{"restore channel.open", func(m wire.Method) bool { _, ok := m.(*wire.ChannelOpen); return ok }},
		{"restore queue.declare", func(m wire.Method) bool { _, ok := m.(*wire.QueueDeclare); return ok }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t)
			b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
				if fc.n != 2 || !tc.at(m) {
					return false
				}
				fc.send(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"})
				return true
			})
			c, ch, rlog := fakeSetup(t, b, b.config())
			b.conn(1).kill()
			rlog.wait(RecoveryRecovered, 1, 10*time.Second)
			if n := rlog.count(RecoveryGaveUp); n != 0 {
				t.Fatalf("recovery gave up:\n%s", rlog.String())
			}
			if b.count() != 3 {
				t.Fatalf("%d connections, want the refused attempt and a third", b.count())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := ch.QueueDeclare(ctx, "", QueueDeclareOptions{Exclusive: true}); err != nil {
				t.Fatalf("the recovered channel: %v", err)
			}
			if c.IsClosed() {
				t.Fatal("connection closed")
			}
			if s := rlog.String(); !strings.Contains(s, "CONNECTION_FORCED") {
				t.Errorf("events:\n%s\nwant the attempt's 320 reported", s)
			}
		})
	}
}

// blockingBytes is a BytesHook whose calls block until release is closed.
type blockingBytes struct {
	entered chan struct{} // closed at the first call
	once    sync.Once
	release chan struct{}
}

func (h *blockingBytes) OnBytes(*Conn, int64, int64) {
	h.once.Do(func() { close(h.entered) })
	<-h.release
}

// TestReviewCloseEndedConnBlockedHook: Close of a Conn that ended on its
// own, with a ctx without deadline, while a BytesHook blocks: the wait for
// the hooks is bounded by Config.CloseTimeout, as for a live Conn; Close
// does not hang.
func TestReviewCloseEndedConnBlockedHook(t *testing.T) {
	b := newFakeBroker(t)
	h := &blockingBytes{entered: make(chan struct{}), release: make(chan struct{})}
	defer close(h.release)
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.CloseTimeout = 200 * time.Millisecond
	cfg.Hooks = []Hook{h}
	c := dialFake(t, cfg)
	select {
	case <-h.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnBytes call")
	}
	b.conn(1).send(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - test"})
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the broker's close did not end the connection")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close(context.Background()) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs behind a blocked BytesHook")
	}
}
