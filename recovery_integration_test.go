package pika

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// Integration tests of automatic recovery against the real broker. Every
// test disturbs the broker (it force-closes connections, stops the broker
// application, or cuts connections through a proxy), so each one takes the
// exclusive broker lock with testenv.Disruptive and puts the broker back in
// t.Cleanup. Bounds are generous: the only timing asserted is "before a
// deadline".

// rtTimeout bounds each test's waits.
const rtTimeout = 60 * time.Second

// rtConfig returns the configuration of a recovering test connection: a
// connection name unique to the test (to find it with rabbitmqctl) and a
// short backoff.
func rtConfig(t *testing.T, url string) Config {
	t.Helper()
	cfg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnectionName = testenv.Name(t, "conn")
	cfg.Reconnect = Backoff{Initial: 50 * time.Millisecond, Max: time.Second}
	return cfg
}

// rtDial connects with cfg and closes the connection in the test's cleanup.
func rtDial(t *testing.T, cfg Config) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig: %v", err)
	}
	t.Cleanup(func() { closeWithin(t, c, 10*time.Second) })
	return c
}

// closeWithin closes c and reports a Close that does not return in time.
func closeWithin(t *testing.T, c *Conn, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Close(ctx) }()
	select {
	case <-done:
	case <-time.After(d + 5*time.Second):
		t.Errorf("Conn.Close did not return within %v (its ctx) + 5s", d)
	}
}

// recoveryLog records a Conn's recovery events.
type recoveryLog struct {
	t      *testing.T
	start  time.Time
	mu     sync.Mutex
	events []RecoveryEvent
	at     []time.Duration
	signal chan struct{} // cap 1: an event arrived
}

func watchRecovery(t *testing.T, c *Conn) *recoveryLog {
	r := &recoveryLog{t: t, start: time.Now(), signal: make(chan struct{}, 1)}
	c.OnRecovery(func(ev RecoveryEvent) {
		r.mu.Lock()
		r.events = append(r.events, ev)
		r.at = append(r.at, time.Since(r.start))
		r.mu.Unlock()
		select {
		case r.signal <- struct{}{}:
		default:
		}
	})
	return r
}

// count returns how many events of kind arrived.
func (r *recoveryLog) count(kind RecoveryKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// all returns the events so far.
func (r *recoveryLog) all() []RecoveryEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RecoveryEvent(nil), r.events...)
}

// wait waits until n events of kind arrived, at most d, and returns the
// n-th. It fails the test on timeout, listing the events seen.
func (r *recoveryLog) wait(kind RecoveryKind, n int, d time.Duration) RecoveryEvent {
	r.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		k := 0
		for _, ev := range r.events {
			if ev.Kind == kind {
				k++
				if k == n {
					r.mu.Unlock()
					return ev
				}
			}
		}
		r.mu.Unlock()
		select {
		case <-r.signal:
		case <-deadline.C:
			r.t.Fatalf("no %d-th %v recovery event within %v; events:\n%s", n, kind, d, r.String())
		}
	}
}

func (r *recoveryLog) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for i, ev := range r.events {
		fmt.Fprintf(&b, "  %8v %v attempt=%d delay=%v err=%v", r.at[i].Round(time.Millisecond), ev.Kind, ev.Attempt, ev.Delay, ev.Err)
		if ev.Report != nil {
			fmt.Fprintf(&b, " report=%+v", *ev.Report)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// forceClose closes the broker connection named name with rabbitmqctl,
// waiting (up to 15 s) for it to be listed: after a recovery the new
// connection may not be listed at once.
func forceClose(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := testenv.Rabbitmqctl(t, "list_connections", "-q", "pid", "client_properties")
		closed := false
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `<<"`+name+`">>`) || strings.Contains(line, name) {
				pid := strings.Fields(line)[0]
				testenv.Rabbitmqctl(t, "close_connection", pid, "pika recovery test: forced close")
				closed = true
			}
		}
		if closed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no broker connection named %q to close; list_connections:\n%s", name, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkGoroutines waits (up to 10 s) for the number of goroutines to fall
// back to baseline and reports the extra goroutines otherwise.
func checkGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			var others []string
			for _, g := range strings.Split(string(buf), "\n\n") {
				if !strings.Contains(g, "checkGoroutines") && !strings.Contains(g, "testing.(*T).Run") && !strings.Contains(g, "testing.(*M)") {
					others = append(others, g)
				}
			}
			t.Errorf("%d goroutines 10s after Close, %d before the test; goroutines:\n%s", n, baseline, strings.Join(others, "\n\n"))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Declarations go through the API, which records them for recovery.

func rtDeclareQueue(t *testing.T, ch *Channel, name string, opts QueueDeclareOptions) string {
	t.Helper()
	q, err := ch.QueueDeclare(context.Background(), name, opts)
	if err != nil {
		t.Fatalf("QueueDeclare %q: %v", name, err)
	}
	return q.Name
}

func rtDeclareExchange(t *testing.T, ch *Channel, name, kind string) {
	t.Helper()
	if err := ch.ExchangeDeclare(context.Background(), name, kind, ExchangeDeclareOptions{}); err != nil {
		t.Fatalf("ExchangeDeclare %q: %v", name, err)
	}
}

func rtBind(t *testing.T, ch *Channel, queue, exchange, key string) {
	t.Helper()
	if err := ch.QueueBind(context.Background(), queue, exchange, key, BindOptions{}); err != nil {
		t.Fatalf("QueueBind %q to %q: %v", queue, exchange, err)
	}
}

func rtDeleteQueue(t *testing.T, ch *Channel, queue string) {
	t.Helper()
	if _, err := ch.QueueDelete(context.Background(), queue, QueueDeleteOptions{}); err != nil {
		t.Fatalf("QueueDelete %q: %v", queue, err)
	}
}

func rtQos(t *testing.T, ch *Channel, prefetch int) {
	t.Helper()
	if err := ch.Qos(context.Background(), QosOptions{PrefetchCount: prefetch}); err != nil {
		t.Fatalf("Qos: %v", err)
	}
}

// queueExists declares queue passively on a channel of its own of c: it
// returns the queue, or nil when the broker answers 404.
func queueExists(t *testing.T, c *Conn, queue string) *Queue {
	t.Helper()
	ch := openChannel(t, c)
	defer ch.Close(context.Background())
	q, err := ch.QueueDeclarePassive(context.Background(), queue)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("QueueDeclarePassive %q: %v", queue, err)
	}
	return &q
}

// deleteLater deletes queues and exchanges in the test's cleanup, over a
// connection of its own, so that the test leaves nothing declared.
func deleteLater(t *testing.T, url string, queues, exchanges []string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cfg, _ := ParseURL(url)
		cfg.DisableRecovery = true
		c, err := DialConfig(ctx, cfg)
		if err != nil {
			t.Errorf("cleanup: cannot connect to delete %v %v: %v", queues, exchanges, err)
			return
		}
		defer c.Close(ctx)
		ch, err := c.Channel(ctx)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, q := range queues {
			if _, err := ch.QueueDelete(ctx, q, QueueDeleteOptions{}); err != nil {
				t.Errorf("cleanup: deleting queue %q: %v", q, err)
			}
		}
		for _, e := range exchanges {
			if err := ch.ExchangeDelete(ctx, e, ExchangeDeleteOptions{}); err != nil {
				t.Errorf("cleanup: deleting exchange %q: %v", e, err)
			}
		}
	})
}

