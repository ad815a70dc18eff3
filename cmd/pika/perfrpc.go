package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pika-go/pika"
)

const perfRPCHelp = `Usage: pika perf rpc [FLAGS]

Measures request/reply calls over direct reply-to: --callers goroutines
call back to back, each waiting for its reply before the next call, through
one pika.RPCClient (one connection, one channel); --servers pika.Serve
instances (each on its own connection, --server-concurrency requests at a
time, replies confirmed before the request is acked) answer with the
request's body.

Once a second a line shows the calls completed per second in that second
and the call latency percentiles (p50, p95, p99, in milliseconds, from
Call to its return); then a summary. With --json the lines go to standard
error and the summary is one JSON object on standard output, with the keys
calls, errors, timeouts, late, duration_s, call_rate, latency_p50_ms,
latency_p95_ms, latency_p99_ms, latency_max_ms, callers, servers, size,
queue and stopped ("duration", "count", "interrupted" or "error").

The request queue is declared and deleted as by pika perf (see "pika perf
--help"), --queue included.

Flags:
  --callers N             concurrent callers (default 1)
  --servers N             Serve instances, each on its own connection
                          (default 1)
  --server-concurrency N  requests each server handles at once (default 64)
  --size BYTES            request body size (default 100)
  --call-timeout D        bound of each call (default 10s); a call that
                          times out counts as a timeout and stops the run
  --queue NAME            use this queue
  --duration D            how long to call, e.g. 30s (default 10s unless
                          --count is given)
  --count N               calls to make in all
  --json                  summary as JSON
  --url URL               broker URL (see pika --help)

Example:
  pika perf rpc --callers 64 --duration 10s
`

// perfRPCConfig is what the flags of pika perf rpc ask for.
type perfRPCConfig struct {
	callers, servers, concurrency int
	size                          int
	callTimeout                   time.Duration
	queue                         string
	duration                      time.Duration
	count                         int64
	json                          bool
}

// perfRPCSummary is the --json summary of pika perf rpc.
type perfRPCSummary struct {
	Calls        uint64  `json:"calls"`
	Errors       uint64  `json:"errors"`
	Timeouts     uint64  `json:"timeouts"`
	Late         uint64  `json:"late"`
	DurationS    float64 `json:"duration_s"`
	CallRate     float64 `json:"call_rate"`
	LatencyP50ms float64 `json:"latency_p50_ms"`
	LatencyP95ms float64 `json:"latency_p95_ms"`
	LatencyP99ms float64 `json:"latency_p99_ms"`
	LatencyMaxms float64 `json:"latency_max_ms"`
	Callers      int     `json:"callers"`
	Servers      int     `json:"servers"`
	Size         int     `json:"size"`
	Queue        string  `json:"queue"`
	Stopped      string  `json:"stopped"`
}

func runPerfRPC(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "perf rpc", perfRPCHelp)
	var c perfRPCConfig
	fs.IntVar(&c.callers, "callers", 1, "callers")
	fs.IntVar(&c.servers, "servers", 1, "servers")
	fs.IntVar(&c.concurrency, "server-concurrency", 64, "server concurrency")
	fs.IntVar(&c.size, "size", 100, "request size")
	fs.DurationVar(&c.callTimeout, "call-timeout", 10*time.Second, "call timeout")
	fs.StringVar(&c.queue, "queue", "", "queue")
	fs.DurationVar(&c.duration, "duration", 0, "duration")
	fs.Int64Var(&c.count, "count", 0, "calls in all")
	fs.BoolVar(&c.json, "json", false, "JSON summary")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := fs.args(pos); err != nil {
		return err
	}
	switch {
	case c.callers < 1 || c.callers > 100000:
		return usagef("perf rpc", "--callers %d: want 1..100000", c.callers)
	case c.servers < 1 || c.servers > 1000:
		return usagef("perf rpc", "--servers %d: want 1..1000", c.servers)
	case c.concurrency < 1 || c.concurrency > 65535:
		return usagef("perf rpc", "--server-concurrency %d: want 1..65535", c.concurrency)
	case c.size < 0 || c.size > maxBody:
		return usagef("perf rpc", "--size %d: want 0..%d bytes", c.size, maxBody)
	case c.callTimeout <= 0:
		return usagef("perf rpc", "--call-timeout %v: must be positive", c.callTimeout)
	case c.duration < 0:
		return usagef("perf rpc", "--duration %v: must not be negative", c.duration)
	case c.count < 0:
		return usagef("perf rpc", "--count %d: must not be negative", c.count)
	}
	if c.duration == 0 && c.count == 0 {
		c.duration = 10 * time.Second
	}
	// The queue's setup and cleanup are pika perf's.
	r := &perfRun{e: e, cfg: perfConfig{queue: c.queue, consumers: 1}, failed: make(chan struct{})}
	err = r.runRPC(ctx, &c)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil // Ctrl-C while starting
	}
	return err
}

// rpcStats are the counters of a pika perf rpc run.
type rpcStats struct {
	calls, errors, timeouts atomic.Uint64
	lat                     histogram
}

func (r *perfRun) runRPC(ctx context.Context, c *perfRPCConfig) error {
	return r.withQueue(ctx, "pika perf rpc setup", func(bool) error { return r.runCalls(ctx, c) })
}

