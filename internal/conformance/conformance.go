// Package conformance is a table of scenarios that pins down how RabbitMQ
// 3.10 behaves for what applications rely on, so that any broker claiming to
// behave like it (the in-process broker of package pikatest) can be checked
// against the real one with the same code.
//
// Each [Scenario] names what it checks, states the RabbitMQ behaviour it
// encodes, and drives a broker through the pika client or, where the client
// would hide the behaviour (a frame the client never sends, a close the
// client would answer for the application), through raw frames written with
// package wire over a net.Conn. [Run] runs every scenario as a subtest
// against the broker at a URL.
//
// Scenarios are isolated from each other: each opens its own connections,
// names everything it declares from a prefix unique to the run and the
// scenario, and deletes everything it declared when it ends, whatever
// happened. Independent scenarios run concurrently. No scenario of the table
// changes the broker's global state (users, vhosts, alarms, policies), so
// the suite can share a broker with other tests. The scenarios of blocked
// connections need a resource alarm, which is global: they are in a table of
// their own, run one at a time by [RunAlarm] with a function that raises and
// clears the alarm. The scenarios of a broker restart (what survives it)
// are in a third table, run together around one restart by [RunRestart].
//
// A broker under test runs the suite from a test of its own:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, startBroker(t).URL())
//	}
//
// [RunTarget] runs it with a dial function of the broker's instead of TCP
// (pikatest runs the table through its in-memory transport, which spends no
// CPU time in system calls) and, optionally, on a subset of the table.
//
// rabbitmq_test.go runs it against the real RabbitMQ (internal/testenv);
// every scenario passes there. Waits for the broker are polls bounded by the
// scenario's deadline (20 s); fixed delays appear only where a scenario must
// see that something does not happen (a quiet period of 150 to 300 ms) or
// lets a short TTL or heartbeat interval pass. The scenarios whose duration
// such a timer sets are marked Timed; the test flag -conformance.untimed
// runs only the others, to measure a broker's speed without the waits any
// correct broker has (scripts/conformance_speed.sh, BENCHMARKS.md).
//
// Where RabbitMQ 3.10 does something a reader of the AMQP 0-9-1
// specification would not expect, the scenario's RabbitMQ text says so
// (it starts with "Surprise:").
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
)

// Scenario is one behaviour of RabbitMQ that applications rely on.
type Scenario struct {
	// Name is the subtest name: area/behaviour, unique in the table.
	Name string
	// Checks says what the scenario verifies.
	Checks string
	// RabbitMQ states the broker behaviour the scenario encodes, with reply
	// codes and text shapes; it starts with "Surprise:" where RabbitMQ 3.10
	// departs from what the AMQP specification suggests.
	RabbitMQ string
	// Func drives the broker through e and fails e.T when the broker
	// behaves otherwise.
	Func func(e *Env)
	// Slow marks a scenario that waits a second or more for a timer: a
	// heartbeat interval on any broker, or RabbitMQ's delayed closes. Run
	// starts slow scenarios first so that they overlap the rest.
	Slow bool
	// Timed marks a scenario whose duration is set by a protocol timer that
	// any correct broker must wait out: a heartbeat interval (1 s at the
	// least, the field counts seconds), a message TTL or queue expiry, or a
	// quiet period in which the scenario checks that nothing arrives. Such
	// a scenario takes about as long on any broker; the speed figures of
	// BENCHMARKS.md are given with and without them.
	Timed bool
}

// untimed restricts Run to the scenarios that are not Timed. It exists to
// measure how fast a broker runs the rest of the table (BENCHMARKS.md); the
// conformance check is the whole table, which Run runs by default.
var untimed = flag.Bool("conformance.untimed", false,
	"run only the conformance scenarios whose duration no protocol timer sets (a speed measurement, not the conformance check)")

// scenarioTimeout bounds one scenario, cleanup excluded.
const scenarioTimeout = 20 * time.Second

// workers is how many scenarios run at once. The subtests are started from
// this many goroutines rather than with t.Parallel, so the go test -parallel
// setting (GOMAXPROCS by default, 2 on a small machine) does not serialise
// scenarios that mostly wait for the broker.
const workers = 24