// roundTrip publishes body with a confirmation on pub and expects cons to
// receive it (acking it), skipping other messages.
func roundTrip(t *testing.T, pub *Channel, cons *Consumer, exchange, key, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := pub.PublishWithConfirm(ctx, exchange, key, Message{Body: []byte(body)})
	if err != nil {
		t.Fatalf("publish %q: %v", body, err)
	}
	if err := f.Wait(ctx); err != nil {
		t.Fatalf("confirmation of %q: %v", body, err)
	}
	for {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %q: %v", body, err)
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("ack of %q: %v", d.Body, err)
		}
		if string(d.Body) == body {
			return
		}
		t.Logf("skipping %q while waiting for %q", d.Body, body)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestRecoveryForcedClose: a connection with several channels, a
// server-named exclusive queue bound to an exchange, QoS, a consumer and
// confirm mode survives rabbitmqctl close_connection. The queue comes back
// under a new name that the report gives, the binding and the consumer
// follow it, and deliveries and confirmations resume.
func TestRecoveryForcedClose(t *testing.T) {
	url := testenv.Disruptive(t)
	baseline := runtime.NumGoroutine()
	cfg := rtConfig(t, url)
	ex := testenv.Name(t, "ex")
	deleteLater(t, url, nil, []string{ex})
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)

	topo := openChannel(t, c)
	rtDeclareExchange(t, topo, ex, ExchangeDirect)
	q := rtDeclareQueue(t, topo, "", QueueDeclareOptions{Exclusive: true})
	rtBind(t, topo, q, ex, "k")
	consCh := openChannel(t, c)
	rtQos(t, consCh, 10)
	cons, err := consCh.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub := openChannel(t, c)
	if err := pub.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, pub, cons, ex, "k", "before")
	if got := cons.Queue(); got != q {
		t.Errorf("consumer's Queue %q, want %q", got, q)
	}

	forceClose(t, cfg.ConnectionName)
	lost := rlog.wait(RecoveryLost, 1, rtTimeout)
	if !errors.Is(lost.Err, ErrConnectionForced) {
		t.Errorf("lost event: %v, want 320 CONNECTION_FORCED", lost.Err)
	}
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	t.Logf("events:\n%s", rlog)
	if rep.Channels != 3 || rep.Consumers != 1 || len(rep.Failed) != 0 {
		t.Errorf("report: %d channels, %d consumers, failed %v; want 3, 1, none", rep.Channels, rep.Consumers, rep.Failed)
	}
	newQ := rep.RenamedQueues[q]
	if newQ == "" || newQ == q || len(rep.RenamedQueues) != 1 {
		t.Fatalf("RenamedQueues %v: want %q renamed", rep.RenamedQueues, q)
	}
	if ok := queueExists(t, c, newQ); ok == nil || ok.Consumers != 1 {
		t.Fatalf("queue %q after recovery: %+v, want one consumer", newQ, ok)
	}
	if ok := queueExists(t, c, q); ok != nil {
		t.Errorf("the old server-named queue %q still exists: %+v", q, ok)
	}
	if got := cons.Queue(); got != newQ {
		t.Errorf("consumer's Queue after recovery %q, want the new name %q", got, newQ)
	}
	if c.IsRecovering() || c.IsClosed() {
		t.Fatalf("after the recovered event: recovering %v, closed %v", c.IsRecovering(), c.IsClosed())
	}
	// The binding moved to the new name: publishing to the exchange reaches
	// the consumer, which consumes from the new queue.
	roundTrip(t, pub, cons, ex, "k", "after via exchange")
	roundTrip(t, pub, cons, "", newQ, "after via default exchange")
	if consCh.IsClosed() || pub.IsClosed() || topo.IsClosed() {
		t.Fatal("a channel closed across the recovery")
	}
	closeWithin(t, c, 10*time.Second)
	checkGoroutines(t, baseline)
}

// TestRecoveryBrokerRestart: the broker application stops (rabbitmqctl
// stop_app) and starts again a few seconds later; recovery keeps trying
// through the outage and succeeds once the broker is back.
func TestRecoveryBrokerRestart(t *testing.T) {
	url := testenv.Disruptive(t)
	t.Cleanup(func() { ensureBrokerStarted(t, url) })
	cfg := rtConfig(t, url)
	cfg.Reconnect = Backoff{Initial: 100 * time.Millisecond, Max: 500 * time.Millisecond}
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}

	testenv.Rabbitmqctl(t, "stop_app")
	stopped := time.Now()
	rlog.wait(RecoveryLost, 1, rtTimeout)
	// Attempts fail while the broker is down.
	rlog.wait(RecoveryAttempt, 4, rtTimeout)
	if rest := 3*time.Second - time.Since(stopped); rest > 0 {
		time.Sleep(rest)
	}
	if !c.IsRecovering() {
		t.Fatalf("not recovering while the broker is stopped; events:\n%s", rlog)
	}
	testenv.Rabbitmqctl(t, "start_app")
	rep := rlog.wait(RecoveryRecovered, 1, 90*time.Second).Report
	t.Logf("outage of %v; events:\n%s", time.Since(stopped).Round(time.Millisecond), rlog)
	failedAttempts := 0
	for _, ev := range rlog.all() {
		if ev.Kind == RecoveryAttempt && ev.Attempt > 1 && ev.Err != nil {
			failedAttempts++
		}
	}
	if failedAttempts < 3 {
		t.Errorf("%d attempts failed during the outage, want several", failedAttempts)
	}
	newQ := rep.RenamedQueues[q]
	if newQ == "" {
		t.Fatalf("report %+v: server-named queue not renamed", rep)
	}
	roundTrip(t, ch, cons, "", newQ, "after restart")
}

