package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/loop"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The many mode (-many N) measures N connections to a real broker, each
// with one channel in confirm mode publishing -many-rate messages per
// second for -many-duration: with package loop (every connection on one
// Loop), with N pika.Conns (a goroutine per connection publishing), and
// with N amqp091-go connections (the same). Each client runs in a child
// process of its own, so that its CPU and resident set are its alone; the
// clients take turns, round after round.
//
// Every connection publishes exactly rate x duration messages of -body
// bytes, message k of connection i due at start + i/N/rate + k/rate (the
// connections are spread over the first period; a client that falls
// behind catches up at once), to one queue of the child's (exclusive to
// its admin connection, x-max-length -many-max-length, so that the broker
// routes and stores every message but holds few) through the default
// exchange. The child then waits at most -many-drain for the outcomes.
// A run counts only when every message was published and confirmed: no
// nack, no failure, no missing outcome (manyResult.check).

// manyClients are the clients the many mode compares by default, the
// first with the others.
var manyClients = []string{"loop", cPika}

// manyParams are the parameters of one child's run.
type manyParams struct {
	conns    int
	rate     int           // messages per second per connection
	duration time.Duration // of the publishing schedule
	drain    time.Duration // wait at most this long for outcomes after the schedule
	body     int           // bytes
	maxLen   int           // the queue's x-max-length
}

// perConn is how many messages each connection publishes.
func (p manyParams) perConn() int { return int(int64(p.rate) * int64(p.duration) / int64(time.Second)) }

// period is the time between two messages of one connection.
func (p manyParams) period() time.Duration { return time.Second / time.Duration(p.rate) }

// due returns when message k of connection i is due, the schedule
// starting at t0.
func (p manyParams) due(t0 time.Time, i, k int) time.Time {
	period := p.period()
	return t0.Add(period*time.Duration(i)/time.Duration(p.conns) + period*time.Duration(k))
}

func (p manyParams) validate() error {
	switch {
	case p.conns < 1:
		return fmt.Errorf("-many %d: want at least one connection", p.conns)
	case p.rate < 1 || p.rate > 1_000_000:
		return fmt.Errorf("-many-rate %d: want 1 to 1000000 messages per second", p.rate)
	case p.duration > 24*time.Hour:
		return fmt.Errorf("-many-duration %v: want at most 24h", p.duration)
	case p.perConn() < 1:
		return fmt.Errorf("-many-duration %v at -many-rate %d: not one message per connection", p.duration, p.rate)
	case p.drain <= 0:
		return fmt.Errorf("-many-drain %v: want a positive wait", p.drain)
	case p.body < 0:
		return fmt.Errorf("-body %d: negative", p.body)
	case p.maxLen < 1:
		return fmt.Errorf("-many-max-length %d: want at least 1", p.maxLen)
	}
	return nil
}

// manyResult is what one child measured.
type manyResult struct {
	Client   string  `json:"client"`
	Conns    int     `json:"conns"`
	Rate     int     `json:"rate"`    // per connection, messages per second
	Seconds  float64 `json:"seconds"` // of the publishing schedule
	Expected int64   `json:"expected"`
	// Outcomes: Published counts the publish calls that succeeded;
	// Confirmed, Nacked and Failed (a publish call or a confirmation that
	// failed otherwise) their outcomes; Unsettled what had none when the
	// drain ended.
	Published int64  `json:"published"`
	Confirmed int64  `json:"confirmed"`
	Nacked    int64  `json:"nacked"`
	Failed    int64  `json:"failed"`
	Unsettled int64  `json:"unsettled"`
	FirstErr  string `json:"first_error,omitempty"`
	// Lost is the first connection lost during the run, if any.
	Lost string `json:"lost,omitempty"`
	// PublishSeconds is from the schedule's start until the last publish
	// call returned; SettleSeconds until the last outcome (or the drain's
	// end).
	PublishSeconds float64 `json:"publish_seconds"`
	SettleSeconds  float64 `json:"settle_seconds"`
	// CPUSeconds is the process's user+system CPU over the WindowSeconds
	// from the schedule's start until the last outcome (or the drain's
	// end).
	CPUSeconds    float64 `json:"cpu_seconds"`
	WindowSeconds float64 `json:"window_seconds"`
	// RSSBytes is the resident set when the schedule ended, HeapBytes the
	// Go heap and stacks in use then (no collection forced).
	RSSBytes    int64   `json:"rss_bytes"`
	HeapBytes   int64   `json:"heap_bytes"`
	Goroutines  int     `json:"goroutines"` // halfway through the schedule
	OpenSeconds float64 `json:"open_seconds"`
}

