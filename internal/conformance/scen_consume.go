package conformance

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Scenarios of consumers, acknowledgements, basic.get and basic.recover.

func consBasic(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{Tag: "my-tag"})
	e.Must(err, "consume")
	Equal(e, "consumer tag", cons.Tag(), "my-tag")
	for i := 1; i <= 3; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	for i := 1; i <= 3; i++ {
		d := e.NextBody(cons, fmt.Sprint(i))
		Equal(e, "delivery tag", d.DeliveryTag, uint64(i))
		Equal(e, "consumer tag", d.ConsumerTag, "my-tag")
		Equal(e, "exchange", d.Exchange, "")
		Equal(e, "routing key", d.RoutingKey, q)
		Equal(e, "redelivered", d.Redelivered, false)
		e.Must(d.Ack(false), "ack")
	}
}

func consServerTag(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.BasicConsume{Queue: q})
	ok := r.Expect(1, &wire.BasicConsumeOk{}).(*wire.BasicConsumeOk)
	if !strings.HasPrefix(ok.ConsumerTag, "amq.ctag-") {
		e.T.Fatalf("server-generated consumer tag %q, want amq.ctag-...", ok.ConsumerTag)
	}
}

func consDuplicateTag(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.BasicConsume{Queue: q, ConsumerTag: "dup"})
	r.Expect(1, &wire.BasicConsumeOk{})
	r.Send(1, &wire.BasicConsume{Queue: q, ConsumerTag: "dup"})
	r.ExpectConnClose(wire.ReplyNotAllowed, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'")
}

func consSameTagTwoChannels(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	_, err := ch.Consume(e.Ctx, q, pika.ConsumeOptions{Tag: "same"})
	e.Must(err, "consume on channel 1")
	_, err = e.Chan(c).Consume(e.Ctx, q, pika.ConsumeOptions{Tag: "same"})
	e.Must(err, "consume with the same tag on channel 2")
}

func consMissingQueue(e *Env) {
	c, ch := e.Open()
	q := e.Name("missing")
	_, err := ch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundQueue(q))
}

func consCancelUnknown(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.BasicCancel{ConsumerTag: "never-existed"})
	ok := r.Expect(1, &wire.BasicCancelOk{}).(*wire.BasicCancelOk)
	Equal(e, "cancel-ok tag", ok.ConsumerTag, "never-existed")
}

func consConsumeOkBeforeDelivery(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Publish(1, &wire.BasicPublish{RoutingKey: q}, nil, []byte("waiting"))
	r.WaitDepth(1, q, 1)
	r.Send(1, &wire.BasicConsume{Queue: q, ConsumerTag: "c", NoAck: true})
	r.Expect(1, &wire.BasicConsumeOk{})
	m, _, body := r.Deliver(1)
	if d, ok := m.(*wire.BasicDeliver); !ok || d.ConsumerTag != "c" || string(body) != "waiting" {
		e.T.Fatalf("got %+v %q, want the waiting message delivered to c", m, body)
	}
}

func consRoundRobin(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	c1, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume 1")
	c2, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume 2")
	for i := 0; i < 4; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	e.NextBody(c1, "0")
	e.NextBody(c2, "1")
	e.NextBody(c1, "2")
	e.NextBody(c2, "3")
}

func consPrefetchPerConsumer(e *Env) {
	ch, q, c1, c2 := twoConsumers(e, 6, qosStep{pika.QosOptions{PrefetchCount: 2}, "qos 2 per consumer"})
	// Each consumer has its own window of 2: four deliveries, two left.
	e.NextBody(c1, "0")
	e.NextBody(c2, "1")
	d := e.NextBody(c1, "2")
	e.NextBody(c2, "3")
	e.Quiet(c1)
	Equal(e, "ready messages", e.Depth(ch, q), 2)
	e.Must(d.Ack(false), "ack")
	e.NextBody(c1, "4")
}

