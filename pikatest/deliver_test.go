package pikatest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/pikatest/internal/store"
	"github.com/pika-go/pika/wire"
)

// These tests drive the queue and consumer logic directly, without
// sockets: a connection whose writer never runs collects its output in
// c.out, which the tests decode.

type fixture struct {
	b  *Broker
	vh *vhost
	c  *conn
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	b := &Broker{cfg: Config{}, vhosts: map[string]*vhost{}, conns: map[*conn]struct{}{}, waiters: map[chan struct{}]struct{}{}}
	b.cfg.setDefaults()
	vh := newVHost(b, "/")
	b.vhosts["/"] = vh
	a, z := net.Pipe()
	t.Cleanup(func() { a.Close(); z.Close() })
	c := newConn(b, a, 1)
	c.vh = vh
	c.open = true
	t.Cleanup(func() {
		b.mu.Lock()
		vh.stopTimers()
		b.mu.Unlock()
	})
	return &fixture{b: b, vh: vh, c: c}
}

func (f *fixture) channel(id uint16) *channel {
	ch := newChannel(f.c, id)
	f.c.channels[id] = ch
	return ch
}

func (f *fixture) queue(t *testing.T, name string, args wire.Table) *queue {
	t.Helper()
	q, err := f.vh.declareQueue(&wire.QueueDeclare{Queue: name, Arguments: args}, name, f.c)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (f *fixture) publish(q *queue, body string, props wire.Properties) bool {
	c := &store.Content{RoutingKey: q.name, RoutingKeys: []string{q.name}, Props: props, Body: []byte(body)}
	c.Header = encodeHeader(c)
	return q.enqueue(c, time.Now().UnixNano())
}

func (f *fixture) consume(ch *channel, q *queue, tag string, noAck bool) *consumer {
	cs := &consumer{ch: ch, q: q, tag: tag, noAck: noAck, prefetch: ch.prefetch}
	ch.consumers[tag] = cs
	q.addConsumer(cs)
	q.dispatch(time.Now().UnixNano())
	return cs
}

// sent decodes and clears the connection's output: the deliveries as
// "tag:body" per consumer tag, and the other methods.
func (f *fixture) sent(t *testing.T) (deliveries map[string][]string, methods []wire.Method) {
	t.Helper()
	deliveries = map[string][]string{}
	buf := f.c.out
	f.c.out = nil
	var last *wire.BasicDeliver
	for len(buf) > 0 {
		fr, n, err := wire.ParseFrame(buf, 0)
		if err != nil || n == 0 {
			t.Fatalf("bad output: %v", err)
		}
		buf = buf[n:]
		switch fr.Type {
		case wire.FrameMethod:
			m, err := wire.DecodeMethod(fr.Payload)
			if err != nil {
				t.Fatal(err)
			}
			last, _ = m.(*wire.BasicDeliver)
			if last == nil {
				methods = append(methods, m)
			}
		case wire.FrameBody:
			if last != nil {
				deliveries[last.ConsumerTag] = append(deliveries[last.ConsumerTag], string(fr.Payload))
			}
		}
	}
	return deliveries, methods
}

func count(d map[string][]string) int {
	n := 0
	for _, v := range d {
		n += len(v)
	}
	return n
}

func TestPerConsumerPrefetch(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	q := f.queue(t, "q", nil)
	for i := 0; i < 10; i++ {
		f.publish(q, "m", wire.Properties{})
	}
	ch.prefetch = 3
	f.consume(ch, q, "a", false)
	f.consume(ch, q, "b", false)
	d, _ := f.sent(t)
	if len(d["a"]) != 3 || len(d["b"]) != 3 || q.ready.Len() != 4 {
		t.Fatalf("per-consumer prefetch 3: a=%d b=%d ready=%d", len(d["a"]), len(d["b"]), q.ready.Len())
	}
	// Acking one of a's frees one slot, for a.
	if err := ch.settle(1, false, true, false); err != nil {
		t.Fatal(err)
	}
	d, _ = f.sent(t)
	if count(d) != 1 || len(d["a"]) != 1 {
		t.Fatalf("after one ack: %v", d)
	}
}

func TestGlobalPrefetchSharedByConsumers(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	q := f.queue(t, "q", nil)
	for i := 0; i < 10; i++ {
		f.publish(q, "m", wire.Properties{})
	}
	ch.globalPrefetch = 3
	f.consume(ch, q, "a", false)
	f.consume(ch, q, "b", false)
	d, _ := f.sent(t)
	if count(d) != 3 {
		t.Fatalf("global prefetch 3 delivered %d", count(d))
	}
	// Acking everything (multiple, tag 0) frees the channel's window.
	if err := ch.settle(0, true, true, false); err != nil {
		t.Fatal(err)
	}
	if d, _ = f.sent(t); count(d) != 3 {
		t.Fatalf("after ack all: %d deliveries, want 3 more", count(d))
	}
}

func TestRoundRobinAndPriority(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	q := f.queue(t, "q", nil)
	f.consume(ch, q, "a", true)
	f.consume(ch, q, "b", true)
	for _, b := range []string{"1", "2", "3", "4"} {
		f.publish(q, b, wire.Properties{})
	}
	d, _ := f.sent(t)
	if len(d["a"]) != 2 || len(d["b"]) != 2 || d["a"][0] == d["b"][0] {
		t.Fatalf("round robin: %v", d)
	}
	hi := f.consume(ch, q, "hi", true)
	hi.priority = 5
	for _, b := range []string{"5", "6"} {
		f.publish(q, b, wire.Properties{})
	}
	if d, _ = f.sent(t); len(d["hi"]) != 2 {
		t.Fatalf("x-priority consumer did not take everything: %v", d)
	}
}

func TestSettleErrorsAndRequeue(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	q := f.queue(t, "q", nil)
	for _, b := range []string{"a", "b", "c"} {
		f.publish(q, b, wire.Properties{})
	}
	ch.prefetch = 3
	f.consume(ch, q, "t", false)
	f.sent(t)
	if err := ch.settle(9, false, true, false); err == nil || err.code != wire.ReplyPreconditionFailed || err.text != "PRECONDITION_FAILED - unknown delivery tag 9" {
		t.Fatalf("unknown tag: %v", err)
	}
	if err := ch.settle(7, true, true, false); err == nil {
		t.Fatal("multiple ack of a tag never delivered succeeded")
	}
	// Cancel the consumer so requeued messages stay in the queue.
	ch.removeConsumer(ch.consumers["t"])
	if err := ch.settle(2, true, false, true); err != nil { // nack 1 and 2, requeue
		t.Fatal(err)
	}
	var got []string
	for _, m := range q.ready.All() {
		got = append(got, string(m.Body)+map[bool]string{true: "*", false: ""}[m.Redelivered])
	}
	if len(got) != 2 || got[0] != "a*" || got[1] != "b*" {
		t.Fatalf("requeued: %v", got)
	}
	if err := ch.settle(2, false, true, false); err == nil {
		t.Fatal("acking a requeued tag succeeded")
	}
	ch.requeueAll()
	if q.ready.Len() != 3 || q.ready.Peek().Body[0] != 'a' {
		t.Fatalf("after requeueAll: %d ready", q.ready.Len())
	}
}

func TestSingleActiveConsumer(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	q := f.queue(t, "q", wire.Table{"x-single-active-consumer": true})
	f.consume(ch, q, "first", true)
	f.consume(ch, q, "second", true)
	for i := 0; i < 3; i++ {
		f.publish(q, "m", wire.Properties{})
	}
	if d, _ := f.sent(t); len(d["first"]) != 3 {
		t.Fatalf("single active consumer: %v", d)
	}
	ch.removeConsumer(ch.consumers["first"])
	f.publish(q, "m", wire.Properties{})
	if d, _ := f.sent(t); len(d["second"]) != 1 {
		t.Fatalf("after the active consumer left: %v", d)
	}
}

func TestOverflowAndDeadLetter(t *testing.T) {
	f := newFixture(t)
	dead := f.queue(t, "dead", nil)
	q := f.queue(t, "q", wire.Table{"x-max-length": int32(2), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
	for _, b := range []string{"a", "b", "c"} {
		f.publish(q, b, wire.Properties{})
	}
	if q.ready.Len() != 2 || dead.ready.Len() != 1 {
		t.Fatalf("drop-head: q=%d dead=%d", q.ready.Len(), dead.ready.Len())
	}
	m := dead.ready.Peek()
	deaths, _ := m.Props.Headers["x-death"].([]any)
	if string(m.Body) != "a" || len(deaths) != 1 {
		t.Fatalf("dead-lettered %q with x-death %v", m.Body, m.Props.Headers)
	}
	d0 := deaths[0].(wire.Table)
	if d0["reason"] != "maxlen" || d0["queue"] != "q" || d0["count"] != int64(1) || m.Props.Headers["x-first-death-reason"] != "maxlen" {
		t.Fatalf("x-death entry %v", d0)
	}
	rp := f.queue(t, "rp", wire.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	if !f.publish(rp, "1", wire.Properties{}) || f.publish(rp, "2", wire.Properties{}) {
		t.Fatal("reject-publish accepted a message over the limit")
	}
}

func TestTTLZeroReachesWaitingConsumer(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	q := f.queue(t, "q", wire.Table{"x-message-ttl": int32(0)})
	f.publish(q, "dropped", wire.Properties{})
	if q.ready.Len() != 0 {
		t.Fatal("a message with TTL 0 stayed in a queue without consumers")
	}
	f.consume(ch, q, "c", true)
	f.publish(q, "delivered", wire.Properties{})
	if d, _ := f.sent(t); len(d["c"]) != 1 || d["c"][0] != "delivered" {
		t.Fatalf("TTL 0 with a consumer: %v", d)
	}
}

func TestDeleteQueueCancelsConsumers(t *testing.T) {
	f := newFixture(t)
	f.c.capCancel = true
	ch := f.channel(1)
	q := f.queue(t, "q", nil)
	f.consume(ch, q, "c", false)
	f.sent(t)
	f.vh.deleteQueue(q)
	_, ms := f.sent(t)
	if len(ms) != 1 {
		t.Fatalf("methods after delete: %v", ms)
	}
	if c, ok := ms[0].(*wire.BasicCancel); !ok || c.ConsumerTag != "c" {
		t.Fatalf("sent %v, want basic.cancel", ms[0])
	}
	if len(ch.consumers) != 0 {
		t.Fatal("consumer still registered")
	}
}

func TestAutoDeleteQueue(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	q, _ := f.vh.declareQueue(&wire.QueueDeclare{Queue: "ad", AutoDelete: true}, "ad", f.c)
	cs := f.consume(ch, q, "c", true)
	ch.removeConsumer(cs)
	if f.vh.queues["ad"] != nil {
		t.Fatal("auto-delete queue survived its last consumer")
	}
}

func TestConfirmCoalescing(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	ch.confirm = true
	show := func() []string {
		_, ms := f.sent(t)
		var out []string
		for _, m := range ms {
			switch m := m.(type) {
			case *wire.BasicAck:
				out = append(out, fmt.Sprintf("ack %d %v", m.DeliveryTag, m.Multiple))
			case *wire.BasicNack:
				out = append(out, fmt.Sprintf("nack %d %v", m.DeliveryTag, m.Multiple))
			}
		}
		return out
	}
	for tag := uint64(1); tag <= 3; tag++ {
		ch.queueConfirm(confirmItem{tag: tag, ack: true})
	}
	f.c.flushConfirmsLocked()
	if got := fmt.Sprint(show()); got != "[ack 3 true]" {
		t.Fatalf("three acks: %s", got)
	}
	// Tag 4 is never confirmed (dropped); 5 and 6 must not be acked with
	// multiple, which would cover 4.
	ch.queueConfirm(confirmItem{tag: 5, ack: true})
	ch.queueConfirm(confirmItem{tag: 6, ack: true})
	ch.queueConfirm(confirmItem{tag: 7, ack: false})
	f.c.flushConfirmsLocked()
	if got := fmt.Sprint(show()); got != "[ack 5 false ack 6 false nack 7 false]" {
		t.Fatalf("after a gap: %s", got)
	}
	// Once 4 is confirmed the contiguous mark moves past 7.
	ch.queueConfirm(confirmItem{tag: 4, ack: true})
	ch.queueConfirm(confirmItem{tag: 8, ack: true})
	ch.queueConfirm(confirmItem{tag: 9, ack: true})
	f.c.flushConfirmsLocked()
	if got := fmt.Sprint(show()); got != "[ack 4 false ack 9 true]" {
		t.Fatalf("after the gap filled: %s", got)
	}
}

func TestHugeTTLsDoNotExpireAtOnce(t *testing.T) {
	f := newFixture(t)
	q := f.queue(t, "q", wire.Table{"x-message-ttl": int64(1) << 62, "x-expires": int64(1) << 62})
	f.publish(q, "m", wire.Properties{Expiration: "9223372036854775807"})
	f.b.mu.Lock()
	q.checkExpires()
	f.b.mu.Unlock()
	if q.ready.Len() != 1 || q.deleted {
		t.Fatalf("huge TTLs expired at once: ready %d, deleted %v", q.ready.Len(), q.deleted)
	}
}

func TestQuorumRejectPublishChecksBeforeEnqueue(t *testing.T) {
	f := newFixture(t)
	q, err := f.vh.declareQueue(&wire.QueueDeclare{Queue: "qq", Durable: true, Arguments: wire.Table{
		"x-queue-type": "quorum", "x-max-length": int32(1), "x-overflow": "reject-publish"}}, "qq", f.c)
	if err != nil {
		t.Fatal(err)
	}
	// Not over the limit yet at the second publish: it gets in.
	got := []bool{f.publish(q, "1", wire.Properties{}), f.publish(q, "2", wire.Properties{}), f.publish(q, "3", wire.Properties{})}
	if !got[0] || !got[1] || got[2] || q.ready.Len() != 2 {
		t.Fatalf("accepted %v, depth %d; want true true false, depth 2", got, q.ready.Len())
	}
}

func TestQueueDeclareArgumentRules(t *testing.T) {
	f := newFixture(t)
	f.queue(t, "c", nil)
	if _, err := f.vh.declareQueue(&wire.QueueDeclare{Queue: "c", Arguments: wire.Table{"x-queue-type": "classic"}}, "c", f.c); err != nil {
		t.Fatalf("explicit classic on a queue declared without a type: %v", err)
	}
	if _, err := f.vh.declareQueue(&wire.QueueDeclare{Queue: "c", Arguments: wire.Table{"x-queue-type": "quorum"}}, "c", f.c); err == nil || err.code != wire.ReplyPreconditionFailed {
		t.Fatalf("quorum on a classic queue: %v, want 406", err)
	}
	_, err := f.vh.declareQueue(&wire.QueueDeclare{Queue: "p", Durable: true, Arguments: wire.Table{
		"x-queue-type": "quorum", "x-max-priority": int32(5)}}, "p", f.c)
	want := "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'p' in vhost '/' of queue type rabbit_quorum_queue"
	if err == nil || err.code != wire.ReplyPreconditionFailed || err.Error() != want {
		t.Fatalf("quorum queue with x-max-priority: %v, want %q", err, want)
	}
}

func TestQueueBindLooksUpExchangeFirst(t *testing.T) {
	f := newFixture(t)
	ch := f.channel(1)
	err := ch.queueBind("no-q", "no-x", "", nil, true, false)
	if err == nil || err.code != wire.ReplyNotFound || !strings.Contains(err.text, "no exchange 'no-x'") {
		t.Fatalf("bind with neither queue nor exchange: %v, want 404 naming the exchange", err)
	}
}

func TestRestartKeepsQuorumTransientMessages(t *testing.T) {
	f := newFixture(t)
	qq, err := f.vh.declareQueue(&wire.QueueDeclare{Queue: "qq", Durable: true, Arguments: wire.Table{"x-queue-type": "quorum"}}, "qq", f.c)
	if err != nil {
		t.Fatal(err)
	}
	cq, err := f.vh.declareQueue(&wire.QueueDeclare{Queue: "cq", Durable: true}, "cq", f.c)
	if err != nil {
		t.Fatal(err)
	}
	f.publish(qq, "t", wire.Properties{})
	f.publish(cq, "t", wire.Properties{})
	f.vh.restart()
	if qq.ready.Len() != 1 || cq.ready.Len() != 0 {
		t.Fatalf("after restart: quorum depth %d (want 1), classic depth %d (want 0)", qq.ready.Len(), cq.ready.Len())
	}
}