// cpuPerMsg is the CPU per published message, in seconds.
func (r manyResult) cpuPerMsg() float64 {
	if r.Published == 0 {
		return 0
	}
	return r.CPUSeconds / float64(r.Published)
}

// check fails unless every scheduled message was published and confirmed.
func (r manyResult) check() error {
	if r.Published == r.Expected && r.Confirmed == r.Expected && r.Nacked == 0 && r.Failed == 0 && r.Unsettled == 0 && r.Lost == "" {
		return nil
	}
	msg := fmt.Sprintf("%s: not every message was confirmed: %d scheduled, %d published, %d confirmed, %d nacked, %d failed, %d without an outcome",
		r.Client, r.Expected, r.Published, r.Confirmed, r.Nacked, r.Failed, r.Unsettled)
	if r.FirstErr != "" {
		msg += "; first error: " + r.FirstErr
	}
	if r.Lost != "" {
		msg += "; a connection was lost: " + r.Lost
	}
	return errors.New(msg)
}

// tally counts the outcomes of a run. Its methods are safe for concurrent
// use.
type tally struct {
	expected                             int64
	attempted, settled                   atomic.Int64
	published, confirmed, nacked, failed atomic.Int64
	firstErr                             atomic.Pointer[string]
	allSent, allSettled                  chan struct{}
	lastSent, lastSettled                atomic.Int64 // UnixNano
}

func newTally(expected int64) *tally {
	return &tally{expected: expected, allSent: make(chan struct{}), allSettled: make(chan struct{})}
}

// sent counts a publish call; err is its failure.
func (t *tally) sent(err error) {
	if err != nil {
		t.fail(err)
	} else {
		t.published.Add(1)
	}
	if t.attempted.Add(1) == t.expected {
		t.lastSent.Store(time.Now().UnixNano())
		close(t.allSent)
	}
}

// outcome counts a published message's outcome: nil when confirmed.
func (t *tally) outcome(err error) {
	switch {
	case err == nil:
		t.confirmed.Add(1)
		t.settle()
	case errors.Is(err, pika.ErrNacked):
		t.nacked.Add(1)
		t.settle()
	default:
		t.fail(err)
	}
}

func (t *tally) fail(err error) {
	t.failed.Add(1)
	s := err.Error()
	t.firstErr.CompareAndSwap(nil, &s)
	t.settle()
}

func (t *tally) settle() {
	if t.settled.Add(1) == t.expected {
		t.lastSettled.Store(time.Now().UnixNano())
		close(t.allSettled)
	}
}

// fill writes the counts into r.
func (t *tally) fill(r *manyResult) {
	r.Expected = t.expected
	r.Published = t.published.Load()
	r.Confirmed = t.confirmed.Load()
	r.Nacked = t.nacked.Load()
	r.Failed = t.failed.Load()
	r.Unsettled = t.expected - t.settled.Load()
	if s := t.firstErr.Load(); s != nil {
		r.FirstErr = *s
	}
}

// fleet is one client's N connections during a run.
type fleet interface {
	// start begins the publishing schedule at t0 (in the near future).
	start(t0 time.Time)
	// stop ends whatever still waits for outcomes (the drain is over).
	stop()
	// close closes the connections and reports a connection lost during
	// the run.
	close() error
}