// ensureBrokerStarted runs rabbitmqctl start_app (harmless when running)
// and waits for the broker to accept AMQP connections again.
func ensureBrokerStarted(t *testing.T, url string) {
	testenv.Rabbitmqctl(t, "start_app")
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		cfg, _ := ParseURL(url)
		cfg.DisableRecovery = true
		c, err := DialConfig(ctx, cfg)
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("broker does not accept connections 60s after start_app: %v", err)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestRecoveryStaleDeliveryTags: a delivery received before a loss cannot
// be acknowledged after the recovery (the broker forgot its tag): Ack
// returns ErrStaleDelivery without closing the channel, the broker
// redelivers the message, and new deliveries ack fine.
func TestRecoveryStaleDeliveryTags(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := testenv.Name(t, "q")
	rtDeclareQueue(t, ch, q, QueueDeclareOptions{Exclusive: true})
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	for _, body := range []string{"m1", "m2"} {
		f, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := ch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old1, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old2, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}

	forceClose(t, cfg.ConnectionName)
	rlog.wait(RecoveryRecovered, 1, rtTimeout)

	for _, d := range []*Delivery{old1, old2} {
		if err := d.Ack(false); !errors.Is(err, ErrStaleDelivery) {
			t.Fatalf("Ack of pre-recovery delivery %d (%q): %v, want ErrStaleDelivery", d.DeliveryTag, d.Body, err)
		}
	}
	if err := ch.Nack(old2.DeliveryTag, true, true); !errors.Is(err, ErrStaleDelivery) {
		t.Fatalf("Nack(multiple) of a pre-recovery tag: %v, want ErrStaleDelivery", err)
	}
	// The messages come again (the queue was declared again and is empty:
	// it was exclusive, so the broker deleted it with the old connection).
	// Publish new ones and ack them.
	seen := map[string]bool{}
	for _, body := range []string{"n1", "n2", "n3"} {
		if err := ch.Publish(ctx, "", q, Message{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	for len(seen) < 3 {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("after recovery: %v", err)
		}
		if d.DeliveryTag <= old2.DeliveryTag {
			t.Fatalf("delivery tag %d after recovery is not above the pre-recovery tags (up to %d)", d.DeliveryTag, old2.DeliveryTag)
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("Ack of a new delivery %d: %v", d.DeliveryTag, err)
		}
		seen[string(d.Body)] = true
	}
	if err := ch.WaitConfirms(ctx); err != nil {
		t.Fatal(err)
	}
	// The channel is still open on the broker: a synchronous call works.
	if ok := queueExists(t, c, q); ok == nil || ok.Messages != 0 {
		t.Fatalf("queue after acking: %+v, want empty", ok)
	}
	if _, err := ch.QueueDeclarePassive(ctx, q); err != nil || ch.IsClosed() {
		t.Fatalf("channel after the stale acks: %v (closed %v)", err, ch.IsClosed())
	}
}

// TestRecoveryStaleDeliveryRedelivered: like TestRecoveryStaleDeliveryTags
// with a queue that survives the connection: the unacknowledged message is
// delivered again after the recovery, marked redelivered, and its new tag
// acks.
func TestRecoveryStaleDeliveryRedelivered(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	q := testenv.Name(t, "q")
	deleteLater(t, url, []string{q}, nil)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	rtDeclareQueue(t, ch, q, QueueDeclareOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	if err := ch.Publish(ctx, "", q, Message{Body: []byte("once")}); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	forceClose(t, cfg.ConnectionName)
	rlog.wait(RecoveryRecovered, 1, rtTimeout)
	if err := old.Ack(false); !errors.Is(err, ErrStaleDelivery) {
		t.Fatalf("Ack of the pre-recovery delivery: %v, want ErrStaleDelivery", err)
	}
	again, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Body) != "once" || !again.Redelivered || again.DeliveryTag <= old.DeliveryTag {
		t.Fatalf("redelivery: %q redelivered=%v tag %d (old tag %d)", again.Body, again.Redelivered, again.DeliveryTag, old.DeliveryTag)
	}
	if err := again.Ack(false); err != nil {
		t.Fatalf("Ack of the redelivery: %v", err)
	}
	if ok := queueExists(t, c, q); ok == nil || ok.Messages != 0 {
		t.Fatalf("queue after acking the redelivery: %+v", ok)
	}
}

// TestRecoveryAuthenticationFailure: when the broker refuses the
// credentials on reconnection, recovery stops with ErrAuthentication
// instead of retrying forever.
func TestRecoveryAuthenticationFailure(t *testing.T) {
	url := testenv.Disruptive(t)
	user := "pika-test-" + randomHex(6)
	pass := randomHex(12)
	testenv.Rabbitmqctl(t, "add_user", user, pass)
	t.Cleanup(func() { testenv.Rabbitmqctl(t, "delete_user", user) })
	testenv.Rabbitmqctl(t, "set_permissions", "-p", "/", user, ".*", ".*", ".*")

	cfg := rtConfig(t, url)
	cfg.Username, cfg.Password = user, pass
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})

	testenv.Rabbitmqctl(t, "change_password", user, randomHex(12))
	forceClose(t, cfg.ConnectionName)
	select {
	case <-c.Done():
	case <-time.After(rtTimeout):
		t.Fatalf("recovery still running %v after the credentials were refused; events:\n%s", rtTimeout, rlog)
	}
	t.Logf("events:\n%s", rlog)
	if err := c.Err(); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("Conn.Err() = %v, want ErrAuthentication", err)
	}
	gaveUp := rlog.wait(RecoveryGaveUp, 1, 5*time.Second)
	if !errors.Is(gaveUp.Err, ErrAuthentication) {
		t.Errorf("gave-up event: %v, want ErrAuthentication", gaveUp.Err)
	}
	if n := rlog.count(RecoveryAttempt); n != 1 {
		t.Errorf("%d attempts, want 1: a refused login is not retried", n)
	}
	if !ch.IsClosed() || !errors.Is(ch.Err(), ErrAuthentication) {
		t.Errorf("channel after the final close: closed %v, err %v", ch.IsClosed(), ch.Err())
	}
	if _, err := c.Channel(context.Background()); !errors.Is(err, ErrAuthentication) {
		t.Errorf("Channel after the final close: %v, want the close cause", err)
	}
}

// gatedStrategy holds recovery before its first attempt until open is
// closed (or a minute passes), then retries quickly: it keeps a Conn in the
// recovering state for as long as a test needs.
type gatedStrategy struct {
	open    chan struct{}
	waiting chan struct{} // closed when the first NextDelay call waits
	once    sync.Once
}

func newGatedStrategy() *gatedStrategy {
	return &gatedStrategy{open: make(chan struct{}), waiting: make(chan struct{})}
}

func (g *gatedStrategy) NextDelay(attempt int, _ error) (time.Duration, bool) {
	if attempt == 1 {
		g.once.Do(func() { close(g.waiting) })
		select {
		case <-g.open:
		case <-time.After(time.Minute):
		}
	}
	return 20 * time.Millisecond, true
}

// TestRecoveryFailWhileRecovering: with Config.FailWhileRecovering, calls
// made during recovery fail at once with ErrRecovering, and work again after
// it.
func TestRecoveryFailWhileRecovering(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	gate := newGatedStrategy()
	cfg.Reconnect = gate
	cfg.FailWhileRecovering = true
	c := rtDial(t, cfg)
	t.Cleanup(func() {
		select {
		case <-gate.open:
		default:
			close(gate.open)
		}
	})
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}

	forceClose(t, cfg.ConnectionName)
	<-gate.waiting
	if !c.IsRecovering() {
		t.Fatal("IsRecovering false while recovery waits")
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	calls := map[string]func() error{
		"Publish": func() error { return ch.Publish(ctx, "", q, Message{Body: []byte("x")}) },
		"PublishWithConfirm": func() error {
			_, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: []byte("x")})
			return err
		},
		"Channel":      func() error { _, err := c.Channel(ctx); return err },
		"QueueDeclare": func() error { _, err := ch.QueueDeclare(ctx, q, QueueDeclareOptions{Exclusive: true}); return err },
		"Qos":          func() error { return ch.Qos(ctx, QosOptions{PrefetchCount: 1}) },
		"Consume":      func() error { _, err := ch.Consume(ctx, q, ConsumeOptions{}); return err },
		"WaitConfirms": func() error { return ch.WaitConfirms(ctx) },
		"Get":          func() error { _, _, err := ch.Get(ctx, q, GetOptions{AutoAck: true}); return err },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		if !errors.Is(err, ErrRecovering) {
			t.Errorf("%s during recovery: %v, want ErrRecovering", name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v to fail: not at once", name, d)
		}
	}
	if ch.IsClosed() {
		t.Fatal("the channel closed during recovery")
	}
	close(gate.open)
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	if rep.Channels != 1 || rep.Consumers != 1 {
		t.Fatalf("report %+v: the calls refused during recovery changed what was restored", rep)
	}
	roundTrip(t, ch, cons, "", rep.RenamedQueues[q], "after")
}

