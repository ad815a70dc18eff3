package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/pika-go/pika"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The idle mode (-idle N) measures what an idle connection costs each
// client: N connections to the broker, one channel each, heartbeats on
// (-idle-heartbeat), left alone for -idle-wait; then the Go heap and stack
// in use, the goroutines and the resident set, each per connection (the
// difference from before the connections were opened, after a GC).
// Clients alternate within each round (pika, amqp091-go, pika, ...).

// idleResult is one client's idle figures in one round.
type idleResult struct {
	Client          string  `json:"client"`
	Conns           int     `json:"conns"`
	HeapPerConn     float64 `json:"heap_bytes_per_conn"`  // HeapAlloc delta / conns
	StackPerConn    float64 `json:"stack_bytes_per_conn"` // StackInuse delta / conns
	GoroutinesPer   float64 `json:"goroutines_per_conn"`
	RSSPerConn      float64 `json:"rss_bytes_per_conn"`
	CPUPerConnSecUS float64 `json:"cpu_us_per_conn_s"` // client CPU while idle, µs per connection per second
}

// idleOptions configure the idle mode.
type idleOptions struct {
	URL       string
	Conns     int
	Rounds    int
	Heartbeat time.Duration
	Wait      time.Duration
	Clients   []string
	Log       io.Writer
}

// idleMemory is the process's memory and goroutines after a GC.
func idleMemory() (heap, stack uint64, goroutines int, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory() // a GC too, and freed pages go back: RSS means something
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse, runtime.NumGoroutine(), readRSS()
}

// readRSS reads the resident set size from /proc/self/statm (0 elsewhere).
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// runIdle runs the idle mode and writes its report to out.
func runIdle(ctx context.Context, o idleOptions, out io.Writer, asJSON bool) error {
	var all []idleResult
	for round := 1; round <= o.Rounds; round++ {
		for _, cl := range o.Clients {
			r, err := idleOnce(ctx, o, cl)
			if err != nil {
				return fmt.Errorf("idle round %d, %s: %w", round, cl, err)
			}
			if o.Log != nil {
				fmt.Fprintf(o.Log, "idle round %d %s: heap %.0f B, stack %.0f B, %.2f goroutines, RSS %.0f B, CPU %.1f µs/s per connection\n",
					round, cl, r.HeapPerConn, r.StackPerConn, r.GoroutinesPer, r.RSSPerConn, r.CPUPerConnSecUS)
			}
			all = append(all, r)
		}
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"conns": o.Conns, "heartbeat_s": o.Heartbeat.Seconds(), "wait_s": o.Wait.Seconds(), "runs": all})
	}
	fmt.Fprintf(out, "%d idle connections, one channel each, heartbeat %v, measured after %v; median of %d rounds\n", o.Conns, o.Heartbeat, o.Wait, o.Rounds)
	fmt.Fprintf(out, "%-12s %14s %14s %14s %12s %12s\n", "client", "heap B/conn", "stack B/conn", "heap+stack", "goroutines", "RSS B/conn")
	for _, cl := range o.Clients {
		var heap, stack, g, rss []float64
		for _, r := range all {
			if r.Client == cl {
				heap, stack, g, rss = append(heap, r.HeapPerConn), append(stack, r.StackPerConn), append(g, r.GoroutinesPer), append(rss, r.RSSPerConn)
			}
		}
		fmt.Fprintf(out, "%-12s %14.0f %14.0f %14.0f %12.2f %12.0f\n", cl, median(heap), median(stack), median(heap)+median(stack), median(g), median(rss))
	}
	return nil
}

// idleOnce opens o.Conns idle connections with client cl, measures, and
// closes them.
func idleOnce(ctx context.Context, o idleOptions, cl string) (idleResult, error) {
	heap0, stack0, g0, rss0 := idleMemory()
	var closers []func()
	defer func() {
		for _, f := range closers {
			f()
		}
	}()
	for i := range o.Conns {
		switch cl {
		case cPika:
			cfg, err := pika.ParseURL(o.URL)
			if err != nil {
				return idleResult{}, err
			}
			cfg.ConnectionName = "pika-bench-idle"
			cfg.Heartbeat = o.Heartbeat
			conn, err := pika.DialConfig(ctx, cfg)
			if err != nil {
				return idleResult{}, fmt.Errorf("connection %d: %w", i, err)
			}
			closers = append(closers, func() { closePika(conn) })
			if _, err := conn.Channel(ctx); err != nil {
				return idleResult{}, fmt.Errorf("connection %d: channel: %w", i, err)
			}
		case cAMQP091:
			conn, err := amqp.DialConfig(o.URL, amqp.Config{Heartbeat: o.Heartbeat, Properties: amqp.Table{"connection_name": "amqp091-bench-idle"}})
			if err != nil {
				return idleResult{}, fmt.Errorf("connection %d: %w", i, err)
			}
			closers = append(closers, func() { conn.Close() })
			if _, err := conn.Channel(); err != nil {
				return idleResult{}, fmt.Errorf("connection %d: channel: %w", i, err)
			}
		default:
			return idleResult{}, fmt.Errorf("unknown client %q", cl)
		}
	}
	cpu0 := cpuTime()
	start := time.Now()
	select {
	case <-time.After(o.Wait):
	case <-ctx.Done():
		return idleResult{}, ctx.Err()
	}
	cpu := cpuTime() - cpu0
	secs := time.Since(start).Seconds()
	heap, stack, g, rss := idleMemory()
	n := float64(o.Conns)
	return idleResult{
		Client: cl, Conns: o.Conns,
		HeapPerConn:     (float64(heap) - float64(heap0)) / n,
		StackPerConn:    (float64(stack) - float64(stack0)) / n,
		GoroutinesPer:   float64(g-g0) / n,
		RSSPerConn:      (float64(rss) - float64(rss0)) / n,
		CPUPerConnSecUS: cpu.Seconds() * 1e6 / n / secs,
	}, nil
}
