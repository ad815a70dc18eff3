package pika

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// Tests of issue 13: OnX registrations return a function that unregisters
// the callback, and OnClose receives one rule's value for a graceful close.

// fakeChannel dials b, with or without recovery, and opens a channel.
func fakeChannel(t *testing.T, b *fakeBroker, recovery bool) (*Conn, *Channel) {
	t.Helper()
	cfg := b.config()
	cfg.DisableRecovery = !recovery
	c := dialFake(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, ch
}

// callRecorder collects the routing keys of the returns a callback received.
type callRecorder struct {
	mu   sync.Mutex
	keys []string
}

func (r *callRecorder) add(k string) {
	r.mu.Lock()
	r.keys = append(r.keys, k)
	r.mu.Unlock()
}

func (r *callRecorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.keys)
}

// TestUnregisterDropsQueuedNotifications checks what unregistering does to
// notifications already queued for the callback: while a first callback is
// blocked, returns queue up for both callbacks; unregistering the second
// drops its queued calls (they never run), the first still gets all of its
// own, and later returns reach only the first.
func TestUnregisterDropsQueuedNotifications(t *testing.T) {
	b := newFakeBroker(t)
	returnMandatory(b)
	_, ch := fakeChannel(t, b, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var first, second callRecorder
	entered, release := make(chan struct{}), make(chan struct{})
	ch.OnReturn(func(r *Return) {
		first.add(r.RoutingKey)
		if r.RoutingKey == "0" {
			close(entered)
			<-release
		}
	})
	stop := ch.OnReturn(func(r *Return) { second.add(r.RoutingKey) })
	publish := func(i int) {
		t.Helper()
		if err := ch.Publish(ctx, "", fmt.Sprint(i), Message{Mandatory: true, Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	publish(0)
	<-entered
	publish(1)
	publish(2)
	// Queued: second(0), first(1), second(1), first(2), second(2).
	waitFor(t, "five notifications queued", func() bool { return ch.notify.box.len() == 5 })
	stop()
	stop() // idempotent
	close(release)
	publish(3)
	waitFor(t, "the first callback's four returns", func() bool { return len(first.got()) == 4 })
	if got := first.got(); !slices.Equal(got, []string{"0", "1", "2", "3"}) {
		t.Errorf("first callback got %v, want 0 1 2 3", got)
	}
	// The mailbox runs in order: once the first callback saw 3, every
	// notification posted before it has been run or dropped.
	if got := second.got(); len(got) != 0 {
		t.Errorf("unregistered callback got %v after unregistering, want nothing (its queued calls dropped)", got)
	}
}

// TestUnregisterFromItsOwnCallback checks that a callback may unregister
// itself: the call in progress completes, and its notifications queued
// behind it are dropped.
func TestUnregisterFromItsOwnCallback(t *testing.T) {
	b := newFakeBroker(t)
	returnMandatory(b)
	_, ch := fakeChannel(t, b, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var self, other callRecorder
	entered, release := make(chan struct{}), make(chan struct{})
	var stop func()
	var stopMu sync.Mutex
	stopMu.Lock()
	stop = ch.OnReturn(func(r *Return) {
		self.add(r.RoutingKey)
		if r.RoutingKey == "0" {
			close(entered)
			<-release
			stopMu.Lock()
			stop()
			stopMu.Unlock()
		}
	})
	stopMu.Unlock()
	ch.OnReturn(func(r *Return) { other.add(r.RoutingKey) })
	for i := range 3 {
		if err := ch.Publish(ctx, "", fmt.Sprint(i), Message{Mandatory: true, Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-entered
		}
	}
	waitFor(t, "returns queued", func() bool { return ch.notify.box.len() == 5 })
	close(release)
	waitFor(t, "the other callback's three returns", func() bool { return len(other.got()) == 3 })
	if got := self.got(); !slices.Equal(got, []string{"0"}) {
		t.Errorf("self-unregistering callback got %v, want only 0", got)
	}
}

// TestEveryOnXReturnsAnUnregister checks every registration function: the
// function it returns removes the callback from the list the notifications
// go to.
func TestEveryOnXReturnsAnUnregister(t *testing.T) {
	b := newFakeBroker(t)
	cfg := b.config()
	c := dialFake(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	regs := []struct {
		name string
		reg  func() func()
		n    func() int
	}{
		{"Conn.OnClose", func() func() { return c.OnClose(func(error) {}) }, func() int { return len(c.notify.onClose) }},
		{"Conn.OnBlocked", func() func() { return c.OnBlocked(func(bool, string) {}) }, func() int { return len(c.notify.onBlock) }},
		{"Conn.OnRecovery", func() func() { return c.OnRecovery(func(RecoveryEvent) {}) }, func() int { return len(c.notify.onRecovery) }},
		{"Channel.OnClose", func() func() { return ch.OnClose(func(error) {}) }, func() int { return len(ch.notify.onClose) }},
		{"Channel.OnReturn", func() func() { return ch.OnReturn(func(*Return) {}) }, func() int { return len(ch.notify.onReturn) }},
		{"Channel.OnConfirm", func() func() { return ch.OnConfirm(func(ConfirmEvent) {}) }, func() int { return len(ch.notify.onConfirm) }},
		{"Channel.OnCancel", func() func() { return ch.OnCancel(func(string) {}) }, func() int { return len(ch.notify.onCancel) }},
		{"Channel.OnFlow", func() func() { return ch.OnFlow(func(bool) {}) }, func() int { return len(ch.notify.onFlow) }},
		{"Channel.OnOrphanDelivery", func() func() { return ch.OnOrphanDelivery(func(string, uint64) {}) }, func() int { return len(ch.notify.onOrphan) }},
	}
	for _, r := range regs {
		c.mu.Lock()
		before := r.n()
		c.mu.Unlock()
		first := r.reg()
		second := r.reg()
		c.mu.Lock()
		if got := r.n(); got != before+2 {
			t.Errorf("%s: %d callbacks after registering two, want %d", r.name, got, before+2)
		}
		c.mu.Unlock()
		first()
		first()
		c.mu.Lock()
		if got := r.n(); got != before+1 {
			t.Errorf("%s: %d callbacks after unregistering one (twice), want %d: the other must stay", r.name, got, before+1)
		}
		c.mu.Unlock()
		second()
		c.mu.Lock()
		if got := r.n(); got != before {
			t.Errorf("%s: %d callbacks after unregistering both, want %d", r.name, got, before)
		}
		c.mu.Unlock()
	}
}

// TestOnCloseAfterGracefulConnClose checks the one rule for a close the
// application asked for: after Conn.Close, the connection's and its
// channels' OnClose callbacks all receive nil, Err returns nil for both,
// and calls on the channel fail with ErrClosed. A callback registered after
// the close gets the same value.
func TestOnCloseAfterGracefulConnClose(t *testing.T) {
	b := newFakeBroker(t)
	c, ch := fakeChannel(t, b, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connClosed, chClosed := make(chan error, 2), make(chan error, 2)
	c.OnClose(func(err error) { connClosed <- err })
	ch.OnClose(func(err error) { chClosed <- err })
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name string
		got  chan error
	}{{"Conn.OnClose", connClosed}, {"Channel.OnClose", chClosed}} {
		select {
		case err := <-w.got:
			if err != nil {
				t.Errorf("%s after Conn.Close got %v, want nil", w.name, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s not called", w.name)
		}
	}
	if err := c.Err(); err != nil {
		t.Errorf("Conn.Err after Conn.Close = %v, want nil", err)
	}
	if err := ch.Err(); err != nil {
		t.Errorf("Channel.Err after Conn.Close = %v, want nil", err)
	}
	if _, err := ch.QueueDeclare(ctx, "q", QueueDeclareOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("QueueDeclare after Conn.Close = %v, want ErrClosed", err)
	}
	ch.OnClose(func(err error) { chClosed <- err })
	select {
	case err := <-chClosed:
		if err != nil {
			t.Errorf("Channel.OnClose registered after Conn.Close got %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Channel.OnClose registered after the close not called")
	}
}

// TestOnCloseAfterConnectionFailure checks the other half of the rule: a
// connection that fails (recovery off) reports the cause to the
// connection's and the channel's OnClose, and to both Err.
func TestOnCloseAfterConnectionFailure(t *testing.T) {
	b := newFakeBroker(t)
	c, ch := fakeChannel(t, b, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connClosed, chClosed := make(chan error, 1), make(chan error, 1)
	c.OnClose(func(err error) { connClosed <- err })
	ch.OnClose(func(err error) { chClosed <- err })
	b.conn(1).kill()
	var connErr error
	select {
	case connErr = <-connClosed:
	case <-ctx.Done():
		t.Fatal("Conn.OnClose not called")
	}
	if connErr == nil {
		t.Fatal("Conn.OnClose after a connection failure got nil")
	}
	select {
	case err := <-chClosed:
		if err == nil || err.Error() != connErr.Error() {
			t.Errorf("Channel.OnClose after a connection failure got %v, want the connection's cause %v", err, connErr)
		}
	case <-ctx.Done():
		t.Fatal("Channel.OnClose not called")
	}
	if ch.Err() == nil || c.Err() == nil {
		t.Errorf("Err after a failure: channel %v, connection %v; want the cause for both", ch.Err(), c.Err())
	}
}
