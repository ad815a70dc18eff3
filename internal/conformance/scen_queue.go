package conformance

import (
	"fmt"
	"strings"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Scenarios of queue declaration, exclusivity, deletion, purge and limits.

func qServerNamed(e *Env) {
	_, ch := e.Open()
	q1, err := ch.QueueDeclare(e.Ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	e.Must(err, "declare a server-named queue")
	e.TrackQueue(q1.Name)
	q2, err := ch.QueueDeclare(e.Ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	e.Must(err, "declare a second server-named queue")
	e.TrackQueue(q2.Name)
	for _, q := range []string{q1.Name, q2.Name} {
		if !strings.HasPrefix(q, "amq.gen-") || len(q) != len("amq.gen-")+22 {
			e.T.Errorf("server-named queue %q, want amq.gen- and 22 characters", q)
		}
	}
	if q1.Name == q2.Name {
		e.T.Fatalf("two server-named queues share the name %q", q1.Name)
	}
	e.Must(ch.Publish(e.Ctx, "", q1.Name, Body("m")), "publish")
	e.WaitDepth(ch, q1.Name, 1)
}

func qDeclareOkCounts(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	for i := 0; i < 3; i++ {
		e.PublishSync(ch, "", q, Body("m"))
	}
	st, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{})
	e.Must(err, "redeclare")
	Equal(e, "declare-ok messages", st.Messages, 3)
	Equal(e, "declare-ok consumers", st.Consumers, 0)
	cch := e.Chan(c)
	e.Must(cch.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 1}), "qos")
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	e.Next(cons)
	st, err = ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{})
	e.Must(err, "redeclare")
	// Ready messages only: the unacknowledged one is not counted.
	Equal(e, "declare-ok messages with one unacked", st.Messages, 2)
	Equal(e, "declare-ok consumers", st.Consumers, 1)
}

func qReservedName(e *Env) {
	c, ch := e.Open()
	q := "amq." + e.Name("q")
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, fmt.Sprintf("ACCESS_REFUSED - queue name '%s' contains reserved prefix 'amq.*'", q))
	e.Gone(c, q)
}

// queueMismatch declares a queue with first, again with second, and checks
// the 406 inequivalent-arg close naming arg.
func queueMismatch(e *Env, first, second pika.QueueDeclareOptions, arg, values string) {
	e.T.Helper()
	c, ch := e.Open()
	q := e.Queue(ch, "q", first)
	_, err := ch.QueueDeclare(e.Ctx, q, second)
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - inequivalent arg '%s' for queue '%s' in vhost '%s'%s", arg, q, e.Vhost(), values))
}

func qRedeclareDurable(e *Env) {
	queueMismatch(e, pika.QueueDeclareOptions{}, pika.QueueDeclareOptions{Durable: true}, "durable", ": received 'true' but current is 'false'")
}

func qRedeclareAutoDelete(e *Env) {
	queueMismatch(e, pika.QueueDeclareOptions{}, pika.QueueDeclareOptions{AutoDelete: true}, "auto_delete", ": received 'true' but current is 'false'")
}

func qRedeclareArgs(e *Env) {
	queueMismatch(e, pika.QueueDeclareOptions{}, pika.QueueDeclareOptions{Arguments: pika.Table{"x-message-ttl": int32(100)}},
		"x-message-ttl", ": received the value '100' of type 'signedint' but current is none")
}

func qRedeclareArgValue(e *Env) {
	queueMismatch(e, pika.QueueDeclareOptions{Arguments: pika.Table{"x-max-length": int32(5)}},
		pika.QueueDeclareOptions{Arguments: pika.Table{"x-max-length": int32(6)}},
		"x-max-length", ": received '6' but current is '5'")
}

func qRedeclareArgEquivalentTypes(e *Env) {
	_, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Arguments: pika.Table{"x-max-length": int32(5)}})
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Arguments: pika.Table{"x-max-length": int64(5)}})
	e.Must(err, "redeclare with the same number as another integer type")
}

func qRedeclareExclusive(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Exclusive: true})
	e.ChannelClosed(c, ch, err, wire.ReplyResourceLocked, lockedText(e, q))
}

func qPassiveMissing(e *Env) {
	c, ch := e.Open()
	q := e.Name("missing")
	_, err := ch.QueueDeclarePassive(e.Ctx, q)
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundQueue(q))
}

