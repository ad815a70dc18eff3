package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
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
// measure, print one idleResult as JSON.
func runIdleChild(client, url string, n int, settle, window time.Duration) error {
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

// dialParallel is how many connections are being opened at once.
const dialParallel = 64

// openIdle opens n connections with one channel each and returns the
// function that closes them. Any connection that fails fails the run: an
// idle connection lost to a missed heartbeat would make the figures lie.
func openIdle(client, url string, n int) (func() error, error) {
	cfg, err := pika.ParseURL(url)
	if err != nil {
		return nil, err
	}
	switch client {
	case "loop", "loop-fallback", "loop-norecovery":
		lcfg := cfg
		lcfg.DisableRecovery = client == "loop-norecovery"
		lc, err := openLoop(lcfg, n, client == "loop-fallback", nil)
		if err != nil {
			return nil, err
		}
		return func() error { return lc.close(false) }, nil
	case cPika:
		conns, _, err := openPikaConns(cfg, n)
		return func() error { closePikaConns(conns); return err }, err
	case cAMQP091:
		conns, _, err := openAMQPConns(url, amqp.Config{Heartbeat: cfg.Heartbeat}, n)
		return func() error { closeAMQPConns(conns); return err }, err
	}
	return nil, fmt.Errorf("idle: unknown client %q (have %s)", client, strings.Join(idleClients, ", "))
}

// openPikaConns dials n pika.Conns with cfg, dialParallel at a time, and
// opens one channel on each. On an error, the slices hold what was opened
// (nil where nothing was), for closePikaConns.
func openPikaConns(cfg pika.Config, n int) ([]*pika.Conn, []*pika.Channel, error) {
	conns := make([]*pika.Conn, n)
	chans := make([]*pika.Channel, n)
	err := parallel(n, func(i int) error {
		c, err := pika.DialConfig(context.Background(), cfg)
		if err != nil {
			return err
		}
		conns[i] = c
		chans[i], err = c.Channel(context.Background())
		return err
	})
	return conns, chans, err
}

// closePikaConns closes every connection that openPikaConns opened.
func closePikaConns(conns []*pika.Conn) {
	parallel(len(conns), func(i int) error {
		if conns[i] != nil {
			closePika(conns[i])
		}
		return nil
	})
}

// openAMQPConns is openPikaConns for amqp091-go.
func openAMQPConns(url string, cfg amqp.Config, n int) ([]*amqp.Connection, []*amqp.Channel, error) {
	conns := make([]*amqp.Connection, n)
	chans := make([]*amqp.Channel, n)
	err := parallel(n, func(i int) error {
		cfg := cfg
		// amqp091-go adds its own entries to the table: one each.
		cfg.Properties = maps.Clone(cfg.Properties)
		c, err := amqp.DialConfig(url, cfg)
		if err != nil {
			return err
		}
		conns[i] = c
		chans[i], err = c.Channel()
		return err
	})
	return conns, chans, err
}

// closeAMQPConns closes every connection that openAMQPConns opened.
func closeAMQPConns(conns []*amqp.Connection) {
	parallel(len(conns), func(i int) error {
		if conns[i] != nil {
			conns[i].Close()
		}
		return nil
	})
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

// loopConns are connections with one channel each on one Loop, which
// runs on a goroutine of its own.
type loopConns struct {
	l      *loop.Loop
	conns  []*loop.Conn    // in the order they opened
	chans  []*loop.Channel // chans[i] is conns[i]'s
	lost   error           // the first connection that ended with an error, on the loop
	cancel context.CancelFunc
	ran    chan error
}

// openLoop opens n connections with cfg on one new Loop, dialParallel at a
// time, on the fallback path (a reader and a writer goroutine per
// connection) when fallback is set. Each connection gets one channel, and
// setup, when not nil, runs on it (on the loop) before the connection
// counts as open; its done reports the outcome.
func openLoop(cfg pika.Config, n int, fallback bool, setup func(ch *loop.Channel, done func(error))) (*loopConns, error) {
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
	lc := &loopConns{l: l, cancel: cancel, ran: make(chan error, 1)}
	go func() { lc.ran <- l.Run(ctx) }()
	opened := make(chan error, 1)
	l.Post(func() {
		dialed := 0
		var dialNext func()
		// ready counts a connection as open (err nil) or fails the lot.
		ready := func(c *loop.Conn, ch *loop.Channel, err error) {
			if err != nil {
				opened <- err
				return
			}
			lc.conns = append(lc.conns, c)
			lc.chans = append(lc.chans, ch)
			if len(lc.conns) == n {
				opened <- nil
			}
			dialNext()
		}
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
				c.OnClose(func(err error) {
					if err != nil && lc.lost == nil {
						lc.lost = err
					}
				})
				c.Channel(func(ch *loop.Channel, err error) {
					if err != nil || setup == nil {
						ready(c, ch, err)
						return
					}
					setup(ch, func(err error) { ready(c, ch, err) })
				})
			})
		}
		for i := 0; i < dialParallel; i++ {
			dialNext()
		}
	})
	if err := <-opened; err != nil {
		lc.close(false)
		return nil, err
	}
	return lc, nil
}

