package conformance

import (
	"fmt"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Scenarios of dead-lettering and of quorum queues.

// dlxPair declares a dead-letter exchange (fanout) with a queue bound to it,
// and a source queue with args plus x-dead-letter-exchange. It returns a
// confirm channel, the source queue and the dead-letter queue.
func dlxPair(e *Env, args pika.Table) (ch *pika.Channel, dlx, src, dead string) {
	e.T.Helper()
	c := e.Dial()
	ch = e.ConfirmChan(c)
	dlx = e.Exchange(ch, "dlx", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	dead = e.Queue(ch, "dead", pika.QueueDeclareOptions{})
	e.Bind(ch, dead, dlx, "", nil)
	t := pika.Table{"x-dead-letter-exchange": dlx}
	for k, v := range args {
		t[k] = v
	}
	src = e.Queue(ch, "src", pika.QueueDeclareOptions{Arguments: t})
	return ch, dlx, src, dead
}

// death returns the x-death entries of d, checking the header's shape.
func death(e *Env, d *pika.Delivery) []pika.Table {
	e.T.Helper()
	raw, ok := d.Headers["x-death"].([]any)
	if !ok {
		e.T.Fatalf("x-death header %T %v, want an array of tables (headers %v)", d.Headers["x-death"], d.Headers["x-death"], d.Headers)
	}
	out := make([]pika.Table, len(raw))
	for i, r := range raw {
		t, ok := r.(pika.Table)
		if !ok {
			e.T.Fatalf("x-death[%d] is %T, want a table", i, r)
		}
		out[i] = t
	}
	return out
}

// checkDeath checks one x-death entry against RabbitMQ 3.10's shape: count
// (long), reason, queue, time (timestamp), exchange, routing-keys (array of
// strings).
func checkDeath(e *Env, t pika.Table, count int64, reason, queue, exchange string, keys ...string) {
	e.T.Helper()
	if t["count"] != count {
		e.T.Errorf("x-death count %T %v, want int64 %d", t["count"], t["count"], count)
	}
	for k, want := range map[string]string{"reason": reason, "queue": queue, "exchange": exchange} {
		if t[k] != want {
			e.T.Errorf("x-death %s %T %v, want %q", k, t[k], t[k], want)
		}
	}
	ts, ok := t["time"].(time.Time)
	if !ok || time.Since(ts) > time.Hour || time.Until(ts) > time.Hour {
		e.T.Errorf("x-death time %T %v, want a timestamp of about now", t["time"], t["time"])
	}
	rks, ok := t["routing-keys"].([]any)
	if !ok || len(rks) != len(keys) {
		e.T.Fatalf("x-death routing-keys %T %v, want %q", t["routing-keys"], t["routing-keys"], keys)
	}
	for i, k := range keys {
		if rks[i] != k {
			e.T.Errorf("x-death routing-keys[%d] %v, want %q", i, rks[i], k)
		}
	}
}

func checkFirstDeath(e *Env, d *pika.Delivery, reason, queue, exchange string) {
	e.T.Helper()
	for k, want := range map[string]string{"x-first-death-reason": reason, "x-first-death-queue": queue, "x-first-death-exchange": exchange} {
		if d.Headers[k] != want {
			e.T.Errorf("%s %T %v, want %q", k, d.Headers[k], d.Headers[k], want)
		}
	}
}

func dlReject(e *Env) {
	ch, dlx, src, dead := dlxPair(e, nil)
	e.PublishSync(ch, "", src, pika.Message{Body: []byte("m"), Properties: pika.Properties{Headers: pika.Table{"app": "kept"}}})
	e.Must(e.Get(ch, src).Reject(false), "reject")
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "m")
	Equal(e, "exchange of the dead-lettered delivery", d.Exchange, dlx)
	Equal(e, "routing key of the dead-lettered delivery", d.RoutingKey, src)
	Equal(e, "application header", d.Headers["app"], any("kept"))
	ds := death(e, d)
	Equal(e, "x-death entries", len(ds), 1)
	checkDeath(e, ds[0], 1, "rejected", src, "", src)
	checkFirstDeath(e, d, "rejected", src, "")
}

func dlNack(e *Env) {
	ch, _, src, dead := dlxPair(e, nil)
	e.PublishSync(ch, "", src, Body("1"))
	e.PublishSync(ch, "", src, Body("2"))
	e.Get(ch, src)
	last := e.Get(ch, src)
	e.Must(last.Nack(true, false), "nack multiple without requeue")
	e.WaitDepth(ch, dead, 2)
	for _, b := range []string{"1", "2"} {
		d := e.GetBody(ch, dead, b)
		checkDeath(e, death(e, d)[0], 1, "rejected", src, "", src)
	}
}

func dlRequeueNotDead(e *Env) {
	ch, _, src, dead := dlxPair(e, nil)
	e.PublishSync(ch, "", src, Body("m"))
	e.Must(e.Get(ch, src).Reject(true), "reject with requeue")
	d := e.GetBody(ch, src, "m")
	if !d.Redelivered {
		e.T.Errorf("requeued message not marked redelivered")
	}
	e.GetEmpty(ch, dead)
}

func dlExpired(e *Env) {
	ch, dlx, src, dead := dlxPair(e, pika.Table{"x-message-ttl": int32(20)})
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	e.Bind(ch, src, x, "key", nil)
	e.PublishSync(ch, x, "key", Body("m"))
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "m")
	Equal(e, "exchange", d.Exchange, dlx)
	Equal(e, "routing key", d.RoutingKey, "key")
	checkDeath(e, death(e, d)[0], 1, "expired", src, x, "key")
	checkFirstDeath(e, d, "expired", src, x)
}