// runCalls runs the servers and callers on the declared queue.
func (r *perfRun) runCalls(ctx context.Context, c *perfRPCConfig) error {
	stop, cancel := context.WithCancel(ctx)
	defer cancel()
	var servers sync.WaitGroup
	for i := range c.servers {
		conn, err := dial(ctx, r.e, fmt.Sprintf("pika perf rpc server %d", i+1))
		if err != nil {
			return err
		}
		defer closeConn(conn)
		servers.Go(func() {
			echo := func(_ context.Context, d *pika.Delivery) (pika.Message, error) {
				return pika.Message{Body: d.Body}, nil
			}
			if err := pika.Serve(stop, conn, r.queue, echo, pika.ServeOptions{Concurrency: c.concurrency}); err != nil {
				r.fail(fmt.Errorf("perf rpc server %d: %w", i+1, err))
			}
		})
	}
	// Stop the servers before waiting for them: an early return (the
	// client's connection failed) has not cancelled stop yet.
	defer func() {
		cancel()
		servers.Wait()
	}()
	conn, err := dial(ctx, r.e, "pika perf rpc client")
	if err != nil {
		return err
	}
	defer closeConn(conn)
	client, err := pika.NewRPCClient(ctx, conn, pika.RPCClientOptions{})
	if err != nil {
		return opError("rpc client", err)
	}
	defer client.Close(context.Background())

	var st rpcStats
	var claimed atomic.Int64
	var callers sync.WaitGroup
	start := time.Now()
	for range c.callers {
		callers.Go(func() {
			body := make([]byte, c.size)
			for stop.Err() == nil {
				if c.count > 0 && claimed.Add(1) > c.count {
					return
				}
				cctx, ccancel := context.WithTimeout(stop, c.callTimeout)
				t0 := time.Now()
				_, err := client.Call(cctx, "", r.queue, pika.Message{Body: body})
				lat := time.Since(t0)
				ccancel()
				switch {
				case err == nil:
					st.lat.add(uint64(lat))
					st.calls.Add(1)
				case stop.Err() != nil:
					return
				case errors.Is(err, context.DeadlineExceeded):
					st.timeouts.Add(1)
					r.fail(fmt.Errorf("perf rpc: a call got no reply within %v", c.callTimeout))
					return
				default:
					st.errors.Add(1)
					r.fail(opError("rpc call", err))
					return
				}
			}
		})
	}
	callersDone := make(chan struct{})
	go func() { callers.Wait(); close(callersDone) }()

	reason := r.waitRPC(ctx, c, &st, start, callersDone)
	elapsed := time.Since(start)
	cancel()
	callers.Wait()
	s := makeRPCSummary(c, &st, client.Stats().Late, elapsed, reason, r.queue)
	if werr := writeRPCSummary(r.e.stdout, c.json, s); werr != nil && r.err() == nil {
		return werr
	}
	return r.err()
}

// waitRPC prints a line a second until the run should stop and says why.
func (r *perfRun) waitRPC(ctx context.Context, c *perfRPCConfig, st *rpcStats, start time.Time, callersDone <-chan struct{}) string {
	var deadline <-chan time.Time
	if c.duration > 0 {
		t := time.NewTimer(c.duration)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lines := r.e.stdout
	if c.json {
		lines = r.e.stderr
	}
	prev, cur, diff := new(histCounts), new(histCounts), new(histCounts)
	var last time.Duration
	var lastCalls uint64
	for {
		select {
		case <-ctx.Done():
			return "interrupted"
		case <-r.failed:
			return "error"
		case <-deadline:
			return "duration"
		case <-callersDone:
			if r.err() != nil {
				return "error"
			}
			return "count"
		case now := <-tick.C:
			at := now.Sub(start)
			calls := st.calls.Load()
			st.lat.snapshot(cur)
			diff.sub(cur, prev)
			prev, cur = cur, prev
			q := diff.percentiles(0.5, 0.95, 0.99)
			fmt.Fprintf(lines, "time %5.1fs  calls %.0f/s  latency ms p50 %s p95 %s p99 %s\n",
				at.Seconds(), float64(calls-lastCalls)/(at-last).Seconds(), ms(q[0]), ms(q[1]), ms(q[2]))
			last, lastCalls = at, calls
		}
	}
}

func makeRPCSummary(c *perfRPCConfig, st *rpcStats, late uint64, elapsed time.Duration, reason, queue string) perfRPCSummary {
	lat := st.lat.summary()
	secs := elapsed.Seconds()
	s := perfRPCSummary{
		Calls: st.calls.Load(), Errors: st.errors.Load(), Timeouts: st.timeouts.Load(), Late: late,
		DurationS:    round3(secs),
		LatencyP50ms: lat[0], LatencyP95ms: lat[1], LatencyP99ms: lat[2], LatencyMaxms: lat[3],
		Callers: c.callers, Servers: c.servers, Size: c.size, Queue: queue, Stopped: reason,
	}
	if secs > 0 {
		s.CallRate = round3(float64(s.Calls) / secs)
	}
	return s
}

func writeRPCSummary(w io.Writer, asJSON bool, s perfRPCSummary) error {
	if asJSON {
		return newJSONWriter(w).write(s)
	}
	_, err := fmt.Fprintf(w,
		"summary: %.2f s (stopped: %s), %d caller(s), %d server(s), %d-byte requests, queue %q\n"+
			"  calls     %d (%.0f calls/s)\n"+
			"  errors    %d (timeouts %d)\n"+
			"  late      %d replies after their call had ended (timed out, or stopped with the run)\n"+
			"  latency   p50 %.3f ms  p95 %.3f ms  p99 %.3f ms  max %.3f ms\n",
		s.DurationS, s.Stopped, s.Callers, s.Servers, s.Size, s.Queue,
		s.Calls, s.CallRate, s.Errors, s.Timeouts, s.Late,
		s.LatencyP50ms, s.LatencyP95ms, s.LatencyP99ms, s.LatencyMaxms)
	return err
}