// runManyChild is the child's main: measure, print one manyResult as
// JSON.
func runManyChild(client, url string, p manyParams) error {
	res, err := measureMany(client, url, p)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// measureMany opens the connections with client, publishes on schedule
// and measures. The result's check says whether every message was
// confirmed.
func measureMany(client, url string, p manyParams) (res manyResult, err error) {
	if err := p.validate(); err != nil {
		return res, err
	}
	cfg, err := pika.ParseURL(url)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The admin connection owns the queue: it goes when the child does.
	admin, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		return res, fmt.Errorf("admin connection: %w", err)
	}
	defer closePika(admin)
	ach, err := admin.Channel(ctx)
	if err != nil {
		return res, err
	}
	queue := fmt.Sprintf("pika-bench.many.%s.%d", client, os.Getpid())
	if _, err := ach.QueueDeclare(ctx, queue, pika.QueueDeclareOptions{
		Exclusive: true, Arguments: pika.Table{"x-max-length": int32(p.maxLen)},
	}); err != nil {
		return res, fmt.Errorf("declaring %s: %w", queue, err)
	}

	t := newTally(int64(p.conns) * int64(p.perConn()))
	body := make([]byte, p.body)
	cfg.ConnectionName = "pika-bench-many-" + client
	// A lost connection fails the run rather than being repaired in it.
	cfg.DisableRecovery = true
	start := time.Now()
	var fl fleet
	switch client {
	case "loop", "loop-fallback":
		fl, err = openLoopFleet(cfg, p, client == "loop-fallback", queue, body, t)
	case cPika:
		fl, err = openPikaFleet(cfg, p, queue, body, t)
	case cAMQP091:
		fl, err = openAMQPFleet(url, cfg, p, queue, body, t)
	default:
		err = fmt.Errorf("many: unknown client %q (have loop, loop-fallback, %s, %s)", client, cPika, cAMQP091)
	}
	if err != nil {
		return res, err
	}
	res = manyResult{Client: client, Conns: p.conns, Rate: p.rate, Seconds: p.duration.Seconds(), OpenSeconds: time.Since(start).Seconds()}

	t0 := time.Now().Add(200 * time.Millisecond)
	fl.start(t0)
	time.Sleep(time.Until(t0))
	cpu0 := cpuTime()
	time.Sleep(time.Until(t0.Add(p.duration / 2)))
	res.Goroutines = runtime.NumGoroutine()
	// The schedule's end, plus the drain for a client far behind.
	select {
	case <-t.allSent:
	case <-time.After(time.Until(t0.Add(p.duration + p.drain))):
	}
	if res.RSSBytes, err = vmRSS(); err != nil {
		fl.stop()
		fl.close()
		return res, err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapBytes = int64(ms.HeapInuse + ms.StackInuse)
	select {
	case <-t.allSettled:
	case <-time.After(p.drain):
	}
	cpu := cpuTime() - cpu0
	end := time.Now()
	fl.stop()
	t.fill(&res)
	res.CPUSeconds = cpu.Seconds()
	res.WindowSeconds = end.Sub(t0).Seconds()
	res.PublishSeconds = sinceT0(t0, t.lastSent.Load(), end)
	res.SettleSeconds = sinceT0(t0, t.lastSettled.Load(), end)
	if err := fl.close(); err != nil {
		res.Lost = err.Error()
	}
	return res, nil
}

// sinceT0 is the time from t0 to the instant ns (UnixNano), or to end
// when it never came (0).
func sinceT0(t0 time.Time, ns int64, end time.Time) float64 {
	if ns == 0 {
		return end.Sub(t0).Seconds()
	}
	return time.Unix(0, ns).Sub(t0).Seconds()
}

// loopFleet publishes from the connections' timers on their loop.
type loopFleet struct {
	lc    *loopConns
	p     manyParams
	queue string
	msg   pika.Message
	t     *tally
}

func openLoopFleet(cfg pika.Config, p manyParams, fallback bool, queue string, body []byte, t *tally) (*loopFleet, error) {
	lc, err := openLoop(cfg, p.conns, fallback, func(ch *loop.Channel, done func(error)) { ch.ConfirmSelect(done) })
	if err != nil {
		return nil, err
	}
	return &loopFleet{lc: lc, p: p, queue: queue, msg: pika.Message{Body: body}, t: t}, nil
}

func (f *loopFleet) start(t0 time.Time) {
	f.lc.l.Post(func() {
		perConn := f.p.perConn()
		for i, ch := range f.lc.chans {
			k := 0
			var tm *loop.Timer
			// Publish every message that is due, then sleep until the next.
			step := func() {
				now := time.Now()
				for ; k < perConn && !f.p.due(t0, i, k).After(now); k++ {
					f.t.sent(ch.PublishConfirm("", f.queue, f.msg, f.t.outcome))
				}
				if k < perConn {
					tm.Reset(f.p.due(t0, i, k).Sub(now))
				}
			}
			tm = f.lc.l.AfterFunc(time.Until(f.p.due(t0, i, 0)), step)
		}
	})
}

// stop: the loop keeps running until close; outcomes arriving late are
// counted, but after the result was taken.
func (f *loopFleet) stop() {}

func (f *loopFleet) close() error { return f.lc.close(true) }

// pending is a publish awaiting its outcome in a goroutine client.
type pending struct {
	done   <-chan struct{}
	result func() error
}

// goFleet publishes from a goroutine per connection, for the clients
// whose calls block (pika.Conn, amqp091-go).
type goFleet struct {
	p       manyParams
	t       *tally
	publish []func(ctx context.Context) (pending, error) // one per connection
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeFn func() error
}

func newGoFleet(p manyParams, t *tally, publish []func(ctx context.Context) (pending, error), closeFn func() error) *goFleet {
	ctx, cancel := context.WithCancel(context.Background())
	return &goFleet{p: p, t: t, publish: publish, ctx: ctx, cancel: cancel, closeFn: closeFn}
}

func (f *goFleet) start(t0 time.Time) {
	for i, publish := range f.publish {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.run(t0, i, publish)
		}()
	}
}