func dlExpiredPerMessage(e *Env) {
	ch, _, src, dead := dlxPair(e, nil)
	e.PublishSync(ch, "", src, pika.Message{Body: []byte("m"), Properties: pika.Properties{Expiration: "20"}})
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "m")
	ds := death(e, d)
	checkDeath(e, ds[0], 1, "expired", src, "", src)
	Equal(e, "x-death original-expiration", ds[0]["original-expiration"], any("20"))
	if d.Flags&pika.FlagExpiration != 0 {
		e.T.Errorf("dead-lettered message keeps expiration %q, want it removed", d.Expiration)
	}
}

func dlMaxLen(e *Env) {
	ch, _, src, dead := dlxPair(e, pika.Table{"x-max-length": int32(1)})
	e.PublishSync(ch, "", src, Body("old"))
	e.PublishSync(ch, "", src, Body("new"))
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "old")
	checkDeath(e, death(e, d)[0], 1, "maxlen", src, "", src)
	e.GetBody(ch, src, "new")
}

func dlRejectPublishDLX(e *Env) {
	ch, _, src, dead := dlxPair(e, pika.Table{"x-max-length": int32(1), "x-overflow": "reject-publish-dlx"})
	e.PublishSync(ch, "", src, Body("kept"))
	if err := e.Confirmed(ch, "", src, Body("refused")); err != pika.ErrNacked {
		e.T.Fatalf("publish beyond the limit: %v, want a nack", err)
	}
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "refused")
	checkDeath(e, death(e, d)[0], 1, "maxlen", src, "", src)
	e.GetBody(ch, src, "kept")
}

func dlRoutingKey(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	dlx := e.Exchange(ch, "dlx", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	dead := e.Queue(ch, "dead", pika.QueueDeclareOptions{})
	e.Bind(ch, dead, dlx, "dead-key", nil)
	src := e.QueueArgs(ch, "src", pika.QueueArgs{DeadLetterExchange: dlx, DeadLetterRoutingKey: "dead-key"})
	e.PublishSync(ch, "", src, Body("m"))
	e.Must(e.Get(ch, src).Reject(false), "reject")
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "m")
	Equal(e, "routing key", d.RoutingKey, "dead-key")
	// x-death keeps the original routing keys.
	checkDeath(e, death(e, d)[0], 1, "rejected", src, "", src)
}

