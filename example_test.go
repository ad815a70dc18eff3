package pika_test

// These examples need a RabbitMQ broker, so they have no Output comments:
// go test compiles them but does not run them. The programs under examples/
// are complete, runnable versions, tested against a broker.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/pika-go/pika"
)

func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// ctx bounds connecting only; the connection lives until Close.
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(context.Background())

	fmt.Println("connected to", conn.RemoteAddr())
}

func ExampleDialConfig() {
	cfg, err := pika.ParseURL("amqp://guest:guest@localhost:5672/?heartbeat=30")
	if err != nil {
		log.Fatal(err)
	}
	cfg.ConnectionName = "orders-service"
	// Every frame in and out, decoded, at Debug level.
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))

	conn, err := pika.DialConfig(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(context.Background())
	conn.OnClose(func(err error) {
		if err != nil {
			log.Println("connection lost for good:", err)
		}
	})
}

func ExampleChannel_Publish() {
	ctx := context.Background()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	q, err := ch.QueueDeclare(ctx, "tasks", pika.QueueDeclareOptions{Durable: true})
	if err != nil {
		log.Fatal(err)
	}
	// Publish returns once the message is queued for the socket; ctx
	// bounds only waiting for the broker to accept more (a resource alarm,
	// channel.flow, a full write buffer).
	err = ch.Publish(ctx, "", q.Name, pika.Message{
		Properties: pika.Properties{
			ContentType:  "application/json",
			DeliveryMode: pika.Persistent,
			MessageID:    "order-42",
		},
		Body: []byte(`{"order":42}`),
	})
	if err != nil {
		log.Fatal(err)
	}
}

func ExampleChannel_ConsumeFunc() {
	ctx := context.Background()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	// A prefetch count bounds the unacknowledged messages the broker sends,
	// and so the memory the consumer uses.
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 50}); err != nil {
		log.Fatal(err)
	}
	// The handler runs on a goroutine of the consumer's own, one delivery
	// at a time; a slow handler delays only this consumer.
	cons, err := ch.ConsumeFunc(ctx, "tasks", pika.ConsumeOptions{}, func(_ context.Context, d *pika.Delivery) {
		fmt.Printf("got %s\n", d.Body)
		d.Ack(false)
	})
	if err != nil {
		log.Fatal(err)
	}

	time.Sleep(time.Minute) // serve for a while
	if err := cons.Cancel(ctx); err != nil {
		log.Fatal(err)
	}
	<-cons.Done() // the handler has returned for the last time
}