// run is connection i's goroutine: publish on schedule, and take the
// outcomes as they come, oldest first.
func (f *goFleet) run(t0 time.Time, i int, publish func(ctx context.Context) (pending, error)) {
	perConn := f.p.perConn()
	var queue []pending
	tm := time.NewTimer(time.Until(f.p.due(t0, i, 0)))
	defer tm.Stop()
	for k := 0; k < perConn || len(queue) > 0; {
		var head <-chan struct{}
		if len(queue) > 0 {
			head = queue[0].done
		}
		var tick <-chan time.Time
		if k < perConn {
			tick = tm.C
		}
		select {
		case <-head:
			f.t.outcome(queue[0].result())
			queue = queue[1:]
		case <-tick:
			now := time.Now()
			for ; k < perConn && !f.p.due(t0, i, k).After(now); k++ {
				pd, err := publish(f.ctx)
				f.t.sent(err)
				if err == nil {
					queue = append(queue, pd)
				}
			}
			if k < perConn {
				tm.Reset(f.p.due(t0, i, k).Sub(now))
			}
		case <-f.ctx.Done():
			return
		}
	}
}

func (f *goFleet) stop() {
	f.cancel()
	f.wg.Wait()
}

func (f *goFleet) close() error { return f.closeFn() }

func openPikaFleet(cfg pika.Config, p manyParams, queue string, body []byte, t *tally) (*goFleet, error) {
	conns, chans, err := openPikaConns(cfg, p.conns)
	if err == nil {
		err = parallel(len(chans), func(i int) error { return chans[i].ConfirmSelect(context.Background()) })
	}
	if err != nil {
		closePikaConns(conns)
		return nil, err
	}
	msg := pika.Message{Body: body}
	publish := make([]func(ctx context.Context) (pending, error), len(chans))
	for i, ch := range chans {
		publish[i] = func(ctx context.Context) (pending, error) {
			c, err := ch.PublishWithConfirm(ctx, "", queue, msg)
			if err != nil {
				return pending{}, err
			}
			return pending{done: c.Done(), result: c.Err}, nil
		}
	}
	return newGoFleet(p, t, publish, func() error {
		var lost error
		for _, c := range conns {
			if err := c.Err(); err != nil && lost == nil {
				lost = err
			}
		}
		closePikaConns(conns)
		return lost
	}), nil
}

