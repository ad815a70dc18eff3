// Confirms shows publisher confirms: the broker's acknowledgement that it
// has taken responsibility for a published message.
//
// A channel in confirm mode (ConfirmSelect) gets a basic.ack, or a
// basic.nack when the broker could not take it, for every message it
// publishes. This program publishes -n messages three ways:
//
//  1. one at a time, waiting for each confirmation (simple, slowest);
//  2. in batches of -batch, waiting for the whole batch with WaitConfirms;
//  3. all at once, with confirmations handled as they arrive by an
//     OnConfirm callback (fastest; the application tracks what is
//     outstanding).
//
// Finally it publishes a mandatory message that no queue can take, and the
// broker returns it: its Confirmation resolves with ErrReturned.
//
// The messages go to a server-named exclusive queue, deleted at the end.
//
//	go run ./examples/confirms -n 1000 -batch 100
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/pika-go/pika"
)

func main() {
	n := flag.Int("n", 1000, "messages to publish each way")
	batch := flag.Int("batch", 100, "batch size for the batch strategy")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()
	if *n < 1 || *batch < 1 {
		fmt.Fprintln(os.Stderr, "confirms: -n and -batch must be at least 1")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if err := run(ctx, brokerURL(), *n, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "confirms:", err)
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

func run(ctx context.Context, url string, n, batch int) error {
	conn, err := pika.Dial(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	q, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil {
		return err
	}
	defer ch.QueueDelete(context.Background(), q.Name, pika.QueueDeleteOptions{})

	strategies := []struct {
		name string
		run  func(context.Context, *pika.Channel, string, int, int) error
	}{
		{"one at a time", individually},
		{"in batches", inBatches},
		{"with a callback", withCallback},
	}
	for _, s := range strategies {
		// Each strategy gets a fresh channel in confirm mode.
		pch, err := conn.Channel(ctx)
		if err != nil {
			return err
		}
		if err := pch.ConfirmSelect(ctx); err != nil {
			return err
		}
		start := time.Now()
		if err := s.run(ctx, pch, q.Name, n, batch); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Printf("%s: %d messages confirmed in %v\n", s.name, n, time.Since(start).Round(time.Millisecond))
		if err := pch.Close(ctx); err != nil {
			return err
		}
	}

	return returned(ctx, conn)
}

func message(i int) pika.Message {
	return pika.Message{Body: fmt.Appendf(nil, "message %d", i)}
}

// individually publishes each message and waits for its confirmation
// before publishing the next.
func individually(ctx context.Context, ch *pika.Channel, queue string, n, _ int) error {
	for i := range n {
		conf, err := ch.PublishWithConfirm(ctx, "", queue, message(i))
		if err != nil {
			return err
		}
		// nil: acked. ErrNacked: the broker refused it.
		// ErrOutcomeUnknown: the channel closed first.
		if err := conf.Wait(ctx); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return nil
}

// inBatches publishes batch messages, then waits until the broker has
// confirmed all of them. WaitConfirms returns nil only when the broker
// acknowledged every message of the batch; otherwise a *pika.ConfirmsError
// counts the nacked, returned and unknown ones (errors.Is works on each).
// It does not say which: keep the Confirmations (see individually) if the
// application needs to know.
func inBatches(ctx context.Context, ch *pika.Channel, queue string, n, batch int) error {
	for i := 0; i < n; i += batch {
		for j := i; j < min(i+batch, n); j++ {
			if err := ch.Publish(ctx, "", queue, message(j)); err != nil {
				return err
			}
		}
		if err := ch.WaitConfirms(ctx); err != nil {
			var ce *pika.ConfirmsError
			if errors.As(err, &ce) {
				return fmt.Errorf("batch from message %d: %d nacked, %d unknown: %w", i, ce.Nacked, ce.Unknown, err)
			}
			return fmt.Errorf("batch from message %d: %w", i, err)
		}
	}
	return nil
}

// withCallback publishes everything without waiting and counts the
// confirmations as the OnConfirm callback receives them. One basic.ack
// with Multiple set confirms every message up to its tag; Count says how
// many messages each confirmation settled, and Returned how many of those
// the broker returned instead of delivering.
func withCallback(ctx context.Context, ch *pika.Channel, queue string, n, _ int) error {
	var (
		mu       sync.Mutex
		settled  int
		nacked   int
		returned int
		all      = make(chan struct{})
	)
	// Register before publishing. The callback runs on a goroutine of the
	// library's, one confirmation at a time, in order.
	ch.OnConfirm(func(c pika.ConfirmEvent) {
		mu.Lock()
		defer mu.Unlock()
		settled += c.Count
		if !c.Ack {
			nacked += c.Count
		}
		returned += c.Returned + c.MaybeReturned
		if settled == n {
			close(all)
		}
	})
	for i := range n {
		if err := ch.Publish(ctx, "", queue, message(i)); err != nil {
			return err
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		return ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	if nacked > 0 || returned > 0 {
		return fmt.Errorf("%d messages nacked, %d returned", nacked, returned)
	}
	return nil
}

// returned publishes a mandatory message to a routing key no queue is
// bound with. The broker returns it (basic.return) and then confirms it;
// its Confirmation resolves with a *ReturnedError.
func returned(ctx context.Context, conn *pika.Conn) error {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close(context.Background())
	if err := ch.ConfirmSelect(ctx); err != nil {
		return err
	}
	// OnReturn sees every returned message, confirm mode or not. It runs
	// on a goroutine of the library's; hand the message over to ours.
	returns := make(chan *pika.Return, 1)
	ch.OnReturn(func(r *pika.Return) {
		select {
		case returns <- r:
		default:
		}
	})
	conf, err := ch.PublishWithConfirm(ctx, "", "pika-example-no-such-queue", pika.Message{
		Body:      []byte("nobody will get this"),
		Mandatory: true,
	})
	if err != nil {
		return err
	}
	err = conf.Wait(ctx)
	var re *pika.ReturnedError
	if !errors.As(err, &re) {
		return fmt.Errorf("mandatory unroutable message: want ErrReturned, got %v", err)
	}
	fmt.Printf("mandatory message returned: %v (errors.Is ErrReturned: %v, reply code %d)\n",
		err, errors.Is(err, pika.ErrReturned), re.Return.ReplyCode)
	select {
	case r := <-returns:
		fmt.Printf("OnReturn saw %q come back: %d %s\n", r.Body, r.ReplyCode, r.ReplyText)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
