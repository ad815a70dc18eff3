// Topics routes messages by pattern through a topic exchange.
//
// Routing keys of a topic exchange are words separated by dots, such as
// "kern.critical" (facility.severity). A binding key is a pattern over
// them: "*" stands for exactly one word, "#" for zero or more words. Here
// the "critical" subscriber binds "*.critical", the "kernel" subscriber
// binds "kern.#", and the "everything" subscriber binds "#". A message goes
// to every queue with a matching binding, once per queue even if several of
// its bindings match. The exchange is deleted at the end; the subscribers'
// queues are exclusive and go with the connection.
//
//	go run ./examples/topics
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pika-go/pika"
)

// subscriber is a queue bound to the exchange with some patterns.
type subscriber struct {
	name     string
	patterns []string
}

var subscribers = []subscriber{
	{"critical", []string{"*.critical"}},
	{"kernel", []string{"kern.#"}},
	{"everything", []string{"#"}},
}

// logs are the messages to publish: routing key and text.
var logs = [][2]string{
	{"kern.critical", "kernel panic"},
	{"kern.info", "module loaded"},
	{"app.critical", "out of memory"},
	{"app.info", "request served"},
	{"kern.net.warning", "link down on eth0"},
}

func main() {
	exchange := flag.String("exchange", "pika-example-topic-logs", "the topic exchange to use (deleted at the end)")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if err := run(ctx, brokerURL(), *exchange); err != nil {
		fmt.Fprintln(os.Stderr, "topics:", err)
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
	if err := ch.ExchangeDeclare(ctx, exchange, pika.ExchangeTopic, pika.ExchangeDeclareOptions{}); err != nil {
		return err
	}
	defer ch.ExchangeDelete(context.Background(), exchange, pika.ExchangeDeleteOptions{})

	consumers := make([]*pika.Consumer, len(subscribers))
	for i, s := range subscribers {
		cons, err := subscribe(ctx, conn, exchange, s.patterns)
		if err != nil {
			return fmt.Errorf("subscriber %s: %w", s.name, err)
		}
		consumers[i] = cons
	}

	for _, l := range logs {
		key, text := l[0], l[1]
		if err := ch.Publish(ctx, exchange, key, pika.Message{Body: []byte(text)}); err != nil {
			return err
		}
		fmt.Printf("published [%s] %s\n", key, text)
	}

	var wg sync.WaitGroup
	errs := make([]error, len(subscribers))
	for i, s := range subscribers {
		// How many messages this subscriber should get: those matching
		// any of its patterns.
		want := 0
		for _, l := range logs {
			if slices.ContainsFunc(s.patterns, func(p string) bool { return matches(p, l[0]) }) {
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
	fmt.Println("every subscriber got the messages its patterns match")
	return nil
}

// subscribe declares a server-named exclusive queue on a channel of its
// own, binds it with each pattern and consumes from it.
func subscribe(ctx context.Context, conn *pika.Conn, exchange string, patterns []string) (*pika.Consumer, error) {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	q, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil {
		return nil, err
	}
	for _, p := range patterns {
		if err := ch.QueueBind(ctx, q.Name, exchange, p, pika.BindOptions{}); err != nil {
			return nil, err
		}
	}
	return ch.Consume(ctx, q.Name, pika.ConsumeOptions{AutoAck: true})
}

// matches reports whether routing key matches binding pattern the way a
// topic exchange decides it: "*" matches exactly one word, "#" zero or
// more. The example uses it only to know how many messages to wait for.
func matches(pattern, key string) bool {
	return matchWords(strings.Split(pattern, "."), strings.Split(key, "."))
}

func matchWords(p, k []string) bool {
	if len(p) == 0 {
		return len(k) == 0
	}
	if p[0] == "#" {
		// "#" takes zero words, or one and stays.
		return matchWords(p[1:], k) || len(k) > 0 && matchWords(p, k[1:])
	}
	if len(k) == 0 {
		return false
	}
	return (p[0] == "*" || p[0] == k[0]) && matchWords(p[1:], k[1:])
}
