package pika

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// downQueueHook makes the fake broker answer every declaration of queue
// (passive or not) with RabbitMQ's NOT_FOUND for a classic queue whose node
// is down, while down() is true, and counts the basic.consume of it.
type downQueueHook struct {
	mu       sync.Mutex
	down     bool
	consumes int
}

func (h *downQueueHook) set(down bool) {
	h.mu.Lock()
	h.down = down
	h.mu.Unlock()
}

func (h *downQueueHook) consumed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.consumes
}

func (h *downQueueHook) install(b *fakeBroker, queue string) {
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		switch m := m.(type) {
		case *wire.QueueDeclare:
			if m.Queue == queue && h.down {
				fc.send(ch, &wire.ChannelClose{ReplyCode: uint16(wire.ReplyNotFound), ClassID: 50, MethodID: 10,
					ReplyText: "NOT_FOUND - home node 'rabbit@node1' of durable queue '" + queue + "' in vhost '/' is down or inaccessible"})
				return true
			}
		case *wire.BasicConsume:
			if m.Queue == queue {
				h.consumes++
			}
		}
		return false
	})
}

// watchedChannel dials b and opens a channel, watching the recovery events.
func watchedChannel(t *testing.T, b *fakeBroker) (*recoveryLog, *Channel) {
	t.Helper()
	c := dialFake(t, b.config())
	rlog := watchRecovery(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	mustDo(t, "channel", err)
	return rlog, ch
}

// downQueueSetup dials a fake broker with a downQueueHook on queue "q",
// declares q (durable) and consumes it with tag "c1".
func downQueueSetup(t *testing.T) (*fakeBroker, *downQueueHook, *recoveryLog, *Channel, *Consumer) {
	t.Helper()
	b := newFakeBroker(t)
	h := &downQueueHook{}
	h.install(b, "q")
	rlog, ch := watchedChannel(t, b)
	rtDeclareQueue(t, ch, "q", QueueDeclareOptions{Durable: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := ch.Consume(ctx, "q", ConsumeOptions{Tag: "c1"})
	mustDo(t, "consume", err)
	return b, h, rlog, ch, cons
}

// waitRestored checks that cons still runs while its queue is down, brings
// the queue back and waits for the consumer's restart.
func waitRestored(t *testing.T, h *downQueueHook, rlog *recoveryLog, cons *Consumer) {
	t.Helper()
	select {
	case <-cons.Done():
		t.Fatalf("the consumer ended while its queue was down: %v", cons.Err())
	default:
	}
	h.set(false)
	rlog.wait(RecoveryConsumerRestored, 1, 10*time.Second)
}

// TestFakeBrokerCancelOfDownQueueRestoresConsumer: RabbitMQ cancels the
// consumers of a classic queue whose node goes down (basic.cancel), though
// the queue still exists. The consumer must not end as if the queue had been
// deleted: the library checks the queue until it is back, tells the
// application (RecoveryConsumerWaiting, then RecoveryConsumerRestored), and
// starts the consumer again with its tag, so that its deliveries reach the
// same Consumer.
func TestFakeBrokerCancelOfDownQueueRestoresConsumer(t *testing.T) {
	b, h, rlog, ch, cons := downQueueSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	h.set(true)
	b.conn(1).send(ch.ID(), &wire.BasicCancel{ConsumerTag: "c1", NoWait: true})
	ev := rlog.wait(RecoveryConsumerWaiting, 2, 10*time.Second)
	if !errors.Is(ev.Err, ErrQueueUnavailable) || !errors.Is(ev.Err, ErrNotFound) || ev.Queue != "q" || ev.ConsumerTag != "c1" {
		t.Errorf("waiting event %+v: want Err matching ErrQueueUnavailable and ErrNotFound, queue q, tag c1", ev)
	}
	waitRestored(t, h, rlog, cons)
	if n := h.consumed(); n != 2 {
		t.Errorf("basic.consume of q sent %d times, want 2 (the first, and the restart)", n)
	}
	b.conn(1).deliver(ch.ID(), "c1", 1, "after")
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatalf("Next after the restart: %v", err)
	}
	if string(d.Body) != "after" {
		t.Errorf("delivery %q, want \"after\"", d.Body)
	}
	if b.count() != 1 {
		t.Errorf("%d connections, want 1: the connection itself was never lost", b.count())
	}
}

// TestFakeBrokerCancelOfDeletedQueueEndsConsumer: a basic.cancel for a
// queue that the broker then says does not exist ends the consumer with
// ErrConsumerCancelled, without a restart.
func TestFakeBrokerCancelOfDeletedQueueEndsConsumer(t *testing.T) {
	b := newFakeBroker(t)
	topoHook(b, "gone")
	c := dialFake(t, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	mustDo(t, "channel", err)
	cons, err := ch.Consume(ctx, "gone", ConsumeOptions{Tag: "c1"})
	mustDo(t, "consume", err)
	b.conn(1).send(ch.ID(), &wire.BasicCancel{ConsumerTag: "c1", NoWait: true})
	if _, err := cons.Next(ctx); !errors.Is(err, ErrConsumerCancelled) {
		t.Fatalf("Next = %v, want ErrConsumerCancelled", err)
	}
	n := 0
	for _, m := range b.conn(1).methods() {
		if m == "1:basic.consume" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("basic.consume sent %d times, want 1: %v", n, b.conn(1).methods())
	}
}

// TestFakeBrokerRecoveryWaitsForDownQueue: when the connection is lost and
// the queue's node is down at the reconnection (its declaration fails with
// NOT_FOUND "home node ... is down"), recovery completes, reports the
// consumer as waiting for its queue, and restarts it once the queue is back,
// instead of ending it.
func TestFakeBrokerRecoveryWaitsForDownQueue(t *testing.T) {
	b, h, rlog, ch, cons := downQueueSetup(t)

	h.set(true)
	b.conn(1).kill()
	ev := rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	if len(ev.Report.Failed) != 2 || !errors.Is(ev.Report.Failed[len(ev.Report.Failed)-1].Err, ErrQueueUnavailable) {
		t.Errorf("report %+v: want the queue's failure and the consumer waiting for it", *ev.Report)
	}
	rlog.wait(RecoveryConsumerWaiting, 1, 10*time.Second)
	waitRestored(t, h, rlog, cons)
	deliveredAfterRestart(t, b.conn(2), ch, cons, rlog)
}

// downConsumeHook is a downQueueHook whose basic.consume of the queue is
// refused too while it is down, as RabbitMQ does for a classic queue whose
// node is down: the NOT_FOUND closes the channel.
func downConsumeHook(b *fakeBroker, h *downQueueHook, queue string) {
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		var q string
		var class, method uint16
		switch m := m.(type) {
		case *wire.QueueDeclare:
			q, class, method = m.Queue, 50, 10
		case *wire.BasicConsume:
			q, class, method = m.Queue, 60, 20
			if q == queue {
				h.consumes++
			}
		default:
			return false
		}
		if q != queue || !h.down {
			return false
		}
		fc.send(ch, &wire.ChannelClose{ReplyCode: uint16(wire.ReplyNotFound), ClassID: class, MethodID: method,
			ReplyText: "NOT_FOUND - queue '" + queue + "' in vhost '/' process is stopped by supervisor"})
		return true
	})
}

// consumeUndeclared dials b and consumes queue (never declared by this
// Conn) with tag "c1".
func consumeUndeclared(t *testing.T, b *fakeBroker, queue string) (*recoveryLog, *Channel, *Consumer) {
	t.Helper()
	rlog, ch := watchedChannel(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := ch.Consume(ctx, queue, ConsumeOptions{Tag: "c1"})
	mustDo(t, "consume", err)
	return rlog, ch, cons
}

// TestFakeBrokerRecoveryWaitsForUndeclaredDownQueue: a consumer of a queue
// this Conn never declared (another connection's) is restored while the
// queue's node is down. Recovery must not send basic.consume blindly (its
// NOT_FOUND would close the application's channel): the consumer waits for
// its queue and is restarted when it is back, on the same channel.
func TestFakeBrokerRecoveryWaitsForUndeclaredDownQueue(t *testing.T) {
	b := newFakeBroker(t)
	h := &downQueueHook{}
	downConsumeHook(b, h, "q")
	rlog, ch, cons := consumeUndeclared(t, b, "q")

	h.set(true)
	b.conn(1).kill()
	ev := rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	if len(ev.Report.Failed) != 1 || !errors.Is(ev.Report.Failed[0].Err, ErrQueueUnavailable) {
		t.Errorf("report %+v: want only the consumer, waiting for its queue", *ev.Report)
	}
	rlog.wait(RecoveryConsumerWaiting, 1, 10*time.Second)
	if err := ch.Err(); err != nil {
		t.Fatalf("the application's channel closed: %v", err)
	}
	waitRestored(t, h, rlog, cons)
	if err := ch.Err(); err != nil {
		t.Fatalf("the application's channel closed: %v", err)
	}
	deliveredAfterRestart(t, b.conn(2), ch, cons, rlog)
}

// TestFakeBrokerRecoveryEndsConsumerOfMissingUndeclaredQueue: a consumer of
// a queue this Conn never declared, which no longer exists at the
// reconnection, ends with ErrNotFound; its channel stays open.
func TestFakeBrokerRecoveryEndsConsumerOfMissingUndeclaredQueue(t *testing.T) {
	b := newFakeBroker(t)
	topoHook(b, "gone")
	rlog, ch, cons := consumeUndeclared(t, b, "gone")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	if _, err := cons.Next(ctx); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrQueueUnavailable) {
		t.Fatalf("Next = %v, want ErrNotFound (not ErrQueueUnavailable)", err)
	}
	if err := ch.Err(); err != nil {
		t.Errorf("the application's channel closed: %v", err)
	}
}

// deliveredAfterRestart sends a delivery for tag "c1" on fc and checks that
// cons gets it.
func deliveredAfterRestart(t *testing.T, fc *fakeConn, ch *Channel, cons *Consumer, rlog *recoveryLog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fc.deliver(ch.ID(), "c1", 1, "back")
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatalf("Next after the restart: %v\nevents:\n%v", err, rlog)
	}
	if string(d.Body) != "back" {
		t.Errorf("delivery %q, want \"back\"", d.Body)
	}
}