// A throughput consumer that trades up to 1 ms of latency for CPU: the
// socket out of the runtime's poller (Linux, plain TCP), reads that
// linger so that each brings many deliveries, a handler on the reader
// that never blocks, and one acknowledgement per 100 messages.
func ExampleConfig_readLinger() {
	ctx := context.Background()
	cfg, err := pika.ParseURL("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	cfg.BlockingRead = true
	cfg.ReadLinger = time.Millisecond
	conn, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 1000}); err != nil {
		log.Fatal(err)
	}
	var n int
	cons, err := ch.ConsumeFunc(ctx, "events", pika.ConsumeOptions{Inline: true}, func(_ context.Context, d *pika.Delivery) {
		n++ // one call at a time: no lock needed
		if n%100 == 0 {
			d.Ack(true) // this one and all before it; it also ends a linger
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	time.Sleep(time.Minute) // serve for a while
	if err := cons.Cancel(ctx); err != nil {
		log.Fatal(err)
	}
	<-cons.Done()
	// Deliveries not acknowledged yet go back to the queue when the
	// channel closes (with the connection, here).
}

func ExampleConsumer_Next() {
	ctx := context.Background()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	cons, err := ch.Consume(ctx, "tasks", pika.ConsumeOptions{})
	if err != nil {
		log.Fatal(err)
	}

	// Pull deliveries at the application's pace. A ctx that ends stops the
	// wait, not the consumer: the next call gets the next delivery.
	for {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := cons.Next(wctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Println("idle for 5 s")
			break
		}
		if err != nil {
			log.Fatal("consumer ended: ", err) // e.g. ErrConsumerCancelled
		}
		fmt.Printf("got %s\n", d.Body)
		if err := d.Ack(false); err != nil {
			log.Fatal(err)
		}
	}
}

func ExampleConsumer_All() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(context.Background())
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	cons, err := ch.Consume(ctx, "events", pika.ConsumeOptions{AutoAck: true})
	if err != nil {
		log.Fatal(err)
	}
	// The loop ends when ctx ends or the consumer ends; an end the
	// application did not ask for comes as a final non-nil err.
	for d, err := range cons.All(ctx) {
		if err != nil {
			log.Println("consumer ended:", err)
			break
		}
		fmt.Printf("%s: %s\n", d.RoutingKey, d.Body)
	}
}

func ExampleChannel_PublishWithConfirm() {
	ctx := context.Background()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.ConfirmSelect(ctx); err != nil {
		log.Fatal(err)
	}

	conf, err := ch.PublishWithConfirm(ctx, "", "tasks", pika.Message{
		Body:      []byte("important"),
		Mandatory: true, // returned (ErrReturned) if no queue takes it
	})
	if err != nil {
		log.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	switch err := conf.Wait(wctx); {
	case err == nil:
		fmt.Println("the broker has it")
	case errors.Is(err, pika.ErrReturned):
		fmt.Println("no queue took it:", err)
	case errors.Is(err, pika.ErrNacked):
		fmt.Println("the broker refused it")
	case errors.Is(err, pika.ErrOutcomeUnknown):
		fmt.Println("the channel closed first; publish again if duplicates are fine")
	default:
		fmt.Println("gave up waiting:", err)
	}
}

func ExampleChannel_WaitConfirms() {
	ctx := context.Background()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.ConfirmSelect(ctx); err != nil {
		log.Fatal(err)
	}
	for i := range 100 {
		if err := ch.Publish(ctx, "", "tasks", pika.Message{Body: []byte(strconv.Itoa(i))}); err != nil {
			log.Fatal(err)
		}
	}
	// Wait for the broker's verdict on all 100.
	if err := ch.WaitConfirms(ctx); err != nil {
		log.Fatal(err) // ErrNacked: at least one was refused
	}
}

// Example_rpc makes a call over RabbitMQ's direct reply-to: the reply
// consumer on "amq.rabbitmq.reply-to" must be in no-ack mode, started
// before publishing, on the channel that publishes the request.
func Example_rpc() {
	ctx := context.Background()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	replies, err := ch.Consume(ctx, "amq.rabbitmq.reply-to", pika.ConsumeOptions{AutoAck: true})
	if err != nil {
		log.Fatal(err)
	}
	err = ch.Publish(ctx, "", "rpc_queue", pika.Message{
		Properties: pika.Properties{ReplyTo: "amq.rabbitmq.reply-to", CorrelationID: "call-1"},
		Body:       []byte("30"),
	})
	if err != nil {
		log.Fatal(err)
	}

	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		d, err := replies.Next(cctx)
		if err != nil {
			log.Fatal("no answer: ", err)
		}
		if d.CorrelationID == "call-1" {
			fmt.Printf("answer: %s\n", d.Body)
			return
		}
	}
}

func ExampleError() {
	ctx := context.Background()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	_, err = ch.QueueDeclarePassive(ctx, "no-such-queue")
	if errors.Is(err, pika.ErrNotFound) {
		// The broker closed the channel (404 NOT_FOUND); the connection
		// and its other channels go on.
		var e *pika.Error
		if errors.As(err, &e) {
			fmt.Println(e.Code, e.Text, "connection-level:", e.Conn)
		}
	}
}

func ExampleRPCClient_Call() {
	ctx := context.Background()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(context.Background())

	// One client for the whole program: calls from any goroutine share
	// its channel.
	client, err := pika.NewRPCClient(ctx, conn, pika.RPCClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close(context.Background())

	// Always bound a call: a server that never answers is seen only
	// through the ctx.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := client.Call(cctx, "", "fib", pika.Message{Body: []byte("30")})
	var remote *pika.RPCError
	switch {
	case errors.As(err, &remote):
		log.Println("the server failed:", remote.Text)
	case errors.Is(err, pika.ErrRPCInterrupted):
		log.Println("connection lost during the call; retry if the request is idempotent")
	case errors.Is(err, pika.ErrReturned):
		log.Println("no server queue for the request")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("fib(30) =", string(reply.Body))
	}
}

func ExampleServe() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	conn, err := pika.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(context.Background())

	// Serve answers requests from the "fib" queue until ctx ends, four at
	// a time. An error goes back to the caller as an *RPCError.
	err = pika.Serve(ctx, conn, "fib", func(ctx context.Context, req *pika.Delivery) (pika.Message, error) {
		n, err := strconv.Atoi(string(req.Body))
		if err != nil || n < 0 || n > 90 {
			return pika.Message{}, fmt.Errorf("want a number from 0 to 90, got %q", req.Body)
		}
		a, b := 0, 1
		for range n {
			a, b = b, a+b
		}
		return pika.Message{Body: []byte(strconv.Itoa(a))}, nil
	}, pika.ServeOptions{Concurrency: 4})
	if err != nil {
		log.Fatal(err) // the consumer ended: queue deleted, connection closed, ...
	}
}

// A stream consumer on a cluster that neither loses nor re-reads messages
// across node failures: the tracker makes every restart of the consumer
// (recovery on another node included) attach right after the last offset
// processed.
func ExampleStreamTracker() {
	ctx := context.Background()
	cfg, err := pika.ParseURL("amqp://guest:guest@node1:5672,node2:5672,node3:5672/")
	if err != nil {
		log.Fatal(err)
	}
	conn, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(context.Background())
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	args, _ := pika.QueueArgs{Type: pika.QueueStream}.Table()
	if _, err := ch.QueueDeclare(ctx, "events", pika.QueueDeclareOptions{Durable: true, Arguments: args}); err != nil {
		log.Fatal(err)
	}
	// Streams need a prefetch count and manual acknowledgements.
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 100}); err != nil {
		log.Fatal(err)
	}
	tracker := pika.NewStreamTracker(pika.StreamFirst)
	cons, err := ch.Consume(ctx, "events", pika.ConsumeOptions{Stream: tracker})
	if err != nil {
		log.Fatal(err)
	}
	for {
		d, err := cons.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		off, _ := pika.StreamOffsetOf(d)
		fmt.Printf("%d: %s\n", off, d.Body)
		tracker.Processed(d)
		d.Ack(false)
	}
}
