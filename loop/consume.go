package loop

import (
	"context"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// ConsumeOptions configures Consume. The zero value consumes with manual
// acknowledgements and a tag chosen by the broker.
type ConsumeOptions struct {
	// Tag is the consumer tag; empty lets the broker choose one.
	Tag string
	// AutoAck makes the broker consider messages acknowledged once sent.
	AutoAck bool
	// Exclusive asks to be the queue's only consumer.
	Exclusive bool
	// NoLocal asks not to receive messages published on this connection
	// (RabbitMQ ignores it).
	NoLocal bool
	// Arguments are extra arguments (x-priority, ...).
	Arguments pika.Table
	// OnEnd, when set, runs once when the consumer ends, after its last
	// delivery: with pika.ErrConsumerClosed after Cancel,
	// pika.ErrConsumerCancelled when the broker cancelled it, and the
	// channel's or connection's error when they ended.
	OnEnd func(err error)
}

// Consumer is a consumer started by Consume.
type Consumer struct {
	ch      *Channel
	tag     string
	handler func(*Delivery)
	onEnd   func(error)
	ended   bool
	queue   string
	sc      *pika.Consumer // its stand-in for hooks, made on first use (see hooks.go)

	// For recovery: the basic.consume to send again (with the queue as
	// renamed), and the consumer's number in the order of starts.
	decl       *wire.BasicConsume
	seq        uint64
	cancelling bool     // Cancel was sent
	rv         *revival // while it waits for its queue (see revive.go)
}

// Delivery is a message delivered to a consumer or returned by Get. Its
// Body belongs to the application.
type Delivery struct {
	ConsumerTag  string // empty for Get
	DeliveryTag  uint64 // the tag to Ack, Nack or Reject
	Redelivered  bool
	Exchange     string
	RoutingKey   string
	MessageCount uint32 // Get only: messages left in the queue
	pika.Properties
	Body []byte

	ch   *Channel
	ctx  context.Context // from the ProcessHooks; nil without
	slot slot            // its place in the channel's callback order
}

func (ch *Channel) newDelivery(m *engine.Message) *Delivery {
	// Tags continue across recoveries: those of a lost connection are
	// told apart (pika.ErrStaleDelivery).
	tag := m.DeliveryTag + ch.tagBase
	ch.lastTag = max(ch.lastTag, tag)
	return &Delivery{
		ConsumerTag:  m.ConsumerTag,
		DeliveryTag:  tag,
		Redelivered:  m.Redelivered,
		Exchange:     m.Exchange,
		RoutingKey:   m.RoutingKey,
		MessageCount: m.MessageCount,
		Properties:   m.Properties,
		Body:         m.Body,
		ch:           ch,
	}
}

// Channel returns the channel the delivery came on.
func (d *Delivery) Channel() *Channel { return d.ch }

// Context returns the context that the ProcessHooks of pika.Config.Hooks
// made for the handler call of this delivery (carrying a tracing span,
// say), or context.Background() without them and for Get.
func (d *Delivery) Context() context.Context {
	if d.ctx == nil {
		return context.Background()
	}
	return d.ctx
}

// Ack acknowledges the delivery (and every earlier one with multiple).
func (d *Delivery) Ack(multiple bool) error { return d.ch.Ack(d.DeliveryTag, multiple) }

// Nack refuses the delivery (and every earlier one with multiple),
// requeueing it when requeue is set.
func (d *Delivery) Nack(multiple, requeue bool) error {
	return d.ch.Nack(d.DeliveryTag, multiple, requeue)
}

// Reject refuses the delivery, requeueing it when requeue is set.
func (d *Delivery) Reject(requeue bool) error { return d.ch.Reject(d.DeliveryTag, requeue) }

// Consume starts a consumer of queue (basic.consume). cb, which may be
// nil, runs with the consumer once the broker accepted it, or with the
// error; handler then runs with each delivery, in order, on the loop's
// goroutine, until the consumer ends (see ConsumeOptions.OnEnd). A handler
// that takes long delays everything on the loop: hand slow work to another
// goroutine and acknowledge from a Post.
func (ch *Channel) Consume(queue string, opts ConsumeOptions, handler func(*Delivery), cb func(*Consumer, error)) {
	m := &wire.BasicConsume{
		Queue: queue, ConsumerTag: opts.Tag, NoAck: opts.AutoAck,
		Exclusive: opts.Exclusive, NoLocal: opts.NoLocal, Arguments: opts.Arguments,
	}
	cons := &Consumer{ch: ch, handler: handler, onEnd: opts.OnEnd, queue: queue, decl: m}
	ch.call(m, func(ev engine.Event) func() {
		if ev.Err != nil {
			cons.ended = true
			if cb == nil {
				return nil
			}
			return func() { cb(nil, ev.Err) }
		}
		ok, _ := ev.Method.(*wire.BasicConsumeOk)
		if ok != nil {
			cons.tag = ok.ConsumerTag
			m.ConsumerTag = ok.ConsumerTag
		}
		if r := ch.c.rec; r != nil {
			r.consSeq++
			cons.seq = r.consSeq
		}
		// Registered now, not when cb runs: deliveries follow at once.
		if ch.consumers == nil {
			ch.consumers = make(map[string]*Consumer)
		}
		ch.consumers[cons.tag] = cons
		ch.c.hk.consumerStarted(cons)
		if cb == nil {
			return nil
		}
		return func() { cb(cons, nil) }
	})
}

// Tag returns the consumer tag.
func (cons *Consumer) Tag() string { return cons.tag }

// Channel returns the consumer's channel.
func (cons *Consumer) Channel() *Channel { return cons.ch }

// Queue returns the name of the queue the consumer consumes from: after a
// recovery that gave its server-named queue a new name, the new one.
func (cons *Consumer) Queue() string { return cons.queue }

// end runs OnEnd once.
func (cons *Consumer) end(err error) {
	if cons.ended {
		return
	}
	cons.ended = true
	cons.ch.c.hk.consumerEnded(cons, err)
	if cons.onEnd != nil {
		cons.onEnd(err)
	}
}

// Cancel cancels the consumer (basic.cancel). cb, which may be nil, runs
// with the outcome once the broker confirmed, after the deliveries it sent
// before; OnEnd runs then with pika.ErrConsumerClosed.
func (cons *Consumer) Cancel(cb func(error)) {
	ch := cons.ch
	cons.cancelling = true
	ch.call(&wire.BasicCancel{ConsumerTag: cons.tag}, func(ev engine.Event) func() {
		if ev.Err != nil {
			cons.cancelling = false
		}
		if ev.Err == nil && ch.consumers[cons.tag] == cons {
			delete(ch.consumers, cons.tag)
			ch.c.consumerEnded(cons)
		}
		return func() {
			if cb != nil {
				cb(ev.Err)
			}
			if ev.Err == nil {
				cons.end(pika.ErrConsumerClosed)
			}
		}
	})
}

// Get asks for one message of queue (basic.get) and calls cb with it (ok
// true), with ok false when the queue was empty, or with the error.
func (ch *Channel) Get(queue string, autoAck bool, cb func(d *Delivery, ok bool, err error)) {
	ch.call(&wire.BasicGet{Queue: queue, NoAck: autoAck}, func(ev engine.Event) func() {
		switch {
		case ev.Err != nil:
			return func() { cb(nil, false, ev.Err) }
		case ev.Kind == engine.EventGetOk:
			d := ch.newDelivery(&ev.Message)
			return func() {
				if h := ch.c.hk; h != nil && len(h.delivery) > 0 {
					h.deliveryEvent(ch, queue, d)
				}
				cb(d, true, nil)
			}
		}
		return func() { cb(nil, false, nil) }
	})
}

// Ack acknowledges delivery tag (every tag up to it with multiple). It
// fails with pika.ErrUnknownTag, sending nothing, for a tag that awaits no
// acknowledgement, and with the channel's error when it ended.
func (ch *Channel) Ack(tag uint64, multiple bool) error {
	etag, err := ch.engineTag(tag)
	if err != nil {
		return err
	}
	err = ch.settled(pika.SettleAck, tag, multiple, false, func() error { return ch.c.eng.Ack(ch.id, etag, multiple) })
	ch.c.l.markDirty(ch.c)
	return err
}

// Nack refuses delivery tag (every tag up to it with multiple), requeueing
// when requeue is set. Errors as for Ack.
func (ch *Channel) Nack(tag uint64, multiple, requeue bool) error {
	etag, err := ch.engineTag(tag)
	if err != nil {
		return err
	}
	err = ch.settled(pika.SettleNack, tag, multiple, requeue, func() error { return ch.c.eng.Nack(ch.id, etag, multiple, requeue) })
	ch.c.l.markDirty(ch.c)
	return err
}

// Reject refuses delivery tag, requeueing when requeue is set. Errors as
// for Ack.
func (ch *Channel) Reject(tag uint64, requeue bool) error {
	etag, err := ch.engineTag(tag)
	if err != nil {
		return err
	}
	err = ch.settled(pika.SettleReject, tag, false, requeue, func() error { return ch.c.eng.Reject(ch.id, etag, requeue) })
	ch.c.l.markDirty(ch.c)
	return err
}

// engineTag translates a delivery tag of the application's to the current
// connection's: pika.ErrStaleDelivery for a delivery from before a
// recovery (the broker forgot its tag, and delivers the message again
// unless it was auto-acked), the channel's error when it ended, and
// pika.ErrRecovering while the connection recovers and has no link (a
// delivery that came during a restore can be acknowledged: its consumer
// runs on the new link).
func (ch *Channel) engineTag(tag uint64) (uint64, error) {
	if ch.closed {
		return 0, ch.closedErr()
	}
	if ch.tagBase > 0 && tag <= ch.tagBase {
		return 0, pika.ErrStaleDelivery
	}
	if !ch.c.linkUp() {
		return 0, pika.ErrRecovering
	}
	return tag - ch.tagBase, nil
}