func qPassiveCounts(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true})
	e.PublishSync(ch, "", q, Body("m"))
	st, err := ch.QueueDeclarePassive(e.Ctx, q)
	e.Must(err, "passive declare")
	Equal(e, "name", st.Name, q)
	Equal(e, "messages", st.Messages, 1)
}

// lockedText is the start of RabbitMQ's 405 text for an exclusive queue.
// The full text ("... It could be originally declared on another connection
// or the exclusive property value does not match that of the original
// declaration.") is longer than a short string allows with the names of the
// suite, and RabbitMQ cuts it to 255 bytes ending in "...".
func lockedText(e *Env, q string) string {
	return fmt.Sprintf("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' in vhost '%s'. It could be originally declared on another connection*", q, e.Vhost())
}

// exclusiveOther declares an exclusive queue on one connection and returns
// it with a channel on a second connection.
func exclusiveOther(e *Env) (q string, other *pika.Conn, ch *pika.Channel) {
	e.T.Helper()
	_, owner := e.Open()
	q = e.Queue(owner, "q", pika.QueueDeclareOptions{Exclusive: true})
	other, ch = e.Open()
	return q, other, ch
}

func qExclusiveDeclare(e *Env) {
	q, c, ch := exclusiveOther(e)
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Exclusive: true})
	e.ChannelClosed(c, ch, err, wire.ReplyResourceLocked, lockedText(e, q))
}

func qExclusivePassive(e *Env) {
	q, c, ch := exclusiveOther(e)
	_, err := ch.QueueDeclarePassive(e.Ctx, q)
	e.ChannelClosed(c, ch, err, wire.ReplyResourceLocked, lockedText(e, q))
}

func qExclusiveConsume(e *Env) {
	q, c, ch := exclusiveOther(e)
	_, err := ch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyResourceLocked, lockedText(e, q))
}

func qExclusiveGet(e *Env) {
	q, c, ch := exclusiveOther(e)
	_, _, err := ch.Get(e.Ctx, q, pika.GetOptions{AutoAck: true})
	e.ChannelClosed(c, ch, err, wire.ReplyResourceLocked, lockedText(e, q))
}

func qExclusiveDelete(e *Env) {
	q, c, ch := exclusiveOther(e)
	_, err := ch.QueueDelete(e.Ctx, q, pika.QueueDeleteOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyResourceLocked, lockedText(e, q))
}

func qExclusivePurge(e *Env) {
	q, c, ch := exclusiveOther(e)
	_, err := ch.QueuePurge(e.Ctx, q, pika.PurgeOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyResourceLocked, lockedText(e, q))
}

func qExclusiveBind(e *Env) {
	q, c, ch := exclusiveOther(e)
	err := ch.QueueBind(e.Ctx, q, "amq.fanout", "", pika.BindOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyResourceLocked, lockedText(e, q))
}

func qExclusivePublish(e *Env) {
	owner, och := e.Open()
	q := e.Queue(och, "q", pika.QueueDeclareOptions{Exclusive: true})
	other := e.Dial()
	ch := e.ConfirmChan(other)
	e.PublishSync(ch, "", q, Body("from another connection"))
	e.GetBody(och, q, "from another connection")
	_ = owner
}

func qExclusiveSameConn(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Exclusive: true})
	ch2 := e.Chan(c)
	_, err := ch2.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Exclusive: true})
	e.Must(err, "redeclare on another channel of the owning connection")
	_, err = ch2.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume on another channel of the owning connection")
}

func qExclusiveGoneWithConn(e *Env) {
	owner, och := e.Open()
	q := e.Queue(och, "q", pika.QueueDeclareOptions{Exclusive: true, Durable: true})
	e.Must(owner.Close(e.Ctx), "close the owner")
	e.EventuallyGone(e.Dial(), q)
}

func qAutoDeleteLastConsumer(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{AutoDelete: true})
	c1, err := ch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume 1")
	c2, err := ch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume 2")
	e.Must(c1.Cancel(e.Ctx), "cancel 1")
	e.Exists(c, q)
	e.Must(c2.Cancel(e.Ctx), "cancel 2")
	e.EventuallyGone(c, q)
}

func qAutoDeleteNoConsumer(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{AutoDelete: true})
	e.Must(ch.Close(e.Ctx), "channel.close")
	e.Exists(c, q)
}

func qAutoDeleteChannelClose(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{AutoDelete: true})
	cch := e.Chan(c)
	_, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	e.Must(cch.Close(e.Ctx), "close the consumer's channel")
	e.EventuallyGone(c, q)
}

