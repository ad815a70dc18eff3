package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pika-go/pika"
)

// Workload names, in the order they run and are reported.
const (
	wPublish        = "publish"
	wPublishConfirm = "publish-confirm"
	wConsume        = "consume"
	wPublishSink    = "publish-sink"
)

var allWorkloads = []string{wPublish, wPublishConfirm, wConsume, wPublishSink}

var workloadDescriptions = map[string]string{
	wPublish:        "publish N messages without confirms, until the broker's queue holds all N",
	wPublishConfirm: "publish N messages with confirms, at most `window` outstanding, until all are confirmed",
	wConsume:        "consume N messages from a pre-filled queue, prefetch `prefetch`, ack multiple every `ack_every`",
	wPublishSink:    "publish N messages without confirms to a minimal AMQP sink server (a child process: client CPU only), until it counted N",
}

// needsBroker reports whether workload w talks to RabbitMQ.
func needsBroker(w string) bool { return w != wPublishSink }

// Client names.
const (
	cPika    = "pika"
	cAMQP091 = "amqp091-go"
)

var allClients = []client{pikaClient{}, amqpClient{}, loopClient{}}

// options configure a bench run.
type options struct {
	URL          string        // the broker
	N            int           // messages per run
	Rounds       int           // rounds; each runs every workload with every client
	BodySize     int           // message body bytes
	Window       int           // outstanding confirmations at most
	Prefetch     int           // consumer prefetch
	AckEvery     int           // consumer acks multiple every this many
	PollInterval time.Duration // broker queue-depth polling interval
	RunTimeout   time.Duration // bound of one measured run
	Retries      int           // runs through the broker retried after a failure at most
	Pause        time.Duration // idle time after each run, so that the broker settles (deleting the last queue)
	Workloads    []string
	Clients      []string
	Log          io.Writer // progress lines; nil: none

	// For tests: clients to use instead of allClients, and a hook told
	// every queue name declared.
	clients  []client
	declared func(queue string)
}

func (o *options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// runResult is one measured run.
type runResult struct {
	WallS        float64 `json:"wall_s"`
	CPUS         float64 `json:"cpu_s"`
	MsgsPerS     float64 `json:"msgs_per_s"`
	CPUSPer100k  float64 `json:"cpu_s_per_100k"`
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	BytesPerMsg  float64 `json:"bytes_per_msg"`
	WritesPerMsg float64 `json:"writes_per_msg"`
	ReadsPerMsg  float64 `json:"reads_per_msg"`
}

// runner holds what a bench run shares between its measured runs.
type runner struct {
	opts  options
	admin *pika.Conn    // declares, deletes, fills and polls queues
	ach   *pika.Channel // admin channel; reopened when the broker closes it
	sink  *sinkProc
	body  []byte
	seq   int

	leftover []string // queues whose deletion failed, retried after a reconnect
}

// dialAdmin connects the admin connection.
func (r *runner) dialAdmin(ctx context.Context) error {
	cfg, err := pika.ParseURL(r.opts.URL)
	if err != nil {
		return err
	}
	cfg.ConnectionName = "pika-bench-admin"
	cfg.DisableRecovery = true
	admin, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("broker at %s: %w", pika.RedactURL(r.opts.URL), err)
	}
	r.admin, r.ach = admin, nil
	return nil
}

// reconnect replaces the admin connection once the broker answers again
// (for at most three minutes) and deletes the queues left over.
func (r *runner) reconnect(ctx context.Context) error {
	closePika(r.admin)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		err := r.dialAdmin(ctx)
		if err == nil {
			break
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return fmt.Errorf("the broker did not come back: %w", err)
		}
	}
	left := r.leftover
	r.leftover = nil
	for _, q := range left {
		r.remove(q) // on failure it is listed again
	}
	return nil
}

// adminChannel returns an open admin channel.
func (r *runner) adminChannel(ctx context.Context) (*pika.Channel, error) {
	if r.ach != nil && !r.ach.IsClosed() {
		return r.ach, nil
	}
	ch, err := r.admin.Channel(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin channel: %w", err)
	}
	r.ach = ch
	return ch, nil
}