func consPrefetchGlobal(e *Env) {
	ch, q, c1, c2 := twoConsumers(e, 4, qosStep{pika.QosOptions{PrefetchCount: 2, Global: true}, "qos 2 global"})
	// One window of 2 shared by the channel's consumers.
	e.NextBody(c1, "0")
	d := e.NextBody(c2, "1")
	e.Quiet(c1)
	Equal(e, "ready messages", e.Depth(ch, q), 2)
	e.Must(d.Ack(false), "ack")
	e.NextBody(c1, "2")
}

func consPrefetchBoth(e *Env) {
	ch, q, c1, c2 := twoConsumers(e, 5, qosStep{pika.QosOptions{PrefetchCount: 3, Global: true}, "qos 3 global"}, qosStep{pika.QosOptions{PrefetchCount: 1}, "qos 1 per consumer"})
	e.NextBody(c1, "0")
	e.NextBody(c2, "1")
	e.Quiet(c1)
	Equal(e, "ready messages: each consumer at its limit of 1", e.Depth(ch, q), 3)
}

func consPrefetchLaterConsumers(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	c1, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{}) // before any qos: unlimited
	e.Must(err, "consume 1")
	e.Must(cch.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 1}), "qos 1")
	for i := 0; i < 3; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	for i := 0; i < 3; i++ {
		e.NextBody(c1, fmt.Sprint(i))
	}
}

func consPrefetchZero(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	e.Must(cch.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 1}), "qos 1")
	e.Must(cch.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 0}), "qos 0: unlimited")
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	for i := 0; i < 3; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	for i := 0; i < 3; i++ {
		e.NextBody(cons, fmt.Sprint(i))
	}
}

// held publishes bodies to a new queue and fetches them all with manual
// ack; it returns the channel, the queue and the deliveries.
func held(e *Env, bodies ...string) (*pika.Channel, string, []*pika.Delivery) {
	e.T.Helper()
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	for _, b := range bodies {
		e.PublishSync(ch, "", q, Body(b))
	}
	ds := make([]*pika.Delivery, len(bodies))
	for i := range bodies {
		ds[i] = e.Get(ch, q)
	}
	return ch, q, ds
}

func consAckMultiple(e *Env) {
	ch, q, ds := held(e, "1", "2", "3")
	e.Must(ds[1].Ack(true), "ack 2 with multiple")
	e.Must(ch.Recover(e.Ctx, true), "recover the rest")
	d := e.GetBody(ch, q, "3")
	Equal(e, "redelivered", d.Redelivered, true)
	e.GetEmpty(ch, q)
}

func consNackRequeue(e *Env) {
	ch, q, ds := held(e, "1", "2", "3")
	e.Must(ds[2].Nack(true, true), "nack all with requeue")
	for _, b := range []string{"1", "2", "3"} {
		d := e.GetBody(ch, q, b)
		Equal(e, "redelivered", d.Redelivered, true)
	}
}

func consNackDrop(e *Env) {
	ch, q, ds := held(e, "1", "2")
	e.Must(ds[0].Nack(false, false), "nack without requeue")
	e.Must(ds[1].Ack(false), "ack")
	e.GetEmpty(ch, q)
}

func consRejectRequeueOrder(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("1"))
	e.PublishSync(ch, "", q, Body("2"))
	d := e.Get(ch, q)
	e.Must(d.Reject(true), "reject with requeue")
	// Requeued to its place at the head, ahead of 2.
	d = e.GetBody(ch, q, "1")
	Equal(e, "redelivered", d.Redelivered, true)
	d = e.GetBody(ch, q, "2")
	Equal(e, "redelivered", d.Redelivered, false)
}

// rawHeld opens a raw connection with channel 1, a queue holding bodies and
// the deliveries fetched with basic.get (manual ack); it returns the
// connection and the queue.
func rawHeld(e *Env, bodies ...string) (*Raw, string) {
	e.T.Helper()
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	for _, b := range bodies {
		r.Publish(1, &wire.BasicPublish{RoutingKey: q}, nil, []byte(b))
	}
	r.WaitDepth(1, q, uint32(len(bodies)))
	for i := range bodies {
		r.Send(1, &wire.BasicGet{Queue: q})
		m, _, _ := r.Deliver(1)
		Equal(e, "delivery tag", m.(*wire.BasicGetOk).DeliveryTag, uint64(i+1))
	}
	return r, q
}