func openAMQPFleet(url string, cfg pika.Config, p manyParams, queue string, body []byte, t *tally) (*goFleet, error) {
	conns, chans, err := openAMQPConns(url, amqp.Config{
		Heartbeat:  cfg.Heartbeat,
		Properties: amqp.Table{"connection_name": cfg.ConnectionName},
	}, p.conns)
	if err == nil {
		err = parallel(len(chans), func(i int) error { return chans[i].Confirm(false) })
	}
	if err != nil {
		closeAMQPConns(conns)
		return nil, err
	}
	msg := amqp.Publishing{Body: body}
	publish := make([]func(ctx context.Context) (pending, error), len(chans))
	for i, ch := range chans {
		publish[i] = func(ctx context.Context) (pending, error) {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, msg)
			if err != nil {
				return pending{}, err
			}
			return pending{done: dc.Done(), result: func() error {
				if dc.Acked() {
					return nil
				}
				return pika.ErrNacked
			}}, nil
		}
	}
	return newGoFleet(p, t, publish, func() error {
		closed := 0
		for _, c := range conns {
			if c.IsClosed() {
				closed++
			}
		}
		closeAMQPConns(conns)
		if closed > 0 {
			return fmt.Errorf("amqp091-go: %d connections closed during the run", closed)
		}
		return nil
	}), nil
}

// runMany runs the many mode from the parent: every client in its own
// child, rounds times, interleaved; it fails on the first run in which
// not every message was confirmed.
func runMany(w io.Writer, url string, clients []string, p manyParams, rounds int, asJSON bool, logw io.Writer) error {
	if err := p.validate(); err != nil {
		return err
	}
	results, err := runChildren(clients, rounds, func(c string) []string {
		return []string{"-many-client", c, "-many", strconv.Itoa(p.conns), "-url", url,
			"-many-rate", strconv.Itoa(p.rate), "-many-duration", p.duration.String(),
			"-many-drain", p.drain.String(), "-body", strconv.Itoa(p.body),
			"-many-max-length", strconv.Itoa(p.maxLen)}
	}, func(r int, res manyResult) error {
		if logw != nil {
			fmt.Fprintf(logw, "round %d %-10s published %d/%d confirmed %d nacked %d failed %d unsettled %d  cpu %.1f µs/msg  rss %.1f MiB  goroutines %d  publish %.1fs settle %.1fs open %.1fs\n",
				r, res.Client, res.Published, res.Expected, res.Confirmed, res.Nacked, res.Failed, res.Unsettled,
				res.cpuPerMsg()*1e6, float64(res.RSSBytes)/(1<<20), res.Goroutines, res.PublishSeconds, res.SettleSeconds, res.OpenSeconds)
		}
		return res.check()
	})
	if err != nil {
		return fmt.Errorf("many: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	fmt.Fprintf(w, "%d connections x %d msg/s x %v with confirms, %d-byte bodies, to %s; every message confirmed in every run; median (min-max) of %d rounds\n\n",
		p.conns, p.rate, p.duration, p.body, pika.RedactURL(url), rounds)
	printMedians(w, clients, results, []metric[manyResult]{
		{"messages published (= confirmed)", 1, func(r manyResult) float64 { return float64(r.Confirmed) }},
		{"client CPU per message (µs)", 1e6, manyResult.cpuPerMsg},
		{"client CPU (% of one core)", 100, func(r manyResult) float64 { return r.CPUSeconds / r.WindowSeconds }},
		{"RSS (MiB)", 1.0 / (1 << 20), func(r manyResult) float64 { return float64(r.RSSBytes) }},
		{"Go heap+stacks (MiB)", 1.0 / (1 << 20), func(r manyResult) float64 { return float64(r.HeapBytes) }},
		{"goroutines (total)", 1, func(r manyResult) float64 { return float64(r.Goroutines) }},
		{"last publish (s after start)", 1, func(r manyResult) float64 { return r.PublishSeconds }},
		{"last confirmation (s after start)", 1, func(r manyResult) float64 { return r.SettleSeconds }},
		{"opening the connections (s)", 1, func(r manyResult) float64 { return r.OpenSeconds }},
	})
	return nil
}