// TestFakeBrokerExpiredLookingDownQueueIsKept: a queue with x-expires that
// looks expired to the Conn at a recovery, and whose passive check answers
// NOT_FOUND because its node is down, has not expired: it is not reported
// as expired nor forgotten, and the next recovery declares it again.
func TestFakeBrokerExpiredLookingDownQueueIsKept(t *testing.T) {
	b := newFakeBroker(t)
	h := &downQueueHook{}
	h.install(b, "q")
	rlog, ch := watchedChannel(t, b)
	rtDeclareQueue(t, ch, "q", QueueDeclareOptions{Durable: true, Arguments: Table{"x-expires": int32(100)}})
	time.Sleep(250 * time.Millisecond) // longer than its x-expires

	h.set(true)
	b.conn(1).kill()
	if rep := rlog.wait(RecoveryRecovered, 1, 10*time.Second).Report; len(rep.Expired) != 0 {
		t.Errorf("report.Expired = %q, want none: the queue's node is down, the queue is there", rep.Expired)
	}
	h.set(false)
	b.conn(2).kill()
	rlog.wait(RecoveryRecovered, 2, 10*time.Second)
	n := 0
	for _, m := range b.conn(3).methods() {
		if strings.HasSuffix(m, ":queue.declare") {
			n++
		}
	}
	if n == 0 {
		t.Errorf("the queue was forgotten: not declared at the next recovery: %q\nevents:\n%v", b.conn(3).methods(), rlog)
	}
}
