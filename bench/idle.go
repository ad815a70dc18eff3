package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/loop"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The idle mode (-idle N) measures what N idle connections cost, each with
// one channel and heartbeats on, against the sink (which proposes the
// heartbeat interval and sends heartbeats of its own): the resident set
// and the Go heap and stacks per connection, the goroutines, and the CPU
// per second while nothing but heartbeats happens. Each client runs in a
// child process of its own (this executable again, with -idle-client), so
// that its RSS and CPU are its alone; the clients take turns, round after
// round.

// idleClients are the clients the idle mode compares by default;
// "loop-fallback" (package loop with every connection on its fallback
// path, as TLS connections are) and "loop-norecovery" (package loop with
// Config.DisableRecovery) can be asked for with -idle-clients.
var idleClients = []string{"loop", cPika, cAMQP091}

// idleResult is what one child measured.
type idleResult struct {
	Client      string  `json:"client"`
	Conns       int     `json:"conns"`
	RSSPerConn  float64 `json:"rss_per_conn_bytes"`  // resident set growth / conns
	HeapPerConn float64 `json:"heap_per_conn_bytes"` // (HeapInuse+StackInuse) growth / conns
	Goroutines  int     `json:"goroutines"`          // total, with every connection open
	CPUPerSec   float64 `json:"cpu_per_sec"`         // user+system CPU seconds per second, idle
	OpenSeconds float64 `json:"open_seconds"`        // time to open every connection and channel
}

// vmRSS returns the process's resident set in bytes (Linux).
func vmRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}

// goMem returns the Go heap and stacks in use, after a collection. It also
// returns the freed memory to the operating system at once (what the
// runtime's background scavenger does over the following minutes), so that
// the RSS read next is the steady state of idle connections, not the
// garbage of their handshakes; every client gets the same treatment.
func goMem() int64 {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// runIdleChild is the child's main: open n connections with client to url,
// measure, print one idleResult as JSON. With memProfile set, it also
// writes the heap in use (every allocation sampled) once the connections
// are idle, to see what an idle connection holds.
func runIdleChild(client, url string, n int, settle, window time.Duration, memProfile string) error {
	if memProfile != "" {
		runtime.MemProfileRate = 1
	}
	rss0, err := vmRSS()
	if err != nil {
		return err
	}
	mem0 := goMem()
	start := time.Now()
	closeAll, err := openIdle(client, url, n)
	if err != nil {
		return err
	}
	opened := time.Since(start)
	time.Sleep(settle)
	mem1 := goMem()
	rss1, err := vmRSS()
	if err != nil {
		return err
	}
	if memProfile != "" {
		if err := writeProfile("heap", memProfile); err != nil {
			return err
		}
	}
	goroutines := runtime.NumGoroutine()
	cpu0 := cpuTime()
	t0 := time.Now()
	time.Sleep(window)
	cpu := cpuTime() - cpu0
	elapsed := time.Since(t0)
	res := idleResult{
		Client:      client,
		Conns:       n,
		RSSPerConn:  float64(rss1-rss0) / float64(n),
		HeapPerConn: float64(mem1-mem0) / float64(n),
		Goroutines:  goroutines,
		CPUPerSec:   cpu.Seconds() / elapsed.Seconds(),
		OpenSeconds: opened.Seconds(),
	}
	if err := closeAll(); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// writeProfile writes the runtime profile name ("heap", "allocs") to path.
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// dialParallel is how many connections are being opened at once.
const dialParallel = 64

// openIdle opens n connections with one channel each and returns the
// function that closes them. Any connection that fails fails the run: an
// idle connection lost to a missed heartbeat would make the figures lie.
func openIdle(client, url string, n int) (func() error, error) {
	switch client {
	case "loop":
		return openIdleLoop(url, n, false, true)
	case "loop-fallback":
		return openIdleLoop(url, n, true, true)
	case "loop-norecovery":
		return openIdleLoop(url, n, false, false)
	case cPika:
		conns := make([]*pika.Conn, n)
		err := parallel(n, func(i int) error {
			c, err := pika.Dial(context.Background(), url)
			if err != nil {
				return err
			}
			conns[i] = c
			_, err = c.Channel(context.Background())
			return err
		})
		return func() error {
			for _, c := range conns {
				if c != nil {
					c.Close(context.Background())
				}
			}
			return err
		}, err
	case cAMQP091:
		conns := make([]*amqp.Connection, n)
		err := parallel(n, func(i int) error {
			cfg, err := pika.ParseURL(url)
			if err != nil {
				return err
			}
			c, err := amqp.DialConfig(url, amqp.Config{Heartbeat: cfg.Heartbeat})
			if err != nil {
				return err
			}
			conns[i] = c
			_, err = c.Channel()
			return err
		})
		return func() error {
			for _, c := range conns {
				if c != nil {
					c.Close()
				}
			}
			return err
		}, err
	}
	return nil, fmt.Errorf("idle: unknown client %q (have %s)", client, strings.Join(idleClients, ", "))
}

// parallel runs fn(0..n-1) on dialParallel goroutines; the first error wins.
func parallel(n int, fn func(i int) error) error {
	var mu sync.Mutex
	var first error
	next := 0
	var wg sync.WaitGroup
	for w := 0; w < dialParallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// plainConn hides a connection's type, so that package loop takes its
// fallback path.
type plainConn struct{ net.Conn }

// openIdleLoop opens n connections on one Loop, dialParallel at a time,
// on the fallback path (a reader and a writer goroutine per connection)
// when fallback is set, with recovery on (the default, as for pika.Conn
// here) when recovery is set.
func openIdleLoop(url string, n int, fallback, recovery bool) (func() error, error) {
	cfg, err := pika.ParseURL(url)
	if err != nil {
		return nil, err
	}
	cfg.DisableRecovery = !recovery
	if fallback {
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			nc, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return plainConn{nc}, nil
		}
	}
	l, err := loop.New()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- l.Run(ctx) }()
	opened := make(chan error, 1)
	var lost error // a connection that ended while idle, on the loop
	l.Post(func() {
		var conns []*loop.Conn
		dialed, done := 0, 0
		var dialNext func()
		dialNext = func() {
			if dialed == n {
				return
			}
			dialed++
			l.DialConfig(cfg, func(c *loop.Conn, err error) {
				if err != nil {
					opened <- err
					return
				}
				conns = append(conns, c)
				c.OnClose(func(err error) {
					if err != nil && lost == nil {
						lost = err
					}
				})
				c.Channel(func(_ *loop.Channel, err error) {
					if err != nil {
						opened <- err
						return
					}
					if done++; done == n {
						opened <- nil
					}
					dialNext()
				})
			})
		}
		for i := 0; i < dialParallel; i++ {
			dialNext()
		}
	})
	closeAll := func() error {
		errc := make(chan error, 1)
		l.Post(func() { errc <- lost })
		err := <-errc
		cancel()
		<-ran
		return err
	}
	if err := <-opened; err != nil {
		closeAll()
		return nil, err
	}
	return closeAll, nil
}

// runIdle runs the idle mode from the parent: the sink, then every client
// in its own child, rounds times, interleaved.
func runIdle(w io.Writer, clients []string, n, rounds int, heartbeat, settle, window time.Duration, memProfile string, logw io.Writer) error {
	sink, err := startSinkEnv(sinkHeartbeatEnv + "=" + strconv.Itoa(int(heartbeat/time.Second)))
	if err != nil {
		return err
	}
	defer sink.stop()
	url := "amqp://guest:guest@" + sink.addr + "/"
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	results := make(map[string][]idleResult)
	for r := 1; r <= rounds; r++ {
		for _, c := range clients {
			cmd := exec.Command(exe, "-idle-client", c, "-idle", strconv.Itoa(n), "-url", url,
				"-idle-settle", settle.String(), "-idle-window", window.String())
			if memProfile != "" {
				cmd.Args = append(cmd.Args, "-memprofile", memProfile+"."+c+"."+strconv.Itoa(r))
			}
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("idle: %s, round %d: %w", c, r, err)
			}
			var res idleResult
			if err := json.Unmarshal(out, &res); err != nil {
				return fmt.Errorf("idle: %s, round %d: %w (%q)", c, r, err, out)
			}
			results[c] = append(results[c], res)
			if logw != nil {
				fmt.Fprintf(logw, "round %d %-10s rss/conn %6.1f KiB  heap/conn %6.1f KiB  goroutines %6d  cpu %.4f s/s  open %.1fs\n",
					r, c, res.RSSPerConn/1024, res.HeapPerConn/1024, res.Goroutines, res.CPUPerSec, res.OpenSeconds)
			}
		}
	}
	printIdle(w, clients, n, rounds, heartbeat, results)
	return nil
}

