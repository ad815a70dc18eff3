// Command bench runs the same workloads with github.com/pika-go/pika and
// github.com/rabbitmq/amqp091-go, interleaved (pika, amqp091-go, pika,
// amqp091-go, ...), each run on a fresh queue, and reports medians over
// rounds with pika/amqp091-go ratios:
//
//	publish          publish N messages without confirms, until the broker's
//	                 queue holds all N (polled with a passive queue.declare on
//	                 a separate connection once the last publish returned)
//	publish-confirm  publish N with confirms, at most -window outstanding
//	consume          consume N from a pre-filled queue (the fill is not
//	                 measured), prefetch -prefetch, ack multiple every
//	                 -ack-every deliveries
//	publish-sink     publish as in "publish" to a minimal AMQP server that
//	                 only counts basic.publish methods; it runs as a child
//	                 process, so the client is measured alone
//
// For every run it measures messages per second (wall clock), the process's
// user+system CPU (RUSAGE_SELF: the client's, as the broker and the sink are
// other processes), heap allocations and bytes per message (after a GC), and
// write calls on the client's net.Conn per message.
//
// Usage:
//
//	go run . -n 200000 -rounds 3 -json -chart ../docs/bench-chart.svg
//
// The broker is PIKA_TEST_URL, or amqp://guest:guest@127.0.0.1:5672/, or
// -url. Queues are named pika-bench.* and deleted after each run.
//
// Two other modes compare clients with many connections, each client in a
// child process of its own (idle.go, many.go):
//
//	-idle N   N idle connections to the sink: memory, goroutines, idle CPU
//	-many N   N connections to the broker, each publishing -many-rate msg/s
//	          with confirms for -many-duration: CPU per message, memory,
//	          goroutines; a run fails unless every message was confirmed
//	          (scripts/manyconns.sh runs it on an extra RabbitMQ node)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(sinkEnv) == "1" {
		if err := runSinkChild(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// defaultURL is the broker when neither -url nor PIKA_TEST_URL says.
const defaultURL = "amqp://guest:guest@127.0.0.1:5672/"

func brokerURL() string {
	if u := os.Getenv("PIKA_TEST_URL"); u != "" {
		return u
	}
	return defaultURL
}

func mainErr() error {
	var (
		opts           options
		workloads      string
		clients        string
		asJSON         bool
		chartPath      string
		cpuProfile     string
		memProfile     string
		quiet          bool
		sinkOnly       bool
		from           string
		idleN          int
		idleClient     string
		idleClientList string
		idleHB         time.Duration
		idleSettle     time.Duration
		idleWindow     time.Duration
		many           manyParams
		manyClient     string
		manyClientList string
	)
	flag.StringVar(&opts.URL, "url", brokerURL(), "broker AMQP URI (default from PIKA_TEST_URL)")
	flag.IntVar(&opts.N, "n", 200000, "messages per run")
	flag.IntVar(&opts.Rounds, "rounds", 3, "rounds (each runs every workload with every client)")
	flag.IntVar(&opts.BodySize, "body", 100, "message body size in bytes")
	flag.IntVar(&opts.Window, "window", 1000, "publish-confirm: outstanding confirmations at most")
	flag.IntVar(&opts.Prefetch, "prefetch", 1000, "consume: prefetch count")
	flag.IntVar(&opts.AckEvery, "ack-every", 100, "consume: ack with multiple=true every this many deliveries")
	flag.DurationVar(&opts.PollInterval, "poll", 2*time.Millisecond, "publish: queue depth polling interval")
	flag.DurationVar(&opts.RunTimeout, "timeout", 2*time.Minute, "bound of one run")
	flag.DurationVar(&opts.Pause, "pause", time.Second, "idle time between runs, not measured (lets the broker finish deleting the last queue)")
	flag.IntVar(&opts.Retries, "retries", 2, "retry a run through the broker this many times after a failure (a shared broker may restart)")
	flag.StringVar(&workloads, "workloads", strings.Join(allWorkloads, ","), "comma-separated workloads to run")
	flag.StringVar(&clients, "clients", cPika+","+cAMQP091, "comma-separated clients to run")
	flag.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	flag.StringVar(&chartPath, "chart", "", "write an SVG bar chart to this file")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&memProfile, "memprofile", "", "write an allocation profile (every allocation sampled) to this file; in idle mode, each child writes the heap in use by its idle connections to this file with .CLIENT.ROUND appended")
	flag.BoolVar(&quiet, "q", false, "no progress lines on stderr")
	flag.StringVar(&from, "from", "", "instead of running, read a report written by -json from this file (to print or chart it again)")
	flag.BoolVar(&sinkOnly, "sink", false, "run only the sink server (prints its address; stdin commands: expect N)")
	flag.StringVar(&pikaConfirmMode, "pika-confirm", pikaConfirmMode, "pika's publish-confirm style: ring (PublishWithConfirm), onconfirm (Publish + OnConfirm), batch (WaitConfirms every window)")
	flag.StringVar(&amqpConfirmMode, "amqp-confirm", amqpConfirmMode, "amqp091-go's publish-confirm style: ring (wait on the deferred confirmation window messages back), batch (publish window, then wait for all)")
	flag.StringVar(&pikaConsumeMode, "pika-consume", pikaConsumeMode, "pika's consume style: next (Consumer.Next), handler (ConsumeFunc), inline (ConsumeFunc with ConsumeOptions.Inline)")
	flag.StringVar(&pikaReadMode, "pika-read", pikaReadMode, "how pika's reader waits for the socket: poller (the Go runtime's network poller), block (Config.BlockingRead: the socket taken from the poller, a blocking ppoll on the reader's thread, Linux; pika's reads and writes then go uncounted)")
	flag.DurationVar(&pikaReadLinger, "pika-read-linger", 0, "pika's Config.ReadLinger (with -pika-read block; 0: off)")
	flag.IntVar(&idleN, "idle", 0, "idle mode: measure this many idle connections per client (loop, pika, amqp091-go) against the sink, -rounds times, instead of the workloads")
	flag.DurationVar(&idleHB, "idle-heartbeat", 5*time.Second, "idle mode: the heartbeat interval the sink proposes (whole seconds)")
	flag.DurationVar(&idleSettle, "idle-settle", 3*time.Second, "idle mode: wait after the last connection opened before measuring")
	flag.DurationVar(&idleWindow, "idle-window", 10*time.Second, "idle mode: the window over which idle CPU is measured")
	flag.StringVar(&idleClientList, "idle-clients", strings.Join(idleClients, ","), "idle mode: the clients to compare, the first with each other (loop, loop-fallback, loop-norecovery, pika, amqp091-go)")
	flag.StringVar(&idleClient, "idle-client", "", "internal: run as the idle mode's child for this client")
	flag.IntVar(&many.conns, "many", 0, "many mode: this many connections to the broker (-url), each publishing with confirms, per client (loop, pika), -rounds times, instead of the workloads")
	flag.IntVar(&many.rate, "many-rate", 10, "many mode: messages per second per connection")
	flag.DurationVar(&many.duration, "many-duration", 30*time.Second, "many mode: how long each connection publishes")
	flag.DurationVar(&many.drain, "many-drain", 30*time.Second, "many mode: the longest wait for outstanding confirmations (and for a client behind its schedule)")
	flag.IntVar(&many.maxLen, "many-max-length", 10000, "many mode: x-max-length of the queue the messages go to")
	flag.StringVar(&manyClientList, "many-clients", strings.Join(manyClients, ","), "many mode: the clients to compare, the first with each other (loop, loop-fallback, pika, amqp091-go)")
	flag.StringVar(&manyClient, "many-client", "", "internal: run as the many mode's child for this client")
	flag.Parse()
	switch pikaConsumeMode {
	case "next", "handler", "inline":
	default:
		return fmt.Errorf("-pika-consume %q: want next, handler or inline", pikaConsumeMode)
	}
	if pikaReadMode != "poller" && pikaReadMode != "block" {
		return fmt.Errorf("-pika-read %q: want poller or block", pikaReadMode)
	}
	many.body = opts.BodySize
	if manyClient != "" {
		return runManyChild(manyClient, opts.URL, many)
	}
	if many.conns > 0 {
		var logw io.Writer
		if !quiet {
			logw = os.Stderr
		}
		return runMany(os.Stdout, opts.URL, splitList(manyClientList), many, opts.Rounds, asJSON, logw)
	}
	if idleClient != "" {
		return runIdleChild(idleClient, opts.URL, idleN, idleSettle, idleWindow, memProfile)
	}
	if idleN > 0 {
		var logw io.Writer
		if !quiet {
			logw = os.Stderr
		}
		return runIdle(os.Stdout, splitList(idleClientList), idleN, opts.Rounds, idleHB, idleSettle, idleWindow, memProfile, logw)
	}
	switch pikaConfirmMode {
	case "ring", "onconfirm", "batch":
	default:
		return fmt.Errorf("-pika-confirm %q: want ring, onconfirm or batch", pikaConfirmMode)
	}
	switch amqpConfirmMode {
	case "ring", "batch":
	default:
		return fmt.Errorf("-amqp-confirm %q: want ring or batch", amqpConfirmMode)
	}
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if sinkOnly {
		return runSinkChild()
	}
	opts.Workloads = splitList(workloads)
	opts.Clients = splitList(clients)
	if !quiet {
		opts.Log = os.Stderr
	}

	if memProfile != "" {
		runtime.MemProfileRate = 1
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var rep *report
	var err error
	if from != "" {
		rep, err = readReport(from)
	} else {
		rep, err = run(ctx, opts)
	}
	if err != nil {
		return err
	}

	if memProfile != "" {
		if err := writeProfile("allocs", memProfile); err != nil {
			return err
		}
	}
	if chartPath != "" {
		f, err := os.Create(chartPath)
		if err != nil {
			return err
		}
		if err := writeChart(f, rep); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printTable(os.Stdout, rep)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// readReport reads a report written with -json.
func readReport(path string) (*report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rep := new(report)
	if err := json.Unmarshal(b, rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rep.Workloads) == 0 {
		return nil, fmt.Errorf("%s: no workloads in the report", path)
	}
	return rep, nil
}
