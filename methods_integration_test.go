package pika_test

// Integration tests of the exchange, queue, QoS, recover and tx methods
// against the RabbitMQ broker (see internal/testenv).

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// miCtx returns a context bounding one test.
func miCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// miDial connects to the broker; the connection closes at the end of the
// test (after the cleanups registered later, which run first).
func miDial(t *testing.T, url string) *pika.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pika.Dial(ctx, url)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func miChannel(t *testing.T, c *pika.Conn) *pika.Channel {
	t.Helper()
	ch, err := c.Channel(context.Background())
	if err != nil {
		t.Fatalf("Channel: %v", err)
	}
	return ch
}

// miCleanup deletes a queue (queue true) or exchange at the end of the test
// on a channel of its own, whatever state the test left its channels in.
func miCleanup(t *testing.T, c *pika.Conn, name string, queue bool) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ch, err := c.Channel(ctx)
		if err != nil {
			t.Errorf("cleanup of %q: %v", name, err)
			return
		}
		defer ch.Close(ctx)
		if queue {
			_, err = ch.QueueDelete(ctx, name, pika.QueueDeleteOptions{})
		} else {
			err = ch.ExchangeDelete(ctx, name, pika.ExchangeDeleteOptions{})
		}
		if err != nil {
			t.Errorf("cleanup of %q: %v", name, err)
		}
	})
}

// miExclusiveQueue declares an exclusive, auto-delete queue with a chosen
// name: gone with the connection.
func miExclusiveQueue(t *testing.T, ch *pika.Channel, prefix string) string {
	t.Helper()
	name := testenv.Name(t, prefix)
	if _, err := ch.QueueDeclare(context.Background(), name, pika.QueueDeclareOptions{Exclusive: true, AutoDelete: true}); err != nil {
		t.Fatalf("QueueDeclare %q: %v", name, err)
	}
	return name
}