// declare declares a fresh queue for one run.
func (r *runner) declare(ctx context.Context, round int, w, c string) (string, error) {
	r.seq++
	name := fmt.Sprintf("pika-bench.%d.%d.r%d.%s.%s", os.Getpid(), r.seq, round, w, c)
	ch, err := r.adminChannel(ctx)
	if err != nil {
		return "", err
	}
	if _, err := ch.QueueDeclare(ctx, name, pika.QueueDeclareOptions{}); err != nil {
		return "", fmt.Errorf("declare %s: %w", name, err)
	}
	if r.opts.declared != nil {
		r.opts.declared(name)
	}
	return name, nil
}

// remove deletes a run's queue, whatever happened to the run. A queue it
// cannot delete is remembered and deleted after the next reconnect.
func (r *runner) remove(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := func() error {
		ch, err := r.adminChannel(ctx)
		if err != nil {
			return err
		}
		_, err = ch.QueueDelete(ctx, name, pika.QueueDeleteOptions{})
		return err
	}()
	if err != nil {
		if !slices.Contains(r.leftover, name) {
			r.leftover = append(r.leftover, name)
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// depth returns the queue's ready-message count.
func (r *runner) depth(ctx context.Context, name string) (int, error) {
	ch, err := r.adminChannel(ctx)
	if err != nil {
		return 0, err
	}
	q, err := ch.QueueDeclarePassive(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("queue depth of %s: %w", name, err)
	}
	return q.Messages, nil
}

// awaitDepth returns a function that polls until the queue holds n
// messages.
func (r *runner) awaitDepth(name string, n int) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		for {
			d, err := r.depth(ctx, name)
			if err != nil {
				return err
			}
			if d >= n {
				return nil
			}
			select {
			case <-time.After(r.opts.PollInterval):
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s to hold %d messages (has %d): %w", name, n, d, ctx.Err())
			}
		}
	}
}

// fill publishes n messages to the queue with confirms (not measured).
func (r *runner) fill(ctx context.Context, name string, n int) error {
	ch, err := r.admin.Channel(ctx)
	if err != nil {
		return fmt.Errorf("fill channel: %w", err)
	}
	defer ch.Close(context.Background())
	if err := ch.ConfirmSelect(ctx); err != nil {
		return fmt.Errorf("fill: confirm.select: %w", err)
	}
	msg := pika.Message{Body: r.body}
	const batch = 10000
	for i := 0; i < n; i++ {
		if err := ch.Publish(ctx, "", name, msg); err != nil {
			return fmt.Errorf("fill: publish: %w", err)
		}
		if (i+1)%batch == 0 || i == n-1 {
			if err := ch.WaitConfirms(ctx); err != nil {
				return fmt.Errorf("fill: confirms: %w", err)
			}
		}
	}
	return r.awaitDepth(name, n)(ctx)
}

// report is everything a bench run found.
type report struct {
	Config    reportConfig               `json:"config"`
	Machine   machineInfo                `json:"machine"`
	Workloads map[string]*workloadReport `json:"workloads"`
	Targets   []targetResult             `json:"targets,omitempty"`
}

type reportConfig struct {
	N              int      `json:"n"`
	Rounds         int      `json:"rounds"`
	BodyBytes      int      `json:"body_bytes"`
	ConfirmWindow  int      `json:"confirm_window"`
	Prefetch       int      `json:"prefetch"`
	AckEvery       int      `json:"ack_every"`
	PollIntervalMS float64  `json:"poll_interval_ms"`
	PauseS         float64  `json:"pause_between_runs_s"`
	Broker         string   `json:"broker,omitempty"`
	PikaConfirm    string   `json:"pika_confirm_style"`
	PikaConsume    string   `json:"pika_consume_style"`
	AMQPConfirm    string   `json:"amqp091_confirm_style"`
	RetriedRuns    int      `json:"retried_runs"`
	Workloads      []string `json:"workload_order"`
	Clients        []string `json:"client_order"`
	Stat           string   `json:"stat"`
}

// workloadReport holds a workload's figures: per client the medians over
// rounds (with each round's figures), and pika's medians divided by
// amqp091-go's.
type workloadReport struct {
	Description string                   `json:"description"`
	Clients     map[string]*clientReport `json:"clients"`
	Ratios      map[string]float64       `json:"ratios_pika_over_amqp091,omitempty"`
}

type clientReport struct {
	runResult
	Rounds []runResult `json:"rounds"`
}

// run runs every round and returns the report. The sink child and every
// declared queue are cleaned up whatever happens.
func run(ctx context.Context, opts options) (rep *report, err error) {
	if opts.N <= 0 || opts.Rounds <= 0 || opts.Window <= 0 || opts.Prefetch <= 0 || opts.AckEvery <= 0 {
		return nil, errors.New("n, rounds, window, prefetch and ack-every must be positive")
	}
	var clients []client
	known := allClients
	if opts.clients != nil {
		known = opts.clients
	}
	for _, c := range known {
		if len(opts.Clients) == 0 || slices.Contains(opts.Clients, c.name()) {
			clients = append(clients, c)
		}
	}
	if len(clients) == 0 {
		return nil, fmt.Errorf("no known client among %q (have %s, %s)", opts.Clients, cPika, cAMQP091)
	}
	workloads := opts.Workloads
	if len(workloads) == 0 {
		workloads = allWorkloads
	}
	for _, w := range workloads {
		if _, ok := workloadDescriptions[w]; !ok {
			return nil, fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(allWorkloads, ", "))
		}
	}
	r := &runner{opts: opts, body: make([]byte, opts.BodySize)}
	for i := range r.body {
		r.body[i] = byte('a' + i%26)
	}

	rep = &report{
		Config: reportConfig{
			N: opts.N, Rounds: opts.Rounds, BodyBytes: opts.BodySize, ConfirmWindow: opts.Window,
			Prefetch: opts.Prefetch, AckEvery: opts.AckEvery,
			PollIntervalMS: float64(opts.PollInterval) / float64(time.Millisecond),
			PauseS:         opts.Pause.Seconds(),
			Workloads:      workloads, Stat: "median over rounds", PikaConfirm: pikaConfirmMode, PikaConsume: pikaConsumeMode,
			AMQPConfirm: amqpConfirmMode,
		},
		Machine:   collectMachineInfo(),
		Workloads: make(map[string]*workloadReport),
	}
	for _, c := range clients {
		rep.Config.Clients = append(rep.Config.Clients, c.name())
	}

	if slices.ContainsFunc(workloads, needsBroker) {
		if err := r.dialAdmin(ctx); err != nil {
			return nil, err
		}
		defer func() {
			left := r.leftover
			r.leftover = nil
			for _, q := range left {
				r.remove(q)
			}
			closePika(r.admin)
			if len(r.leftover) > 0 && err == nil {
				err = fmt.Errorf("could not delete queues %q", r.leftover)
			}
		}()
		rep.Config.Broker = pika.RedactURL(opts.URL)
		if v, ok := r.admin.ServerProperties()["version"].(string); ok {
			rep.Machine.Broker = "RabbitMQ " + v
		}
	}
	if slices.Contains(workloads, wPublishSink) {
		r.sink, err = startSink()
		if err != nil {
			return nil, err
		}
		defer r.sink.stop()
	}

	results := make(map[string]map[string][]runResult)
	for round := 1; round <= opts.Rounds; round++ {
		for _, w := range workloads {
			for _, c := range clients {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				if opts.Pause > 0 && (round > 1 || w != workloads[0] || c != clients[0]) {
					select {
					case <-time.After(opts.Pause):
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				}
				var res runResult
				for attempt := 0; ; attempt++ {
					res, err = r.runOne(ctx, round, w, c)
					if err == nil {
						break
					}
					err = fmt.Errorf("round %d, %s, %s: %w", round, w, c.name(), err)
					if ctx.Err() != nil || attempt >= opts.Retries || !needsBroker(w) {
						return nil, err
					}
					// The machine's broker is shared: another user may
					// restart it or close connections. Wait for it and run
					// again; the report counts such retries.
					opts.logf("%v; waiting for the broker to run again", err)
					rep.Config.RetriedRuns++
					if err := r.reconnect(ctx); err != nil {
						return nil, err
					}
				}
				opts.logf("round %d  %-16s %-11s %10.0f msg/s  cpu %6.3f s/100k  %6.2f allocs/msg  %7.1f B/msg  %.4f writes/msg  %.4f reads/msg",
					round, w, c.name(), res.MsgsPerS, res.CPUSPer100k, res.AllocsPerMsg, res.BytesPerMsg, res.WritesPerMsg, res.ReadsPerMsg)
				if results[w] == nil {
					results[w] = make(map[string][]runResult)
				}
				results[w][c.name()] = append(results[w][c.name()], res)
			}
		}
	}

	for _, w := range workloads {
		wr := &workloadReport{Description: workloadDescriptions[w], Clients: make(map[string]*clientReport)}
		for name, rs := range results[w] {
			wr.Clients[name] = &clientReport{runResult: medianResult(rs), Rounds: rs}
		}
		p, a := wr.Clients[cPika], wr.Clients[cAMQP091]
		if p != nil && a != nil {
			wr.Ratios = make(map[string]float64)
			for k, pa := range map[string][2]float64{
				"msgs_per_s":     {p.MsgsPerS, a.MsgsPerS},
				"cpu_s_per_100k": {p.CPUSPer100k, a.CPUSPer100k},
				"allocs_per_msg": {p.AllocsPerMsg, a.AllocsPerMsg},
				"bytes_per_msg":  {p.BytesPerMsg, a.BytesPerMsg},
				"writes_per_msg": {p.WritesPerMsg, a.WritesPerMsg},
				"reads_per_msg":  {p.ReadsPerMsg, a.ReadsPerMsg},
			} {
				if pa[1] > 0 { // no ratio to nothing (no reads when publishing without confirms)
					wr.Ratios[k] = pa[0] / pa[1]
				}
			}
		}
		rep.Workloads[w] = wr
	}
	rep.Targets = evaluateTargets(rep)
	return rep, nil
}

// runOne runs workload w with client c once, on a fresh queue.
func (r *runner) runOne(ctx context.Context, round int, w string, c client) (res runResult, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	io := new(ioCounters)
	e := &env{
		n: r.opts.N, body: r.body, window: r.opts.Window, prefetch: r.opts.Prefetch,
		ackEvery: r.opts.AckEvery, io: io,
	}
	e.m = &meter{io: io}
	if needsBroker(w) {
		e.url = r.opts.URL
		e.queue, err = r.declare(ctx, round, w, c.name())
		if err != nil {
			return res, err
		}
		// A failed deletion is retried later (see leftover).
		defer r.remove(e.queue)
	} else {
		e.url = "amqp://guest:guest@" + r.sink.addr + "/"
		e.queue = "pika-bench.sink"
	}
	switch w {
	case wPublish:
		e.await = r.awaitDepth(e.queue, e.n)
		err = c.publish(ctx, e)
	case wPublishConfirm:
		err = c.publishConfirm(ctx, e)
	case wConsume:
		if err := r.fill(ctx, e.queue, e.n); err != nil {
			return res, err
		}
		err = c.consume(ctx, e)
	case wPublishSink:
		if err := r.sink.expect(e.n); err != nil {
			return res, err
		}
		e.await = func(ctx context.Context) error {
			d := r.opts.RunTimeout
			if dl, ok := ctx.Deadline(); ok {
				d = time.Until(dl)
			}
			return r.sink.waitReached(d)
		}
		err = c.publish(ctx, e)
	}
	if err != nil {
		return res, err
	}
	if !e.m.stopped {
		return res, errors.New("the workload did not complete its measurement")
	}
	return e.m.result(e.n), nil
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianResult takes each metric's median separately.
func medianResult(rs []runResult) runResult {
	pick := func(f func(runResult) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return median(xs)
	}
	return runResult{
		WallS:        pick(func(r runResult) float64 { return r.WallS }),
		CPUS:         pick(func(r runResult) float64 { return r.CPUS }),
		MsgsPerS:     pick(func(r runResult) float64 { return r.MsgsPerS }),
		CPUSPer100k:  pick(func(r runResult) float64 { return r.CPUSPer100k }),
		AllocsPerMsg: pick(func(r runResult) float64 { return r.AllocsPerMsg }),
		BytesPerMsg:  pick(func(r runResult) float64 { return r.BytesPerMsg }),
		WritesPerMsg: pick(func(r runResult) float64 { return r.WritesPerMsg }),
		ReadsPerMsg:  pick(func(r runResult) float64 { return r.ReadsPerMsg }),
	}
}
