// RPC makes remote procedure calls over RabbitMQ with direct reply-to.
//
// The server consumes requests from a queue, computes a Fibonacci number,
// and publishes the answer to the request's ReplyTo address with the
// request's CorrelationID. The client receives answers through RabbitMQ's
// direct reply-to: it consumes from the pseudo-queue
// "amq.rabbitmq.reply-to" in no-ack mode, BEFORE publishing, and on the
// same channel that publishes the requests with ReplyTo set to
// "amq.rabbitmq.reply-to". The broker rewrites ReplyTo into a name that
// routes the answer straight back to this consumer, with no reply queue to
// declare or delete. The client matches answers to requests by
// CorrelationID and bounds each call with a timeout.
//
// Server and client run in one process to keep the example
// self-contained; in real life they are separate programs.
//
//	go run ./examples/rpc -n 10
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/pika-go/pika"
)

// directReplyTo is RabbitMQ's direct reply-to pseudo-queue.
const directReplyTo = "amq.rabbitmq.reply-to"

func main() {
	queue := flag.String("queue", "pika-example-rpc", "the request queue (deleted at the end)")
	n := flag.Int("n", 10, "ask for fib(1) .. fib(n)")
	callTimeout := flag.Duration("call-timeout", 5*time.Second, "how long one call may take")
	timeout := flag.Duration("timeout", 20*time.Second, "give up after this long")
	flag.Parse()
	if *n < 1 || *n > 90 {
		fmt.Fprintln(os.Stderr, "rpc: -n must be between 1 and 90")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if err := run(ctx, brokerURL(), *queue, *n, *callTimeout); err != nil {
		fmt.Fprintln(os.Stderr, "rpc:", err)
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

func run(ctx context.Context, url, queue string, n int, callTimeout time.Duration) error {
	conn, err := pika.Dial(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	server, err := startServer(ctx, conn, queue)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		server.cons.Cancel(cctx)
		select {
		case <-server.cons.Done(): // the handler has returned for the last time
		case <-cctx.Done():
		}
		if _, err := server.ch.QueueDelete(cctx, queue, pika.QueueDeleteOptions{}); err != nil {
			fmt.Fprintln(os.Stderr, "rpc: deleting the request queue:", err)
		}
	}()

	client, err := newClient(ctx, conn, queue)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	for i := 1; i <= n; i++ {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		answer, err := client.call(cctx, strconv.Itoa(i))
		cancel()
		if err != nil {
			return fmt.Errorf("fib(%d): %w", i, err)
		}
		fmt.Printf("fib(%d) = %s\n", i, answer)
	}
	return nil
}

// server is the RPC server: a consumer on the request queue.
type server struct {
	ch   *pika.Channel
	cons *pika.Consumer
}

// startServer declares the request queue and serves it.
func startServer(ctx context.Context, conn *pika.Conn, queue string) (*server, error) {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := ch.QueueDeclare(ctx, queue, pika.QueueDeclareOptions{}); err != nil {
		return nil, err
	}
	// One request at a time per server; start more servers to scale.
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 1}); err != nil {
		return nil, err
	}
	cons, err := ch.ConsumeFunc(ctx, queue, pika.ConsumeOptions{}, func(_ context.Context, d *pika.Delivery) {
		answer := "error: not a number between 0 and 90"
		if k, err := strconv.Atoi(string(d.Body)); err == nil && k >= 0 && k <= 90 {
			answer = strconv.FormatUint(fib(k), 10)
		}
		// Reply through the default exchange to the address the client
		// gave, echoing its correlation id. The handler has no ctx of
		// its own; bound the publish anyway.
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := ch.Publish(pctx, "", d.ReplyTo, pika.Message{
			Properties: pika.Properties{CorrelationID: d.CorrelationID, ContentType: "text/plain"},
			Body:       []byte(answer),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "rpc server: reply:", err)
		}
		// Ack after replying: a server that dies in between leaves the
		// request to another server.
		d.Ack(false)
	})
	if err != nil {
		return nil, err
	}
	return &server{ch: ch, cons: cons}, nil
}

// fib returns the k-th Fibonacci number.
func fib(k int) uint64 {
	a, b := uint64(0), uint64(1)
	for range k {
		a, b = b, a+b
	}
	return a
}

// client makes calls one at a time on one channel.
type client struct {
	ch      *pika.Channel
	queue   string
	replies *pika.Consumer
	next    int
}

func newClient(ctx context.Context, conn *pika.Conn, queue string) (*client, error) {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	// Direct reply-to requires consuming in no-ack mode, before the first
	// request is published, on the channel that publishes the requests.
	replies, err := ch.Consume(ctx, directReplyTo, pika.ConsumeOptions{AutoAck: true})
	if err != nil {
		return nil, err
	}
	return &client{ch: ch, queue: queue, replies: replies}, nil
}

// call sends one request and waits, bounded by ctx, for its answer.
func (c *client) call(ctx context.Context, request string) (string, error) {
	c.next++
	corrID := "req-" + strconv.Itoa(c.next)
	err := c.ch.Publish(ctx, "", c.queue, pika.Message{
		Properties: pika.Properties{
			ReplyTo:       directReplyTo,
			CorrelationID: corrID,
			ContentType:   "text/plain",
		},
		Body: []byte(request),
	})
	if err != nil {
		return "", err
	}
	for {
		d, err := c.replies.Next(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("no answer within the call timeout: %w", err)
		}
		if err != nil {
			return "", err
		}
		if d.CorrelationID == corrID {
			return string(d.Body), nil
		}
		// An answer to an earlier call that timed out: drop it.
	}
}