func qPurge(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	for i := 0; i < 4; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	held := e.Get(ch, q) // unacknowledged: not purged
	n, err := ch.QueuePurge(e.Ctx, q, pika.PurgeOptions{})
	e.Must(err, "queue.purge")
	Equal(e, "purge-ok message count", n, 3)
	e.GetEmpty(ch, q)
	e.Must(held.Reject(true), "requeue the held message")
	e.GetBody(ch, q, "0")
	n, err = ch.QueuePurge(e.Ctx, q, pika.PurgeOptions{})
	e.Must(err, "purge an empty queue")
	Equal(e, "purge-ok of an empty queue", n, 0)
}

func qPurgeMissing(e *Env) {
	c, ch := e.Open()
	q := e.Name("missing")
	_, err := ch.QueuePurge(e.Ctx, q, pika.PurgeOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundQueue(q))
}

func qDeleteCount(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	for i := 0; i < 3; i++ {
		e.PublishSync(ch, "", q, Body("m"))
	}
	n, err := ch.QueueDelete(e.Ctx, q, pika.QueueDeleteOptions{})
	e.Must(err, "queue.delete")
	Equal(e, "delete-ok message count", n, 3)
	e.Gone(c, q)
}

func qDeleteMissing(e *Env) {
	_, ch := e.Open()
	n, err := ch.QueueDelete(e.Ctx, e.Name("missing"), pika.QueueDeleteOptions{IfEmpty: true, IfUnused: true})
	e.Must(err, "delete a missing queue")
	Equal(e, "delete-ok message count", n, 0)
}

func qDeleteIfUnused(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	_, err := e.Chan(c).Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	_, err = ch.QueueDelete(e.Ctx, q, pika.QueueDeleteOptions{IfUnused: true})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf("PRECONDITION_FAILED - queue '%s' in vhost '%s' in use", q, e.Vhost()))
	e.Exists(c, q)
}

func qDeleteIfEmpty(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("m"))
	_, err := ch.QueueDelete(e.Ctx, q, pika.QueueDeleteOptions{IfEmpty: true})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf("PRECONDITION_FAILED - queue '%s' in vhost '%s' not empty", q, e.Vhost()))
	e.Exists(c, q)
}

func qDeleteIfEmptyUnacked(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("m"))
	e.Get(ch, q) // delivered, not acknowledged
	other := e.Chan(c)
	n, err := other.QueueDelete(e.Ctx, q, pika.QueueDeleteOptions{IfEmpty: true})
	e.Must(err, "delete if empty with only an unacknowledged message")
	Equal(e, "delete-ok message count", n, 0)
	e.Gone(c, q)
}

func qTTL(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{MessageTTL: 50 * time.Millisecond})
	e.PublishSync(ch, "", q, Body("m"))
	e.WaitDepth(ch, q, 0)
	e.GetEmpty(ch, q)
}

func qTTLZero(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Arguments: pika.Table{"x-message-ttl": int32(0)}})
	e.PublishSync(ch, "", q, Body("m"))
	e.GetEmpty(ch, q)
}

func qTTLZeroConsumer(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Arguments: pika.Table{"x-message-ttl": int32(0)}})
	cons, err := e.Chan(c).Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume")
	e.PublishSync(ch, "", q, Body("m"))
	e.NextBody(cons, "m")
}

func qTTLPerMessage(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("short"), Properties: pika.Properties{Expiration: "30"}})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("long"), Properties: pika.Properties{Expiration: "600000"}})
	e.WaitDepth(ch, q, 1)
	d := e.GetBody(ch, q, "long")
	Equal(e, "expiration of the delivered message", d.Expiration, "600000")
}

func qTTLPerMessageHeadOnly(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("long"), Properties: pika.Properties{Expiration: "600000"}})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("short"), Properties: pika.Properties{Expiration: "1"}})
	time.Sleep(50 * time.Millisecond) // the short one is expired but behind a live one
	// Still counted: expired messages are only dropped at the head.
	Equal(e, "depth with an expired message behind a live one", e.Depth(ch, q), 2)
	e.GetBody(ch, q, "long")
	e.GetEmpty(ch, q)
}

func qTTLMin(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{MessageTTL: 40 * time.Millisecond})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("m"), Properties: pika.Properties{Expiration: "600000"}})
	e.WaitDepth(ch, q, 0)
}