// printIdle prints the medians (with min–max) of every client, and the
// loop's ratios to the others.
func printIdle(w io.Writer, clients []string, n, rounds int, heartbeat time.Duration, results map[string][]idleResult) {
	stat := func(c string, f func(idleResult) float64) (med, lo, hi float64) {
		var xs []float64
		for _, r := range results[c] {
			xs = append(xs, f(r))
		}
		sort.Float64s(xs)
		return median(xs), xs[0], xs[len(xs)-1]
	}
	metrics := []struct {
		name  string
		scale float64
		f     func(idleResult) float64
	}{
		{"RSS per connection (KiB)", 1.0 / 1024, func(r idleResult) float64 { return r.RSSPerConn }},
		{"Go heap+stacks per connection (KiB)", 1.0 / 1024, func(r idleResult) float64 { return r.HeapPerConn }},
		{"goroutines (total)", 1, func(r idleResult) float64 { return float64(r.Goroutines) }},
		{"CPU while idle (ms per s)", 1000, func(r idleResult) float64 { return r.CPUPerSec }},
	}
	fmt.Fprintf(w, "%d idle connections, one channel each, heartbeat %v; median (min-max) of %d rounds\n\n", n, heartbeat, rounds)
	// The first client is compared with each of the others.
	fmt.Fprintf(w, "| metric |")
	for _, c := range clients {
		fmt.Fprintf(w, " %s |", c)
	}
	for _, c := range clients[1:] {
		fmt.Fprintf(w, " %s/%s |", clients[0], c)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", 2*len(clients)-1))
	for _, m := range metrics {
		fmt.Fprintf(w, "| %s |", m.name)
		meds := map[string]float64{}
		for _, c := range clients {
			med, lo, hi := stat(c, m.f)
			meds[c] = med
			fmt.Fprintf(w, " %.1f (%.1f-%.1f) |", med*m.scale, lo*m.scale, hi*m.scale)
		}
		for _, c := range clients[1:] {
			fmt.Fprintf(w, " %.2f |", meds[clients[0]]/meds[c])
		}
		fmt.Fprintln(w)
	}
}
