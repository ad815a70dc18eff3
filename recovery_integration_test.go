package pika

import (
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

	"github.com/pika-go/pika/internal/testenv"
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
			var leaked []string
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "github.com/pika-go/pika.") && !strings.Contains(g, "checkGoroutines") && !strings.Contains(g, "testing.tRunner") {
					leaked = append(leaked, g)
				}
			}
			t.Errorf("%d goroutines 10s after Close, %d before the test; the library's:\n%s", n, baseline, strings.Join(leaked, "\n\n"))
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
		"Get":          func() error { _, _, err := ch.Get(ctx, q, true); return err },
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
	pendingFix(t, "Channel.settle refuses every ack as stale while c.state != connOpen, including deliveries of consumers already restarted")
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
	handler := func(d *Delivery) {
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
	if _, err := ch.ConsumeFunc(ctx, q, ConsumeOptions{}, func(d *Delivery) {
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
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("acked %d at recovery, %d a second later; %d stale acks; last error %v", a0, acked, stale, lastErr)
	if acked == a0 {
		t.Fatalf("the consumer stopped consuming after the recovery: %d acks refused as stale", stale)
	}
}
