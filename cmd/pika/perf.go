package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pika-go/pika"
)

const perfHelp = `Usage: pika perf [FLAGS]

Generates load in the manner of RabbitMQ's PerfTest: producers publish to a
queue through the default exchange, consumers consume from it, each on its
own connection. Every message carries its send time (the body's first 8
bytes, nanoseconds), so consumers measure the latency from publish to
delivery.

Once a second a line shows the rates of that second: sent, confirmed,
nacked, returned and received messages per second, and the latency
percentiles (p50, p95, p99, in milliseconds) of the messages received in
it; then a summary. Lines and summary go to standard output; with --json the
lines go to standard error and the summary is one JSON object on standard
output, with the keys sent, confirmed, nacked, returned, received,
duration_s, send_rate, receive_rate (messages per second), latency_p50_ms,
latency_p95_ms, latency_p99_ms, latency_max_ms, producers, consumers, size,
queue and stopped ("duration", "count", "interrupted", "error" or
"stalled"), and notes when the counts differ.

When sent, confirmed and received differ, the summary says why, one
"note:" line each: messages still unconfirmed (in flight) when perf
stopped, nacked or returned ones (refused by the broker, never in the
queue), confirms not asked for, messages left in the queue or in flight,
or more received than sent (the queue held messages before the run).

perf stops after --duration, or once --count messages were sent and
received, whichever comes first (10s when neither is given), or on Ctrl-C
(exit status 0, with the summary). With --count, when messages stop
arriving for 10 s before all did, perf stops ("stalled") with exit
status 1.

The queue: by default perf declares a non-durable queue "pika-perf-RANDOM"
and deletes it at the end, also after Ctrl-C or an error (it also expires
on its own a minute after its consumers went, in case perf is killed).
With --queue NAME perf uses that queue, declaring it (non-durable) when it
does not exist, and deletes it at the end only if perf declared it.

Flags:
  --producers N        producers, each on its own connection (default 1)
  --consumers N        consumers, each on its own connection (default 1)
  --size BYTES         message body size, at least 8 (default 100)
  --rate N             messages per second per producer (default 0: as fast
                       as possible)
  --confirm N          publisher confirms with at most N messages
                       unconfirmed per producer (default 0: no confirms)
  --mandatory          publish mandatory (unroutable messages come back
                       and count as returned)
  --persistent         publish persistent messages (delivery mode 2)
  --prefetch N         consumer prefetch count, basic.qos (default 1000; 0:
                       no limit)
  --autoack            consume with automatic acknowledgement
  --multi-ack-every N  acknowledge with multiple=true every N messages
                       (default 0: each message); at most --prefetch
  --consume-mode MODE  how consumers take deliveries: "next" (default:
                       Consumer.Next in a loop), "handler" (ConsumeFunc, the
                       handler on a goroutine of the consumer's own) or
                       "inline" (ConsumeFunc with ConsumeOptions.Inline: the
                       handler on the connection's reader goroutine, for
                       handlers that never block; the cheapest in CPU:
                       compare with time(1))
  --blocking-read      the connections' readers wait for data in a
                       blocking system call on a thread of their own
                       instead of Go's network poller (Config.BlockingRead;
                       Linux, plain TCP): one thread per connection
  --read-linger D      with --blocking-read: after a read of 1 KiB or more
                       or of a confirmation, the reader waits up to D
                       (while nobody waits for the broker) so that its
                       next read brings more deliveries and confirmations
                       (Config.ReadLinger): less CPU per message, up to D
                       more latency (default 0: off; at most 50ms)
  --queue NAME         use this queue (see above)
  --duration D         how long to publish, e.g. 30s or 2m
  --count N            messages to send in all; perf stops once they were
                       all received (or refused: nacked, returned)
  --json               summary as JSON (see above)
  --metrics ADDR       serve the run's Prometheus metrics (those of the
                       prompika plugin: pika_messages_published_total,
                       pika_confirm_latency_seconds, ...) at
                       http://ADDR/metrics while it runs, e.g. :9419
  --recover            automatic recovery for the producers' and consumers'
                       connections: a lost connection is re-established
                       (to the next host of a cluster URL) instead of
                       ending the run; each recovery event is a line of
                       the live output ("recovery producer 1: ...")
  --quorum             declare the queue as a durable quorum queue
                       (replicated across a cluster's nodes)
  --shuffle            try the URL's hosts in a random order for each
                       connection, to spread them over a cluster
  --url URL            broker URL (see pika --help); a cluster's nodes as
                       a comma-separated host list:
                       amqp://guest:guest@host1:5672,host2:5672,host3:5672/

Watching a node failure of a cluster (scripts/cluster.sh):
  pika perf --url amqp://guest:guest@127.0.0.1:5681,127.0.0.1:5682,127.0.0.1:5683/ \
    --recover --quorum --shuffle --confirm 100 --rate 2000 --duration 60s

Example:
  pika perf --producers 2 --consumers 2 --rate 5000 --confirm 100 --duration 30s

"pika perf rpc" measures request/reply calls instead: see "pika perf rpc
--help".
`