// miPublish publishes bodies in confirm mode on a channel of its own and
// waits for every confirmation: when it returns, the messages are in their
// queues. It fails the test on any outcome but an ack.
func miPublish(t *testing.T, c *pika.Conn, exchange, key string, bodies ...string) {
	t.Helper()
	ctx := miCtx(t)
	ch := miChannel(t, c)
	defer ch.Close(ctx)
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies {
		if err := ch.Publish(ctx, exchange, key, pika.Message{Body: []byte(b)}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if err := ch.WaitConfirms(ctx); err != nil {
		t.Fatalf("WaitConfirms: %v", err)
	}
}

// miRoutes reports whether a mandatory message published to exchange with
// key reaches a queue (confirmed) or comes back (returned).
func miRoutes(t *testing.T, ch *pika.Channel, exchange, key string) bool {
	t.Helper()
	f, err := ch.PublishWithConfirm(miCtx(t), exchange, key, pika.Message{Body: []byte("probe " + key), Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	switch err := f.Wait(miCtx(t)); {
	case err == nil:
		return true
	case errors.Is(err, pika.ErrReturned):
		return false
	default:
		t.Fatalf("outcome of a mandatory publish: %v", err)
		return false
	}
}

// miGet fetches one message (auto-ack) and returns its body, or "" when the
// queue is empty.
func miGet(t *testing.T, ch *pika.Channel, queue string) string {
	t.Helper()
	d, ok, err := ch.Get(miCtx(t), queue, pika.GetOptions{AutoAck: true})
	if err != nil {
		t.Fatalf("Get %q: %v", queue, err)
	}
	if !ok {
		return ""
	}
	return string(d.Body)
}

// miWantError checks err is a channel-level *Error with code.
func miWantError(t *testing.T, what string, err error, sentinel error, code pika.ReplyCode) *pika.Error {
	t.Helper()
	var perr *pika.Error
	if !errors.Is(err, sentinel) || !errors.As(err, &perr) {
		t.Fatalf("%s: err = %v, want a *pika.Error matching %v", what, err, sentinel)
	}
	if perr.Code != code || perr.Conn {
		t.Fatalf("%s: code %d conn %v, want %d on the channel only", what, perr.Code, perr.Conn, code)
	}
	return perr
}

// miWaitClosed waits for a channel the broker closed.
func miWaitClosed(t *testing.T, ch *pika.Channel) {
	t.Helper()
	select {
	case <-ch.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("channel not closed after a broker refusal")
	}
}

func TestMethodsExchangeLifecycle(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	for _, kind := range []string{pika.ExchangeDirect, pika.ExchangeFanout, pika.ExchangeTopic, pika.ExchangeHeaders} {
		name := testenv.Name(t, "x-"+kind)
		miCleanup(t, c, name, false)
		if err := ch.ExchangeDeclare(ctx, name, kind, pika.ExchangeDeclareOptions{}); err != nil {
			t.Fatalf("declare %s: %v", kind, err)
		}
		// Declaring again with the same settings is fine.
		if err := ch.ExchangeDeclare(ctx, name, kind, pika.ExchangeDeclareOptions{}); err != nil {
			t.Fatalf("redeclare %s: %v", kind, err)
		}
		if err := ch.ExchangeDeclarePassive(ctx, name); err != nil {
			t.Fatalf("passive %s: %v", kind, err)
		}
		if err := ch.ExchangeDelete(ctx, name, pika.ExchangeDeleteOptions{IfUnused: true}); err != nil {
			t.Fatalf("delete %s: %v", kind, err)
		}
	}
	// A deleted exchange is gone: 404 closes the channel, not the
	// connection.
	name := testenv.Name(t, "x-gone")
	err := ch.ExchangeDeclarePassive(ctx, name)
	miWantError(t, "passive declare of a missing exchange", err, pika.ErrNotFound, 404)
	miWaitClosed(t, ch)
	if c.IsClosed() {
		t.Fatal("connection closed by a channel error")
	}

	// Internal, durable, auto-delete, arguments: accepted and visible as
	// precondition failures when redeclared differently.
	ch = miChannel(t, c)
	miCleanup(t, c, name, false)
	opts := pika.ExchangeDeclareOptions{Durable: true, Internal: true, Arguments: pika.Table{"alternate-exchange": "amq.fanout"}}
	if err := ch.ExchangeDeclare(ctx, name, pika.ExchangeTopic, opts); err != nil {
		t.Fatal(err)
	}
	err = ch.ExchangeDeclare(ctx, name, pika.ExchangeDirect, opts)
	perr := miWantError(t, "redeclare with another kind", err, pika.ErrPreconditionFailed, 406)
	if !strings.Contains(perr.Text, "type") {
		t.Errorf("reply text %q does not name the exchange type", perr.Text)
	}

	// A reserved name is refused.
	ch = miChannel(t, c)
	err = ch.ExchangeDeclare(ctx, "amq.pika-test", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	miWantError(t, "declare of an amq. name", err, pika.ErrAccessRefused, 403)
}

func TestMethodsExchangeDeleteIfUnused(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	x := testenv.Name(t, "x")
	miCleanup(t, c, x, false)
	if err := ch.ExchangeDeclare(ctx, x, pika.ExchangeFanout, pika.ExchangeDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	q := miExclusiveQueue(t, ch, "q")
	if err := ch.QueueBind(ctx, q, x, "", pika.BindOptions{}); err != nil {
		t.Fatal(err)
	}
	err := ch.ExchangeDelete(ctx, x, pika.ExchangeDeleteOptions{IfUnused: true})
	miWantError(t, "delete of a bound exchange with IfUnused", err, pika.ErrPreconditionFailed, 406)
	ch = miChannel(t, c)
	if err := ch.ExchangeDelete(ctx, x, pika.ExchangeDeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Deleting what does not exist succeeds on RabbitMQ.
	if err := ch.ExchangeDelete(ctx, x, pika.ExchangeDeleteOptions{}); err != nil {
		t.Fatalf("delete of a missing exchange: %v", err)
	}
}

func TestMethodsMismatchedQueueDeclare(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	other := miChannel(t, c)
	name := testenv.Name(t, "q")
	miCleanup(t, c, name, true)
	args, err := pika.QueueArgs{MessageTTL: time.Minute}.Table()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Arguments: args}); err != nil {
		t.Fatal(err)
	}
	args2, _ := pika.QueueArgs{MessageTTL: 2 * time.Minute}.Table()
	_, err = ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Arguments: args2})
	perr := miWantError(t, "redeclare with another TTL", err, pika.ErrPreconditionFailed, 406)
	if !errors.Is(err, pika.ErrChannelClosed) {
		t.Errorf("channel error %v does not match ErrChannelClosed", err)
	}
	if !strings.Contains(perr.Text, "x-message-ttl") {
		t.Errorf("reply text %q does not name the argument", perr.Text)
	}
	miWaitClosed(t, ch)
	if !errors.Is(ch.Err(), pika.ErrPreconditionFailed) {
		t.Errorf("ch.Err() = %v, want the broker's 406", ch.Err())
	}
	// Later calls on the closed channel report why it closed.
	if _, err := ch.QueueDeclarePassive(ctx, name); !errors.Is(err, pika.ErrPreconditionFailed) {
		t.Errorf("call on the closed channel: %v", err)
	}
	// The connection and its other channels go on.
	if c.IsClosed() {
		t.Fatal("connection closed by a channel error")
	}
	q, err := other.QueueDeclarePassive(ctx, name)
	if err != nil || q.Name != name {
		t.Fatalf("passive declare on another channel: %+v, %v", q, err)
	}
	fresh := miChannel(t, c)
	if _, err := fresh.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Arguments: args}); err != nil {
		t.Fatalf("same declaration on a new channel: %v", err)
	}
	// Other kinds of mismatch: durability, auto-delete.
	_, err = fresh.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Durable: true, Arguments: args})
	miWantError(t, "redeclare as durable", err, pika.ErrPreconditionFailed, 406)
	fresh = miChannel(t, c)
	_, err = fresh.QueueDeclare(ctx, name, pika.QueueDeclareOptions{AutoDelete: true, Arguments: args})
	miWantError(t, "redeclare as auto-delete", err, pika.ErrPreconditionFailed, 406)
}