// Scenarios returns a copy of the table, in table order.
func Scenarios() []Scenario {
	return append([]Scenario(nil), table...)
}

// Run runs every scenario of the table as a subtest of t against the broker
// at url, an AMQP URI whose user may configure, write and read in its vhost
// (RabbitMQ's guest on "/" for instance), over TCP. Scenarios run
// concurrently, each on its own connections, with names built from a prefix
// unique to this call; each deletes what it declared before it ends. Run
// returns when every scenario has finished.
func Run(t *testing.T, url string) {
	t.Helper()
	RunTarget(t, Target{URL: url})
}

// Target is a broker to run the table against, and how to reach it.
type Target struct {
	// URL is the broker's AMQP URI, as for [Run]: its credentials and
	// virtual host are the scenarios'.
	URL string
	// Dial, when not nil, opens every connection of the scenarios, those
	// of the pika client (as its Config.Dial) and the raw-frame ones,
	// instead of a TCP dial to the URL's address: an in-process broker's
	// in-memory transport, such as pikatest's Broker.Dial. Default: TCP.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Only, when not nil, selects the scenarios to run (a subset run over
	// a second transport, say). Default: the whole table.
	Only func(Scenario) bool
}

// RunTarget is [Run] with the transport and the selection of scenarios of
// tg.
func RunTarget(t *testing.T, tg Target) {
	t.Helper()
	run(t, tg)
}

// run is RunTarget returning the name prefix of the run.
func run(t *testing.T, tg Target) string {
	t.Helper()
	if _, err := pika.ParseURL(tg.URL); err != nil {
		t.Fatalf("conformance: bad broker URL: %v", err)
	}
	if err := checkTable(table); err != nil {
		t.Fatalf("conformance: %v", err)
	}
	ss := newSession(tg)
	defer ss.close()
	start := time.Now()
	n := 0
	defer func() {
		t.Logf("conformance: %d scenarios (untimed only: %v) in %v", n, *untimed, time.Since(start).Round(time.Millisecond))
	}()
	jobs := make(chan Scenario)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range jobs {
				t.Run(s.Name, func(t *testing.T) {
					runScenario(t, ss, s, nil)
				})
			}
		}()
	}
	for _, slow := range []bool{true, false} {
		for _, s := range table {
			if s.Slow == slow && !(*untimed && s.Timed) && (tg.Only == nil || tg.Only(s)) {
				n++
				jobs <- s
			}
		}
	}
	close(jobs)
	wg.Wait()
	return ss.prefix
}

// session is what the scenarios of one run share: the target, the name
// prefix, and the connection their cleanups delete on.
type session struct {
	tg     Target
	prefix string

	mu    sync.Mutex
	clean *pika.Conn
}

// newSession starts a run against tg with a name prefix unique across runs
// and processes sharing a broker.
func newSession(tg Target) *session {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return &session{tg: tg, prefix: "pika-conf." + hex.EncodeToString(b[:])}
}

// cleanupConn returns the connection that the scenarios' cleanups share,
// opened (again, when the broker closed it) by e's settings.
func (ss *session) cleanupConn(ctx context.Context, e *Env) (*pika.Conn, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.clean != nil && !ss.clean.IsClosed() {
		return ss.clean, nil
	}
	c, err := e.dial(ctx, func(cfg *pika.Config) { cfg.ConnectionName = ss.prefix + ".cleanup" })
	if err != nil {
		return nil, err
	}
	ss.clean = c
	return c, nil
}

// close closes the cleanup connection once every scenario has ended.
func (ss *session) close() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.clean != nil {
		closeConn(ss.clean)
		ss.clean = nil
	}
}