// perfConfig is what the flags of pika perf ask for.
type perfConfig struct {
	producers, consumers int
	size                 int
	rate                 float64
	confirm              int
	mandatory            bool
	persistent           bool
	prefetch             int
	autoAck              bool
	multiAck             int
	consumeMode          string
	queue                string
	duration             time.Duration
	count                int64
	json                 bool
	metrics              string // --metrics ADDR
	recover              bool
	quorum               bool
	shuffle              bool
	blockingRead         bool
	readLinger           time.Duration
}

// perfFlags defines the flags of pika perf on fs.
func perfFlags(fs *flagSet, c *perfConfig) {
	fs.IntVar(&c.producers, "producers", 1, "producers")
	fs.IntVar(&c.consumers, "consumers", 1, "consumers")
	fs.IntVar(&c.size, "size", 100, "message size")
	fs.Float64Var(&c.rate, "rate", 0, "messages per second per producer")
	fs.IntVar(&c.confirm, "confirm", 0, "confirm window")
	fs.BoolVar(&c.mandatory, "mandatory", false, "mandatory")
	fs.BoolVar(&c.persistent, "persistent", false, "persistent")
	fs.IntVar(&c.prefetch, "prefetch", 1000, "prefetch")
	fs.BoolVar(&c.autoAck, "autoack", false, "auto-ack")
	fs.IntVar(&c.multiAck, "multi-ack-every", 0, "multiple ack every N")
	fs.StringVar(&c.consumeMode, "consume-mode", "next", "next, handler or inline")
	fs.StringVar(&c.queue, "queue", "", "queue")
	fs.DurationVar(&c.duration, "duration", 0, "duration")
	fs.Int64Var(&c.count, "count", 0, "messages in all")
	fs.BoolVar(&c.json, "json", false, "JSON summary")
	fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics on ADDR")
	fs.BoolVar(&c.recover, "recover", false, "automatic recovery")
	fs.BoolVar(&c.quorum, "quorum", false, "quorum queue")
	fs.BoolVar(&c.shuffle, "shuffle", false, "shuffle the URL's hosts")
	fs.BoolVar(&c.blockingRead, "blocking-read", false, "Config.BlockingRead")
	fs.DurationVar(&c.readLinger, "read-linger", 0, "Config.ReadLinger")
}