func TestMethodsPassiveDeclareOfMissingQueue(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ch := miChannel(t, c)
	name := testenv.Name(t, "missing")
	q, err := ch.QueueDeclarePassive(miCtx(t), name)
	perr := miWantError(t, "passive declare of a missing queue", err, pika.ErrNotFound, 404)
	if q != (pika.Queue{}) || !strings.Contains(perr.Text, name) {
		t.Errorf("queue %+v, reply text %q; want a zero Queue and the name in the text", q, perr.Text)
	}
	miWaitClosed(t, ch)
	// Purge and bind of a missing queue are 404 too.
	ch = miChannel(t, c)
	_, err = ch.QueuePurge(miCtx(t), name, pika.PurgeOptions{})
	miWantError(t, "purge of a missing queue", err, pika.ErrNotFound, 404)
	ch = miChannel(t, c)
	err = ch.QueueBind(miCtx(t), name, "amq.direct", "k", pika.BindOptions{})
	miWantError(t, "bind of a missing queue", err, pika.ErrNotFound, 404)
}

func TestMethodsExclusiveQueueFromAnotherConnection(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	owner := miDial(t, url)
	intruder := miDial(t, url)
	ctx := miCtx(t)
	q := miExclusiveQueue(t, miChannel(t, owner), "excl")
	ch := miChannel(t, intruder)
	_, err := ch.QueueDeclarePassive(ctx, q)
	miWantError(t, "passive declare of another connection's exclusive queue", err, pika.ErrResourceLocked, 405)
	ch = miChannel(t, intruder)
	_, err = ch.Consume(ctx, q, pika.ConsumeOptions{})
	miWantError(t, "consume from another connection's exclusive queue", err, pika.ErrResourceLocked, 405)
	// The owner still uses it.
	if _, err := miChannel(t, owner).QueueDeclarePassive(ctx, q); err != nil {
		t.Fatal(err)
	}
}

