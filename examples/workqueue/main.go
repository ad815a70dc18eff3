// Workqueue distributes tasks among several workers.
//
// A producer sends -n tasks to a durable queue as persistent messages, so
// that they would survive a broker restart, and waits for the broker to
// confirm them. -workers workers, each on a channel of its own with a
// prefetch count of 1, take the tasks: the broker gives a worker its next
// task only after it acknowledged the previous one, so a busy worker is not
// handed more work while an idle one waits. Each task takes as long as the
// number of dots in its body times -work. The program prints who did what,
// then deletes the queue.
//
// The workers run as goroutines of this one process to keep the example
// self-contained; in real life they would be separate processes running
// the same worker code.
//
//	go run ./examples/workqueue -n 12 -workers 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/pika-go/pika"
)

type options struct {
	queue   string
	tasks   int
	workers int
	work    time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.queue, "queue", "pika-example-tasks", "the durable queue to use (deleted at the end)")
	flag.IntVar(&o.tasks, "n", 12, "how many tasks to send")
	flag.IntVar(&o.workers, "workers", 3, "how many workers")
	flag.DurationVar(&o.work, "work", 20*time.Millisecond, "time a task takes per dot in its body")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()
	if o.tasks < 1 || o.workers < 1 {
		fmt.Fprintln(os.Stderr, "workqueue: -n and -workers must be at least 1")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if err := run(ctx, brokerURL(), o); err != nil {
		fmt.Fprintln(os.Stderr, "workqueue:", err)
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

// done reports a finished task.
type done struct {
	worker int
	task   string
}

func run(ctx context.Context, url string, o options) error {
	conn, err := pika.Dial(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	// A durable queue survives a broker restart (with persistent messages
	// in it). Declaring is idempotent: producers and workers may all
	// declare it, whoever starts first.
	if _, err := ch.QueueDeclare(ctx, o.queue, pika.QueueDeclareOptions{Durable: true}); err != nil {
		return err
	}
	defer func() {
		// Durable queues outlive the program: delete it, with a context
		// of its own so that this runs even after a timeout.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := ch.QueueDelete(cctx, o.queue, pika.QueueDeleteOptions{}); err != nil {
			fmt.Fprintln(os.Stderr, "workqueue: deleting the queue:", err)
			return
		}
		fmt.Printf("deleted queue %s\n", o.queue)
	}()

	// Start the workers first, so that the first tasks are shared too.
	results := make(chan done, o.tasks)
	var consumers []*pika.Consumer
	for w := 1; w <= o.workers; w++ {
		cons, err := startWorker(ctx, conn, o, w, results)
		if err != nil {
			return fmt.Errorf("worker %d: %w", w, err)
		}
		consumers = append(consumers, cons)
	}

	if err := produce(ctx, ch, o); err != nil {
		return err
	}

	// Wait until every task is done.
	count := make(map[int]int)
	for range o.tasks {
		select {
		case r := <-results:
			count[r.worker]++
		case <-ctx.Done():
			return fmt.Errorf("waiting for the workers: %w", ctx.Err())
		}
	}
	for _, cons := range consumers {
		if err := cons.Cancel(ctx); err != nil {
			return err
		}
		select {
		case <-cons.Done(): // the handler has returned for the last time
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for w := 1; w <= o.workers; w++ {
		fmt.Printf("worker %d did %d tasks\n", w, count[w])
	}
	fmt.Printf("all %d tasks done\n", o.tasks)
	return nil
}

// produce sends the tasks as persistent messages and waits until the broker
// has confirmed them all: only then are they safely in the queue.
func produce(ctx context.Context, ch *pika.Channel, o options) error {
	// In confirm mode the broker acknowledges every message once it has
	// taken responsibility for it (for persistent messages in durable
	// queues: once written to disk).
	if err := ch.ConfirmSelect(ctx); err != nil {
		return err
	}
	for i := 1; i <= o.tasks; i++ {
		body := fmt.Sprintf("task %d %s", i, strings.Repeat(".", i%3+1))
		err := ch.Publish(ctx, "", o.queue, pika.Message{
			Properties: pika.Properties{DeliveryMode: pika.Persistent, ContentType: "text/plain"},
			Body:       []byte(body),
		})
		if err != nil {
			return err
		}
		fmt.Printf("sent %q\n", body)
	}
	// WaitConfirms returns nil only when the broker acknowledged every task
	// published since ConfirmSelect. Otherwise its *pika.ConfirmsError says
	// how many were nacked or of unknown outcome. A lost connection does
	// not make an outcome unknown here: recovery publishes the unconfirmed
	// tasks again and WaitConfirms waits for the copies (a worker may then
	// see a task twice).
	if err := ch.WaitConfirms(ctx); err != nil {
		var ce *pika.ConfirmsError
		if errors.As(err, &ce) {
			return fmt.Errorf("the broker did not take every task (%d nacked, %d unknown): %w", ce.Nacked, ce.Unknown, err)
		}
		return fmt.Errorf("confirming the tasks: %w", err)
	}
	fmt.Printf("the broker has all %d tasks\n", o.tasks)
	return nil
}

// startWorker starts worker w on a channel of its own. Its handler runs on a
// goroutine of the consumer's, one delivery at a time.
func startWorker(ctx context.Context, conn *pika.Conn, o options, w int, results chan<- done) (*pika.Consumer, error) {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	// At most one unacknowledged task per worker: fair dispatch.
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 1}); err != nil {
		return nil, err
	}
	return ch.ConsumeFunc(ctx, o.queue, pika.ConsumeOptions{}, func(_ context.Context, d *pika.Delivery) {
		task := string(d.Body)
		time.Sleep(time.Duration(strings.Count(task, ".")) * o.work) // the "work"
		// Acknowledge only once the work is done: if the worker died
		// before this, the broker would give the task to another worker.
		if err := d.Ack(false); err != nil {
			fmt.Fprintf(os.Stderr, "worker %d: ack: %v\n", w, err)
			return
		}
		fmt.Printf("worker %d did %q\n", w, task)
		select {
		case results <- done{worker: w, task: task}:
		case <-ctx.Done():
		}
	})
}
