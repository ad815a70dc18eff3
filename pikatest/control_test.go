package pikatest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/pikatest"
)

// dialCfg dials b without recovery, so a test sees each fault as it is.
func dialCfg(t *testing.T, b *pikatest.Broker, mod func(*pika.Config)) *pika.Conn {
	t.Helper()
	cfg, err := pika.ParseURL(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.DisableRecovery = true
	if mod != nil {
		mod(&cfg)
	}
	conn, err := pika.DialConfig(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("DialConfig: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func waitDone(t *testing.T, conn *pika.Conn) error {
	t.Helper()
	select {
	case <-conn.Done():
		return conn.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("connection still open")
		return nil
	}
}

func oneConn(t *testing.T, b *pikatest.Broker) pikatest.ConnInfo {
	t.Helper()
	conns, err := b.WaitConnections(testCtx(t), func(c []pikatest.ConnInfo) bool { return len(c) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	return conns[0]
}

func TestInMemoryDial(t *testing.T) {
	b := pikatest.NewBroker(t)
	conn := dialCfg(t, b, func(c *pika.Config) { c.Dial = b.Dial; c.ConnectionName = "in-memory" })
	ch, err := conn.Channel(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(testCtx(t), "mem", pika.QueueDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	if info := oneConn(t, b); info.Name != "in-memory" || info.User != "guest" || info.VHost != "/" || info.Channels != 1 {
		t.Fatalf("ConnInfo = %+v", info)
	}
	if _, ok := b.Queue("mem"); !ok {
		t.Fatal("queue declared over the pipe is missing")
	}
}

func TestCloseConnectionForced(t *testing.T) {
	b := pikatest.NewBroker(t)
	conn := dialCfg(t, b, nil)
	id := oneConn(t, b).ID
	if err := b.CloseConnection(id, "test says goodbye"); err != nil {
		t.Fatal(err)
	}
	err := waitDone(t, conn)
	var pe *pika.Error
	if !errors.As(err, &pe) || pe.Code != 320 || pe.Text != "CONNECTION_FORCED - test says goodbye" || !pe.Conn {
		t.Fatalf("connection error %v, want 320 CONNECTION_FORCED", err)
	}
	if err := b.CloseConnection(id, "again"); !errors.Is(err, pikatest.ErrNoConnection) {
		t.Fatalf("closing a closed connection: %v", err)
	}
}

func TestCutConnection(t *testing.T) {
	b := pikatest.NewBroker(t)
	conn := dialCfg(t, b, nil)
	ch, _ := conn.Channel(testCtx(t))
	q, _ := ch.QueueDeclare(testCtx(t), "", pika.QueueDeclareOptions{Exclusive: true})
	b.CutConnection(oneConn(t, b).ID)
	if err := waitDone(t, conn); err == nil {
		t.Fatal("no error after the socket was cut")
	}
	// The exclusive queue goes with its connection.
	if err := b.Wait(testCtx(t), func() bool { _, ok := b.Queue(q.Name); return !ok }); err != nil {
		t.Fatal(err)
	}
}

func TestStallConnectionMissesHeartbeats(t *testing.T) {
	b := pikatest.NewBroker(t)
	conn := dialCfg(t, b, func(c *pika.Config) { c.Heartbeat = time.Second })
	resume, err := b.StallConnection(oneConn(t, b).ID)
	if err != nil {
		t.Fatal(err)
	}
	defer resume()
	start := time.Now()
	if err := waitDone(t, conn); err == nil {
		t.Fatal("no error after missed heartbeats")
	}
	if time.Since(start) < time.Second {
		t.Fatalf("connection ended after %v, before a heartbeat interval", time.Since(start))
	}
}

func TestStallResume(t *testing.T) {
	b := pikatest.NewBroker(t)
	conn := dialCfg(t, b, nil)
	ch, _ := conn.Channel(testCtx(t))
	resume, err := b.StallConnection(oneConn(t, b).ID)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := ch.QueueDeclare(testCtx(t), "stalled", pika.QueueDeclareOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("declare answered on a stalled connection: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	resume()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestAlarmBlocksPublishers(t *testing.T) {
	b := pikatest.NewBroker(t)
	conn := dialCfg(t, b, nil)
	blocked := make(chan bool, 4)
	conn.OnBlocked(func(on bool, reason string) { blocked <- on })
	ch, _ := conn.Channel(testCtx(t))
	q, _ := ch.QueueDeclare(testCtx(t), "", pika.QueueDeclareOptions{Exclusive: true})
	idle := dialCfg(t, b, nil)
	idleBlocked := make(chan bool, 1)
	idle.OnBlocked(func(on bool, reason string) { idleBlocked <- on })
	b.SetAlarm(true)
	// The first publish during the alarm is held, and blocks its
	// connection.
	if err := ch.Publish(testCtx(t), "", q.Name, pika.Message{Body: []byte("held")}); err != nil {
		t.Fatal(err)
	}
	if on := <-blocked; !on {
		t.Fatal("first notification is not blocked")
	}
	if info, _ := b.Queue(q.Name); info.Messages != 0 {
		t.Fatalf("message arrived during the alarm: %+v", info)
	}
	// A connection that does not publish is not blocked.
	ich, err := idle.Channel(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ich.QueueDeclarePassive(testCtx(t), q.Name); err == nil {
		t.Fatal("passive declare of another connection's exclusive queue succeeded")
	}
	select {
	case <-idleBlocked:
		t.Fatal("an idle connection was blocked")
	default:
	}
	b.SetAlarm(false)
	if on := <-blocked; on {
		t.Fatal("second notification is not unblocked")
	}
	if _, err := b.WaitQueue(testCtx(t), q.Name, func(qi pikatest.QueueInfo) bool { return qi.Messages == 1 }); err != nil {
		t.Fatal(err)
	}
}

func TestRestartKeepsDurable(t *testing.T) {
	b := pikatest.NewBroker(t)
	ctx := testCtx(t)
	conn := dialCfg(t, b, nil)
	ch, _ := conn.Channel(ctx)
	ch.QueueDeclare(ctx, "durable", pika.QueueDeclareOptions{Durable: true})
	ch.QueueDeclare(ctx, "transient", pika.QueueDeclareOptions{})
	ch.ExchangeDeclare(ctx, "dx", "fanout", pika.ExchangeDeclareOptions{Durable: true})
	ch.ExchangeDeclare(ctx, "tx", "fanout", pika.ExchangeDeclareOptions{})
	ch.QueueBind(ctx, "durable", "dx", "", pika.BindOptions{})
	ch.Publish(ctx, "", "durable", pika.Message{Body: []byte("kept"), Properties: pika.Properties{DeliveryMode: pika.Persistent}})
	ch.Publish(ctx, "", "durable", pika.Message{Body: []byte("lost")})
	ch.Publish(ctx, "", "durable", pika.Message{Body: []byte("unacked"), Properties: pika.Properties{DeliveryMode: pika.Persistent}})
	if _, err := b.WaitQueue(ctx, "durable", func(qi pikatest.QueueInfo) bool { return qi.Messages == 3 }); err != nil {
		t.Fatal(err)
	}
	// Hold one message unacked across the restart; skip the first.
	d1, _, _ := ch.Get(ctx, "durable", pika.GetOptions{AutoAck: false})
	d1.Nack(false, true)
	b.Restart()
	err := waitDone(t, conn)
	var pe *pika.Error
	if !errors.As(err, &pe) || pe.Code != 320 {
		t.Fatalf("connection error %v, want 320", err)
	}
	if _, ok := b.Queue("transient"); ok {
		t.Fatal("transient queue survived the restart")
	}
	if _, ok := b.Exchange("tx"); ok {
		t.Fatal("transient exchange survived the restart")
	}
	if x, ok := b.Exchange("dx"); !ok || x.Bindings != 1 {
		t.Fatalf("durable exchange after restart: %+v %v", x, ok)
	}
	msgs := b.Messages("durable")
	if len(msgs) != 2 || string(msgs[0].Body) != "kept" || string(msgs[1].Body) != "unacked" {
		t.Fatalf("durable queue after restart holds %+v", msgs)
	}
	conn2 := dialCfg(t, b, nil)
	ch2, _ := conn2.Channel(ctx)
	ch2.Publish(ctx, "dx", "", pika.Message{Body: []byte("routed")})
	if _, err := b.WaitQueue(ctx, "durable", func(qi pikatest.QueueInfo) bool { return qi.Messages == 3 }); err != nil {
		t.Fatal(err)
	}
}

func TestStopStart(t *testing.T) {
	b := pikatest.NewBroker(t)
	dialCfg(t, b, nil)
	b.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	cfg, _ := pika.ParseURL(b.URL())
	cfg.DisableRecovery = true
	if c, err := pika.DialConfig(ctx, cfg); err == nil {
		c.Close(ctx)
		t.Fatal("dial succeeded while the broker was stopped")
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	dialCfg(t, b, nil)
}

func TestConfirmPolicies(t *testing.T) {
	b := pikatest.NewBroker(t)
	ctx := testCtx(t)
	conn := dialCfg(t, b, nil)
	ch, _ := conn.Channel(ctx)
	q, _ := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	b.SetConfirmPolicy(pikatest.ConfirmPolicy{Nack: true})
	c, _ := ch.PublishWithConfirm(ctx, "", q.Name, pika.Message{Body: []byte("n")})
	if err := c.Wait(ctx); !errors.Is(err, pika.ErrNacked) {
		t.Fatalf("with Nack: %v", err)
	}
	b.SetConfirmPolicy(pikatest.ConfirmPolicy{Drop: true})
	c, _ = ch.PublishWithConfirm(ctx, "", q.Name, pika.Message{Body: []byte("d")})
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := c.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with Drop: %v, want no confirm", err)
	}
	b.SetConfirmPolicy(pikatest.ConfirmPolicy{Delay: 50 * time.Millisecond})
	start := time.Now()
	c, _ = ch.PublishWithConfirm(ctx, "", q.Name, pika.Message{Body: []byte("late")})
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("delayed confirm came early")
	}
	// The dropped confirm is still outstanding: the later ack was not a
	// multiple ack covering it.
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := b.Queue(q.Name); info.Messages != 3 {
		t.Fatalf("queue %+v, want the 3 messages routed", info)
	}
}

func TestWaitTimesOut(t *testing.T) {
	b := pikatest.NewBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.WaitQueue(ctx, "never", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitQueue: %v", err)
	}
}

// TestClientRecovery is what the broker is for: pika's automatic recovery
// tested in milliseconds, through a forced close, a cut and a restart.
func TestClientRecovery(t *testing.T) {
	b := pikatest.NewBroker(t)
	ctx := testCtx(t)
	conn, err := pika.Dial(ctx, b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	ch, _ := conn.Channel(ctx)
	if _, err := ch.QueueDeclare(ctx, "work", pika.QueueDeclareOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, "work", pika.ConsumeOptions{AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := conn.Channel(ctx)
	roundTrip := func(body string) {
		t.Helper()
		if err := pub.Publish(ctx, "", "work", pika.Message{Body: []byte(body)}); err != nil {
			t.Fatalf("publish %s: %v", body, err)
		}
		d, err := cons.Next(ctx)
		if err != nil || string(d.Body) != body {
			t.Fatalf("after %s: %v %v", body, d, err)
		}
	}
	waitRecovered := func(old uint64) {
		t.Helper()
		if _, err := b.WaitConnections(ctx, func(cs []pikatest.ConnInfo) bool {
			return len(cs) == 1 && cs[0].ID != old && cs[0].Channels == 2
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WaitQueue(ctx, "work", func(q pikatest.QueueInfo) bool { return q.Consumers == 1 }); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip("before")
	id := oneConn(t, b).ID
	b.CloseConnection(id, "maintenance")
	waitRecovered(id)
	roundTrip("after close")
	id = oneConn(t, b).ID
	b.CutConnection(id)
	waitRecovered(id)
	roundTrip("after cut")
	id = oneConn(t, b).ID
	b.Restart()
	waitRecovered(id)
	roundTrip("after restart")
}

func TestVHostsAndUsers(t *testing.T) {
	b := pikatest.NewBroker(t, pikatest.WithUser("app", "secret"), pikatest.WithVHost("/"), pikatest.WithVHost("orders"))
	ctx := testCtx(t)
	conn, err := pika.Dial(ctx, "amqp://app:secret@"+b.Addr()+"/orders")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, _ := conn.Channel(ctx)
	ch.QueueDeclare(ctx, "q", pika.QueueDeclareOptions{})
	ch.Publish(ctx, "", "q", pika.Message{Body: []byte("in orders")})
	if err := b.Wait(ctx, func() bool { return len(b.MessagesIn("orders", "q")) == 1 }); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Queue("q"); ok {
		t.Fatal("queue of vhost orders seen in the first vhost")
	}
	if info, ok := b.QueueIn("orders", "q"); !ok || info.VHost != "orders" {
		t.Fatalf("QueueIn = %+v %v", info, ok)
	}
	cfg, _ := pika.ParseURL("amqp://app:wrong@" + b.Addr() + "/orders")
	cfg.DisableRecovery = true
	if _, err := pika.DialConfig(ctx, cfg); !errors.Is(err, pika.ErrAuthentication) {
		t.Fatalf("wrong password: %v", err)
	}
}
