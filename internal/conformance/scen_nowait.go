package conformance

import (
	"fmt"

	"github.com/pika-go/pika/wire"
)

// Scenarios of no-wait methods and of the empty queue name, sent as raw
// frames (the client hides both).

func nowaitQueueDeclare(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	e.TrackQueue(q)
	r.Send(1, &wire.QueueDeclare{Queue: q, NoWait: true})
	r.Send(1, &wire.QueueDeclare{Queue: q, Passive: true})
	ok := r.Expect(1, &wire.QueueDeclareOk{}).(*wire.QueueDeclareOk) // the passive's answer, first frame
	Equal(e, "queue", ok.Queue, q)
}

func nowaitDeclareError(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	x := e.Name("x")
	e.TrackExchange(x)
	r.Send(1, &wire.ExchangeDeclare{Exchange: x, Type: "direct"})
	r.Expect(1, &wire.ExchangeDeclareOk{})
	r.Send(1, &wire.ExchangeDeclare{Exchange: x, Type: "fanout", NoWait: true})
	cl := r.ExpectChannelClose(1, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '%s' in vhost '%s': received 'fanout' but current is 'direct'", x, e.Vhost()))
	Equal(e, "failing method", methodOf(cl.ClassID, cl.MethodID), wire.MethodExchangeDeclare)
}

func nowaitBindAndConsume(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.QueueBind{Queue: q, Exchange: "amq.fanout", NoWait: true})
	r.Send(1, &wire.BasicConsume{Queue: q, ConsumerTag: "quiet", NoAck: true, NoWait: true})
	r.Publish(1, &wire.BasicPublish{Exchange: "amq.fanout", RoutingKey: "any"}, nil, []byte("m"))
	// No bind-ok, no consume-ok: the first frame is the delivery.
	m, _, body := r.Deliver(1)
	d, ok := m.(*wire.BasicDeliver)
	if !ok || d.ConsumerTag != "quiet" || d.Exchange != "amq.fanout" || string(body) != "m" {
		e.T.Fatalf("got %+v %q, want the message delivered to quiet from amq.fanout", m, body)
	}
	r.Send(1, &wire.QueueUnbind{Queue: q, Exchange: "amq.fanout"})
	r.Expect(1, &wire.QueueUnbindOk{})
}

func nowaitPurgeDelete(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.QueuePurge{Queue: q, NoWait: true})
	r.Send(1, &wire.QueueDelete{Queue: q, NoWait: true})
	r.Send(1, &wire.QueueDeclare{Queue: q, Passive: true})
	r.ExpectChannelClose(1, wire.ReplyNotFound, e.NotFoundQueue(q))
}

func nowaitCancel(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.BasicConsume{Queue: q, ConsumerTag: "c", NoAck: true})
	r.Expect(1, &wire.BasicConsumeOk{})
	r.Send(1, &wire.BasicCancel{ConsumerTag: "c", NoWait: true})
	r.Send(1, &wire.QueueDeclare{Queue: q, Passive: true})
	ok := r.Expect(1, &wire.QueueDeclareOk{}).(*wire.QueueDeclareOk)
	Equal(e, "consumers after a no-wait cancel", ok.ConsumerCount, 0)
}

func lastQueueBind(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	// An empty queue name means the queue last declared on the channel.
	r.Send(1, &wire.QueueBind{Queue: "", Exchange: "amq.direct", RoutingKey: q})
	r.Expect(1, &wire.QueueBindOk{})
	r.Publish(1, &wire.BasicPublish{Exchange: "amq.direct", RoutingKey: q}, nil, []byte("m"))
	r.WaitDepth(1, q, 1)
	r.Send(1, &wire.BasicGet{Queue: "", NoAck: true})
	_, _, body := r.Deliver(1)
	Equal(e, "body", string(body), "m")
	r.Send(1, &wire.QueueUnbind{Queue: q, Exchange: "amq.direct", RoutingKey: q})
	r.Expect(1, &wire.QueueUnbindOk{})
}

func lastQueueServerNamed(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.QueueDeclare{Queue: "", Exclusive: true})
	ok := r.Expect(1, &wire.QueueDeclareOk{}).(*wire.QueueDeclareOk)
	e.TrackQueue(ok.Queue)
	r.Send(1, &wire.QueuePurge{Queue: ""})
	r.Expect(1, &wire.QueuePurgeOk{})
	r.Send(1, &wire.QueueDelete{Queue: ""})
	r.Expect(1, &wire.QueueDeleteOk{})
	r.Send(1, &wire.QueueDeclare{Queue: ok.Queue, Passive: true})
	r.ExpectChannelClose(1, wire.ReplyNotFound, e.NotFoundQueue(ok.Queue))
}

func lastQueueNone(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.BasicGet{Queue: ""})
	r.ExpectChannelClose(1, wire.ReplyNotFound, "NOT_FOUND - no previously declared queue")
}