// check validates the configuration and applies the default duration.
func (c *perfConfig) check() error {
	switch {
	case c.producers < 0 || c.producers > 1000:
		return usagef("perf", "--producers %d: want 0..1000", c.producers)
	case c.consumers < 0 || c.consumers > 1000:
		return usagef("perf", "--consumers %d: want 0..1000", c.consumers)
	case c.producers == 0 && c.consumers == 0:
		return usagef("perf", "no producers and no consumers")
	case c.size < 8 || c.size > maxBody:
		return usagef("perf", "--size %d: want 8 (the send time) to %d bytes", c.size, maxBody)
	case c.rate < 0 || math.IsNaN(c.rate) || math.IsInf(c.rate, 0):
		return usagef("perf", "--rate %v: want 0 (unlimited) or a positive number", c.rate)
	case c.confirm < 0 || c.confirm > 1<<20:
		return usagef("perf", "--confirm %d: want 0 (no confirms) to %d", c.confirm, 1<<20)
	case c.prefetch < 0 || c.prefetch > 65535:
		return usagef("perf", "--prefetch %d: want 0..65535", c.prefetch)
	case c.multiAck < 0:
		return usagef("perf", "--multi-ack-every %d: must not be negative", c.multiAck)
	case c.multiAck > 1 && c.autoAck:
		return usagef("perf", "--multi-ack-every needs manual acknowledgements (not --autoack)")
	case c.multiAck > 1 && c.prefetch > 0 && c.multiAck > c.prefetch:
		return usagef("perf", "--multi-ack-every %d exceeds --prefetch %d: consumers would wait for messages the broker holds back", c.multiAck, c.prefetch)
	case c.consumeMode != "" && c.consumeMode != "next" && c.consumeMode != "handler" && c.consumeMode != "inline":
		return usagef("perf", "--consume-mode %q: want next, handler or inline", c.consumeMode)
	case c.readLinger < 0 || c.readLinger > pika.MaxReadLinger:
		return usagef("perf", "--read-linger %v: want 0 (off) to %v", c.readLinger, pika.MaxReadLinger)
	case c.readLinger > 0 && !c.blockingRead:
		return usagef("perf", "--read-linger needs --blocking-read (without it the library ignores it)")
	case c.duration < 0:
		return usagef("perf", "--duration %v: must not be negative", c.duration)
	case c.count < 0:
		return usagef("perf", "--count %d: must not be negative", c.count)
	}
	if c.duration == 0 && c.count == 0 {
		c.duration = 10 * time.Second
	}
	return nil
}

// stallTimeout is how long perf --count waits for messages that stopped
// arriving.
const stallTimeout = 10 * time.Second

// perfStats are the counters shared by producers, consumers and the
// reporter.
type perfStats struct {
	sent, confirmed, nacked, returned, received atomic.Uint64
	lat                                         histogram
}

// perfRun is one pika perf run.
type perfRun struct {
	e     *env
	cfg   perfConfig
	queue string
	stats perfStats

	claimed atomic.Int64 // messages claimed by producers in --count mode

	linesMu    sync.Mutex // serializes the live output's lines
	recoveries atomic.Int64

	stalled  error // set by wait when --count messages stopped arriving
	errMu    sync.Mutex
	firstErr error         // guarded by errMu: servers may fail while the run reads it
	failed   chan struct{} // closed when firstErr is set
}

func runPerf(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "rpc" {
		return runPerfRPC(ctx, e, args[1:])
	}
	fs := newFlagSet(e, "perf", perfHelp)
	var cfg perfConfig
	perfFlags(fs, &cfg)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := fs.args(pos); err != nil {
		return err
	}
	if err := cfg.check(); err != nil {
		return err
	}
	if cfg.metrics != "" {
		me := *e
		stop, err := serveMetrics(&me, cfg.metrics)
		if err != nil {
			return err
		}
		defer stop()
		e = &me
	}
	r := &perfRun{e: e, cfg: cfg, failed: make(chan struct{})}
	err = r.run(ctx)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil // Ctrl-C while starting
	}
	return err
}

// fail records the first error of a producer or consumer; it stops the
// run.
func (r *perfRun) fail(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.firstErr == nil {
		r.firstErr = err
		close(r.failed)
	}
}

// err returns the first error recorded by fail, or nil.
func (r *perfRun) err() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.firstErr
}

// withQueue opens a setup connection named name, declares the run's queue
// and runs body, then deletes the queue if perf declared it (created),
// whatever body returned.
func (r *perfRun) withQueue(ctx context.Context, name string, body func(created bool) error) (err error) {
	setup, err := open(ctx, r.e, name)
	if err != nil {
		return err
	}
	created, err := r.declareQueue(ctx, setup)
	defer func() {
		if created {
			if derr := r.deleteQueue(setup); derr != nil && err == nil {
				err = derr
			}
		}
		setup.close()
	}()
	if err != nil {
		return err
	}
	return body(created)
}

