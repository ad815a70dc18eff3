//go:build cluster

package clustertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// TestQuorumFeatures checks what quorum queues add, as a pika application
// sees it: x-delivery-count on redeliveries, x-delivery-limit with
// dead-lettering, and the reject-publish overflow seen as nacks by a
// confirming publisher.
func TestQuorumFeatures(t *testing.T) {
	nodes := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := dial(t, nodes, 0, nil)
	ch := channel(t, c)
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	declare := func(name string, a pika.QueueArgs) {
		t.Helper()
		deleteQueue(t, nodes, name)
		a.Type = pika.QueueQuorum
		args, err := a.Table()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{Durable: true, Arguments: args}); err != nil {
			t.Fatalf("declaring %s: %v", name, err)
		}
	}
	publish := func(queue, body string) error {
		t.Helper()
		conf, err := ch.PublishWithConfirm(ctx, "", queue, pika.Message{Body: []byte(body)})
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		return conf.Wait(ctx)
	}

	t.Run("delivery-count and delivery-limit with dead-lettering", func(t *testing.T) {
		dlq := testenv.Name(t, "dlq")
		declare(dlq, pika.QueueArgs{})
		q := testenv.Name(t, "qq")
		declare(q, pika.QueueArgs{DeliveryLimit: 2, DeadLetterRoutingKey: dlq})
		if err := publish(q, "poison"); err != nil {
			t.Fatal(err)
		}
		cch := channel(t, c)
		if err := cch.Qos(ctx, pika.QosOptions{PrefetchCount: 1}); err != nil {
			t.Fatal(err)
		}
		cons, err := cch.Consume(ctx, q, pika.ConsumeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Delivered, then redelivered twice (the limit): the third
		// return dead-letters it.
		for i := 0; i < 3; i++ {
			d, err := cons.Next(ctx)
			if err != nil {
				t.Fatalf("delivery %d: %v", i+1, err)
			}
			count, has := d.Headers["x-delivery-count"]
			switch {
			case i == 0 && has:
				t.Errorf("first delivery has x-delivery-count %v", count)
			case i > 0 && count != int64(i):
				t.Errorf("delivery %d: x-delivery-count %#v, want %d", i+1, count, i)
			}
			if i > 0 && !d.Redelivered {
				t.Errorf("delivery %d is not flagged redelivered", i+1)
			}
			if err := d.Nack(false, true); err != nil {
				t.Fatal(err)
			}
		}
		dch := channel(t, c)
		var d *pika.Delivery
		eventually(t, 30*time.Second, "the message was not dead-lettered after its delivery limit", func() bool {
			var ok bool
			d, ok, err = dch.Get(ctx, dlq, pika.GetOptions{AutoAck: true})
			if err != nil {
				t.Fatal(err)
			}
			return ok
		})
		if string(d.Body) != "poison" {
			t.Errorf("dead-lettered %q", d.Body)
		}
		if xd, ok := d.Headers["x-death"].([]any); !ok || len(xd) == 0 {
			t.Errorf("dead-lettered message without x-death: %v", d.Headers)
		} else if death, _ := xd[0].(pika.Table); death["reason"] != "delivery_limit" {
			t.Errorf("x-death reason %v, want delivery_limit", death["reason"])
		}
		cons.Cancel(ctx)
	})

	t.Run("reject-publish overflow nacks", func(t *testing.T) {
		q := testenv.Name(t, "qq")
		declare(q, pika.QueueArgs{MaxLength: 2, Overflow: pika.OverflowRejectPublish})
		// A quorum queue checks its limit after each enqueue: RabbitMQ
		// 3.10 takes the message that reaches the limit and one more
		// (rabbit_fifo sets its overflow state once the queue is over
		// it), then nacks.
		accepted := 0
		for i := 0; i < 6; i++ {
			err := publish(q, "m")
			if err == nil {
				accepted++
				continue
			}
			if !errors.Is(err, pika.ErrNacked) {
				t.Fatalf("publish %d: %v, want nil or ErrNacked", i+1, err)
			}
			break
		}
		if accepted < 2 || accepted > 3 {
			t.Errorf("a quorum queue of max length 2 accepted %d messages before the first nack, want 2 or 3", accepted)
		}
		t.Logf("accepted %d messages, then nacked", accepted)
		if err := ch.WaitConfirms(ctx); err == nil {
			t.Errorf("WaitConfirms after a nack: nil")
		}
		// WaitConfirms counts the nacks of a batch.
		for i := 0; i < 3; i++ {
			if _, err := ch.PublishWithConfirm(ctx, "", q, pika.Message{Body: []byte("m")}); err != nil {
				t.Fatal(err)
			}
		}
		var ce *pika.ConfirmsError
		if err := ch.WaitConfirms(ctx); !errors.As(err, &ce) || ce.Nacked != 3 {
			t.Errorf("WaitConfirms after 3 publishes to the full queue: %v, want 3 nacked", err)
		}
	})
}
