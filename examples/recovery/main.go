// Recovery shows automatic connection recovery: a publisher with
// confirmations and a consumer with manual acknowledgements keep working
// while their connection is forced closed, and no confirmed message is
// lost.
//
// The program publishes -rate messages a second for -duration to a queue
// of its own and consumes them on the same connection. Meanwhile it forces
// its own connection closed -close times with
//
//	rabbitmqctl close_connection <pid> "..."
//
// (when rabbitmqctl is in PATH and reaches the broker; run it with -close 0
// and force the close yourself, or restart the broker, to see the same).
// Every time, the Conn reconnects with backoff, reopens both channels with
// their QoS and confirm mode, declares the queue again, restarts the
// consumer, and publishes again the messages whose confirmation the loss
// cut off (the default; Config.DisableRepublish turns it off). Each
// recovery event is printed as it happens.
//
// What the application still has to do, and this program does:
//
//   - a confirmation that ends with ErrOutcomeUnknown (possible with
//     Config.DisableRepublish, or when recovery gives up) means "maybe
//     delivered": publish the message again if duplicates are acceptable;
//   - an Ack that returns ErrStaleDelivery is for a delivery from before the
//     loss: the broker delivers the message again, so process it
//     idempotently (duplicates are counted below).
//
// At the end the program prints what was published, confirmed and
// consumed, and exits with status 1 if a confirmed message was never
// consumed. The queue expires a minute after the program stops using it,
// and is deleted on a normal exit.
//
//	go run ./examples/recovery -duration 10s -close 2
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pika-go/pika"
)

