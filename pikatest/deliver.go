package pikatest

import (
	"sort"
	"time"

	"github.com/pika-go/pika/pikatest/internal/store"
	"github.com/pika-go/pika/wire"
)

// This file is the consumer side: consumers, prefetch as RabbitMQ means it
// (basic.qos global=false limits each new consumer, global=true the whole
// channel), dispatch from a queue to its consumers, and the settlement of
// deliveries (ack, nack, reject, recover, requeue on close).

// consumer is one basic.consume.
type consumer struct {
	ch        *channel
	q         *queue
	tag       string
	noAck     bool
	exclusive bool
	prefetch  int // per-consumer limit, 0 unlimited
	unacked   int
	priority  int64
	replyTo   string // direct reply-to token; q is nil
}

// delivery is one unsettled message on a channel.
type delivery struct {
	tag  uint64
	q    *queue
	m    *store.Message
	cons *consumer // nil for basic.get
	done bool
}

// hasCredit reports whether cs may receive one more message now.
func (cs *consumer) hasCredit() bool {
	ch := cs.ch
	if ch.closing || !ch.c.writable() {
		return false
	}
	if cs.noAck {
		return true
	}
	if cs.prefetch > 0 && cs.unacked >= cs.prefetch {
		return false
	}
	if ch.globalPrefetch > 0 && ch.consumerUnacked >= ch.globalPrefetch {
		return false
	}
	return true
}

// canDeliverNow reports whether some consumer would take a message now.
func (q *queue) canDeliverNow() bool { return q.pickConsumer() != nil }

// pickConsumer returns the consumer the next message goes to: among
// consumers with credit, the highest x-priority, round robin within it. A
// single-active-consumer queue only ever uses its first consumer.
func (q *queue) pickConsumer() *consumer {
	n := len(q.consumers)
	if n == 0 {
		return nil
	}
	if q.sac {
		if cs := q.consumers[0]; cs.hasCredit() {
			return cs
		}
		return nil
	}
	var best *consumer
	bestIdx := 0
	for i := 0; i < n; i++ {
		idx := (q.rr + i) % n
		cs := q.consumers[idx]
		if (best == nil || cs.priority > best.priority) && cs.hasCredit() {
			best, bestIdx = cs, idx
		}
	}
	if best != nil {
		q.rr = (bestIdx + 1) % n
	}
	return best
}

// dispatch hands ready messages to consumers while some has credit.
func (q *queue) dispatch(now int64) {
	if q.dispatching || q.deleted || len(q.consumers) == 0 {
		return
	}
	q.dispatching = true
	defer func() { q.dispatching = false }()
	var expired []*store.Message
	for q.ready.Len() > 0 {
		// Messages that expired before now go first; one expiring at now
		// (x-message-ttl 0) may still reach a waiting consumer.
		expired = q.ready.Expire(now-1, expired[:0])
		for _, m := range expired {
			q.deadLetter(m, "expired")
		}
		if q.ready.Len() == 0 {
			break
		}
		cs := q.pickConsumer()
		if cs == nil {
			break
		}
		cs.ch.deliver(cs, q, q.ready.Pop())
	}
}

// deliver sends m to consumer cs with a new delivery tag.
func (ch *channel) deliver(cs *consumer, q *queue, m *store.Message) {
	ch.nextTag++
	tag := ch.nextTag
	if !cs.noAck {
		ch.track(&delivery{tag: tag, q: q, m: m, cons: cs})
		cs.unacked++
		ch.consumerUnacked++
		q.unacked++
	}
	ch.c.sendRaw(ch.id, &wire.BasicDeliver{ConsumerTag: cs.tag, DeliveryTag: tag, Redelivered: m.Redelivered,
		Exchange: m.Exchange, RoutingKey: m.RoutingKey}, deliveryHeader(q, m), m.Body)
}

// track records an unsettled delivery; tags only grow, so the list stays
// sorted.
func (ch *channel) track(d *delivery) {
	ch.unacked = append(ch.unacked, d)
	ch.live++
}