// close stops the loop and returns the error of the first connection that
// was lost. With graceful set, it first closes every connection with the
// broker (connection.close), waiting at most 30 s; otherwise the loop's
// end just closes the sockets.
func (lc *loopConns) close(graceful bool) error {
	errc := make(chan error, 1)
	post := func() {
		lost := lc.lost
		if !graceful || len(lc.conns) == 0 {
			errc <- lost
			return
		}
		closed := 0
		for _, c := range lc.conns {
			c.Close(func(error) {
				if closed++; closed == len(lc.conns) {
					errc <- lost
				}
			})
		}
	}
	var err error
	if !lc.l.Post(post) {
		err = errors.New("loop: the loop stopped early")
	} else {
		select {
		case err = <-errc:
		case <-time.After(30 * time.Second):
			err = errors.New("loop: closing the connections took more than 30s")
		}
	}
	lc.cancel()
	<-lc.ran
	return err
}

// runIdle runs the idle mode from the parent: the sink, then every client
// in its own child, rounds times, interleaved.
func runIdle(w io.Writer, clients []string, n, rounds int, heartbeat, settle, window time.Duration, logw io.Writer) error {
	sink, err := startSinkEnv(sinkHeartbeatEnv + "=" + strconv.Itoa(int(heartbeat/time.Second)))
	if err != nil {
		return err
	}
	defer sink.stop()
	url := "amqp://guest:guest@" + sink.addr + "/"
	results, err := runChildren(clients, rounds, func(c string) []string {
		return []string{"-idle-client", c, "-idle", strconv.Itoa(n), "-url", url,
			"-idle-settle", settle.String(), "-idle-window", window.String()}
	}, func(r int, res idleResult) error {
		if logw != nil {
			fmt.Fprintf(logw, "round %d %-10s rss/conn %6.1f KiB  heap/conn %6.1f KiB  goroutines %6d  cpu %.4f s/s  open %.1fs\n",
				r, res.Client, res.RSSPerConn/1024, res.HeapPerConn/1024, res.Goroutines, res.CPUPerSec, res.OpenSeconds)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	fmt.Fprintf(w, "%d idle connections, one channel each, heartbeat %v; median (min-max) of %d rounds\n\n", n, heartbeat, rounds)
	printMedians(w, clients, results, []metric[idleResult]{
		{"RSS per connection (KiB)", 1.0 / 1024, func(r idleResult) float64 { return r.RSSPerConn }},
		{"Go heap+stacks per connection (KiB)", 1.0 / 1024, func(r idleResult) float64 { return r.HeapPerConn }},
		{"goroutines (total)", 1, func(r idleResult) float64 { return float64(r.Goroutines) }},
		{"CPU while idle (ms per s)", 1000, func(r idleResult) float64 { return r.CPUPerSec }},
	})
	return nil
}

// runChildren runs this executable again as a child for every client,
// rounds times, the clients taking turns round after round, with the
// arguments args gives; each child prints one JSON result T on its
// stdout. done sees every result as it comes, and may stop the lot with an
// error. The results are returned per client, in round order.
func runChildren[T any](clients []string, rounds int, args func(client string) []string, done func(round int, res T) error) (map[string][]T, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	results := make(map[string][]T)
	for r := 1; r <= rounds; r++ {
		for _, c := range clients {
			cmd := exec.Command(exe, args(c)...)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				return results, fmt.Errorf("%s, round %d: %w", c, r, err)
			}
			var res T
			if err := json.Unmarshal(out, &res); err != nil {
				return results, fmt.Errorf("%s, round %d: %w (%q)", c, r, err, out)
			}
			results[c] = append(results[c], res)
			if err := done(r, res); err != nil {
				return results, fmt.Errorf("%s, round %d: %w", c, r, err)
			}
		}
	}
	return results, nil
}

// metric is one row of printMedians: a figure of a result T, printed
// times scale.
type metric[T any] struct {
	name  string
	scale float64
	f     func(T) float64
}

// printMedians prints a table of the medians (with min-max) of every
// client's results, and the first client's ratios to the others.
func printMedians[T any](w io.Writer, clients []string, results map[string][]T, metrics []metric[T]) {
	stat := func(c string, f func(T) float64) (med, lo, hi float64) {
		var xs []float64
		for _, r := range results[c] {
			xs = append(xs, f(r))
		}
		if len(xs) == 0 {
			return 0, 0, 0
		}
		sort.Float64s(xs)
		return median(xs), xs[0], xs[len(xs)-1]
	}
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
			fmt.Fprintf(w, " %s (%s-%s) |", fmtFig(med*m.scale), fmtFig(lo*m.scale), fmtFig(hi*m.scale))
		}
		for _, c := range clients[1:] {
			fmt.Fprintf(w, " %.2f |", meds[clients[0]]/meds[c])
		}
		fmt.Fprintln(w)
	}
}

// fmtFig prints a figure with one decimal, two below 10, three below 1;
// a whole number (a count) without.
func fmtFig(x float64) string {
	switch a := math.Abs(x); {
	case x == math.Trunc(x) && a < 1e15:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strconv.FormatFloat(x, 'f', 3, 64)
}