func (r *perfRun) run(ctx context.Context) error {
	return r.withQueue(ctx, "pika perf setup", func(created bool) error { return r.runLoad(ctx, created) })
}

// runLoad runs the producers and consumers on the declared queue.
func (r *perfRun) runLoad(ctx context.Context, created bool) error {
	// Every worker stops when stop is cancelled.
	stop, cancel := context.WithCancel(ctx)
	defer cancel()
	var consumers, producers sync.WaitGroup
	ready := make(chan struct{}, r.cfg.consumers)
	for i := range r.cfg.consumers {
		consumers.Go(func() { r.consumer(stop, i+1, ready) })
	}
	for range r.cfg.consumers {
		select {
		case <-ready:
		case <-r.failed:
		case <-ctx.Done():
		}
	}
	start := time.Now()
	select {
	case <-r.failed:
	case <-ctx.Done():
	default:
		for i := range r.cfg.producers {
			producers.Go(func() { r.producer(stop, i+1) })
		}
	}
	producersDone := make(chan struct{})
	go func() { producers.Wait(); close(producersDone) }()

	reason := r.wait(ctx, start, producersDone)
	elapsed := time.Since(start)
	cancel()
	producers.Wait()
	consumers.Wait()
	if reason == "" {
		reason = "error"
	}
	firstErr := r.err()
	if werr := r.summary(elapsed, reason, created); werr != nil && firstErr == nil {
		return werr
	}
	if firstErr == nil {
		return r.stalled
	}
	return firstErr
}

// wait runs the once-a-second report until the run should stop and says
// why: "duration", "count", "stalled", "interrupted", or "" after an error.
func (r *perfRun) wait(ctx context.Context, start time.Time, producersDone <-chan struct{}) string {
	var deadline <-chan time.Time
	if r.cfg.duration > 0 {
		t := time.NewTimer(r.cfg.duration)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	check := time.NewTicker(20 * time.Millisecond)
	defer check.Stop()
	rep := newReporter(r)
	lines := r.e.stdout
	if r.cfg.json {
		lines = r.e.stderr
	}
	pDone := false
	var lastRecv uint64
	lastProgress := time.Now()
	for {
		select {
		case <-ctx.Done():
			return "interrupted"
		case <-r.failed:
			return ""
		case <-deadline:
			return "duration"
		case now := <-tick.C:
			r.linesMu.Lock()
			rep.line(lines, now.Sub(start))
			r.linesMu.Unlock()
		case <-producersDone:
			pDone = true
			producersDone = nil
		case <-check.C:
		}
		if r.cfg.count == 0 || !pDone {
			continue
		}
		// Count mode: every message sent; stop once all arrived (or, with
		// no producers, once count messages arrived).
		st := &r.stats
		recv := st.received.Load()
		want := uint64(r.cfg.count)
		if r.cfg.producers > 0 {
			want = st.sent.Load() - min(st.sent.Load(), st.nacked.Load()+st.returned.Load())
		}
		if r.cfg.consumers == 0 || recv >= want {
			return "count"
		}
		if recv != lastRecv {
			lastRecv, lastProgress = recv, time.Now()
		} else if time.Since(lastProgress) > stallTimeout {
			r.stalled = fmt.Errorf("perf: received %d of %d messages, then nothing for %v", recv, want, stallTimeout)
			return "stalled"
		}
	}
}

// declareQueue declares the queue for the run; created says whether perf
// must delete it at the end.
func (r *perfRun) declareQueue(ctx context.Context, s *session) (created bool, err error) {
	if r.cfg.queue != "" {
		r.queue = r.cfg.queue
		_, err := s.ch.QueueDeclarePassive(ctx, r.queue)
		if err == nil {
			return false, nil
		}
		if !errors.Is(err, pika.ErrNotFound) {
			return false, opError(fmt.Sprintf("check queue %q", r.queue), err)
		}
		if _, err := s.channel(ctx); err != nil {
			return false, err
		}
	} else {
		var rnd [4]byte
		rand.Read(rnd[:])
		r.queue = "pika-perf-" + hex.EncodeToString(rnd[:])
	}
	args := pika.Table{}
	if r.cfg.consumers > 0 {
		// A safety net if perf is killed: the broker deletes the queue a
		// minute after it was last used (consumed from or declared).
		args["x-expires"] = int64(60000)
	}
	opts := pika.QueueDeclareOptions{Arguments: args}
	if r.cfg.quorum {
		args["x-queue-type"] = string(pika.QueueQuorum)
		opts.Durable = true
	}
	if _, err := s.ch.QueueDeclare(ctx, r.queue, opts); err != nil {
		return false, opError(fmt.Sprintf("declare queue %q", r.queue), err)
	}
	return true, nil
}

// deleteQueue deletes the run's queue, on a new channel or connection when
// the run broke the setup one, bounded even after Ctrl-C.
func (r *perfRun) deleteQueue(s *session) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*closeTimeout)
	defer cancel()
	what := fmt.Sprintf("delete queue %q", r.queue)
	if s.conn.IsClosed() {
		ns, err := open(ctx, r.e, "pika perf cleanup")
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		defer ns.close()
		s = ns
	}
	ch, err := s.channel(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	_, err = ch.QueueDelete(ctx, r.queue, pika.QueueDeleteOptions{})
	return opError(what, err)
}