func TestMethodsExchangeToExchangeBinding(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	src, dst := testenv.Name(t, "src"), testenv.Name(t, "dst")
	miCleanup(t, c, src, false)
	miCleanup(t, c, dst, false)
	if err := ch.ExchangeDeclare(ctx, src, pika.ExchangeTopic, pika.ExchangeDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(ctx, dst, pika.ExchangeFanout, pika.ExchangeDeclareOptions{Internal: true}); err != nil {
		t.Fatal(err)
	}
	q := miExclusiveQueue(t, ch, "q")
	if err := ch.QueueBind(ctx, q, dst, "", pika.BindOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeBind(ctx, dst, src, "orders.*", pika.BindOptions{}); err != nil {
		t.Fatal(err)
	}
	pub := miChannel(t, c)
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	if !miRoutes(t, pub, src, "orders.eu") {
		t.Fatal("orders.eu not routed through the exchange-to-exchange binding")
	}
	if miRoutes(t, pub, src, "invoices.eu") {
		t.Fatal("invoices.eu routed although no binding matches it")
	}
	if got := miGet(t, ch, q); got != "probe orders.eu" {
		t.Fatalf("queue got %q, want the message routed through both exchanges", got)
	}
	// Publishing to an internal exchange directly is refused.
	if err := ch.ExchangeUnbind(ctx, dst, src, "orders.*", pika.BindOptions{}); err != nil {
		t.Fatal(err)
	}
	if miRoutes(t, pub, src, "orders.eu") {
		t.Fatal("routed after ExchangeUnbind")
	}
	// A binding to a missing source exchange is 404.
	err := ch.ExchangeBind(ctx, dst, testenv.Name(t, "missing"), "", pika.BindOptions{})
	miWantError(t, "bind to a missing exchange", err, pika.ErrNotFound, 404)
}

func TestMethodsQueueBindingsPurgeAndDelete(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	x := testenv.Name(t, "hx")
	miCleanup(t, c, x, false)
	if err := ch.ExchangeDeclare(ctx, x, pika.ExchangeHeaders, pika.ExchangeDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	name := testenv.Name(t, "q")
	miCleanup(t, c, name, true)
	q, err := ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{})
	if err != nil || q != (pika.Queue{Name: name}) {
		t.Fatalf("declare: %+v, %v", q, err)
	}
	match := pika.Table{"x-match": "all", "region": "eu"}
	if err := ch.QueueBind(ctx, name, x, "", pika.BindOptions{Arguments: match}); err != nil {
		t.Fatal(err)
	}
	pub := miChannel(t, c)
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		f, err := pub.PublishWithConfirm(ctx, x, "", pika.Message{
			Properties: pika.Properties{Headers: pika.Table{"region": "eu"}}, Body: []byte(strconv.Itoa(i)), Mandatory: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Wait(ctx); err != nil {
			t.Fatalf("message %d through the headers binding: %v", i, err)
		}
	}
	if q, err := ch.QueueDeclarePassive(ctx, name); err != nil || q.Messages != 3 || q.Consumers != 0 {
		t.Fatalf("passive: %+v, %v; want 3 messages and no consumers", q, err)
	}
	if n, err := ch.QueuePurge(ctx, name, pika.PurgeOptions{}); err != nil || n != 3 {
		t.Fatalf("purge: %d, %v; want 3", n, err)
	}
	if n, err := ch.QueuePurge(ctx, name, pika.PurgeOptions{}); err != nil || n != 0 {
		t.Fatalf("second purge: %d, %v; want 0", n, err)
	}

	// Unbinding needs the binding's arguments; then nothing routes.
	if err := ch.QueueUnbind(ctx, name, x, "", pika.BindOptions{Arguments: match}); err != nil {
		t.Fatal(err)
	}
	f, err := pub.PublishWithConfirm(ctx, x, "", pika.Message{
		Properties: pika.Properties{Headers: pika.Table{"region": "eu"}}, Body: []byte("late"), Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(ctx); !errors.Is(err, pika.ErrReturned) {
		t.Fatalf("publish after QueueUnbind: %v, want it returned", err)
	}

	// Delete: IfEmpty refuses a queue with messages (406, channel closed);
	// then the count of deleted messages.
	miPublish(t, c, "", name, "a", "b")
	refuse := miChannel(t, c)
	_, err = refuse.QueueDelete(ctx, name, pika.QueueDeleteOptions{IfEmpty: true})
	miWantError(t, "delete IfEmpty of a queue with messages", err, pika.ErrPreconditionFailed, 406)
	cons, err := ch.Consume(ctx, name, pika.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	refuse = miChannel(t, c)
	_, err = refuse.QueueDelete(ctx, name, pika.QueueDeleteOptions{IfUnused: true})
	miWantError(t, "delete IfUnused of a consumed queue", err, pika.ErrPreconditionFailed, 406)
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// The consumer took (and holds unacknowledged) what the broker sent it
	// before the cancel; those go back to the queue when the channel
	// closes. Delete from another channel counts the ready ones.
	ready, err := ch.QueueDeclarePassive(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	n, err := miChannel(t, c).QueueDelete(ctx, name, pika.QueueDeleteOptions{})
	if err != nil || n != ready.Messages {
		t.Fatalf("delete: %d, %v; want %d (the ready messages)", n, err, ready.Messages)
	}
	ch = miChannel(t, c)
	_, err = ch.QueueDeclarePassive(ctx, name)
	miWantError(t, "passive declare after delete", err, pika.ErrNotFound, 404)
	// Deleting a missing queue succeeds on RabbitMQ, with a count of 0.
	if n, err := miChannel(t, c).QueueDelete(ctx, name, pika.QueueDeleteOptions{}); err != nil || n != 0 {
		t.Fatalf("delete of a missing queue: %d, %v", n, err)
	}
}

func TestMethodsQueueDeleteCount(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	name := testenv.Name(t, "q")
	miCleanup(t, c, name, true)
	if _, err := ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	miPublish(t, c, "", name, "1", "2", "3", "4")
	n, err := ch.QueueDelete(ctx, name, pika.QueueDeleteOptions{IfUnused: true})
	if err != nil || n != 4 {
		t.Fatalf("delete: %d, %v; want 4", n, err)
	}
}

func TestMethodsServerNamedQueue(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	q, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(q.Name, "amq.gen-") || q.Messages != 0 || q.Consumers != 0 {
		t.Fatalf("server-named queue %+v, want amq.gen-... with no messages or consumers", q)
	}
	q2, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil || q2.Name == q.Name {
		t.Fatalf("second server-named queue %+v, %v: want another name", q2, err)
	}
	miPublish(t, c, "", q.Name, "hello")
	if p, err := ch.QueueDeclarePassive(ctx, q.Name); err != nil || p.Messages != 1 {
		t.Fatalf("passive: %+v, %v; want 1 message", p, err)
	}
	if got := miGet(t, ch, q.Name); got != "hello" {
		t.Fatalf("Get = %q", got)
	}
	if _, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{NoWait: true}); err == nil {
		t.Fatal("no-wait declare of a server-named queue succeeded")
	}
}

func TestMethodsNoWait(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	x, q := testenv.Name(t, "x"), testenv.Name(t, "q")
	miCleanup(t, c, x, false)
	miCleanup(t, c, q, true)
	if err := ch.ExchangeDeclare(ctx, x, pika.ExchangeDirect, pika.ExchangeDeclareOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := ch.QueueDeclare(ctx, q, pika.QueueDeclareOptions{NoWait: true}); err != nil || got.Name != q {
		t.Fatalf("no-wait declare: %+v, %v", got, err)
	}
	if err := ch.QueueBind(ctx, q, x, "k", pika.BindOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	// The channel's order makes a synchronous call after them see their
	// effect.
	if err := ch.ExchangeDeclarePassive(ctx, x); err != nil {
		t.Fatal(err)
	}
	miPublish(t, c, x, "k", "routed")
	if n, err := ch.QueuePurge(ctx, q, pika.PurgeOptions{NoWait: true}); err != nil || n != 0 {
		t.Fatalf("no-wait purge: %d, %v", n, err)
	}
	if got, err := ch.QueueDeclarePassive(ctx, q); err != nil || got.Messages != 0 {
		t.Fatalf("after a no-wait purge: %+v, %v; want no messages", got, err)
	}
	if _, err := ch.QueueDelete(ctx, q, pika.QueueDeleteOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDelete(ctx, x, pika.ExchangeDeleteOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	_, err := ch.QueueDeclarePassive(ctx, q)
	miWantError(t, "passive declare after a no-wait delete", err, pika.ErrNotFound, 404)

	// A refused no-wait request returns nil and closes the channel later.
	ch = miChannel(t, c)
	if err := ch.ExchangeDeclare(ctx, "amq.direct", pika.ExchangeFanout, pika.ExchangeDeclareOptions{NoWait: true}); err != nil {
		t.Fatalf("no-wait declare returned %v before the broker answered", err)
	}
	miWaitClosed(t, ch)
	if !errors.Is(ch.Err(), pika.ErrPreconditionFailed) && !errors.Is(ch.Err(), pika.ErrAccessRefused) {
		t.Fatalf("channel closed with %v, want the broker's refusal", ch.Err())
	}
}

func TestMethodsQuorumQueue(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	name := testenv.Name(t, "quorum")
	qargs := pika.QueueArgs{Type: pika.QueueQuorum, DeliveryLimit: 3, DeadLetterRoutingKey: name + ".dlq"}
	args, err := qargs.Table()
	if err != nil {
		t.Fatal(err)
	}
	miCleanup(t, c, name, true)
	q, err := ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Durable: true, Arguments: args})
	if err != nil {
		t.Fatalf("quorum declare: %v", err)
	}
	if q.Name != name {
		t.Fatalf("declared %+v", q)
	}
	miPublish(t, c, "", name, "replicated")
	if got := miGet(t, ch, name); got != "replicated" {
		t.Fatalf("Get from the quorum queue = %q", got)
	}
	// Declared again as a classic queue: 406 naming x-queue-type.
	qargs.Type = pika.QueueClassic
	classic, err := qargs.Table()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Durable: true, Arguments: classic})
	perr := miWantError(t, "redeclare of a quorum queue as classic", err, pika.ErrPreconditionFailed, 406)
	if !strings.Contains(perr.Text, "x-queue-type") {
		t.Errorf("reply text %q does not name x-queue-type", perr.Text)
	}
	// Quorum queues must be durable.
	ch = miChannel(t, c)
	bad := testenv.Name(t, "quorum-transient")
	_, err = ch.QueueDeclare(ctx, bad, pika.QueueDeclareOptions{Arguments: args})
	miWantError(t, "non-durable quorum queue", err, pika.ErrPreconditionFailed, 406)
}

func TestMethodsStreamQueue(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	name := testenv.Name(t, "stream")
	args, err := pika.QueueArgs{Type: pika.QueueStream, MaxAge: 24 * time.Hour, StreamMaxSegmentSizeBytes: 1 << 20, MaxLengthBytes: 10 << 20}.Table()
	if err != nil {
		t.Fatal(err)
	}
	miCleanup(t, c, name, true)
	if _, err := ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Durable: true, Arguments: args}); err != nil {
		t.Fatalf("stream declare: %v", err)
	}
	miPublish(t, c, "", name, "s0", "s1", "s2")

	// Reading a stream takes a prefetch and manual acknowledgements; every
	// consumer reads from where its offset says, without removing anything.
	for _, offset := range []any{pika.StreamFirst, 10 * time.Minute, "1h", time.Now().Add(-time.Minute)} {
		cch := miChannel(t, c)
		if err := cch.Qos(ctx, pika.QosOptions{PrefetchCount: 10}); err != nil {
			t.Fatal(err)
		}
		cargs, err := pika.ConsumerArgs{StreamOffset: offset}.Table()
		if err != nil {
			t.Fatal(err)
		}
		cons, err := cch.Consume(ctx, name, pika.ConsumeOptions{Arguments: cargs})
		if err != nil {
			t.Fatalf("consume at %v: %v", offset, err)
		}
		for i := range 3 {
			d, err := cons.Next(ctx)
			if err != nil {
				t.Fatalf("offset %v: delivery %d: %v", offset, i, err)
			}
			if want := "s" + strconv.Itoa(i); string(d.Body) != want {
				t.Fatalf("offset %v: delivery %d = %q, want %q", offset, i, d.Body, want)
			}
			if _, ok := d.Headers["x-stream-offset"]; !ok {
				t.Errorf("delivery without its x-stream-offset header: %v", d.Headers)
			}
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
		}
		if err := cch.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Streams must be durable too.
	ch = miChannel(t, c)
	_, err = ch.QueueDeclare(ctx, testenv.Name(t, "stream-transient"), pika.QueueDeclareOptions{Arguments: args})
	miWantError(t, "non-durable stream", err, pika.ErrPreconditionFailed, 406)
}

func TestMethodsQueueArgsTakeEffect(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	dlq := miExclusiveQueue(t, ch, "dlq")
	name := testenv.Name(t, "limited")
	// A length limit of 2 with drop-head dead-letters the oldest message
	// to dlq through the default exchange.
	args, err := pika.QueueArgs{MaxLength: 2, Overflow: pika.OverflowDropHead, DeadLetterRoutingKey: dlq, Expires: time.Minute}.Table()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Exclusive: true, Arguments: args}); err != nil {
		t.Fatal(err)
	}
	miPublish(t, c, "", name, "m1", "m2", "m3")
	if got, err := ch.QueueDeclarePassive(ctx, name); err != nil || got.Messages != 2 {
		t.Fatalf("limited queue: %+v, %v; want 2 messages", got, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Dead-lettering is asynchronous: wait for it, bounded.
		if got := miGet(t, ch, dlq); got != "" {
			if got != "m1" {
				t.Fatalf("dead-lettered %q, want m1", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dropped message never reached the dead-letter queue")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Priority queue: higher priorities first.
	pq := testenv.Name(t, "prio")
	pargs, _ := pika.QueueArgs{MaxPriority: 5}.Table()
	if _, err := ch.QueueDeclare(ctx, pq, pika.QueueDeclareOptions{Exclusive: true, Arguments: pargs}); err != nil {
		t.Fatal(err)
	}
	pub := miChannel(t, c)
	if err := pub.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint8{1, 5, 3} {
		if err := pub.Publish(ctx, "", pq, pika.Message{Properties: pika.Properties{Priority: p}, Body: []byte(strconv.Itoa(int(p)))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.WaitConfirms(ctx); err != nil {
		t.Fatal(err)
	}
	var order []string
	for range 3 {
		order = append(order, miGet(t, ch, pq))
	}
	if got := strings.Join(order, ","); got != "5,3,1" {
		t.Fatalf("priority queue order %s, want 5,3,1", got)
	}
}

func TestMethodsTx(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	get := miChannel(t, c)
	q := miExclusiveQueue(t, get, "tx")
	tx := miChannel(t, c)
	if err := tx.TxSelect(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"t1", "t2"} {
		if err := tx.Publish(ctx, "", q, pika.Message{Body: []byte(b)}); err != nil {
			t.Fatal(err)
		}
	}
	// A synchronous call on the tx channel: the publishes reached the
	// broker, but stay in the transaction.
	if got, err := tx.QueueDeclarePassive(ctx, q); err != nil || got.Messages != 0 {
		t.Fatalf("before commit: %+v, %v; want no messages", got, err)
	}
	if got := miGet(t, get, q); got != "" {
		t.Fatalf("Get before commit = %q, want nothing", got)
	}
	if err := tx.TxCommit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := miGet(t, get, q); got != "t1" {
		t.Fatalf("Get after commit = %q, want t1", got)
	}
	if got := miGet(t, get, q); got != "t2" {
		t.Fatalf("second Get after commit = %q, want t2", got)
	}

	// Rollback discards.
	if err := tx.Publish(ctx, "", q, pika.Message{Body: []byte("discarded")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.TxRollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx.TxCommit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := miGet(t, get, q); got != "" {
		t.Fatalf("Get after rollback = %q, want nothing", got)
	}

	// Acknowledgements are transactional too: a rolled-back ack leaves the
	// message unacknowledged, and a committed one removes it.
	miPublish(t, c, "", q, "acked")
	d, ok, err := tx.Get(ctx, q, pika.GetOptions{})
	if err != nil || !ok {
		t.Fatalf("Get on the tx channel: %v, %v", ok, err)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := tx.TxRollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Recover(ctx, true); err != nil {
		t.Fatal(err)
	}
	d, ok, err = tx.Get(ctx, q, pika.GetOptions{})
	if err != nil || !ok || !d.Redelivered || string(d.Body) != "acked" {
		t.Fatalf("after a rolled-back ack and Recover: %+v, %v, %v; want the message redelivered", d, ok, err)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := tx.TxCommit(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := tx.QueueDeclarePassive(ctx, q); err != nil || got.Messages != 0 {
		t.Fatalf("after a committed ack: %+v, %v; want an empty queue", got, err)
	}

	// Commit on a channel not in tx mode: 406.
	plain := miChannel(t, c)
	err = plain.TxCommit(ctx)
	miWantError(t, "commit without tx.select", err, pika.ErrPreconditionFailed, 406)
	// Confirm mode and tx mode exclude each other.
	err = tx.ConfirmSelect(ctx)
	miWantError(t, "confirm.select on a tx channel", err, pika.ErrPreconditionFailed, 406)
}

func TestMethodsQosPrefetchOne(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	q := miExclusiveQueue(t, ch, "qos")
	miPublish(t, c, "", q, "1", "2", "3")

	cch := miChannel(t, c)
	if err := cch.Qos(ctx, pika.QosOptions{PrefetchCount: 1}); err != nil {
		t.Fatal(err)
	}
	cons, err := cch.Consume(ctx, q, pika.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// With one delivery unacknowledged the broker sends no other: the
	// queue keeps the rest ready. Each ack lets exactly one more through.
	for i, wantReady := range []int{2, 1, 0} {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := strconv.Itoa(i + 1); string(d.Body) != want {
			t.Fatalf("delivery %q, want %q", d.Body, want)
		}
		got, err := ch.QueueDeclarePassive(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if got.Messages != wantReady || got.Consumers != 1 {
			t.Fatalf("with delivery %s unacknowledged: %d ready, %d consumers; want %d ready, 1 consumer", d.Body, got.Messages, got.Consumers, wantReady)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}

	// Global (per channel on RabbitMQ) is accepted alongside.
	if err := cch.Qos(ctx, pika.QosOptions{PrefetchCount: 10, Global: true}); err != nil {
		t.Fatal(err)
	}
	// Out-of-range values and a prefetch size fail without sending
	// anything: the channel and connection stay open.
	if err := cch.Qos(ctx, pika.QosOptions{PrefetchCount: 1 << 16}); err == nil {
		t.Fatal("PrefetchCount 65536 accepted")
	}
	if err := cch.Qos(ctx, pika.QosOptions{PrefetchSize: 1 << 20}); err == nil {
		t.Fatal("PrefetchSize accepted on RabbitMQ")
	}
	if err := cch.Recover(ctx, false); err == nil {
		t.Fatal("Recover(false) accepted on RabbitMQ")
	}
	if err := cch.Qos(ctx, pika.QosOptions{}); err != nil || cch.IsClosed() || c.IsClosed() {
		t.Fatalf("after refused options: %v (channel closed %v, connection closed %v)", err, cch.IsClosed(), c.IsClosed())
	}
}

func TestMethodsRecover(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ctx := miCtx(t)
	ch := miChannel(t, c)
	q := miExclusiveQueue(t, ch, "recover")
	miPublish(t, c, "", q, "again")
	cons, err := ch.Consume(ctx, q, pika.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Redelivered {
		t.Fatal("first delivery flagged redelivered")
	}
	if err := ch.Recover(ctx, true); err != nil {
		t.Fatal(err)
	}
	d2, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(d2.Body) != "again" || !d2.Redelivered || d2.DeliveryTag == d.DeliveryTag {
		t.Fatalf("after Recover: %q redelivered %v tag %d (first tag %d); want the message again with a new tag", d2.Body, d2.Redelivered, d2.DeliveryTag, d.DeliveryTag)
	}
	if err := d2.Ack(false); err != nil {
		t.Fatal(err)
	}
	if got, err := ch.QueueDeclarePassive(ctx, q); err != nil || got.Messages != 0 {
		t.Fatalf("after ack: %+v, %v", got, err)
	}
}

func TestMethodsCancelledContext(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	c := miDial(t, url)
	ch := miChannel(t, c)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	name := testenv.Name(t, "never")
	if _, err := ch.QueueDeclare(done, name, pika.QueueDeclareOptions{Exclusive: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("declare with a cancelled ctx: %v", err)
	}
	if err := ch.ExchangeDeclare(done, name, pika.ExchangeDirect, pika.ExchangeDeclareOptions{NoWait: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("no-wait declare with a cancelled ctx: %v", err)
	}
	// Nothing was sent: the queue does not exist, the channel still works.
	_, err := ch.QueueDeclarePassive(miCtx(t), name)
	miWantError(t, "passive declare of the never-declared queue", err, pika.ErrNotFound, 404)
	ch = miChannel(t, c)
	err = ch.ExchangeDeclarePassive(miCtx(t), name)
	miWantError(t, "passive declare of the never-declared exchange", err, pika.ErrNotFound, 404)
}
