package pika

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// TestFakeRecoverFailuresKeepTheirCause: two channels whose restore the
// broker refuses for different reasons each close with their own cause, and
// the report names each with its own.
func TestFakeRecoverFailuresKeepTheirCause(t *testing.T) {
	b := newFakeBroker(t)
	c, ch1, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch1.Qos(ctx, QosOptions{PrefetchCount: 5}); err != nil {
		t.Fatal(err)
	}
	ch2, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch2.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if fc.n != 2 {
			return false
		}
		switch m.(type) {
		case *wire.BasicQos:
			fc.send(ch, &wire.ChannelClose{ReplyCode: uint16(wire.ReplyPreconditionFailed), ReplyText: "PRECONDITION_FAILED - qos refused"})
			return true
		case *wire.ConfirmSelect:
			fc.send(ch, &wire.ChannelClose{ReplyCode: uint16(wire.ReplyAccessRefused), ReplyText: "ACCESS_REFUSED - confirms refused"})
			return true
		}
		return false
	})
	b.conn(1).kill()
	rep := rlog.wait(RecoveryRecovered, 1, 10*time.Second).Report
	want := map[uint16]wire.ReplyCode{ch1.ID(): wire.ReplyPreconditionFailed, ch2.ID(): wire.ReplyAccessRefused}
	for _, ch := range []*Channel{ch1, ch2} {
		select {
		case <-ch.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("channel %d not closed after its restore failed", ch.ID())
		}
		var e *Error
		if !errors.As(ch.Err(), &e) || e.Code != want[ch.ID()] {
			t.Errorf("channel %d closed with %v, want its own %v", ch.ID(), ch.Err(), want[ch.ID()])
		}
	}
	if len(rep.Failed) != 2 {
		t.Fatalf("report failures %+v, want 2", rep.Failed)
	}
	for _, f := range rep.Failed {
		var e *Error
		ok := errors.As(f.Err, &e)
		if !ok || (f.Entity[:9] == "channel 1" && e.Code != wire.ReplyPreconditionFailed) || (f.Entity[:9] == "channel 2" && e.Code != wire.ReplyAccessRefused) {
			t.Errorf("report failure %q: %v", f.Entity, f.Err)
		}
	}
}

// TestFakeRecoverChannelBeyondChannelMax: the new connection's broker
// allows fewer channels than the Conn had open. The channels beyond its
// channel_max cannot be reopened: each is reported and closed with its own
// cause (naming its number), one refused by the broker with the broker's
// error, and the rest of the Conn recovers instead of retrying forever.
func TestFakeRecoverChannelBeyondChannelMax(t *testing.T) {
	b := newFakeBroker(t)
	c, ch1, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch1.Qos(ctx, QosOptions{PrefetchCount: 5}); err != nil {
		t.Fatal(err)
	}
	chans := []*Channel{ch1}
	for range 3 {
		ch, err := c.Channel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if fc.n < 2 {
			return false
		}
		switch m.(type) {
		case *wire.ConnectionStartOk:
			fc.send(0, &wire.ConnectionTune{ChannelMax: 2, FrameMax: 128 << 10})
			return true
		case *wire.BasicQos:
			fc.send(ch, &wire.ChannelClose{ReplyCode: uint16(wire.ReplyPreconditionFailed), ReplyText: "PRECONDITION_FAILED - qos refused"})
			return true
		}
		return false
	})
	b.conn(1).kill()
	rep := rlog.wait(RecoveryRecovered, 1, 10*time.Second).Report
	if rep.Channels != 1 || len(rep.Failed) != 3 {
		t.Errorf("report: %d channels, failures %+v; want 1 channel restored and 3 failures", rep.Channels, rep.Failed)
	}
	for _, f := range rep.Failed {
		t.Logf("failure %s: %v", f.Entity, f.Err)
	}
	var e *Error
	<-ch1.Done()
	if !errors.As(ch1.Err(), &e) || e.Code != wire.ReplyPreconditionFailed {
		t.Errorf("channel 1 closed with %v, want the broker's PRECONDITION_FAILED", ch1.Err())
	}
	if chans[1].IsClosed() {
		t.Errorf("channel 2 closed: %v", chans[1].Err())
	}
	for _, ch := range chans[2:] {
		select {
		case <-ch.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("channel %d not closed", ch.ID())
		}
		if err := ch.Err(); err == nil || errors.As(err, &e) || !strings.Contains(err.Error(), "channel "+strconv.Itoa(int(ch.ID()))) {
			t.Errorf("channel %d closed with %v, want its own cause naming it", ch.ID(), err)
		}
	}
}