// dial connects a producer or consumer called who, with recovery and
// shuffled hosts when asked; with recovery, each recovery event is a line
// of the live output.
func (r *perfRun) dial(ctx context.Context, who string) (*pika.Conn, error) {
	conn, err := dialWith(ctx, r.e, "pika perf "+who, func(c *pika.Config) {
		c.DisableRecovery = !r.cfg.recover
		c.ShuffleAddrs = r.cfg.shuffle
		c.BlockingRead = r.cfg.blockingRead
		c.ReadLinger = r.cfg.readLinger
		if r.cfg.recover {
			c.Reconnect = pika.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
		}
	})
	if err != nil || !r.cfg.recover {
		return conn, err
	}
	start := time.Now()
	var lost time.Time
	conn.OnRecovery(func(ev pika.RecoveryEvent) {
		var what string
		switch ev.Kind {
		case pika.RecoveryLost:
			lost = time.Now()
			what = "connection lost: " + trimPika(ev.Err.Error())
		case pika.RecoveryAttempt:
			if ev.Attempt == 1 {
				return // the loss line said it
			}
			what = fmt.Sprintf("attempt %d in %v: %s", ev.Attempt, ev.Delay.Round(time.Millisecond), trimPika(ev.Err.Error()))
		case pika.RecoveryRecovered:
			r.recoveries.Add(1)
			what = fmt.Sprintf("recovered to %s after %v (attempt %d", ev.Report.Addr, time.Since(lost).Round(time.Millisecond), ev.Attempt)
			if ev.Report.Republished > 0 {
				what += fmt.Sprintf(", %d republished", ev.Report.Republished)
			}
			what += ")"
		case pika.RecoveryGaveUp:
			what = "recovery gave up: " + trimPika(ev.Err.Error())
		default:
			what = ev.Kind.String()
			if ev.Err != nil {
				what += ": " + trimPika(ev.Err.Error())
			}
		}
		r.printLine(fmt.Sprintf("time %5.1fs  recovery %s: %s\n", time.Since(start).Seconds(), who, what))
	})
	return conn, nil
}

// printLine writes one line of the live output.
func (r *perfRun) printLine(line string) {
	w := r.e.stdout
	if r.cfg.json {
		w = r.e.stderr
	}
	r.linesMu.Lock()
	defer r.linesMu.Unlock()
	io.WriteString(w, line)
}

// producer publishes until stop is cancelled or, in count mode, the count
// is reached. Errors stop the run.
func (r *perfRun) producer(stop context.Context, id int) {
	conn, err := r.dial(stop, fmt.Sprintf("producer %d", id))
	if err != nil {
		if stop.Err() == nil {
			r.fail(fmt.Errorf("perf producer %d: %w", id, err))
		}
		return
	}
	defer closeConn(conn)
	if err := r.publish(stop, conn, id); err != nil && stop.Err() == nil {
		r.fail(fmt.Errorf("perf producer %d: %w", id, err))
	}
}

