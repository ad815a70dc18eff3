// RPC makes remote procedure calls over RabbitMQ with direct reply-to,
// using pika.RPCClient and pika.Serve.
//
// The server (pika.Serve) consumes requests from a queue, computes a
// Fibonacci number, and publishes the answer to the request's ReplyTo
// address with the request's CorrelationID; it acknowledges a request only
// once the broker confirmed the answer, so a server that dies in between
// leaves the request to another server. A handler error goes back to the
// caller as a *pika.RPCError.
//
// The client (pika.RPCClient) receives answers through RabbitMQ's direct
// reply-to: a no-ack consumer on the pseudo-queue "amq.rabbitmq.reply-to",
// started before the first request on the channel that publishes them, so
// there is no reply queue to declare or delete. Any number of goroutines
// call at once on its one channel; it generates correlation ids, matches
// answers to calls, drops (and counts) answers that come after their
// call's timeout, and fails the calls in flight when the connection is
// lost instead of letting them wait for answers that cannot come.
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
	"sync"
	"time"

	"github.com/pika-go/pika"
)

func main() {
	queue := flag.String("queue", "pika-example-rpc", "the request queue (deleted at the end)")
	n := flag.Int("n", 10, "ask for fib(1) .. fib(n), all at once")
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

	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close(context.Background())
	if _, err := ch.QueueDeclare(ctx, queue, pika.QueueDeclareOptions{}); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := ch.QueueDelete(dctx, queue, pika.QueueDeleteOptions{}); err != nil {
			fmt.Fprintln(os.Stderr, "rpc: deleting the request queue:", err)
		}
	}()

	// The server: four requests at a time, until serveCtx ends.
	serveCtx, stopServer := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- pika.Serve(serveCtx, conn, queue, handle, pika.ServeOptions{Concurrency: 4})
	}()
	defer func() {
		stopServer()
		if err := <-served; err != nil {
			fmt.Fprintln(os.Stderr, "rpc: server:", err)
		}
	}()

	client, err := pika.NewRPCClient(ctx, conn, pika.RPCClientOptions{})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer client.Close(context.Background())

	// All the calls at once, each bounded by its own timeout.
	answers := make([]string, n+1)
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			reply, err := client.Call(cctx, "", queue, pika.Message{
				Properties: pika.Properties{ContentType: "text/plain"},
				Body:       []byte(strconv.Itoa(i)),
			})
			if err != nil {
				errs[i] = err
				return
			}
			answers[i] = string(reply.Body)
		}()
	}
	wg.Wait()
	for i := 1; i <= n; i++ {
		if errs[i] != nil {
			return fmt.Errorf("fib(%d): %w", i, errs[i])
		}
		fmt.Printf("fib(%d) = %s\n", i, answers[i])
	}

	// A request the handler refuses comes back as a *pika.RPCError.
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err = client.Call(cctx, "", queue, pika.Message{Body: []byte("ninety-one")})
	var rerr *pika.RPCError
	if !errors.As(err, &rerr) {
		return fmt.Errorf("a bad request got %v, want a *pika.RPCError", err)
	}
	fmt.Println("bad request refused by the server:", rerr.Text)
	st := client.Stats()
	fmt.Printf("client: %d calls, %d replies, %d errors, %d late replies\n", st.Calls, st.Replies, st.Failed, st.Late)
	return nil
}

// handle answers one request: fib of the number in its body.
func handle(_ context.Context, req *pika.Delivery) (pika.Message, error) {
	k, err := strconv.Atoi(string(req.Body))
	if err != nil || k < 0 || k > 90 {
		return pika.Message{}, fmt.Errorf("not a number between 0 and 90: %q", req.Body)
	}
	return pika.Message{
		Properties: pika.Properties{ContentType: "text/plain"},
		Body:       []byte(strconv.FormatUint(fib(k), 10)),
	}, nil
}

// fib returns the k-th Fibonacci number.
func fib(k int) uint64 {
	a, b := uint64(0), uint64(1)
	for range k {
		a, b = b, a+b
	}
	return a
}
