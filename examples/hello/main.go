// Hello publishes "Hello, World!" to a queue and consumes it back.
//
// It is the smallest complete pika program: connect, open a channel, declare
// a queue, publish, consume, acknowledge, clean up. The broker URL comes
// from the AMQP_URL environment variable (default
// amqp://guest:guest@127.0.0.1:5672/).
//
//	go run ./examples/hello
//	go run ./examples/hello -body "Hi there"
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/pika-go/pika"
)

func main() {
	body := flag.String("body", "Hello, World!", "the message to send")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	flag.Parse()

	// The whole program is bounded: Ctrl-C or the timeout cancels ctx, and
	// every call that can block takes ctx.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if err := run(ctx, brokerURL(), *body); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

// brokerURL returns $AMQP_URL, or the local broker's default URL.
func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func run(ctx context.Context, url, body string) error {
	conn, err := pika.Dial(ctx, url)
	if err != nil {
		return err
	}
	// Close waits (up to 5 s) for the broker's close-ok. Use a fresh
	// context so that closing works even after ctx has ended.
	defer conn.Close(context.Background())

	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}

	// An empty name asks the broker to choose one. The queue is exclusive
	// to this connection, so no other program can interfere with it, and
	// the broker deletes it when the connection closes; we delete it
	// explicitly anyway, to show how.
	q, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil {
		return err
	}
	defer ch.QueueDelete(context.Background(), q.Name, pika.QueueDeleteOptions{})

	// The default exchange ("") routes a message to the queue named by its
	// routing key.
	err = ch.Publish(ctx, "", q.Name, pika.Message{
		Properties: pika.Properties{ContentType: "text/plain"},
		Body:       []byte(body),
	})
	if err != nil {
		return err
	}
	fmt.Printf("sent: %s\n", body)

	// Consume with manual acknowledgements (the default): the broker keeps
	// the message until we Ack it.
	cons, err := ch.Consume(ctx, q.Name, pika.ConsumeOptions{})
	if err != nil {
		return err
	}
	d, err := cons.Next(ctx) // waits for the delivery, or for ctx to end
	if err != nil {
		return fmt.Errorf("waiting for the message: %w", err)
	}
	fmt.Printf("received: %s\n", d.Body)
	if err := d.Ack(false); err != nil {
		return err
	}
	return cons.Cancel(ctx)
}