// TestFakeSecondCloseHonoursCtx: a second Close, while the first waits for
// a close-ok that does not come, returns when its own ctx ends.
func TestFakeSecondCloseHonoursCtx(t *testing.T) {
	b := newFakeBroker(t)
	cfg := b.config()
	cfg.CloseTimeout = time.Minute
	c, _, _ := fakeSetup(t, b, cfg)
	closing := make(chan struct{})
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.ConnectionClose); ok {
			close(closing)
			return true // no close-ok
		}
		return false
	})
	first := make(chan error, 1)
	go func() { first <- c.Close(context.Background()) }()
	<-closing
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	second := make(chan error, 1)
	go func() { second <- c.Close(ctx) }()
	select {
	case err := <-second:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("second Close: %v, want its ctx's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second Close still blocked 10s after its 100ms ctx ended")
	}
	b.conn(1).kill()
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("first Close still blocked after the connection died")
	}
}

// blockedAtOpen makes the fake broker's connections for which pick returns
// true send connection.blocked in the same write as connection.open-ok, so
// that the client reads it before it has installed the new link.
func blockedAtOpen(b *fakeBroker, pick func(n int) bool) {
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.ConnectionOpen); ok && pick(fc.n) {
			buf := scripted.Method(0, &wire.ConnectionOpenOk{})
			buf = append(buf, scripted.Method(0, &wire.ConnectionBlocked{Reason: "low on memory"})...)
			fc.wmu.Lock()
			fc.nc.Write(buf)
			fc.wmu.Unlock()
			return true
		}
		return false
	})
}

// TestFakeRecoverBlockedAtOpen: a connection.blocked that arrives with the
// open-ok, before the link is the Conn's (at dial, and during a recovery),
// is not lost: the Conn is blocked and OnBlocked hears it.
func TestFakeRecoverBlockedAtOpen(t *testing.T) {
	t.Run("dial", func(t *testing.T) {
		b := newFakeBroker(t)
		blockedAtOpen(b, func(n int) bool { return n == 1 })
		c, _, _ := fakeSetup(t, b, b.config())
		if blocked, reason := c.IsBlocked(); !blocked || reason != "low on memory" {
			t.Fatalf("IsBlocked after a blocked sent with the open-ok: %v %q", blocked, reason)
		}
	})
	t.Run("recovery", func(t *testing.T) {
		b := newFakeBroker(t)
		c, _, rlog := fakeSetup(t, b, b.config())
		heard := make(chan string, 4)
		c.OnBlocked(func(blocked bool, reason string) {
			if blocked {
				heard <- reason
			}
		})
		blockedAtOpen(b, func(n int) bool { return n == 2 })
		b.conn(1).kill()
		rlog.wait(RecoveryRecovered, 1, 10*time.Second)
		if blocked, reason := c.IsBlocked(); !blocked || reason != "low on memory" {
			t.Errorf("IsBlocked after recovering onto a blocked connection: %v %q", blocked, reason)
		}
		select {
		case r := <-heard:
			if r != "low on memory" {
				t.Errorf("OnBlocked reason %q", r)
			}
		case <-time.After(5 * time.Second):
			t.Error("OnBlocked never heard the blocked sent with the open-ok")
		}
	})
}