// TestRecoveryCallsWaitForRecovery: by default a Publish made during
// recovery waits for it and succeeds after; a call whose ctx ends first
// returns ctx.Err().
func TestRecoveryCallsWaitForRecovery(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	gate := newGatedStrategy()
	cfg.Reconnect = gate
	c := rtDial(t, cfg)
	t.Cleanup(func() {
		select {
		case <-gate.open:
		default:
			close(gate.open)
		}
	})
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := testenv.Name(t, "q")
	rtDeclareQueue(t, ch, q, QueueDeclareOptions{Exclusive: true})
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}

	forceClose(t, cfg.ConnectionName)
	<-gate.waiting

	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	if err := ch.Publish(short, "", q, Message{Body: []byte("dropped")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with a short ctx during recovery: %v, want DeadlineExceeded", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	type result struct {
		f   *Confirmation
		err error
		at  time.Time
	}
	res := make(chan result, 1)
	go func() {
		f, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: []byte("waited")})
		res <- result{f, err, time.Now()}
	}()
	select {
	case r := <-res:
		t.Fatalf("Publish during recovery returned before the recovery: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	close(gate.open)
	rlog.wait(RecoveryRecovered, 1, rtTimeout)
	r := <-res
	if r.err != nil {
		t.Fatalf("Publish that waited for the recovery: %v", r.err)
	}
	if err := r.f.Wait(ctx); err != nil {
		t.Fatalf("its confirmation: %v", err)
	}
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Body) != "waited" {
		t.Fatalf("consumed %q, want the message published during recovery (the one whose ctx ended must not be sent)", d.Body)
	}
	d.Ack(false)
}

// TestRecoveryDoesNotRecreateDeleted: a queue the application deleted, and
// an auto-delete queue whose last consumer it cancelled, are not declared
// again by recovery, while a queue it still has is.
func TestRecoveryDoesNotRecreateDeleted(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	deleted := testenv.Name(t, "deleted")
	autoDel := testenv.Name(t, "autodelete")
	kept := testenv.Name(t, "kept")
	// Whatever the outcome, nothing is left behind.
	deleteLater(t, url, []string{deleted, autoDel}, nil)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()

	rtDeclareQueue(t, ch, deleted, QueueDeclareOptions{})
	rtDeleteQueue(t, ch, deleted)

	rtDeclareQueue(t, ch, autoDel, QueueDeclareOptions{AutoDelete: true})
	cons, err := ch.Consume(ctx, autoDel, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if ok := queueExists(t, c, autoDel); ok != nil {
		t.Fatalf("auto-delete queue still exists after its last consumer was cancelled: %+v", ok)
	}

	rtDeclareQueue(t, ch, kept, QueueDeclareOptions{Exclusive: true})

	forceClose(t, cfg.ConnectionName)
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	if len(rep.Failed) != 0 {
		t.Errorf("recovery failures: %v", rep.Failed)
	}
	if ok := queueExists(t, c, deleted); ok != nil {
		t.Errorf("recovery declared the deleted queue %q again", deleted)
	}
	if ok := queueExists(t, c, autoDel); ok != nil {
		t.Errorf("recovery declared the auto-delete queue %q again after its last consumer was cancelled", autoDel)
	}
	if ok := queueExists(t, c, kept); ok == nil {
		t.Errorf("recovery did not declare the exclusive queue %q again", kept)
	}
}

// TestRecoveryMultipleAddresses: with Config.Addrs listing a dead address
// first, Dial connects to the broker, and so does every recovery.
func TestRecoveryMultipleAddresses(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	broker := cfg.Addr
	cfg.Addrs = []string{"127.0.0.1:1", broker}
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	if got := c.RemoteAddr().String(); got != broker {
		t.Errorf("connected to %s, want %s", got, broker)
	}
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		forceClose(t, cfg.ConnectionName)
		rep := rlog.wait(RecoveryRecovered, i, rtTimeout).Report
		if rep.Addr != broker {
			t.Errorf("recovery %d connected to %s, want %s", i, rep.Addr, broker)
		}
		q = rep.RenamedQueues[q]
		roundTrip(t, ch, cons, "", q, fmt.Sprintf("after recovery %d", i))
	}
}