func consUnknownTag(e *Env) {
	r, _ := rawHeld(e, "1")
	r.Send(1, &wire.BasicAck{DeliveryTag: 99})
	cl := r.ExpectChannelClose(1, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 99")
	Equal(e, "failing method", methodOf(cl.ClassID, cl.MethodID), wire.MethodBasicAck)
	r.OpenChannel(2)
	r.Sync(2)
}

func consDoubleAck(e *Env) {
	r, _ := rawHeld(e, "1")
	r.Send(1, &wire.BasicAck{DeliveryTag: 1})
	r.Send(1, &wire.BasicAck{DeliveryTag: 1})
	r.ExpectChannelClose(1, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 1")
}

func consRejectUnknown(e *Env) {
	r, _ := rawHeld(e, "1")
	r.Send(1, &wire.BasicReject{DeliveryTag: 7, Requeue: true})
	cl := r.ExpectChannelClose(1, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 7")
	Equal(e, "failing method", methodOf(cl.ClassID, cl.MethodID), wire.MethodBasicReject)
}

func consNackUnknownMultiple(e *Env) {
	r, _ := rawHeld(e, "1")
	r.Send(1, &wire.BasicNack{DeliveryTag: 5, Multiple: true})
	r.ExpectChannelClose(1, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 5")
}

func consAckZeroMultiple(e *Env) {
	r, q := rawHeld(e, "1", "2", "3")
	r.Send(1, &wire.BasicAck{DeliveryTag: 0, Multiple: true})
	r.Send(1, &wire.BasicRecover{Requeue: true})
	r.Expect(1, &wire.BasicRecoverOk{})
	r.Send(1, &wire.QueueDeclare{Queue: q, Passive: true})
	ok := r.Expect(1, &wire.QueueDeclareOk{}).(*wire.QueueDeclareOk)
	Equal(e, "messages left after ack 0 multiple and recover", ok.MessageCount, 0)
}

func consAckZeroSingle(e *Env) {
	r, _ := rawHeld(e, "1")
	r.Send(1, &wire.BasicAck{DeliveryTag: 0})
	r.ExpectChannelClose(1, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 0")
}

func consAckOtherChannel(e *Env) {
	r, _ := rawHeld(e, "1")
	r.OpenChannel(2)
	r.Send(2, &wire.BasicAck{DeliveryTag: 1})
	r.ExpectChannelClose(2, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 1")
	r.Sync(1) // channel 1 is untouched
}

func consAckNoAckDelivery(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Publish(1, &wire.BasicPublish{RoutingKey: q}, nil, []byte("m"))
	r.WaitDepth(1, q, 1)
	r.Send(1, &wire.BasicGet{Queue: q, NoAck: true})
	r.Deliver(1)
	r.Send(1, &wire.BasicAck{DeliveryTag: 1})
	r.ExpectChannelClose(1, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 1")
}

func consAckAfterChannelError(e *Env) {
	// Delivery tags are per channel: a tag acked on a new channel with the
	// same id after a channel error is unknown there.
	r, _ := rawHeld(e, "1")
	missing := e.Name("missing")
	r.Send(1, &wire.QueueDeclare{Queue: missing, Passive: true})
	r.ExpectChannelClose(1, wire.ReplyNotFound, e.NotFoundQueue(missing))
	r.OpenChannel(1)
	r.Send(1, &wire.BasicAck{DeliveryTag: 1})
	r.ExpectChannelClose(1, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 1")
}

func consExclusive(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	_, err := ch.Consume(e.Ctx, q, pika.ConsumeOptions{Exclusive: true})
	e.Must(err, "exclusive consume")
	other := e.Chan(c)
	_, err = other.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.ChannelClosed(c, other, err, wire.ReplyAccessRefused, fmt.Sprintf("ACCESS_REFUSED - queue '%s' in vhost '%s' in exclusive use", q, e.Vhost()))
}

func consExclusiveWhenConsumed(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	_, err := ch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	other := e.Chan(c)
	_, err = other.Consume(e.Ctx, q, pika.ConsumeOptions{Exclusive: true})
	e.ChannelClosed(c, other, err, wire.ReplyAccessRefused, fmt.Sprintf("ACCESS_REFUSED - queue '%s' in vhost '%s' in exclusive use", q, e.Vhost()))
}

func consExclusiveGetAllowed(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cons, err := e.Chan(c).Consume(e.Ctx, q, pika.ConsumeOptions{Exclusive: true})
	e.Must(err, "exclusive consume")
	e.Must(cons.Cancel(e.Ctx), "cancel")
	e.PublishSync(ch, "", q, Body("m"))
	e.GetBody(ch, q, "m") // after the cancel, anyone may take messages
}

func consCancelOnDelete(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	cancelled := make(chan string, 1)
	cch.OnCancel(func(tag string) { cancelled <- tag })
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{Tag: "watch"})
	e.Must(err, "consume")
	_, err = ch.QueueDelete(e.Ctx, q, pika.QueueDeleteOptions{})
	e.Must(err, "queue.delete")
	select {
	case tag := <-cancelled:
		Equal(e, "cancelled tag", tag, "watch")
	case <-e.Ctx.Done():
		e.T.Fatalf("no basic.cancel from the broker after the queue was deleted")
	}
	if _, err := cons.Next(e.Ctx); !errors.Is(err, pika.ErrConsumerCancelled) {
		e.T.Fatalf("consumer after the queue's deletion: %v, want ErrConsumerCancelled", err)
	}
	e.Must(cch.Qos(e.Ctx, pika.QosOptions{}), "the channel stays open")
}

func consCancelOnDeleteRaw(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.BasicConsume{Queue: q, ConsumerTag: "c"})
	r.Expect(1, &wire.BasicConsumeOk{})
	r.OpenChannel(2)
	r.Send(2, &wire.QueueDelete{Queue: q})
	// The cancel and the delete-ok are on different channels: either order.
	var sawCancel, sawDelete bool
	for !sawCancel || !sawDelete {
		f := r.Next()
		switch m := f.Method.(type) {
		case *wire.BasicCancel:
			Equal(e, "cancel channel", f.Channel, 1)
			Equal(e, "cancelled tag", m.ConsumerTag, "c")
			Equal(e, "no-wait", m.NoWait, true)
			sawCancel = true
		case *wire.QueueDeleteOk:
			sawDelete = true
		default:
			e.T.Fatalf("got %v, want basic.cancel and queue.delete-ok", f)
		}
	}
}

func consCancelKeepsUnacked(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	e.PublishSync(ch, "", q, Body("m"))
	d := e.NextBody(cons, "m")
	e.Must(cons.Cancel(e.Ctx), "cancel")
	Equal(e, "ready after cancel", e.Depth(ch, q), 0)
	// Still acknowledgeable after the cancel.
	e.Must(cch.Ack(d.DeliveryTag, false), "ack after cancel")
	e.Must(cch.Close(e.Ctx), "close")
	e.GetEmpty(ch, q)
}

func consCloseRequeues(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	e.PublishSync(ch, "", q, Body("m"))
	e.NextBody(cons, "m")
	e.Must(cch.Close(e.Ctx), "close the consumer's channel")
	e.WaitDepth(ch, q, 1)
	d := e.GetBody(ch, q, "m")
	Equal(e, "redelivered after channel close", d.Redelivered, true)
}

func consConnCloseRequeues(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	other := e.Dial()
	cch := e.Chan(other)
	e.PublishSync(ch, "", q, Body("m"))
	e.Get(cch, q)
	e.Must(other.Close(e.Ctx), "close the other connection")
	e.WaitDepth(ch, q, 1)
	d := e.GetBody(ch, q, "m")
	Equal(e, "redelivered", d.Redelivered, true)
}

func consNoLocalIgnored(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cons, err := e.Chan(c).Consume(e.Ctx, q, pika.ConsumeOptions{NoLocal: true, AutoAck: true})
	e.Must(err, "consume with no-local")
	e.PublishSync(ch, "", q, Body("own"))
	e.NextBody(cons, "own")
}

func consPriority(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	low, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume low")
	high, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true, Arguments: pika.Table{"x-priority": int32(10)}})
	e.Must(err, "consume high")
	for i := 0; i < 3; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	for i := 0; i < 3; i++ {
		e.NextBody(high, fmt.Sprint(i))
	}
	e.Quiet(low)
}

func consSingleActive(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.QueueArgs(ch, "q", pika.QueueArgs{SingleActiveConsumer: true})
	cch := e.Chan(c)
	first, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume first")
	second, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume second")
	e.PublishSync(ch, "", q, Body("1"))
	e.PublishSync(ch, "", q, Body("2"))
	e.NextBody(first, "1")
	e.NextBody(first, "2")
	e.Must(first.Cancel(e.Ctx), "cancel the active consumer")
	e.PublishSync(ch, "", q, Body("3"))
	e.NextBody(second, "3")
}

func getEmpty(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.BasicGet{Queue: q})
	r.Expect(1, &wire.BasicGetEmpty{})
}

func getOk(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	for _, b := range []string{"a", "b", "c"} {
		r.Publish(1, &wire.BasicPublish{RoutingKey: q}, &wire.Properties{ContentType: "text/plain"}, []byte(b))
	}
	r.WaitDepth(1, q, 3)
	r.Send(1, &wire.BasicGet{Queue: q, NoAck: true})
	m, h, body := r.Deliver(1)
	ok := m.(*wire.BasicGetOk)
	Equal(e, "delivery tag", ok.DeliveryTag, 1)
	Equal(e, "redelivered", ok.Redelivered, false)
	Equal(e, "exchange", ok.Exchange, "")
	Equal(e, "routing key", ok.RoutingKey, q)
	Equal(e, "message count", ok.MessageCount, 2)
	Equal(e, "content type", h.Properties.ContentType, "text/plain")
	Equal(e, "body", string(body), "a")
}

func getMissing(e *Env) {
	c, ch := e.Open()
	q := e.Name("missing")
	_, _, err := ch.Get(e.Ctx, q, pika.GetOptions{AutoAck: false})
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundQueue(q))
}

func getTagsShareSequence(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("1"))
	e.PublishSync(ch, "", q, Body("2"))
	cch := e.Chan(c)
	d := e.Get(cch, q)
	Equal(e, "get tag", d.DeliveryTag, uint64(1))
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	d = e.NextBody(cons, "2")
	Equal(e, "delivery tag after a get", d.DeliveryTag, uint64(2))
}

func recoverRequeue(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	e.PublishSync(ch, "", q, Body("1"))
	e.PublishSync(ch, "", q, Body("2"))
	e.NextBody(cons, "1")
	e.NextBody(cons, "2")
	e.Must(cch.Recover(e.Ctx, true), "basic.recover requeue")
	for _, b := range []string{"1", "2"} {
		d := e.NextBody(cons, b)
		Equal(e, "redelivered", d.Redelivered, true)
		e.Must(d.Ack(false), "ack")
	}
}

func recoverNoRequeue(e *Env) {
	r, _ := rawHeld(e, "1")
	r.Send(1, &wire.BasicRecover{Requeue: false})
	r.ExpectConnClose(wire.ReplyNotImplemented, "NOT_IMPLEMENTED - requeue=false")
}

func recoverAsync(e *Env) {
	r, q := rawHeld(e, "1")
	r.Send(1, &wire.BasicRecoverAsync{Requeue: true})
	r.WaitDepth(1, q, 1)
}

func replyToRPC(e *Env) {
	c := e.Dial()
	client := e.Chan(c)
	replies, err := client.Consume(e.Ctx, "amq.rabbitmq.reply-to", pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume amq.rabbitmq.reply-to")
	server := e.Dial()
	sch := e.Chan(server)
	q := e.Queue(sch, "rpc", pika.QueueDeclareOptions{})
	e.Publish(client, "", q, pika.Message{Body: []byte("ping"), Properties: pika.Properties{ReplyTo: "amq.rabbitmq.reply-to", CorrelationID: "7"}})
	e.WaitDepth(sch, q, 1)
	req := e.GetBody(sch, q, "ping")
	if !strings.HasPrefix(req.ReplyTo, "amq.rabbitmq.reply-to.") {
		e.T.Fatalf("reply-to seen by the server %q, want amq.rabbitmq.reply-to.<token>", req.ReplyTo)
	}
	e.Publish(sch, "", req.ReplyTo, pika.Message{Body: []byte("pong"), Properties: pika.Properties{CorrelationID: req.CorrelationID}})
	d := e.NextBody(replies, "pong")
	Equal(e, "correlation id", d.CorrelationID, "7")
	Equal(e, "routing key of the reply", d.RoutingKey, req.ReplyTo)
}

func replyToAckMode(e *Env) {
	c, ch := e.Open()
	_, err := ch.Consume(e.Ctx, "amq.rabbitmq.reply-to", pika.ConsumeOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - reply consumer cannot acknowledge")
}

func replyToNoConsumer(e *Env) {
	c, ch := e.Open()
	e.Publish(ch, "", e.Name("any"), pika.Message{Body: []byte("m"), Properties: pika.Properties{ReplyTo: "amq.rabbitmq.reply-to"}})
	err := ch.Qos(e.Ctx, pika.QosOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - fast reply consumer does not exist")
}

func replyToUnknownToken(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	err := e.Confirmed(ch, "", "amq.rabbitmq.reply-to.bm9zdWNoLXRva2Vu", pika.Message{Body: []byte("m"), Mandatory: true})
	returned(e, err)
}

func replyToPassive(e *Env) {
	_, ch := e.Open()
	_, err := ch.QueueDeclarePassive(e.Ctx, "amq.rabbitmq.reply-to")
	e.Must(err, "passive declare of amq.rabbitmq.reply-to")
}

func replyToSecondConsumer(e *Env) {
	c, ch := e.Open()
	_, err := ch.Consume(e.Ctx, "amq.rabbitmq.reply-to", pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "first reply consumer")
	_, err = ch.Consume(e.Ctx, "amq.rabbitmq.reply-to", pika.ConsumeOptions{AutoAck: true})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - reply consumer already set")
}

func consCancelOnDeleteNoCapability(e *Env) {
	r := e.RawDialProps(0, wire.Table{"product": "old client"})
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.BasicConsume{Queue: q, ConsumerTag: "c"})
	r.Expect(1, &wire.BasicConsumeOk{})
	r.OpenChannel(2)
	r.Send(2, &wire.QueueDelete{Queue: q})
	r.Expect(2, &wire.QueueDeleteOk{})
	// Nothing on channel 1: the next frame answers the sync.
	r.Sync(1)
}

func consPrefetchGlobalRaised(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	e.Must(cch.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 1, Global: true}), "qos 1 global")
	cons, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume")
	for i := 0; i < 3; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	e.NextBody(cons, "0")
	e.Quiet(cons)
	// Raising the channel's limit applies at once to the running consumer.
	e.Must(cch.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 3, Global: true}), "qos 3 global")
	e.NextBody(cons, "1")
	e.NextBody(cons, "2")
}

// qosStep is one basic.qos a scenario sets on its consumers' channel, with
// what it is for the failure message.
type qosStep struct {
	opts pika.QosOptions
	what string
}

// twoConsumers sets up the prefetch scenarios: a queue, a channel with the
// given qos settings applied in order and two consumers on it, and n
// messages "0".."n-1" published with confirms on another channel (returned
// as ch, for Depth).
func twoConsumers(e *Env, n int, qos ...qosStep) (ch *pika.Channel, q string, c1, c2 *pika.Consumer) {
	c := e.Dial()
	ch = e.ConfirmChan(c)
	q = e.Queue(ch, "q", pika.QueueDeclareOptions{})
	cch := e.Chan(c)
	for _, s := range qos {
		e.Must(cch.Qos(e.Ctx, s.opts), s.what)
	}
	c1, err := cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume 1")
	c2, err = cch.Consume(e.Ctx, q, pika.ConsumeOptions{})
	e.Must(err, "consume 2")
	for i := 0; i < n; i++ {
		e.PublishSync(ch, "", q, Body(fmt.Sprint(i)))
	}
	return ch, q, c1, c2
}
