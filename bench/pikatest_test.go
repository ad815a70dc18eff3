package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pika-go/pika/pikatest"
)

// TestAMQP091AgainstPikatest shows another client working against the
// pikatest broker: amqp091-go connects, publishes with confirms (and a
// mandatory publish that comes back), consumes and acknowledges, and sees
// a channel error with RabbitMQ's reply code.
func TestAMQP091AgainstPikatest(t *testing.T) {
	b := pikatest.NewBroker(t)
	conn, err := amqp.Dial(b.URL())
	if err != nil {
		t.Fatalf("amqp091 Dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 100))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 50
	for i := 0; i < n; i++ {
		err := ch.PublishWithContext(ctx, "", q.Name, false, false, amqp.Publishing{
			Body: []byte(fmt.Sprint(i)), MessageId: fmt.Sprint(i), Headers: amqp.Table{"i": int32(i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= n; i++ {
		select {
		case c := <-confirms:
			if !c.Ack || c.DeliveryTag != uint64(i) {
				t.Fatalf("confirm %d = %+v", i, c)
			}
		case <-ctx.Done():
			t.Fatalf("confirm %d never came", i)
		}
	}
	if err := ch.PublishWithContext(ctx, "", "no-such-queue", true, false, amqp.Publishing{Body: []byte("lost")}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-returns:
		if r.ReplyCode != 312 || string(r.Body) != "lost" {
			t.Fatalf("return = %+v", r)
		}
	case <-ctx.Done():
		t.Fatal("no basic.return for a mandatory unroutable publish")
	}
	if _, err := b.WaitQueue(ctx, q.Name, func(qi pikatest.QueueInfo) bool { return qi.Messages == n }); err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(10, 0, false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		select {
		case d := <-deliveries:
			if string(d.Body) != fmt.Sprint(i) || d.Headers["i"] != int32(i) {
				t.Fatalf("delivery %d = %q %v", i, d.Body, d.Headers)
			}
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("delivery %d never came", i)
		}
	}
	if _, err := b.WaitQueue(ctx, q.Name, func(qi pikatest.QueueInfo) bool { return qi.Messages == 0 && qi.Unacked == 0 }); err != nil {
		t.Fatal(err)
	}
	ch2, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch2.QueueDeclarePassive("no-such-queue", false, false, false, false, nil)
	if e, ok := err.(*amqp.Error); !ok || e.Code != 404 {
		t.Fatalf("passive declare of a missing queue: %v", err)
	}
}