// badExpiration publishes with expiration exp and checks the 406 close.
func badExpiration(e *Env, exp, text string) {
	e.T.Helper()
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	ch2 := e.Chan(c)
	e.Publish(ch2, "", q, pika.Message{Body: []byte("m"), Properties: pika.Properties{Expiration: exp}})
	err := ch2.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 1})
	e.ChannelClosed(c, ch2, err, wire.ReplyPreconditionFailed, text)
	e.GetEmpty(ch, q)
}

func qTTLBadExpiration(e *Env) {
	badExpiration(e, "soon", "PRECONDITION_FAILED - invalid expiration 'soon': no_integer")
}

func qTTLNegativeExpiration(e *Env) {
	badExpiration(e, "-1", "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}")
}

// badArg declares a queue with args and checks the 406 invalid-arg close.
func badArg(e *Env, args pika.Table, arg, detail string) {
	e.T.Helper()
	c, ch := e.Open()
	q := e.Name("q")
	e.TrackQueue(q)
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Arguments: args})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - invalid arg '%s' for queue '%s' in vhost '%s': %s", arg, q, e.Vhost(), detail))
	e.Gone(c, q)
}

func qBadTTLNegative(e *Env) {
	badArg(e, pika.Table{"x-message-ttl": int32(-1)}, "x-message-ttl", "{value_negative,-1}")
}

func qBadTTLType(e *Env) {
	badArg(e, pika.Table{"x-message-ttl": "100"}, "x-message-ttl", `"expected integer, got longstr"`)
}

func qBadExpiresZero(e *Env) {
	badArg(e, pika.Table{"x-expires": int32(0)}, "x-expires", "{value_zero,0}")
}

func qBadMaxLength(e *Env) {
	badArg(e, pika.Table{"x-max-length": int32(-1)}, "x-max-length", "{value_negative,-1}")
}

func qBadOverflow(e *Env) {
	badArg(e, pika.Table{"x-overflow": "drop-tail"}, "x-overflow", "invalid_overflow")
}

func qBadMaxPriority(e *Env) {
	badArg(e, pika.Table{"x-max-priority": int32(256)}, "x-max-priority", "{max_value_exceeded,256}")
}

func qExpires(e *Env) {
	c, ch := e.Open()
	q := e.QueueArgs(ch, "q", pika.QueueArgs{Expires: 100 * time.Millisecond})
	// A passive declare is a use that restarts the expiry (see
	// queue/expires-passive-is-use): look less often than the expiry.
	for {
		time.Sleep(250 * time.Millisecond)
		if _, err := e.Chan(c).QueueDeclarePassive(e.Ctx, q); err != nil {
			break
		}
		if e.Ctx.Err() != nil {
			e.T.Fatalf("queue %s with x-expires 100 ms still there at the scenario's deadline", q)
		}
	}
	e.Gone(c, q)
}

func qExpiresPassiveIsUse(e *Env) {
	_, ch := e.Open()
	q := e.QueueArgs(ch, "q", pika.QueueArgs{Expires: 300 * time.Millisecond})
	for range 6 {
		time.Sleep(100 * time.Millisecond)
		_, err := ch.QueueDeclarePassive(e.Ctx, q)
		e.Must(err, "passive declare 100 ms after the last one, with x-expires 300 ms")
	}
}

func qMaxLengthDropHead(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{MaxLength: 2})
	for _, b := range []string{"1", "2", "3"} {
		e.PublishSync(ch, "", q, Body(b))
	}
	Equal(e, "depth", e.Depth(ch, q), 2)
	e.GetBody(ch, q, "2")
	e.GetBody(ch, q, "3")
}

func qMaxLengthRejectPublish(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{MaxLength: 1, Overflow: pika.OverflowRejectPublish})
	e.PublishSync(ch, "", q, Body("1"))
	err := e.Confirmed(ch, "", q, Body("2"))
	if err != pika.ErrNacked {
		e.T.Fatalf("publish beyond x-max-length with reject-publish: %v, want a nack", err)
	}
	e.GetBody(ch, q, "1")
	e.PublishSync(ch, "", q, Body("3")) // room again
	e.GetBody(ch, q, "3")
}