func (r *perfRun) publish(stop context.Context, conn *pika.Conn, id int) error {
	cfg := &r.cfg
	st := &r.stats
	ch, err := conn.Channel(stop)
	if err != nil {
		return opError("open channel", err)
	}
	var window chan *pika.Confirmation
	collected := make(chan struct{})
	if cfg.confirm > 0 {
		if err := ch.ConfirmSelect(stop); err != nil {
			return opError("confirm.select", err)
		}
		// The window: at most cfg.confirm confirmations outstanding. The
		// collector takes them in publish order, which is the order the
		// broker confirms them in.
		window = make(chan *pika.Confirmation, cfg.confirm)
		go func() {
			defer close(collected)
			for conf := range window {
				err := conf.Wait(context.Background())
				switch {
				case err == nil:
					st.confirmed.Add(1)
				case errors.Is(err, pika.ErrReturned):
					st.returned.Add(1)
				case errors.Is(err, pika.ErrNacked):
					st.nacked.Add(1)
				}
			}
		}()
	} else {
		close(collected)
		if cfg.mandatory {
			ch.OnReturn(func(*pika.Return) { st.returned.Add(1) })
		}
	}

	msg := pika.Message{Body: make([]byte, cfg.size), Mandatory: cfg.mandatory}
	if cfg.persistent {
		msg.DeliveryMode = pika.Persistent
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	start := time.Now()
	var n float64
	var pubErr error
	for stop.Err() == nil {
		if cfg.count > 0 && r.claimed.Add(1) > cfg.count {
			break
		}
		if cfg.rate > 0 {
			due := start.Add(time.Duration(n / cfg.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-stop.Done():
				}
				if stop.Err() != nil {
					break
				}
			}
		}
		binary.BigEndian.PutUint64(msg.Body, uint64(time.Now().UnixNano()))
		if window != nil {
			conf, err := ch.PublishWithConfirm(stop, "", r.queue, msg)
			if err != nil {
				pubErr = err
				break
			}
			select {
			case window <- conf:
			case <-stop.Done():
			}
		} else if err := ch.Publish(stop, "", r.queue, msg); err != nil {
			pubErr = err
			break
		}
		st.sent.Add(1)
		n++
	}
	if window != nil {
		close(window)
		// Give outstanding confirmations a moment; closing the
		// connection settles the rest (as outcome unknown).
		t := time.NewTimer(closeTimeout)
		defer t.Stop()
		select {
		case <-collected:
		case <-t.C:
		}
	}
	if pubErr != nil && stop.Err() == nil {
		return opError(fmt.Sprintf("publish to queue %q", r.queue), pubErr)
	}
	return nil
}

// consumer consumes until stop is cancelled; it signals ready once its
// consumer is registered. Errors stop the run.
func (r *perfRun) consumer(stop context.Context, id int, ready chan<- struct{}) {
	conn, err := r.dial(stop, fmt.Sprintf("consumer %d", id))
	if err != nil {
		if stop.Err() == nil {
			r.fail(fmt.Errorf("perf consumer %d: %w", id, err))
		}
		return
	}
	defer closeConn(conn)
	if err := r.consume(stop, conn, ready); err != nil && stop.Err() == nil {
		r.fail(fmt.Errorf("perf consumer %d: %w", id, err))
	}
}

func (r *perfRun) consume(stop context.Context, conn *pika.Conn, ready chan<- struct{}) error {
	cfg := &r.cfg
	st := &r.stats
	ch, err := conn.Channel(stop)
	if err != nil {
		return opError("open channel", err)
	}
	if cfg.prefetch > 0 && !cfg.autoAck {
		if err := ch.Qos(stop, pika.QosOptions{PrefetchCount: cfg.prefetch}); err != nil {
			return opError("basic.qos", err)
		}
	}
	what := fmt.Sprintf("consume from queue %q", r.queue)
	opts := pika.ConsumeOptions{AutoAck: cfg.autoAck}
	every := max(cfg.multiAck, 1)
	unacked := 0
	var lastTag uint64
	var ackErr error
	// take records one delivery and acknowledges every --multi-ack-every.
	take := func(_ context.Context, d *pika.Delivery) {
		if len(d.Body) >= 8 {
			sent := int64(binary.BigEndian.Uint64(d.Body))
			if lat := time.Now().UnixNano() - sent; lat >= 0 && lat < int64(24*time.Hour) {
				st.lat.add(uint64(lat))
			}
		}
		st.received.Add(1)
		if cfg.autoAck || ackErr != nil {
			return
		}
		unacked++
		lastTag = d.DeliveryTag
		if unacked >= every {
			if err := ch.Ack(lastTag, every > 1); err != nil && !(cfg.recover && errors.Is(err, pika.ErrStaleDelivery)) {
				ackErr = opError("ack", err)
				return
			}
			unacked = 0
		}
	}
	if cfg.consumeMode == "handler" || cfg.consumeMode == "inline" {
		// The handler runs one call at a time: take needs no lock.
		opts.Inline = cfg.consumeMode == "inline"
		cons, err := ch.ConsumeFunc(stop, r.queue, opts, take)
		if err != nil {
			return opError(what, err)
		}
		ready <- struct{}{}
		var loopErr error
		select {
		case <-stop.Done():
		case <-cons.Done():
			if !errors.Is(cons.Err(), pika.ErrConsumerClosed) {
				loopErr = fmt.Errorf("%s: %w", what, cons.Err())
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		cons.Cancel(ctx)
		<-cons.Done()
		if ackErr != nil {
			return ackErr
		}
		if unacked > 0 {
			ch.Ack(lastTag, true)
		}
		return loopErr
	}
	cons, err := ch.Consume(stop, r.queue, opts)
	if err != nil {
		return opError(what, err)
	}
	ready <- struct{}{}
	var loopErr error
	for {
		d, err := cons.Next(stop)
		if err != nil {
			switch {
			case stop.Err() != nil:
			case errors.Is(err, pika.ErrConsumerCancelled):
				loopErr = fmt.Errorf("%s: the broker cancelled the consumer (was the queue deleted?)", what)
			default:
				loopErr = opError(what, err)
			}
			break
		}
		take(stop, d)
		if ackErr != nil {
			loopErr = ackErr
			break
		}
	}
	if unacked > 0 && loopErr == nil {
		ch.Ack(lastTag, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	cons.Cancel(ctx)
	return loopErr
}

// reporter prints the once-a-second lines.
type reporter struct {
	r                *perfRun
	last             time.Duration
	sent, conf, nack uint64
	ret, recv        uint64
	prev, cur, diff  *histCounts
}

func newReporter(r *perfRun) *reporter {
	return &reporter{r: r, prev: new(histCounts), cur: new(histCounts), diff: new(histCounts)}
}

// line prints the rates since the previous line.
func (p *reporter) line(w io.Writer, at time.Duration) {
	st := &p.r.stats
	secs := (at - p.last).Seconds()
	if secs <= 0 {
		return
	}
	rate := func(prev *uint64, c *atomic.Uint64) float64 {
		v := c.Load()
		d := v - *prev
		*prev = v
		return float64(d) / secs
	}
	sent, conf, nack := rate(&p.sent, &st.sent), rate(&p.conf, &st.confirmed), rate(&p.nack, &st.nacked)
	ret, recv := rate(&p.ret, &st.returned), rate(&p.recv, &st.received)
	st.lat.snapshot(p.cur)
	p.diff.sub(p.cur, p.prev)
	p.prev, p.cur = p.cur, p.prev
	q := p.diff.percentiles(0.5, 0.95, 0.99)
	p.last = at
	fmt.Fprintf(w, "time %5.1fs  sent %.0f/s  confirmed %.0f/s  nacked %.0f/s  returned %.0f/s  received %.0f/s  latency ms p50 %s p95 %s p99 %s\n",
		at.Seconds(), sent, conf, nack, ret, recv, ms(q[0]), ms(q[1]), ms(q[2]))
}

// ms renders nanoseconds as milliseconds.
func ms(ns uint64) string { return fmt.Sprintf("%.3f", float64(ns)/1e6) }

// perfSummary is the --json summary.
type perfSummary struct {
	Sent         uint64   `json:"sent"`
	Confirmed    uint64   `json:"confirmed"`
	Nacked       uint64   `json:"nacked"`
	Returned     uint64   `json:"returned"`
	Received     uint64   `json:"received"`
	DurationS    float64  `json:"duration_s"`
	SendRate     float64  `json:"send_rate"`
	ReceiveRate  float64  `json:"receive_rate"`
	LatencyP50ms float64  `json:"latency_p50_ms"`
	LatencyP95ms float64  `json:"latency_p95_ms"`
	LatencyP99ms float64  `json:"latency_p99_ms"`
	LatencyMaxms float64  `json:"latency_max_ms"`
	Producers    int      `json:"producers"`
	Consumers    int      `json:"consumers"`
	Size         int      `json:"size"`
	Queue        string   `json:"queue"`
	Stopped      string   `json:"stopped"`
	Notes        []string `json:"notes,omitempty"` // why the counts differ (see notes)
}

func (r *perfRun) makeSummary(elapsed time.Duration, reason string) perfSummary {
	st := &r.stats
	lat := st.lat.summary()
	secs := elapsed.Seconds()
	s := perfSummary{
		Sent: st.sent.Load(), Confirmed: st.confirmed.Load(), Nacked: st.nacked.Load(),
		Returned: st.returned.Load(), Received: st.received.Load(),
		DurationS:    round3(secs),
		LatencyP50ms: lat[0], LatencyP95ms: lat[1], LatencyP99ms: lat[2], LatencyMaxms: lat[3],
		Producers: r.cfg.producers, Consumers: r.cfg.consumers, Size: r.cfg.size,
		Queue: r.queue, Stopped: reason,
	}
	if secs > 0 {
		s.SendRate = round3(float64(s.Sent) / secs)
		s.ReceiveRate = round3(float64(s.Received) / secs)
	}
	s.Notes = s.notes(&r.cfg)
	return s
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// summary returns the p50, p95, p99 and maximum of h in milliseconds,
// rounded to the microsecond.
func (h *histogram) summary() [4]float64 {
	var all histCounts
	h.snapshot(&all)
	q := all.percentiles(0.5, 0.95, 0.99)
	maxLat := h.max.Load()
	var out [4]float64
	for i := range q {
		out[i] = round3(float64(min(q[i], maxLat)) / 1e6) // a bucket's midpoint may lie above the largest value
	}
	out[3] = round3(float64(maxLat) / 1e6)
	return out
}

// summary prints the end-of-run summary.
func (r *perfRun) summary(elapsed time.Duration, reason string, deleted bool) error {
	s := r.makeSummary(elapsed, reason)
	if r.cfg.json {
		return newJSONWriter(r.e.stdout).write(s)
	}
	fate := "kept"
	if deleted {
		fate = "deleted"
	}
	_, err := fmt.Fprintf(r.e.stdout,
		"summary: %.2f s (stopped: %s), %d producer(s), %d consumer(s), %d-byte messages, queue %q (%s)\n"+
			"  sent      %d (%.0f msg/s)\n"+
			"  confirmed %d\n"+
			"  nacked    %d\n"+
			"  returned  %d\n"+
			"  received  %d (%.0f msg/s)\n"+
			"  latency   p50 %.3f ms  p95 %.3f ms  p99 %.3f ms  max %.3f ms\n",
		s.DurationS, reason, s.Producers, s.Consumers, s.Size, s.Queue, fate,
		s.Sent, s.SendRate, s.Confirmed, s.Nacked, s.Returned, s.Received, s.ReceiveRate,
		s.LatencyP50ms, s.LatencyP95ms, s.LatencyP99ms, s.LatencyMaxms)
	for _, n := range s.Notes {
		if err == nil {
			_, err = fmt.Fprintf(r.e.stdout, "  note: %s\n", n)
		}
	}
	return err
}