func dlCCKeys(e *Env) {
	ch, _, src, dead := dlxPair(e, nil)
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	e.Bind(ch, src, x, "a", nil)
	e.PublishSync(ch, x, "a", pika.Message{Body: []byte("m"), Properties: pika.Properties{Headers: pika.Table{"CC": []any{"b"}}}})
	e.Must(e.Get(ch, src).Reject(false), "reject")
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "m")
	checkDeath(e, death(e, d)[0], 1, "rejected", src, x, "a", "b")
}

func dlDefaultExchange(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	dead := e.Queue(ch, "dead", pika.QueueDeclareOptions{})
	src := e.Queue(ch, "src", pika.QueueDeclareOptions{Arguments: pika.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}})
	e.PublishSync(ch, "", src, Body("m"))
	e.Must(e.Get(ch, src).Reject(false), "reject")
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "m")
	Equal(e, "exchange", d.Exchange, "")
	Equal(e, "routing key", d.RoutingKey, dead)
}

func dlMissingExchange(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	src := e.QueueArgs(ch, "src", pika.QueueArgs{DeadLetterExchange: e.Name("missing")})
	e.PublishSync(ch, "", src, Body("m"))
	e.Must(e.Get(ch, src).Reject(false), "reject")
	e.GetEmpty(ch, src) // dropped, no error
	e.Must(ch.Qos(e.Ctx, pika.QosOptions{}), "channel still open")
}

func dlCount(e *Env) {
	// src dead-letters to dlx, whose queue dead-letters back to src by
	// TTL: the message cycles src -> dead -> src, and x-death counts per
	// (queue, reason).
	c := e.Dial()
	ch := e.ConfirmChan(c)
	back := e.Exchange(ch, "back", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	dlx := e.Exchange(ch, "dlx", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	src := e.QueueArgs(ch, "src", pika.QueueArgs{DeadLetterExchange: dlx})
	dead := e.QueueArgs(ch, "dead", pika.QueueArgs{DeadLetterExchange: back, MessageTTL: 10 * time.Millisecond})
	e.Bind(ch, dead, dlx, "", nil)
	e.Bind(ch, src, back, "", nil)
	e.PublishSync(ch, "", src, Body("m"))
	for round := 1; round <= 2; round++ {
		e.Must(e.Get(ch, src).Reject(false), "reject")
		e.WaitDepth(ch, src, 1)
	}
	d := e.Get(ch, src)
	ds := death(e, d)
	Equal(e, "x-death entries", len(ds), 2)
	// Most recent death first: the expiry in dead, then the rejection in src.
	checkDeath(e, ds[0], 2, "expired", dead, dlx, src)
	checkDeath(e, ds[1], 2, "rejected", src, "", src)
	checkFirstDeath(e, d, "rejected", src, "")
	e.Must(d.Ack(false), "ack")
}

func quorumDeclare(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true, Arguments: pika.Table{"x-queue-type": "quorum"}})
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Durable: true})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '%s' in vhost '%s': received none but current is the value 'quorum' of type 'longstr'", q, e.Vhost()))
}

func quorumNonDurable(e *Env) {
	c, ch := e.Open()
	q := e.Name("q")
	e.TrackQueue(q)
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Arguments: pika.Table{"x-queue-type": "quorum"}})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - invalid property 'non-durable' for queue '%s' in vhost '%s'", q, e.Vhost()))
}

func quorumExclusive(e *Env) {
	c, ch := e.Open()
	q := e.Name("q")
	e.TrackQueue(q)
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Durable: true, Exclusive: true, Arguments: pika.Table{"x-queue-type": "quorum"}})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue '%s' in vhost '%s'", q, e.Vhost()))
}

func quorumDeliveryCount(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true, Arguments: pika.Table{"x-queue-type": "quorum"}})
	e.PublishSync(ch, "", q, Body("m"))
	d := e.Get(ch, q)
	if d.Headers["x-delivery-count"] != int64(0) || d.Redelivered {
		e.T.Errorf("first delivery: x-delivery-count %T %v, redelivered %v; want int64 0, not redelivered",
			d.Headers["x-delivery-count"], d.Headers["x-delivery-count"], d.Redelivered)
	}
	e.Must(d.Nack(false, true), "nack with requeue")
	d = e.Get(ch, q)
	if d.Headers["x-delivery-count"] != int64(1) || !d.Redelivered {
		e.T.Errorf("second delivery: x-delivery-count %T %v, redelivered %v; want int64 1, redelivered",
			d.Headers["x-delivery-count"], d.Headers["x-delivery-count"], d.Redelivered)
	}
	e.Must(d.Reject(true), "reject with requeue")
	d = e.Get(ch, q)
	Equal(e, "third x-delivery-count", d.Headers["x-delivery-count"], any(int64(2)))
	e.Must(d.Ack(false), "ack")
}