func main() {
	duration := flag.Duration("duration", 10*time.Second, "how long to publish")
	rate := flag.Int("rate", 200, "messages published per second")
	closes := flag.Int("close", 2, "how many times to force the connection closed with rabbitmqctl (0: never)")
	flag.Parse()
	if *duration <= 0 || *rate < 1 || *rate > 100000 || *closes < 0 {
		fmt.Fprintln(os.Stderr, "recovery: -duration must be positive, -rate between 1 and 100000, -close at least 0")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	ok, err := run(ctx, brokerURL(), *duration, *rate, *closes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "recovery:", err)
		os.Exit(1)
	}
	if !ok {
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

// start is when the program started; log prints times relative to it.
var start = time.Now()

func logf(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, url string, duration time.Duration, rate, closes int) (bool, error) {
	cfg, err := pika.ParseURL(url)
	if err != nil {
		return false, err
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	name := "pika-recovery-example-" + hex.EncodeToString(suffix)
	// The name finds the connection in rabbitmqctl list_connections.
	cfg.ConnectionName = name
	// Reconnect quickly for the demonstration (the default starts at 100 ms
	// and backs off to 30 s), and give up after a minute of failures.
	cfg.Reconnect = pika.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second, MaxAttempts: 40}
	// What a loss leaves unconfirmed is published again by default:
	// at-least-once delivery, so the consumer below counts duplicates.

	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pika.DialConfig(dctx, cfg)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())

	recovered := 0
	var mu sync.Mutex
	recoveredSignal := make(chan struct{}, 1)
	conn.OnRecovery(func(ev pika.RecoveryEvent) {
		switch ev.Kind {
		case pika.RecoveryLost:
			logf("connection lost: %v", ev.Err)
		case pika.RecoveryAttempt:
			logf("reconnection attempt %d in %v", ev.Attempt, ev.Delay.Round(time.Millisecond))
		case pika.RecoveryRecovered:
			r := ev.Report
			logf("recovered on attempt %d: %d channels, %d consumers, %d messages republished, %d failures",
				ev.Attempt, r.Channels, r.Consumers, r.Republished, len(r.Failed))
			mu.Lock()
			recovered++
			mu.Unlock()
			select {
			case recoveredSignal <- struct{}{}:
			default:
			}
		case pika.RecoveryGaveUp:
			logf("recovery gave up: %v", ev.Err)
		}
	})

	// The consumer's channel, with a prefetch limit: the broker sends at
	// most 100 unacknowledged messages at a time. Recovery restores it.
	cch, err := conn.Channel(ctx)
	if err != nil {
		return false, err
	}
	if err := cch.Qos(ctx, pika.QosOptions{PrefetchCount: 100}); err != nil {
		return false, err
	}
	// A named queue: it outlives the connection, so messages waiting in it
	// survive a loss. (A server-named exclusive queue is deleted with the
	// connection; recovery declares it again under a new name, empty.)
	q, err := cch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{
		Arguments: pika.Table{"x-expires": int32(60000)}, // gone a minute after the last use
	})
	if err != nil {
		return false, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cch.QueueDelete(dctx, q.Name, pika.QueueDeleteOptions{})
	}()

	tally := &tally{seen: map[int]int{}, confirmed: map[int]bool{}}
	if _, err := cch.ConsumeFunc(ctx, q.Name, pika.ConsumeOptions{}, tally.consume); err != nil {
		return false, err
	}

	// The publisher's channel, in confirm mode. Recovery restores that too.
	pch, err := conn.Channel(ctx)
	if err != nil {
		return false, err
	}
	if err := pch.ConfirmSelect(ctx); err != nil {
		return false, err
	}

	logf("connection %q to %s, queue %q", name, conn.RemoteAddr(), q.Name)
	logf("publishing %d messages a second for %v", rate, duration)

	// Force closes, spread evenly over the run.
	closer := make(chan struct{})
	began := time.Now()
	go func() {
		defer close(closer)
		for i := 1; i <= closes; i++ {
			at := began.Add(duration * time.Duration(i) / time.Duration(closes+1))
			select {
			case <-time.After(time.Until(at)):
			case <-ctx.Done():
				return
			}
			select {
			case <-recoveredSignal: // forget earlier recoveries
			default:
			}
			if err := forceClose(name); err != nil {
				logf("cannot force a close (%v); going on without", err)
				return
			}
			// Wait for the recovery before the next close.
			select {
			case <-recoveredSignal:
			case <-time.After(30 * time.Second):
				logf("no recovery within 30s of the close")
				return
			case <-ctx.Done():
				return
			}
		}
	}()

	pctx, pcancel := context.WithTimeout(ctx, duration)
	err = publish(pctx, pch, q.Name, rate, tally)
	pcancel()
	<-closer
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return false, err
	}

	// Every message published has an outcome now; wait (a while) for the
	// consumer to see every confirmed one.
	deadline := time.Now().Add(20 * time.Second)
	for tally.missing() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	n := recovered
	mu.Unlock()
	return tally.report(n), nil
}

// publish publishes numbered messages at rate until ctx ends, then waits
// for the confirmation of everything published. A message whose outcome is
// unknown is published again.
func publish(ctx context.Context, ch *pika.Channel, queue string, rate int, t *tally) error {
	type pending struct {
		id   int
		conf *pika.Confirmation
	}
	var out []pending
	var retry []int
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	next := 0
	// settle takes the outcomes that are known; with block, it first waits
	// for the oldest one, for a minute at most.
	settle := func(block bool) error {
		k := 0
		for i, p := range out {
			if block && i == 0 {
				wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err := p.conf.Wait(wctx)
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					return fmt.Errorf("message %d: no outcome after a minute", p.id)
				}
			}
			select {
			case <-p.conf.Done():
			default:
				out[k] = p
				k++
				continue
			}
			switch err := p.conf.Err(); {
			case err == nil:
				t.confirm(p.id)
			case errors.Is(err, pika.ErrOutcomeUnknown), errors.Is(err, pika.ErrNacked):
				// Maybe delivered, maybe not: publish it again.
				retry = append(retry, p.id)
				t.again()
			default:
				logf("message %d: %v", p.id, err)
			}
		}
		out = out[:k]
		return nil
	}
	for ctx.Err() == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
			continue
		}
		settle(false)
		id := next
		if len(retry) > 0 {
			id, retry = retry[0], retry[1:]
		} else {
			next++
		}
		conf, err := ch.PublishWithConfirm(ctx, "", queue, pika.Message{Body: []byte(strconv.Itoa(id))})
		if err != nil {
			if ctx.Err() != nil {
				retry = append(retry, id)
				break
			}
			return err
		}
		t.publish()
		out = append(out, pending{id, conf})
	}
	// Finish: wait for every outcome, republishing unknown ones.
	for round := 0; (len(out) > 0 || len(retry) > 0) && round < 100; round++ {
		for len(out) > 0 {
			if err := settle(true); err != nil {
				return err
			}
		}
		for _, id := range retry {
			pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			conf, err := ch.PublishWithConfirm(pctx, "", queue, pika.Message{Body: []byte(strconv.Itoa(id))})
			cancel()
			if err != nil {
				return err
			}
			t.publish()
			out = append(out, pending{id, conf})
		}
		retry = nil
	}
	return ctx.Err()
}