// TestRecoveryAckDuringRestore: deliveries that arrive on the new
// connection while recovery is still restoring other consumers are fresh:
// acking them must work, not fail with ErrStaleDelivery (which would leave
// them unacknowledged until the channel closes).
func TestRecoveryAckDuringRestore(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	// The queue outlives the connection, with a backlog: the broker
	// delivers at once to each consumer recovery restarts.
	q := testenv.Name(t, "q")
	deleteLater(t, url, []string{q}, nil)
	rtDeclareQueue(t, ch, q, QueueDeclareOptions{})
	rtQos(t, ch, 5)
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	for range 5000 {
		if err := ch.Publish(ctx, "", q, Message{Body: []byte("backlog")}); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	var before uint64 // highest tag acked before the loss
	var lost bool
	var staleFresh, acked int
	var firstErr error
	handler := func(_ context.Context, d *Delivery) {
		err := d.Ack(false)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			acked++
			if !lost {
				before = max(before, d.DeliveryTag)
			}
		case errors.Is(err, ErrStaleDelivery) && lost && d.DeliveryTag > before:
			staleFresh++
		case errors.Is(err, ErrStaleDelivery):
		default:
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	const consumers = 100
	for range consumers {
		if _, err := ch.ConsumeFunc(ctx, q, ConsumeOptions{}, handler); err != nil {
			t.Fatal(err)
		}
	}
	// A steady stream, so that deliveries arrive while recovery restores
	// the consumers one after another.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			ch.Publish(pctx, "", q, Message{Body: []byte("x")})
			pcancel()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	lost = true // from here on, deliveries above before are from the new connection
	mu.Unlock()
	forceClose(t, cfg.ConnectionName)
	rlog.wait(RecoveryRecovered, 1, rtTimeout)
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	a0 := acked
	mu.Unlock()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d acked (%d in the last second); %d acks of new-connection deliveries refused as stale", acked, acked-a0, staleFresh)
	if acked == a0 {
		t.Errorf("the consumers stopped consuming after the recovery: their prefetch windows are full of deliveries whose acks were refused")
	}
	if firstErr != nil {
		t.Errorf("ack error: %v", firstErr)
	}
	if staleFresh > 0 {
		t.Errorf("%d deliveries received on the new connection during the restore were refused as stale (BUG: settle treats every ack as stale while c.state != connOpen)", staleFresh)
	}
}

// TestRecoveryConsumerWithPrefetchKeepsConsuming: a consumer with a
// prefetch window on a queue with a backlog keeps consuming after a
// recovery.
func TestRecoveryConsumerWithPrefetchKeepsConsuming(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := testenv.Name(t, "q")
	deleteLater(t, url, []string{q}, nil)
	rtDeclareQueue(t, ch, q, QueueDeclareOptions{})
	rtQos(t, ch, 1)
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	for range 2000 {
		if err := ch.Publish(ctx, "", q, Message{Body: []byte("backlog")}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	acked, stale := 0, 0
	var lastErr error
	if _, err := ch.ConsumeFunc(ctx, q, ConsumeOptions{}, func(_ context.Context, d *Delivery) {
		time.Sleep(time.Millisecond)
		err := d.Ack(false)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			acked++
		case errors.Is(err, ErrStaleDelivery):
			stale++
		default:
			lastErr = err
		}
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	forceClose(t, cfg.ConnectionName)
	rlog.wait(RecoveryRecovered, 1, rtTimeout)
	mu.Lock()
	a0 := acked
	mu.Unlock()
	// On a busy machine the backlog may be gone before the close lands:
	// publish after the recovery, so the consumer has something to take
	// whatever the timing, and wait for it to be acked.
	for range 100 {
		if err := ch.Publish(ctx, "", q, Message{Body: []byte("after")}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(rtTimeout)
	for {
		mu.Lock()
		a, s, e := acked, stale, lastErr
		mu.Unlock()
		if a > a0 {
			t.Logf("acked %d at recovery, %d now; %d stale acks; last error %v", a0, a, s, e)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer stopped consuming after the recovery: %d acked at recovery and since, %d acks refused as stale, last error %v", a, s, e)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Tests through internal/faultproxy: network faults the broker cannot make.

// rtProxy starts a fault proxy in front of cfg's broker and points cfg at
// it. The proxy closes in the test's cleanup, after the connections.
func rtProxy(t *testing.T, cfg *Config) *faultproxy.Proxy {
	t.Helper()
	p := faultproxy.New(t, cfg.Addr)
	cfg.Addr = p.Addr()
	cfg.Addrs = nil
	return p
}

// TestRecoveryProxyCutMidFrame: the connection is cut in the middle of a
// frame while large messages are published; recovery follows, publishing
// goes on, and every message the consumer gets is whole.
func TestRecoveryProxyCutMidFrame(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	p := rtProxy(t, &cfg)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := testenv.Name(t, "q")
	deleteLater(t, url, []string{q}, nil)
	rtDeclareQueue(t, ch, q, QueueDeclareOptions{})
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	const size = 300 << 10 // three body frames with the default frame_max
	body := func(i int) []byte {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(i + j)
		}
		return b
	}
	// Each message is over 300 KB, so this cut falls inside a body frame.
	p.CutAfter(200_000)
	var confirmed []int
	for i := 0; len(confirmed) < 5; i++ {
		if i > 200 {
			t.Fatalf("only %d messages confirmed in 200 attempts; events:\n%s", len(confirmed), rlog)
		}
		f, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: body(i), Properties: Properties{MessageID: fmt.Sprint(i)}})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		switch err := f.Wait(ctx); {
		case err == nil:
			confirmed = append(confirmed, i)
		case errors.Is(err, ErrOutcomeUnknown):
		default:
			t.Fatalf("confirmation %d: %v", i, err)
		}
	}
	if n := rlog.count(RecoveryRecovered); n < 1 {
		t.Fatalf("no recovery after the cut; events:\n%s", rlog)
	}
	lost := rlog.wait(RecoveryLost, 1, time.Second)
	t.Logf("lost: %v; confirmed %v", lost.Err, confirmed)
	cons, err := ch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < len(confirmed) {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("consumed %d of %d confirmed messages: %v", len(got), len(confirmed), err)
		}
		var i int
		fmt.Sscan(d.MessageID, &i)
		if !bytes.Equal(d.Body, body(i)) {
			t.Fatalf("message %s: body of %d bytes differs from what was published", d.MessageID, len(d.Body))
		}
		got[d.MessageID] = true
		d.Ack(false)
	}
	for _, i := range confirmed {
		if !got[fmt.Sprint(i)] {
			t.Errorf("confirmed message %d not consumed", i)
		}
	}
}

// TestRecoveryProxyHeartbeatTimeout: a path that silently drops everything
// is detected by the heartbeat (1 s): the loss is reported with
// ErrHeartbeatTimeout within a few seconds, and recovery succeeds once the
// path works again.
func TestRecoveryProxyHeartbeatTimeout(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	cfg.Heartbeat = time.Second
	cfg.HandshakeTimeout = 2 * time.Second
	p := rtProxy(t, &cfg)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hb := c.Tuning().Heartbeat; hb != time.Second {
		t.Fatalf("negotiated heartbeat %v, want 1s", hb)
	}
	p.Stall()
	stalled := time.Now()
	lost := rlog.wait(RecoveryLost, 1, 15*time.Second)
	detected := time.Since(stalled)
	if !errors.Is(lost.Err, ErrHeartbeatTimeout) {
		t.Fatalf("loss reported as %v, want ErrHeartbeatTimeout", lost.Err)
	}
	t.Logf("silence detected after %v", detected.Round(time.Millisecond))
	// Attempts made while the path is still silent time out.
	rlog.wait(RecoveryAttempt, 2, 15*time.Second)
	p.Resume()
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	t.Logf("events:\n%s", rlog)
	roundTrip(t, ch, cons, "", rep.RenamedQueues[q], "after the stall")
}

// TestRecoveryProxyRefusedBackoff: while the broker's address refuses
// connections, attempts come with growing delays (Backoff), and recovery
// succeeds once connections are accepted again.
func TestRecoveryProxyRefusedBackoff(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	cfg.Reconnect = Backoff{Initial: 50 * time.Millisecond, Max: 800 * time.Millisecond, Multiplier: 2, Jitter: 0.1}
	p := rtProxy(t, &cfg)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Refuse(true)
	p.Cut()
	rlog.wait(RecoveryAttempt, 6, rtTimeout)
	if !c.IsRecovering() {
		t.Fatalf("not recovering while refused; events:\n%s", rlog)
	}
	p.Refuse(false)
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	t.Logf("events:\n%s", rlog)
	var delays []time.Duration
	var at []time.Duration
	rlog.mu.Lock()
	for i, ev := range rlog.events {
		if ev.Kind == RecoveryAttempt {
			delays = append(delays, ev.Delay)
			at = append(at, rlog.at[i])
			if ev.Attempt > 1 && ev.Err == nil {
				t.Errorf("attempt %d does not say why the previous one failed", ev.Attempt)
			}
		}
	}
	rlog.mu.Unlock()
	for i := 1; i < 5; i++ {
		// With jitter 0.1 and multiplier 2, each delay below the cap is
		// larger than the one before.
		if delays[i] <= delays[i-1] {
			t.Errorf("attempt %d delay %v is not larger than attempt %d's %v", i+1, delays[i], i, delays[i-1])
		}
		// Timers never fire early: an attempt starts no sooner than the
		// previous one's delay after it.
		if gap := at[i] - at[i-1]; gap < delays[i-1] {
			t.Errorf("attempt %d came %v after attempt %d, whose delay was %v", i+1, gap, i, delays[i-1])
		}
	}
	for _, d := range delays {
		if d > 880*time.Millisecond {
			t.Errorf("delay %v above Max 800ms + 10%% jitter", d)
		}
	}
	roundTrip(t, ch, cons, "", rep.RenamedQueues[q], "after refusals")
}

// TestRecoveryProxyFailover: with Config.Addrs, a dead address first and
// the proxy second, Dial and recovery reach the broker; when the proxy
// refuses connections, recovery moves on to the next address.
func TestRecoveryProxyFailover(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	broker := cfg.Addr
	p := faultproxy.New(t, broker)
	cfg.Addrs = []string{"127.0.0.1:1", p.Addr(), broker}
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	if got := c.RemoteAddr().String(); got != p.Addr() {
		t.Fatalf("connected to %s, want the proxy %s (the first address that answers)", got, p.Addr())
	}
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	if rep.Addr != p.Addr() {
		t.Errorf("recovery 1 connected to %s, want the proxy %s", rep.Addr, p.Addr())
	}
	q = rep.RenamedQueues[q]
	roundTrip(t, ch, cons, "", q, "after recovery 1")

	p.Refuse(true)
	p.Cut()
	rep = rlog.wait(RecoveryRecovered, 2, rtTimeout).Report
	if rep.Addr != broker {
		t.Errorf("recovery 2 connected to %s, want %s (the proxy refuses)", rep.Addr, broker)
	}
	roundTrip(t, ch, cons, "", rep.RenamedQueues[q], "after recovery 2")
}

// TestRecoveryProxyOutstandingConfirmsNotNacked: with republishing off,
// confirmations outstanding when the connection is lost resolve with
// ErrOutcomeUnknown, never as broker nacks, and WaitConfirms counts them.
func TestRecoveryProxyOutstandingConfirmsNotNacked(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	cfg.DisableRepublish = true
	p := rtProxy(t, &cfg)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	// Stalled: the messages leave the client but no confirmation returns.
	p.Stall()
	var confs []*Confirmation
	for i := range 100 {
		f, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		confs = append(confs, f)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- ch.WaitConfirms(ctx) }()
	time.Sleep(100 * time.Millisecond)
	p.Cut()
	p.Resume()
	for i, f := range confs {
		err := f.Wait(ctx)
		if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNacked) {
			t.Fatalf("confirmation %d outstanding at the loss: %v, want ErrOutcomeUnknown and not ErrNacked", i, err)
		}
	}
	var ce *ConfirmsError
	if err := <-waitErr; !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNacked) || !errors.As(err, &ce) || ce.Unknown != len(confs) {
		t.Errorf("WaitConfirms across the loss: %v, want ErrOutcomeUnknown for all %d and not ErrNacked", err, len(confs))
	}
	rlog.wait(RecoveryRecovered, 1, rtTimeout)
	f, err := ch.PublishWithConfirm(ctx, "", rlog.all()[len(rlog.all())-1].Report.RenamedQueues[q], Message{Body: []byte("after")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(ctx); err != nil {
		t.Fatalf("confirmation after the recovery: %v", err)
	}
}

// workload is a publisher with confirmations and a manual-ack consumer
// running across many connection losses, with the bookkeeping to check
// that nothing confirmed is lost.
type workload struct {
	t     *testing.T
	queue string
	retry bool // the publisher republishes what was not confirmed

	mu           sync.Mutex
	confirmed    map[int]bool
	seen         map[int]int // deliveries per message id
	published    int
	unknown      int // confirmations resolved with ErrOutcomeUnknown
	nacked       int
	publishErrs  int
	staleAcks    int
	freshStale   int // acks refused as stale for deliveries of the current link
	confirmErrs  []error
	consumerErrs []error
}

func newWorkload(t *testing.T, queue string, retry bool) *workload {
	return &workload{t: t, queue: queue, retry: retry, confirmed: map[int]bool{}, seen: map[int]int{}}
}

// publish runs the publisher until stop is closed and every message it
// published has an outcome (and, with retry, until every message is
// confirmed). At most window confirmations are outstanding.
func (w *workload) publish(ch *Channel, stop <-chan struct{}, window int) {
	type pending struct {
		id int
		f  *Confirmation
	}
	var out []pending
	var again []int
	next := 0
	stopped := false
	settle := func(p pending) {
		err := p.f.Err()
		w.mu.Lock()
		defer w.mu.Unlock()
		switch {
		case err == nil:
			w.confirmed[p.id] = true
			return
		case errors.Is(err, ErrNacked):
			w.nacked++
		case errors.Is(err, ErrOutcomeUnknown):
			w.unknown++
		default:
			w.confirmErrs = append(w.confirmErrs, fmt.Errorf("message %d: %w", p.id, err))
		}
		if w.retry {
			again = append(again, p.id)
		} else {
			w.confirmErrs = append(w.confirmErrs, fmt.Errorf("message %d: %w", p.id, err))
		}
	}
	for {
		if !stopped {
			select {
			case <-stop:
				stopped = true
			default:
			}
		}
		// Settle what has an outcome.
		k := 0
		for _, p := range out {
			select {
			case <-p.f.Done():
				settle(p)
			default:
				out[k] = p
				k++
			}
		}
		out = out[:k]
		if stopped && len(again) == 0 && len(out) == 0 {
			return
		}
		if len(out) >= window || stopped && len(again) == 0 {
			select {
			case <-out[0].f.Done():
			case <-time.After(rtTimeout):
				w.t.Errorf("a confirmation has been outstanding for %v", rtTimeout)
				return
			}
			continue
		}
		var id int
		if len(again) > 0 {
			id, again = again[0], again[1:]
		} else {
			id = next
			next++
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		f, err := ch.PublishWithConfirm(ctx, "", w.queue, Message{Body: []byte(fmt.Sprint(id))})
		cancel()
		if err != nil {
			w.mu.Lock()
			w.publishErrs++
			w.mu.Unlock()
			if ch.IsClosed() {
				w.t.Errorf("publishing channel closed: %v", ch.Err())
				return
			}
			again = append(again, id) // not sent: try again
			continue
		}
		w.mu.Lock()
		w.published++
		w.mu.Unlock()
		out = append(out, pending{id, f})
	}
}

// consume is the consumer's handler: it records the message and acks it.
func (w *workload) consume(_ context.Context, d *Delivery) {
	var id int
	if _, err := fmt.Sscan(string(d.Body), &id); err != nil {
		w.t.Errorf("unexpected message %q", d.Body)
		return
	}
	err := d.Ack(false)
	fresh := false
	if errors.Is(err, ErrStaleDelivery) {
		c := d.Channel().conn
		c.mu.Lock()
		fresh = d.DeliveryTag > d.Channel().tagBase
		c.mu.Unlock()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen[id]++
	switch {
	case err == nil:
	case errors.Is(err, ErrStaleDelivery):
		w.staleAcks++ // redelivered later
		if fresh {
			w.freshStale++
		}
	default:
		w.consumerErrs = append(w.consumerErrs, err)
	}
}

// missing returns the confirmed messages not consumed yet.
func (w *workload) missing() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var m []int
	for id := range w.confirmed {
		if w.seen[id] == 0 {
			m = append(m, id)
		}
	}
	return m
}

// runWorkload runs a workload through a proxy, forcing the connections
// closed losses times (rabbitmqctl for the indexes in ctlAt, a proxy cut
// otherwise), and checks that every confirmed message was consumed.
func runWorkload(t *testing.T, republish bool, losses int, ctlAt map[int]bool) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	cfg.DisableRepublish = !republish
	p := rtProxy(t, &cfg)
	p.Record(false)
	baseline := runtime.NumGoroutine() // the proxy's own goroutine included
	q := testenv.Name(t, "q")
	deleteLater(t, url, []string{q}, nil)
	pubConn := rtDial(t, cfg)
	consConn := rtDial(t, cfg)
	pubLog := watchRecovery(t, pubConn)
	consLog := watchRecovery(t, consConn)

	pub := openChannel(t, pubConn)
	rtDeclareQueue(t, pub, q, QueueDeclareOptions{})
	if err := pub.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	w := newWorkload(t, q, !republish)
	consCh := openChannel(t, consConn)
	rtQos(t, consCh, 50)
	if _, err := consCh.ConsumeFunc(context.Background(), q, ConsumeOptions{}, w.consume); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		w.publish(pub, stop, 100)
	}()

	start := time.Now()
	for i := 1; i <= losses; i++ {
		time.Sleep(100 * time.Millisecond) // traffic flows
		if ctlAt[i] {
			forceClose(t, cfg.ConnectionName)
		} else {
			p.Cut()
		}
		pubLog.wait(RecoveryRecovered, i, rtTimeout)
		rep := consLog.wait(RecoveryRecovered, i, rtTimeout).Report
		if len(rep.Failed) > 0 || rep.Consumers != 1 {
			t.Errorf("loss %d: the consumer's recovery: %+v", i, *rep)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	select {
	case <-pubDone:
	case <-time.After(2 * rtTimeout):
		t.Fatal("the publisher hung")
	}
	// The backlog drains at thousands of messages a second.
	deadline := time.Now().Add(20 * time.Second)
	for len(w.missing()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	w.mu.Lock()
	dups := 0
	for _, n := range w.seen {
		if n > 1 {
			dups++
		}
	}
	t.Logf("%d losses in %v: %d published, %d confirmed, %d consumed (%d more than once), %d outcomes unknown, %d nacked, %d publish errors, %d stale acks (%d of deliveries of the current link)",
		losses, time.Since(start).Round(time.Millisecond), w.published, len(w.confirmed), len(w.seen), dups, w.unknown, w.nacked, w.publishErrs, w.staleAcks, w.freshStale)
	for _, err := range w.confirmErrs {
		t.Errorf("confirmation: %v", err)
	}
	for _, err := range w.consumerErrs {
		t.Errorf("ack: %v", err)
	}
	if len(w.confirmed) == 0 {
		t.Error("nothing was confirmed")
	}
	freshStale := w.freshStale
	w.mu.Unlock()
	if freshStale > 0 {
		t.Logf("%d acks of deliveries of the then-current link were refused as stale (the link died before the ack)", freshStale)
	}
	if m := w.missing(); len(m) > 0 {
		t.Errorf("%d confirmed messages never consumed, e.g. %v", len(m), m[:min(len(m), 10)])
	}
	if n := pubLog.count(RecoveryGaveUp) + consLog.count(RecoveryGaveUp); n > 0 {
		t.Errorf("recovery gave up; publisher's events:\n%s\nconsumer's events:\n%s", pubLog, consLog)
	}
	closeWithin(t, pubConn, 10*time.Second)
	closeWithin(t, consConn, 10*time.Second)
	checkGoroutines(t, baseline)
}

// TestRecoveryWorkload: a publisher with confirmations that republishes
// what was not confirmed, and a consumer with manual acks, run while their
// connections are forced closed 20 times (mostly proxy cuts, a few
// rabbitmqctl closes). Every confirmed message is consumed at least once,
// nothing hangs, and no goroutine is left after Close.
func TestRecoveryWorkload(t *testing.T) {
	runWorkload(t, false, 20, map[int]bool{5: true, 12: true, 18: true})
}

// TestRecoveryWorkloadRepublish: as TestRecoveryWorkload with
// republishing (the default) and a publisher that never retries: every
// message published is still confirmed and consumed.
func TestRecoveryWorkloadRepublish(t *testing.T) {
	runWorkload(t, true, 20, nil)
}

// stallWhilePublishing is how long TestRecoveryProxyStallWhilePublishing
// keeps the path silent. Forty seconds is the realistic case (far beyond
// every socket buffer and several heartbeat timeouts); fifteen keep the
// suite short and still stall the writer well past the heartbeat timeout.
const stallWhilePublishing = 15 * time.Second

// TestRecoveryProxyStallWhilePublishing: the network path goes silent
// while publishers push 128 KiB messages, so the writer blocks in a socket
// write once the buffers fill. The heartbeat timeout (2 s) still ends the
// link, no Publish stays blocked past its ctx, and recovery follows when
// the path works again.
func TestRecoveryProxyStallWhilePublishing(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	cfg.Heartbeat = 2 * time.Second
	cfg.HandshakeTimeout = 2 * time.Second
	p := rtProxy(t, &cfg)
	p.Record(false)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	sink := testenv.Name(t, "nowhere") // no such queue: the broker drops the messages
	body := make([]byte, 128<<10)

	const callTimeout = 500 * time.Millisecond
	var mu sync.Mutex
	var longest time.Duration
	var ok, timedOut, afterRecovery int
	var other []error
	recovered := func() bool { return rlog.count(RecoveryRecovered) > 0 }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				start := time.Now()
				err := ch.Publish(ctx, "", sink, Message{Body: body})
				took := time.Since(start)
				cancel()
				mu.Lock()
				longest = max(longest, took)
				switch {
				case err == nil:
					ok++
					if recovered() {
						afterRecovery++
					}
				case errors.Is(err, context.DeadlineExceeded):
					timedOut++
				default:
					other = append(other, err)
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	p.Stall()
	stalled := time.Now()
	lost := rlog.wait(RecoveryLost, 1, stallWhilePublishing)
	if !errors.Is(lost.Err, ErrHeartbeatTimeout) {
		t.Errorf("loss reported as %v, want ErrHeartbeatTimeout", lost.Err)
	}
	t.Logf("silence detected after %v", time.Since(stalled).Round(time.Millisecond))
	// The first attempt starts once the lost link's goroutines have ended,
	// the writer blocked in its socket write included.
	rlog.wait(RecoveryAttempt, 1, 10*time.Second)
	mu.Lock()
	blocked := timedOut
	mu.Unlock()
	if blocked == 0 {
		t.Error("no Publish waited for its ctx while the path was silent: the writer was never blocked")
	}
	if rest := stallWhilePublishing - time.Since(stalled); rest > 0 {
		time.Sleep(rest)
	}
	p.Resume()
	rlog.wait(RecoveryRecovered, 1, rtTimeout)
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := afterRecovery
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Publish succeeded within 20s of the recovery; events:\n%s", rlog)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("stall of %v; publishes: %d ok (%d after the recovery), %d timed out, longest call %v; events:\n%s",
		stallWhilePublishing, ok, afterRecovery, timedOut, longest.Round(time.Millisecond), rlog)
	for _, err := range other {
		t.Errorf("Publish: %v", err)
	}
	// Generous: a call may overrun its ctx by scheduling delays, never by
	// waiting on the stalled socket.
	if longest > callTimeout+3*time.Second {
		t.Errorf("a Publish with a %v ctx took %v", callTimeout, longest)
	}
}

// TestRecoveryProxyCloseWhileReconnectStalled: Close while a reconnection
// attempt waits for a broker that accepted the connection and never
// answers returns within its ctx, resolves every pending confirmation with
// an error (never a nack), and leaves no goroutine.
func TestRecoveryProxyCloseWhileReconnectStalled(t *testing.T) {
	for _, republish := range []bool{false, true} {
		t.Run(fmt.Sprintf("republish=%v", republish), func(t *testing.T) {
			url := testenv.Disruptive(t)
			cfg := rtConfig(t, url)
			cfg.HandshakeTimeout = time.Minute
			cfg.DisableRepublish = !republish
			p := rtProxy(t, &cfg)
			baseline := runtime.NumGoroutine()
			c := rtDial(t, cfg)
			rlog := watchRecovery(t, c)
			ch := openChannel(t, c)
			q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
			if err := ch.ConfirmSelect(context.Background()); err != nil {
				t.Fatal(err)
			}
			p.Stall()
			var confs []*Confirmation
			for i := range 20 {
				f, err := ch.PublishWithConfirm(context.Background(), "", q, Message{Body: []byte{byte(i)}})
				if err != nil {
					t.Fatal(err)
				}
				confs = append(confs, f)
			}
			p.AcceptButNeverAnswer(true)
			p.Cut()
			p.Resume()
			rlog.wait(RecoveryAttempt, 1, rtTimeout)
			for p.Accepted() < 2 {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the attempt waits for connection.start
			if !c.IsRecovering() {
				t.Fatalf("not recovering; events:\n%s", rlog)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			start := time.Now()
			err := c.Close(ctx)
			took := time.Since(start)
			t.Logf("Close: %v after %v", err, took.Round(time.Millisecond))
			if took > 5*time.Second {
				t.Errorf("Close with a 3s ctx took %v", took)
			}
			if !c.IsClosed() {
				t.Error("not closed after Close")
			}
			for i, f := range confs {
				select {
				case <-f.Done():
					if err := f.Err(); err == nil || errors.Is(err, ErrNacked) {
						t.Errorf("confirmation %d: %v, want an error other than ErrNacked", i, err)
					}
				default:
					t.Errorf("confirmation %d unresolved after Close", i)
				}
			}
			if _, err := ch.PublishWithConfirm(context.Background(), "", q, Message{}); err == nil {
				t.Error("Publish after Close succeeded")
			}
			checkGoroutines(t, baseline)
		})
	}
}

// TestRecoveryProxyHandshakeTimeout: a reconnection attempt to a broker
// that accepts and never answers ends after Config.HandshakeTimeout (1 s),
// and attempts go on until one succeeds.
func TestRecoveryProxyHandshakeTimeout(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	cfg.HandshakeTimeout = time.Second
	p := rtProxy(t, &cfg)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, ch, "", QueueDeclareOptions{Exclusive: true})
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.AcceptButNeverAnswer(true)
	p.Cut()
	ev := rlog.wait(RecoveryAttempt, 3, rtTimeout)
	if !errors.Is(ev.Err, ErrHandshakeTimeout) {
		t.Errorf("attempt 3 follows %v, want ErrHandshakeTimeout", ev.Err)
	}
	p.AcceptButNeverAnswer(false)
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	t.Logf("events:\n%s", rlog)
	roundTrip(t, ch, cons, "", rep.RenamedQueues[q], "after the silent attempts")
}

// TestRecoveryProxyRestoreOrder: on the recovered connection nothing is
// published on a channel before its basic.qos and confirm.select: the
// frames the broker receives on that channel start with channel.open,
// basic.qos, confirm.select, and only then basic.publish (republished
// messages and new ones alike).
func TestRecoveryProxyRestoreOrder(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	cfg.DisableRepublish = false
	p := rtProxy(t, &cfg)
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	other := openChannel(t, c) // a channel without modes, restored too
	ch := openChannel(t, c)
	q := rtDeclareQueue(t, other, "", QueueDeclareOptions{Exclusive: true})
	rtQos(t, ch, 10)
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ch.PublishWithConfirm(ctx, "", q, Message{Body: []byte("m")})
			cancel()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	p.Stall() // publishes pile up unconfirmed
	time.Sleep(100 * time.Millisecond)
	p.Cut()
	p.Resume()
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	t.Logf("report: %d channels, %d republished", rep.Channels, rep.Republished)
	if rep.Republished == 0 {
		t.Error("nothing republished: the test did not have unconfirmed messages at the loss")
	}
	// The recovered connection is the last one the proxy accepted.
	frames := p.Frames()
	last := 0
	for _, f := range frames {
		last = max(last, f.Conn)
	}
	var seq []string
	for _, f := range frames {
		if f.Conn != last || f.Dir != faultproxy.ClientToServer || f.Err != nil ||
			f.Frame.Type != wire.FrameMethod || f.Frame.Channel != ch.ID() {
			continue
		}
		m, err := f.Method()
		if err != nil {
			t.Fatal(err)
		}
		name := m.ID().Name()
		if len(seq) == 0 || seq[len(seq)-1] != name || name != "basic.publish" {
			seq = append(seq, name)
		}
	}
	t.Logf("channel %d on connection %d: %v", ch.ID(), last, seq)
	want := []string{"channel.open", "basic.qos", "confirm.select", "basic.publish"}
	if len(seq) < len(want) || strings.Join(seq[:len(want)], " ") != strings.Join(want, " ") {
		t.Fatalf("restored channel's first methods: %v, want %v", seq, want)
	}
}

// TestRecoveryProxyExclusiveQueueAfterPartition: the client detects a dead
// network path (heartbeat timeout) before the broker drops the old
// connection, and reconnects over another path at once. The broker still
// gives the client's exclusive queue to the old connection for a few
// seconds; recovery must not give the queue and its consumer up for good
// (nor lose the application's channel to the refused basic.consume).
func TestRecoveryProxyExclusiveQueueAfterPartition(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	broker := cfg.Addr
	p := faultproxy.New(t, broker)
	// The first path goes silent; the second is the broker directly.
	cfg.Addrs = []string{p.Addr(), broker}
	cfg.Heartbeat = 2 * time.Second
	cfg.HandshakeTimeout = 500 * time.Millisecond
	c := rtDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := testenv.Name(t, "excl")
	rtDeclareQueue(t, ch, q, QueueDeclareOptions{Exclusive: true})
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	t.Cleanup(p.Resume)
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	t.Logf("events:\n%s", rlog)
	if len(rep.Failed) > 0 {
		t.Errorf("recovery failures: %v", rep.Failed)
	}
	if ch.IsClosed() {
		t.Fatalf("the application's channel closed in the recovery: %v", ch.Err())
	}
	roundTrip(t, ch, cons, "", q, "after the partition")
}

// TestRecoveryQueueTakenDuringOutage: while the connection is down,
// another connection takes the queue's name for an exclusive queue of its
// own. Recovery reports the queue and its consumer as not restored, and the
// application's channel (with its other uses) survives.
func TestRecoveryQueueTakenDuringOutage(t *testing.T) {
	url := testenv.Disruptive(t)
	cfg := rtConfig(t, url)
	gate := newGatedStrategy()
	cfg.Reconnect = gate
	c := rtDial(t, cfg)
	t.Cleanup(func() {
		select {
		case <-gate.open:
		default:
			close(gate.open)
		}
	})
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	q := testenv.Name(t, "q")
	deleteLater(t, url, []string{q}, nil)
	rtDeclareQueue(t, ch, q, QueueDeclareOptions{})
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(context.Background(), q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	forceClose(t, cfg.ConnectionName)
	<-gate.waiting
	// Another application takes the name.
	other := dialTest(t, url)
	och := openChannel(t, other)
	if _, err := och.QueueDelete(context.Background(), q, QueueDeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := och.QueueDeclare(context.Background(), q, QueueDeclareOptions{Exclusive: true}); err != nil {
		t.Fatal(err)
	}
	close(gate.open)
	rep := rlog.wait(RecoveryRecovered, 1, rtTimeout).Report
	t.Logf("report: %+v", rep)
	failed := map[string]bool{}
	for _, f := range rep.Failed {
		failed[strings.Fields(f.Entity)[0]] = true
		if !errors.Is(f.Err, ErrResourceLocked) {
			t.Errorf("%s: %v, want ErrResourceLocked", f.Entity, f.Err)
		}
	}
	if !failed["queue"] || !failed["consumer"] {
		t.Errorf("report failures %v: want the queue and its consumer", rep.Failed)
	}
	if _, err := cons.Next(context.Background()); err == nil {
		t.Error("the consumer of the taken queue still runs")
	}
	if ch.IsClosed() {
		t.Fatalf("the application's channel closed: %v", ch.Err())
	}
	// The channel still works, in confirm mode.
	ctx, cancel := context.WithTimeout(context.Background(), rtTimeout)
	defer cancel()
	f, err := ch.PublishWithConfirm(ctx, "", "nowhere", Message{Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(ctx); err != nil {
		t.Fatalf("confirmation on the channel after the recovery: %v", err)
	}
}