func quorumDeliveryLimit(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	dlx := e.Exchange(ch, "dlx", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	dead := e.Queue(ch, "dead", pika.QueueDeclareOptions{})
	e.Bind(ch, dead, dlx, "", nil)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true, Arguments: pika.Table{
		"x-queue-type": "quorum", "x-delivery-limit": int32(1), "x-dead-letter-exchange": dlx}})
	e.PublishSync(ch, "", q, Body("m"))
	e.Must(e.Get(ch, q).Nack(false, true), "first nack")
	e.Must(e.Get(ch, q).Nack(false, true), "second nack: over the limit")
	e.WaitDepth(ch, dead, 1)
	d := e.GetBody(ch, dead, "m")
	checkDeath(e, death(e, d)[0], 1, "delivery_limit", q, "", q)
	e.GetEmpty(ch, q)
}

// quorumQueue declares a quorum queue with extra arguments.
func quorumQueue(e *Env, ch *pika.Channel, args pika.Table) string {
	e.T.Helper()
	t := pika.Table{"x-queue-type": "quorum"}
	for k, v := range args {
		t[k] = v
	}
	return e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true, Arguments: t})
}

func quorumRejectPublish(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := quorumQueue(e, ch, pika.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	// The limit is checked before the enqueue: the queue accepts messages
	// while it is not over the limit yet, so one more gets in.
	e.PublishSync(ch, "", q, Body("1"))
	e.PublishSync(ch, "", q, Body("2"))
	if err := e.Confirmed(ch, "", q, Body("3")); err != pika.ErrNacked {
		e.T.Fatalf("publish with the queue over x-max-length: %v, want a nack", err)
	}
	Equal(e, "depth", e.Depth(ch, q), 2)
	e.GetBody(ch, q, "1")
	e.GetBody(ch, q, "2")
}

func quorumPurgeAndCounts(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := quorumQueue(e, ch, nil)
	for i := 0; i < 3; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	d := e.GetBody(ch, q, "0")
	Equal(e, "get-ok message count", d.MessageCount, uint32(2))
	n, err := ch.QueuePurge(e.Ctx, q, pika.PurgeOptions{})
	e.Must(err, "purge")
	Equal(e, "purge-ok count", n, 2)
}

func quorumBadPriority(e *Env) {
	c, ch := e.Open()
	q := e.Name("q")
	e.TrackQueue(q)
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Durable: true, Arguments: pika.Table{"x-queue-type": "quorum", "x-max-priority": int32(5)}})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '%s' in vhost '%s' of queue type rabbit_quorum_queue", q, e.Vhost()))
}

func dlExpiryCycleDropped(e *Env) {
	// A queue dead-lettering its expired messages to itself would cycle
	// forever; RabbitMQ drops a message whose x-death shows it already
	// expired in this queue, with no rejection in the cycle.
	c := e.Dial()
	ch := e.ConfirmChan(c)
	name := e.Name("q")
	e.TrackQueue(name)
	_, err := ch.QueueDeclare(e.Ctx, name, pika.QueueDeclareOptions{Arguments: pika.Table{
		"x-message-ttl": int32(10), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": name}})
	e.Must(err, "declare the self-dead-lettering queue")
	e.PublishSync(ch, "", name, Body("m"))
	e.WaitDepth(ch, name, 0)
	// A cycling message would be back in the queue most of the time: look
	// for it a few times over 200 ms.
	for i := 0; i < 10; i++ {
		e.GetEmpty(ch, name)
		time.Sleep(20 * time.Millisecond)
	}
}