func qMaxLengthRejectPublishUnconfirmed(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{MaxLength: 1, Overflow: pika.OverflowRejectPublish})
	plain := e.Chan(c)
	e.Publish(plain, "", q, Body("1"))
	e.Publish(plain, "", q, Body("2"))
	// Switch the same channel to confirms: the nack of a third message
	// comes after the broker handled the first two (same channel, same
	// queue, in order).
	e.Must(plain.ConfirmSelect(e.Ctx), "confirm.select")
	if err := e.Confirmed(plain, "", q, Body("3")); err != pika.ErrNacked {
		e.T.Fatalf("third publish: %v, want a nack", err)
	}
	e.GetBody(ch, q, "1")
	e.GetEmpty(ch, q)
}

func qMaxLengthBytes(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{MaxLengthBytes: 10})
	e.PublishSync(ch, "", q, Body("123456"))
	e.PublishSync(ch, "", q, Body("abcdef")) // 12 bytes in total: the head goes
	e.GetBody(ch, q, "abcdef")
	e.GetEmpty(ch, q)
}

func qMaxLengthZero(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{Extra: pika.Table{"x-max-length": int32(0)}})
	e.PublishSync(ch, "", q, Body("m"))
	e.GetEmpty(ch, q)
}

func qMaxLengthCountsReadyOnly(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{MaxLength: 1})
	e.PublishSync(ch, "", q, Body("1"))
	held := e.Get(ch, q)
	e.PublishSync(ch, "", q, Body("2"))
	Equal(e, "depth with one unacked", e.Depth(ch, q), 1)
	e.Must(held.Ack(false), "ack")
	e.GetBody(ch, q, "2")
}

func qPriority(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{MaxPriority: 5})
	for i, p := range []uint8{0, 3, 9, 1, 3} {
		e.PublishSync(ch, "", q, pika.Message{Body: []byte(fmt.Sprint(i)), Properties: pika.Properties{Priority: p}})
	}
	// 9 counts as 5; equal priorities keep publication order; no priority is 0.
	for _, want := range []string{"2", "1", "4", "3", "0"} {
		e.GetBody(ch, q, want)
	}
}

func qPriorityNone(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	for i, p := range []uint8{0, 9, 5} {
		e.PublishSync(ch, "", q, pika.Message{Body: []byte(fmt.Sprint(i)), Properties: pika.Properties{Priority: p}})
	}
	for _, want := range []string{"0", "1", "2"} {
		d := e.GetBody(ch, q, want)
		_ = d
	}
}

func qFIFO(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	for i := 0; i < 20; i++ {
		e.Publish(ch, "", q, Body(fmt.Sprint(i)))
	}
	e.Must(ch.WaitConfirms(e.Ctx), "confirms")
	for i := 0; i < 20; i++ {
		d := e.GetBody(ch, q, fmt.Sprint(i))
		Equal(e, "message-count", d.MessageCount, uint32(19-i))
	}
}

func qUnknownArgs(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Arguments: pika.Table{"x-made-up": "v", "no-x-prefix": int32(1)}})
	e.PublishSync(ch, "", q, Body("m"))
	e.GetBody(ch, q, "m")
	// Only the arguments RabbitMQ knows are compared on redeclaration.
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Arguments: pika.Table{"x-made-up": "w"}})
	e.Must(err, "redeclare with another value of an unknown argument")
	_, err = ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{})
	e.Must(err, "redeclare without the unknown arguments")
}

func qClassicTypeExplicit(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	_, err := ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Arguments: pika.Table{"x-queue-type": "classic"}})
	e.Must(err, "redeclare a queue declared without x-queue-type with x-queue-type classic")
	_, err = ch.QueueDeclare(e.Ctx, q, pika.QueueDeclareOptions{Arguments: pika.Table{"x-queue-type": "quorum"}})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '%s' in vhost '%s': received the value 'quorum' of type 'longstr' but current is none", q, e.Vhost()))
}

func qLazy(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{Lazy: true})
	e.PublishSync(ch, "", q, Body("m"))
	e.GetBody(ch, q, "m")
}

func qTTLExpirationZero(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("gone"), Properties: pika.Properties{Expiration: "0"}})
	e.GetEmpty(ch, q)
	cons, err := e.Chan(c).Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume")
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("taken"), Properties: pika.Properties{Expiration: "0"}})
	e.NextBody(cons, "taken")
}

func qDurableAutoDelete(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true, AutoDelete: true})
	cons, err := ch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	e.Must(cons.Cancel(e.Ctx), "cancel")
	e.EventuallyGone(c, q)
}
