// Routing delivers messages selectively through a direct exchange.
//
// A direct exchange sends a message to the queues bound with exactly its
// routing key. Here log messages are published with their severity as the
// routing key. The "disk" subscriber binds its queue with "error" only; the
// "console" subscriber binds with "info", "warning" and "error". A
// "debug" message matches no binding, so the exchange drops it. The
// exchange is deleted at the end; the subscribers' queues are exclusive and
// go with the connection.
//
//	go run ./examples/routing
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"
	"time"

	"github.com/pika-go/pika"
)

// subscriber is a queue bound to the exchange with some severities.
type subscriber struct {
	name       string
	severities []string
}

var subscribers = []subscriber{
	{"disk", []string{"error"}},
	{"console", []string{"info", "warning", "error"}},
}

// logs are the messages to publish: severity (the routing key) and text.
var logs = [][2]string{
	{"info", "service started"},
	{"warning", "disk 85% full"},
	{"error", "cannot write /var/data"},
	{"debug", "cache hit ratio 0.93"},
	{"info", "request served"},
}

func main() {
	exchange := flag.String("exchange", "pika-example-direct-logs", "the direct exchange to use (deleted at the end)")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if err := run(ctx, brokerURL(), *exchange); err != nil {
		fmt.Fprintln(os.Stderr, "routing:", err)
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

func run(ctx context.Context, url, exchange string) error {
	conn, err := pika.Dial(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(ctx, exchange, pika.ExchangeDirect, pika.ExchangeDeclareOptions{}); err != nil {
		return err
	}
	defer ch.ExchangeDelete(context.Background(), exchange, pika.ExchangeDeleteOptions{})

	// Bind before publishing: messages that match no binding are dropped.
	consumers := make([]*pika.Consumer, len(subscribers))
	for i, s := range subscribers {
		cons, err := subscribe(ctx, conn, exchange, s.severities)
		if err != nil {
			return fmt.Errorf("subscriber %s: %w", s.name, err)
		}
		consumers[i] = cons
	}

	for _, l := range logs {
		severity, text := l[0], l[1]
		if err := ch.Publish(ctx, exchange, severity, pika.Message{Body: []byte(text)}); err != nil {
			return err
		}
		fmt.Printf("published [%s] %s\n", severity, text)
	}

	// Each subscriber expects the messages whose severity it bound.
	var wg sync.WaitGroup
	errs := make([]error, len(subscribers))
	for i, s := range subscribers {
		want := 0
		for _, l := range logs {
			if slices.Contains(s.severities, l[0]) {
				want++
			}
		}
		wg.Go(func() {
			for range want {
				d, err := consumers[i].Next(ctx)
				if err != nil {
					errs[i] = fmt.Errorf("subscriber %s: %w", s.name, err)
					return
				}
				fmt.Printf("%s received [%s] %s\n", s.name, d.RoutingKey, d.Body)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	fmt.Println("every subscriber got the severities it bound")
	return nil
}

// subscribe declares a server-named exclusive queue on a channel of its
// own, binds it once per severity and consumes from it.
func subscribe(ctx context.Context, conn *pika.Conn, exchange string, severities []string) (*pika.Consumer, error) {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	q, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil {
		return nil, err
	}
	for _, sev := range severities {
		if err := ch.QueueBind(ctx, q.Name, exchange, sev, pika.BindOptions{}); err != nil {
			return nil, err
		}
	}
	return ch.Consume(ctx, q.Name, pika.ConsumeOptions{AutoAck: true})
}
