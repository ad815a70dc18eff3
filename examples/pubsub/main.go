// Pubsub delivers every message to every subscriber through a fanout
// exchange.
//
// A fanout exchange ignores routing keys and copies each message to every
// queue bound to it. Each of the two subscribers declares a queue of its own
// with a name the broker chooses, exclusive to this connection (the broker
// deletes it when the connection closes), and binds it to the exchange. The
// publisher then sends -n messages, and each subscriber receives all of
// them. The exchange is deleted at the end.
//
//	go run ./examples/pubsub -n 3
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/pika-go/pika"
)

func main() {
	exchange := flag.String("exchange", "pika-example-logs", "the fanout exchange to use (deleted at the end)")
	n := flag.Int("n", 3, "how many messages to publish")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if err := run(ctx, brokerURL(), *exchange, *n); err != nil {
		fmt.Fprintln(os.Stderr, "pubsub:", err)
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

func run(ctx context.Context, url, exchange string, n int) error {
	conn, err := pika.Dial(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(ctx, exchange, pika.ExchangeFanout, pika.ExchangeDeclareOptions{}); err != nil {
		return err
	}
	defer ch.ExchangeDelete(context.Background(), exchange, pika.ExchangeDeleteOptions{})

	// Subscribe before publishing: a fanout exchange drops messages that
	// no queue is bound to receive.
	var subs []*pika.Consumer
	for i := 1; i <= 2; i++ {
		cons, err := subscribe(ctx, conn, exchange)
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
		subs = append(subs, cons)
	}

	for i := 1; i <= n; i++ {
		body := fmt.Sprintf("log entry %d", i)
		// The routing key is ignored by fanout exchanges.
		if err := ch.Publish(ctx, exchange, "", pika.Message{Body: []byte(body)}); err != nil {
			return err
		}
		fmt.Printf("published %q\n", body)
	}

	// Each subscriber reads its n messages in a goroutine of its own.
	var wg sync.WaitGroup
	errs := make([]error, len(subs))
	got := make([][]string, len(subs))
	for i, cons := range subs {
		wg.Go(func() {
			for range n {
				d, err := cons.Next(ctx)
				if err != nil {
					errs[i] = fmt.Errorf("subscriber %d: %w", i+1, err)
					return
				}
				got[i] = append(got[i], string(d.Body))
			}
		})
	}
	wg.Wait()
	for i := range subs {
		if errs[i] != nil {
			return errs[i]
		}
		for _, body := range got[i] {
			fmt.Printf("subscriber %d received %q\n", i+1, body)
		}
		fmt.Printf("subscriber %d got %d messages\n", i+1, len(got[i]))
	}
	return nil
}

// subscribe declares a server-named exclusive queue on a channel of its
// own, binds it to the exchange and consumes from it.
func subscribe(ctx context.Context, conn *pika.Conn, exchange string) (*pika.Consumer, error) {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	q, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil {
		return nil, err
	}
	if err := ch.QueueBind(ctx, q.Name, exchange, "", pika.BindOptions{}); err != nil {
		return nil, err
	}
	// AutoAck: the broker considers a message delivered once sent. Fine
	// for log-like messages; use manual acks when losing one matters.
	return ch.Consume(ctx, q.Name, pika.ConsumeOptions{AutoAck: true})
}