// checkTable verifies that every scenario is complete and named uniquely.
func checkTable(ss []Scenario) error {
	seen := make(map[string]bool, len(ss))
	for i, s := range ss {
		switch {
		case s.Name == "":
			return fmt.Errorf("scenario %d has no name", i)
		case seen[s.Name]:
			return fmt.Errorf("scenario %q appears twice", s.Name)
		case s.Checks == "" || s.RabbitMQ == "":
			return fmt.Errorf("scenario %q does not say what it checks and what RabbitMQ does", s.Name)
		case s.Func == nil:
			return fmt.Errorf("scenario %q has no function", s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

func runScenario(t *testing.T, ss *session, s Scenario, alarm Alarm) {
	runScenarioWith(t, ss, s, scenarioTimeout, func(e *Env) { e.alarm = alarm })
}

// runScenarioWith runs s, bounded by timeout, with an Env that setup
// completes.
func runScenarioWith(t *testing.T, ss *session, s Scenario, timeout time.Duration, setup func(*Env)) {
	cfg, err := pika.ParseURL(ss.tg.URL)
	if err != nil {
		t.Fatalf("conformance: bad broker URL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	e := &Env{
		cfg:     cfg,
		T:       t,
		URL:     ss.tg.URL,
		Ctx:     ctx,
		prefix:  ss.prefix + "." + sanitize(s.Name),
		netDial: ss.tg.Dial,
		session: ss,
	}
	setup(e)
	// Registered first, so it runs after every connection opened by the
	// scenario has been closed by its own cleanup.
	t.Cleanup(e.deleteDeclared)
	s.Func(e)
}

// sanitize keeps the characters RabbitMQ's management UI and rabbitmqctl
// show unquoted.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Env is what a scenario works with: its test, the broker URL, a context
// bounding the scenario, and helpers that open connections and declare
// entities which are cleaned up when the scenario ends. An Env is used by the
// goroutine running its scenario, except where a method says otherwise.
type Env struct {
	T   *testing.T
	URL string
	Ctx context.Context

	cfg     pika.Config // parsed from URL
	session *session
	prefix  string
	alarm   Alarm  // nil outside RunAlarm
	restart func() // nil outside RunRestart
	// netDial is the Target's Dial: nil for TCP.
	netDial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu        sync.Mutex
	n         int
	queues    map[string]bool
	exchanges map[string]bool
}

// Name returns a name unique to this scenario of this run, ending in label.
// Safe for concurrent use.
func (e *Env) Name(label string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	return fmt.Sprintf("%s.%d.%s", e.prefix, e.n, label)
}

// Prefix returns the prefix shared by every name of this scenario.
func (e *Env) Prefix() string { return e.prefix }

// TrackQueue records a queue to delete when the scenario ends. Safe for
// concurrent use.
func (e *Env) TrackQueue(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.queues == nil {
		e.queues = make(map[string]bool)
	}
	e.queues[name] = true
}

// TrackExchange records an exchange to delete when the scenario ends. Safe
// for concurrent use.
func (e *Env) TrackExchange(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.exchanges == nil {
		e.exchanges = make(map[string]bool)
	}
	e.exchanges[name] = true
}

// deleteDeclared deletes every tracked queue and exchange on a channel of
// the connection that the cleanups of the run share. RabbitMQ answers
// delete-ok for an entity that no longer exists, so entities that went away
// during the scenario are no error.
func (e *Env) deleteDeclared() {
	e.mu.Lock()
	qs, xs := sortedKeys(e.queues), sortedKeys(e.exchanges)
	e.mu.Unlock()
	if len(qs)+len(xs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := e.session.cleanupConn(ctx, e)
	if err != nil {
		e.T.Errorf("cleanup: cannot connect to delete %v %v: %v", qs, xs, err)
		return
	}
	var ch *pika.Channel
	defer func() {
		if ch != nil && !ch.IsClosed() {
			if err := ch.Close(ctx); err != nil {
				e.T.Errorf("cleanup: channel.close: %v", err)
			}
		}
	}()
	channel := func() bool {
		if ch != nil && !ch.IsClosed() {
			return true
		}
		ch, err = c.Channel(ctx)
		if err != nil {
			e.T.Errorf("cleanup: channel: %v", err)
			return false
		}
		return true
	}
	for _, q := range qs {
		if !channel() {
			return
		}
		if _, err := ch.QueueDelete(ctx, q, pika.QueueDeleteOptions{}); err != nil {
			e.T.Errorf("cleanup: delete queue %q: %v", q, err)
		}
	}
	for _, x := range xs {
		if !channel() {
			return
		}
		if err := ch.ExchangeDelete(ctx, x, pika.ExchangeDeleteOptions{}); err != nil {
			e.T.Errorf("cleanup: delete exchange %q: %v", x, err)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