// TestFakeChannelCloseDuringRestore: Channel.Close called while recovery
// restores the connection, at each step of the restore, closes what the
// recovery reopened: the new connection sees channel.close for the channel
// (or never sees it reopened), no consumer of it is restarted after the
// close, and Close returns nil once the broker's close-ok came, or its
// ctx's error when the close-ok does not come in time.
func TestFakeChannelCloseDuringRestore(t *testing.T) {
	type step struct {
		name string
		// stall returns true for the method of connection 2 at which the
		// restore stops until released (the method is answered then).
		stall func(ch uint16, m wire.Method) bool
		// reopened: the channel was reopened when Close is called.
		reopened bool
	}
	steps := []step{
		{"before channel reopen", func(ch uint16, m wire.Method) bool {
			_, ok := m.(*wire.ConnectionOpen)
			return ok
		}, false},
		{"after reopen before consumers", func(ch uint16, m wire.Method) bool {
			_, ok := m.(*wire.QueueDeclare)
			return ok
		}, true},
		{"after consumers", func(ch uint16, m wire.Method) bool {
			c, ok := m.(*wire.BasicConsume)
			return ok && c.ConsumerTag == "c2"
		}, true},
	}
	for _, st := range steps {
		for _, mode := range []string{"ctx", "fail-while-recovering", "no-close-ok"} {
			if mode == "no-close-ok" && !st.reopened {
				continue
			}
			t.Run(st.name+"/"+mode, func(t *testing.T) {
				b := newFakeBroker(t)
				cfg := b.config()
				cfg.FailWhileRecovering = mode == "fail-while-recovering"
				c, ch1, rlog := fakeSetup(t, b, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cons1, err := ch1.Consume(ctx, "q", ConsumeOptions{Tag: "c1"})
				if err != nil {
					t.Fatal(err)
				}
				ch2, err := c.Channel(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ch2.Consume(ctx, "q", ConsumeOptions{Tag: "c2"}); err != nil {
					t.Fatal(err)
				}
				stalled := make(chan struct{})
				release := make(chan struct{})
				var once sync.Once
				b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
					if fc.n != 2 {
						return false
					}
					if mode == "no-close-ok" && ch == ch1.ID() {
						if _, ok := m.(*wire.ChannelClose); ok {
							return true // the close-ok never comes
						}
					}
					if st.stall(ch, m) {
						once.Do(func() { close(stalled) })
						go func() {
							<-release
							b.setHook(nil)
							fc.handle(ch, m)
						}()
						return true
					}
					return false
				})
				b.conn(1).kill()
				select {
				case <-stalled:
				case <-time.After(10 * time.Second):
					t.Fatalf("the restore did not reach the step; events:\n%s", rlog)
				}
				cctx, ccancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer ccancel()
				err = ch1.Close(cctx)
				if mode == "no-close-ok" {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("Close without a close-ok: %v, want its ctx's error", err)
					}
				} else if err != nil {
					t.Errorf("Close during the restore: %v", err)
				}
				close(release)
				rep := rlog.wait(RecoveryRecovered, 1, 10*time.Second).Report
				if rep.Channels > 2 {
					t.Errorf("report: %d channels", rep.Channels)
				}
				fc2 := b.conn(2)
				opened, closed, consumedAfterClose := false, false, false
				for _, m := range fc2.methods() {
					switch m {
					case "1:channel.open":
						opened = true
					case "1:channel.close":
						closed = true
					case "1:basic.consume":
						consumedAfterClose = consumedAfterClose || closed
					}
				}
				// Channel 1 is the application's channel when it was
				// reopened; otherwise the number may be reused by the
				// recovery's topology channel.
				if st.reopened && (!opened || !closed) {
					t.Errorf("channel 1 on the new connection: opened %v, closed %v; want it closed: %v", opened, closed, fc2.methods())
				}
				if !st.reopened && strings.Contains(strings.Join(fc2.methods(), " "), "1:basic.consume") {
					t.Errorf("consumer of the closed channel restarted: %v", fc2.methods())
				}
				if consumedAfterClose {
					t.Errorf("a consumer restarted on channel 1 after its close: %v", fc2.methods())
				}
				if mode != "no-close-ok" {
					select {
					case <-ch1.Done():
					case <-time.After(5 * time.Second):
						t.Fatal("channel 1 not closed")
					}
					if ch1.Err() != nil {
						t.Errorf("channel 1 Err after Close: %v", ch1.Err())
					}
					if _, err := cons1.Next(ctx); err == nil {
						t.Error("the closed channel's consumer still delivers")
					}
				}
				if ch2.IsClosed() {
					t.Errorf("channel 2 closed: %v", ch2.Err())
				}
			})
		}
	}
}
