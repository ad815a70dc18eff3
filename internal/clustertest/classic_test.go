//go:build cluster

package clustertest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// events records a Conn's recovery events.
type events struct {
	mu  sync.Mutex
	all []pika.RecoveryEvent
}

func watch(c *pika.Conn) *events {
	e := &events{}
	c.OnRecovery(func(ev pika.RecoveryEvent) {
		e.mu.Lock()
		e.all = append(e.all, ev)
		e.mu.Unlock()
	})
	return e
}

func (e *events) count(kind pika.RecoveryKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.all {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func (e *events) last(kind pika.RecoveryKind) pika.RecoveryEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.all) - 1; i >= 0; i-- {
		if e.all[i].Kind == kind {
			return e.all[i]
		}
	}
	return pika.RecoveryEvent{}
}

// TestClassicQueueNodeDown covers a durable classic queue whose node (3)
// stops:
//
//   - a consumer connected to another node: RabbitMQ 3.10 cancels it
//     (basic.cancel; rabbit_channel's handle_consuming_queue_down_or_eol
//     cannot re-consume a queue whose process is down), though the queue
//     still exists. The consumer must wait for the queue (OnRecovery says
//     so, RecoveryConsumerWaiting) and run again once the node is back
//     (RecoveryConsumerRestored), instead of ending as if the queue had
//     been deleted;
//   - a consumer connected to the queue's node: its connection is lost,
//     recovery reconnects to another node where the queue's declaration
//     fails with NOT_FOUND "home node ... is down"; recovery must complete,
//     keep retrying the consumer with backoff, and restore it when the
//     node returns.
func TestClassicQueueNodeDown(t *testing.T) {
	nodes := cluster(t)
	queue := testenv.Name(t, "classic")
	deleteQueue(t, nodes, queue)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// local: on node 3, declares the queue there (classic queues live on
	// the declaring connection's node) and consumes.
	local := dial(t, nodes, 2, nil)
	localEv := watch(local)
	lch := channel(t, local)
	if _, err := lch.QueueDeclare(ctx, queue, pika.QueueDeclareOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	lcons, err := lch.Consume(ctx, queue, pika.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// remote: on node 1, consumes the same queue.
	remote := dial(t, nodes, 0, nil)
	remoteEv := watch(remote)
	rch := channel(t, remote)
	var cancels sync.Map
	rch.OnCancel(func(tag string) { cancels.Store(tag, true) })
	rcons, err := rch.Consume(ctx, queue, pika.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// pub: on node 2, publishes.
	pub := dial(t, nodes, 1, nil)
	pch := channel(t, pub)
	if err := pch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	if local := ctl(t, nodes[2], "-q", "list_queues", "--local", "name"); !strings.Contains(local, queue) {
		t.Fatalf("queue %s is not on %s (list_queues --local there: %s)", queue, nodes[2].name, local)
	}

	stopNode(t, nodes[2])
	eventually(t, time.Minute, "the remote consumer was not told its queue is unavailable", func() bool {
		return remoteEv.count(pika.RecoveryConsumerWaiting) > 0
	})
	if _, ok := cancels.Load(rcons.Tag()); !ok {
		t.Errorf("no basic.cancel from the broker for the remote consumer (OnCancel)")
	}
	ev := remoteEv.last(pika.RecoveryConsumerWaiting)
	t.Logf("remote consumer waiting: attempt %d, delay %v: %v", ev.Attempt, ev.Delay, ev.Err)
	if !errors.Is(ev.Err, pika.ErrQueueUnavailable) {
		t.Errorf("waiting event's Err = %v, want ErrQueueUnavailable", ev.Err)
	}
	eventually(t, time.Minute, "the local consumer's connection did not recover on another node", func() bool {
		return localEv.count(pika.RecoveryRecovered) > 0 && localEv.count(pika.RecoveryConsumerWaiting) > 0
	})
	rep := localEv.last(pika.RecoveryRecovered).Report
	t.Logf("local connection recovered to %s; failed: %v", rep.Addr, rep.Failed)
	ev = localEv.last(pika.RecoveryConsumerWaiting)
	t.Logf("local consumer waiting: attempt %d, delay %v: %v", ev.Attempt, ev.Delay, ev.Err)
	// Retries back off while the node is down.
	time.Sleep(3 * time.Second)
	if n := remoteEv.count(pika.RecoveryConsumerWaiting); n < 2 {
		t.Errorf("%d waiting events for the remote consumer after 3s, want retries", n)
	}
	for _, c := range []*pika.Consumer{lcons, rcons} {
		select {
		case <-c.Done():
			t.Fatalf("consumer %s ended while its queue's node was down: %v", c.Tag(), c.Err())
		default:
		}
	}

	startNode(t, nodes[2])
	eventually(t, time.Minute, "the consumers were not restored after the node came back", func() bool {
		return remoteEv.count(pika.RecoveryConsumerRestored) > 0 && localEv.count(pika.RecoveryConsumerRestored) > 0
	})
	// Both consumers get messages again (round-robin: one each).
	roundTrip2(t, pch, []*pika.Consumer{lcons, rcons}, queue)
}

// roundTrip2 publishes two messages and checks that the consumers, between
// them, receive both (the broker alternates between them).
func roundTrip2(t *testing.T, pub *pika.Channel, conss []*pika.Consumer, queue string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, body := range []string{"one", "two"} {
		conf, err := pub.PublishWithConfirm(ctx, "", queue, pika.Message{Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		if err := conf.Wait(ctx); err != nil {
			t.Fatalf("confirm: %v", err)
		}
	}
	got := make(chan string, 2)
	for _, c := range conss {
		go func() {
			d, err := c.Next(ctx)
			if err == nil {
				d.Ack(false)
				got <- string(d.Body)
			}
		}()
	}
	for i := 0; i < 2; i++ {
		select {
		case b := <-got:
			t.Logf("delivered after the restore: %q", b)
		case <-ctx.Done():
			t.Fatalf("only %d of 2 messages delivered to the restored consumers", i)
		}
	}
}