// find returns the live delivery with tag, or nil.
func (ch *channel) find(tag uint64) *delivery {
	list := ch.unacked[ch.head:]
	i := sort.Search(len(list), func(i int) bool { return list[i].tag >= tag })
	if i < len(list) && list[i].tag == tag && !list[i].done {
		return list[i]
	}
	return nil
}

// take marks d settled and updates the counters; the caller decides what
// happens to the message.
func (ch *channel) take(d *delivery) {
	d.done = true
	ch.live--
	if d.cons != nil {
		d.cons.unacked--
		ch.consumerUnacked--
	}
	d.q.unacked--
	for ch.head < len(ch.unacked) && ch.unacked[ch.head].done {
		ch.unacked[ch.head] = nil
		ch.head++
	}
	if ch.head == len(ch.unacked) {
		ch.unacked, ch.head = ch.unacked[:0], 0
	} else if ch.head > 1024 && ch.head*2 > len(ch.unacked) {
		n := copy(ch.unacked, ch.unacked[ch.head:])
		clear(ch.unacked[n:])
		ch.unacked, ch.head = ch.unacked[:n], 0
	}
}

// settle applies ack (requeue unused), nack or reject to tag (and all
// before it with multiple). A tag that is not outstanding is a channel
// error, as in RabbitMQ.
func (ch *channel) settle(tag uint64, multiple, ack, requeue bool) *amqpError {
	var ds []*delivery
	if multiple {
		for _, d := range ch.unacked[ch.head:] {
			if tag != 0 && d.tag > tag {
				break
			}
			if !d.done {
				ds = append(ds, d)
			}
		}
		if tag != 0 && ch.find(tag) == nil {
			return chanErr(wire.ReplyPreconditionFailed, "unknown delivery tag %d", tag)
		}
	} else {
		d := ch.find(tag)
		if d == nil {
			return chanErr(wire.ReplyPreconditionFailed, "unknown delivery tag %d", tag)
		}
		ds = append(ds, d)
	}
	ch.settleList(ds, ack, requeue)
	return nil
}

func (ch *channel) settleList(ds []*delivery, ack, requeue bool) {
	var touched []*queue
	for _, d := range ds {
		ch.take(d)
		switch {
		case ack:
		case requeue:
			d.q.requeue(d.m)
		default:
			d.q.deadLetter(d.m, "rejected")
		}
		touched = appendQueueOnce(touched, 0, d.q)
	}
	ch.redispatch(touched)
}

// redispatch lets the given queues, and with a global prefetch every queue
// this channel consumes from, deliver again after credit was freed.
func (ch *channel) redispatch(touched []*queue) {
	if ch.globalPrefetch > 0 {
		for _, cs := range ch.consumers {
			if cs.q != nil {
				touched = appendQueueOnce(touched, 0, cs.q)
			}
		}
	}
	now := time.Now().UnixNano()
	for _, q := range touched {
		q.dispatch(now)
		q.expire(now)
	}
}

// requeueAll returns every unsettled delivery of the channel to its queue
// (channel close, basic.recover).
func (ch *channel) requeueAll() {
	var ds []*delivery
	for _, d := range ch.unacked[ch.head:] {
		if !d.done {
			ds = append(ds, d)
		}
	}
	// Requeue newest first so each lands before the ones after it.
	for i := len(ds) - 1; i >= 0; i-- {
		ch.take(ds[i])
		ds[i].q.requeue(ds[i].m)
	}
	var touched []*queue
	for _, d := range ds {
		touched = appendQueueOnce(touched, 0, d.q)
	}
	ch.redispatch(touched)
}

// addConsumer registers cs on its queue.
func (q *queue) addConsumer(cs *consumer) {
	q.consumers = append(q.consumers, cs)
	q.hadConsumer = true
	q.touch()
}

// removeConsumer unregisters cs, deleting an auto-delete queue that lost
// its last consumer.
func (q *queue) removeConsumer(cs *consumer) {
	for i, x := range q.consumers {
		if x == cs {
			q.consumers = append(q.consumers[:i], q.consumers[i+1:]...)
			if q.rr > i {
				q.rr--
			}
			break
		}
	}
	if len(q.consumers) == 0 {
		if q.autoDelete && q.hadConsumer {
			q.vh.deleteQueue(q)
			return
		}
		q.touch()
	}
}
