package pikatest_test

import (
	"context"
	"fmt"
	"log"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/pikatest"
)

// A test starts a broker, points the code under test at its URL, and
// checks what reached the broker with the control API. NewBroker needs the
// test's *testing.T, so this example shows the body of a test function.
func ExampleNewBroker() {
	testPublishesOrder := func(t *testing.T) {
		b := pikatest.NewBroker(t) // closed when the test ends
		ctx := context.Background()

		conn, err := pika.Dial(ctx, b.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		ch, err := conn.Channel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare(ctx, "orders", pika.QueueDeclareOptions{}); err != nil {
			t.Fatal(err)
		}
		// The code under test would publish here.
		if err := ch.Publish(ctx, "", "orders", pika.Message{Body: []byte(`{"order":42}`)}); err != nil {
			t.Fatal(err)
		}

		// Wait for the broker to have it, without sleeping.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := b.WaitQueue(wctx, "orders", func(q pikatest.QueueInfo) bool { return q.Messages == 1 }); err != nil {
			t.Fatal(err)
		}
		if got := string(b.Messages("orders")[0].Body); got != `{"order":42}` {
			t.Fatalf("body %s", got)
		}

		// Fault injection: close the connection as `rabbitmqctl
		// close_connection` would, and check the code under test recovers.
		for _, c := range b.Connections() {
			b.CloseConnection(c.ID, "test: simulated operator action")
		}
	}
	_ = testPublishesOrder // go test calls functions named TestXxx with t
}

// New starts a broker outside a test, here to show a round trip that
// runs offline.
func ExampleNew() {
	b, err := pikatest.New(pikatest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// In memory: no TCP at all.
	cfg, err := pika.ParseURL(b.URL())
	if err != nil {
		log.Fatal(err)
	}
	cfg.Dial = b.Dial
	conn, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, "greetings", pika.QueueDeclareOptions{})
	if err != nil {
		log.Fatal(err)
	}
	ch.Publish(ctx, "", q.Name, pika.Message{Body: []byte("hello")})
	info, err := b.WaitQueue(ctx, q.Name, func(q pikatest.QueueInfo) bool { return q.Messages == 1 })
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Name, info.Messages)
	d, ok, err := ch.Get(ctx, q.Name, pika.GetOptions{AutoAck: true})
	if err != nil || !ok {
		log.Fatal(ok, err)
	}
	fmt.Println(string(d.Body))
	// Output:
	// greetings 1
	// hello
}