// tally counts what was published, confirmed and consumed. It is safe for
// concurrent use.
type tally struct {
	mu                        sync.Mutex
	published, republished    int
	confirmed                 map[int]bool
	seen                      map[int]int
	staleAcks, otherAckErrors int
}

func (t *tally) publish()       { t.mu.Lock(); t.published++; t.mu.Unlock() }
func (t *tally) again()         { t.mu.Lock(); t.republished++; t.mu.Unlock() }
func (t *tally) confirm(id int) { t.mu.Lock(); t.confirmed[id] = true; t.mu.Unlock() }
func (t *tally) consume(_ context.Context, d *pika.Delivery) {
	id, err := strconv.Atoi(string(d.Body))
	ackErr := d.Ack(false)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.seen[id]++
	}
	switch {
	case ackErr == nil:
	case errors.Is(ackErr, pika.ErrStaleDelivery):
		// From before a recovery: the broker delivers it again.
		t.staleAcks++
	default:
		t.otherAckErrors++
	}
}

// missing returns how many confirmed messages were not consumed yet.
func (t *tally) missing() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for id := range t.confirmed {
		if t.seen[id] == 0 {
			n++
		}
	}
	return n
}

// report prints the summary and says whether every confirmed message was
// consumed.
func (t *tally) report(recoveries int) bool {
	missing := t.missing()
	t.mu.Lock()
	defer t.mu.Unlock()
	dups := 0
	for _, n := range t.seen {
		dups += n - 1
	}
	fmt.Printf("recoveries: %d\n", recoveries)
	fmt.Printf("published: %d (%d again after an unknown outcome)\n", t.published, t.republished)
	fmt.Printf("confirmed: %d distinct messages\n", len(t.confirmed))
	fmt.Printf("consumed: %d distinct messages, %d duplicate deliveries, %d stale acks\n", len(t.seen), dups, t.staleAcks)
	if t.otherAckErrors > 0 {
		fmt.Printf("ack errors: %d\n", t.otherAckErrors)
	}
	if missing > 0 {
		fmt.Printf("LOST: %d confirmed messages were never consumed\n", missing)
		return false
	}
	fmt.Println("every confirmed message was consumed")
	return true
}

// forceClose closes the broker connection named name with rabbitmqctl, as
// an operator (or a network failure) might.
func forceClose(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	list := exec.CommandContext(ctx, "rabbitmqctl", "list_connections", "-q", "pid", "client_properties")
	list.Stdout = &out
	if err := list.Run(); err != nil {
		return fmt.Errorf("rabbitmqctl list_connections: %w", err)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.Contains(line, name) {
			continue
		}
		pid := strings.Fields(line)[0]
		logf("forcing a close: rabbitmqctl close_connection %s", pid)
		cl := exec.CommandContext(ctx, "rabbitmqctl", "close_connection", pid, "closed by the pika recovery example")
		if msg, err := cl.CombinedOutput(); err != nil {
			return fmt.Errorf("rabbitmqctl close_connection: %w: %s", err, bytes.TrimSpace(msg))
		}
		return nil
	}
	return fmt.Errorf("no connection named %s in rabbitmqctl list_connections (is the broker on another machine?)", name)
}
