package pikatest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/pikatest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, b *pikatest.Broker) (*pika.Conn, *pika.Channel) {
	t.Helper()
	ctx := testCtx(t)
	conn, err := pika.Dial(ctx, b.URL())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatalf("Channel: %v", err)
	}
	return conn, ch
}

func replyCode(err error) int {
	var e *pika.Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return 0
}

func TestPikaRoundTrip(t *testing.T) {
	b := pikatest.NewBroker(t)
	ctx := testCtx(t)
	_, ch := dial(t, b)
	q, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		conf, err := ch.PublishWithConfirm(ctx, "", q.Name, pika.Message{Body: []byte{byte('0' + i)}, Properties: pika.Properties{MessageID: "m"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := conf.Wait(ctx); err != nil {
			t.Fatalf("confirm %d: %v", i, err)
		}
	}
	info, err := b.WaitQueue(ctx, q.Name, func(qi pikatest.QueueInfo) bool { return qi.Messages == 10 })
	if err != nil {
		t.Fatalf("WaitQueue: %v (%+v)", err, info)
	}
	if msgs := b.Messages(q.Name); len(msgs) != 10 || string(msgs[3].Body) != "3" || msgs[3].Properties.MessageID != "m" {
		t.Fatalf("Messages = %+v", msgs)
	}
	d, ok, err := ch.Get(ctx, q.Name, pika.GetOptions{AutoAck: false})
	if err != nil || !ok || string(d.Body) != "0" || d.MessageCount != 9 {
		t.Fatalf("Get = %+v %v %v", d, ok, err)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, q.Name, pika.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 10; i++ {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(d.Body) != string(rune('0'+i)) {
			t.Fatalf("delivery %d body %q", i, d.Body)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.WaitQueue(ctx, q.Name, func(qi pikatest.QueueInfo) bool { return qi.Messages == 0 && qi.Unacked == 0 && qi.Consumers == 1 }); err != nil {
		t.Fatal(err)
	}
}

func TestPikaErrors(t *testing.T) {
	b := pikatest.NewBroker(t)
	ctx := testCtx(t)
	conn, ch := dial(t, b)
	_, err := ch.QueueDeclarePassive(ctx, "missing")
	if replyCode(err) != 404 {
		t.Fatalf("passive declare of a missing queue: %v", err)
	}
	ch2, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = ch2.ExchangeDeclare(ctx, "x", "nonsense", pika.ExchangeDeclareOptions{})
	var pe *pika.Error
	if !errors.As(err, &pe) || pe.Code != 503 || !pe.Conn {
		t.Fatalf("invalid exchange type: %v, want a connection error 503", err)
	}
}
