//go:build cluster

package clustertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// failoverCycles is how many times TestFailoverQuorumUnderLoad stops the
// publisher's node and then the leader's node.
const failoverCycles = 5

// published is one message of the failover publisher.
type published struct {
	seq  int
	at   time.Time
	conf *pika.Confirmation
}

// loadStats is what the failover publisher and consumer saw.
type loadStats struct {
	mu        sync.Mutex
	pubAt     map[int]time.Time // seq -> when Publish was called
	confirmed map[int]time.Time // seq -> when its confirmation was seen
	unknown   map[int]error     // seq -> ErrOutcomeUnknown (or a publish error)
	nacked    map[int]error
	seen      map[int]int // seq -> deliveries
}

// firstConfirmAfter returns how long after t the first message published
// after t was confirmed, or false.
func (s *loadStats) firstConfirmAfter(t time.Time) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best time.Time
	for seq, at := range s.confirmed {
		if s.pubAt[seq].After(t) && (best.IsZero() || at.Before(best)) {
			best = at
		}
	}
	if best.IsZero() {
		return 0, false
	}
	return best.Sub(t), true
}

// cycleResult is one stop of a node in TestFailoverQuorumUnderLoad.
type cycleResult struct {
	cycle   int
	role    string // "publisher's node" or "leader's node"
	node    string
	recover time.Duration // stop -> first confirm of a message published after it
	from    time.Time
	to      time.Time
	dups    int // messages of [from, to) delivered more than once
	unknown int // messages of [from, to) with an unknown outcome
	msgs    int // messages published in [from, to)
}

// TestFailoverQuorumUnderLoad runs a confirming publisher and a consumer on
// a quorum queue replicated on the three nodes, connected to different
// nodes, and for failoverCycles cycles stops (stop_app) the node the
// publisher is connected to, then, once that node is back, the node of the
// queue's leader. Neither the publisher nor the consumer does anything but
// publish and consume: recovery moves them to another node. Every confirmed
// message must be consumed at least once; the figures per stop (time from
// the stop to the first confirm of a message published after it,
// duplicates, unknown outcomes) are logged, and written as a Markdown table
// to the file PIKA_CLUSTER_REPORT names, if set.
func TestFailoverQuorumUnderLoad(t *testing.T) {
	nodes := cluster(t)
	queue := testenv.Name(t, "qq")
	deleteQueue(t, nodes, queue)

	// Declared through node 3 with the client-local locator: the leader
	// starts on node 3, the publisher is on node 1, the consumer on node 2.
	decl := dial(t, nodes, 2, func(c *pika.Config) { c.DisableRecovery = true })
	args, err := pika.QueueArgs{Type: pika.QueueQuorum, LeaderLocator: "client-local", QuorumInitialGroupSize: 3}.Table()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := channel(t, decl).QueueDeclare(ctx, queue, pika.QueueDeclareOptions{Durable: true, Arguments: args}); err != nil {
		t.Fatalf("declaring the quorum queue: %v", err)
	}
	info := listQueue(t, nodes[0], queue)
	t.Logf("queue %s: leader %s, members %v", queue, info.Leader, info.Members)
	if len(info.Members) != 3 {
		t.Fatalf("quorum queue members %v, want all 3 nodes", info.Members)
	}

	st := &loadStats{pubAt: map[int]time.Time{}, confirmed: map[int]time.Time{}, unknown: map[int]error{}, nacked: map[int]error{}, seen: map[int]int{}}
	var recMu sync.Mutex
	recoveries := map[string]int{}
	onRecovery := func(who string) func(pika.RecoveryEvent) {
		return func(ev pika.RecoveryEvent) {
			if ev.Kind == pika.RecoveryRecovered {
				recMu.Lock()
				recoveries[who]++
				recMu.Unlock()
			}
			if ev.Kind == pika.RecoveryGaveUp {
				t.Errorf("%s: recovery gave up: %v", who, ev.Err)
			}
		}
	}

	// The consumer, on node 2.
	cconn := dial(t, nodes, 1, nil)
	cconn.OnRecovery(onRecovery("consumer"))
	cch := channel(t, cconn)
	// RabbitMQ 3.10 keeps a quorum queue's consumers across leader changes
	// (rabbit_fifo_client registers them with the new leader): no
	// basic.cancel is expected.
	var brokerCancels atomic.Int32
	cch.OnCancel(func(string) { brokerCancels.Add(1) })
	if err := cch.Qos(ctx, pika.QosOptions{PrefetchCount: 200}); err != nil {
		t.Fatal(err)
	}
	cons, err := cch.ConsumeFunc(ctx, queue, pika.ConsumeOptions{}, func(_ context.Context, d *pika.Delivery) {
		seq, err := strconv.Atoi(d.MessageID)
		if err != nil {
			t.Errorf("delivery with message id %q", d.MessageID)
		}
		st.mu.Lock()
		st.seen[seq]++
		st.mu.Unlock()
		_ = d.Ack(false) // a stale tag after a recovery: the broker redelivers
	})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}

	// The publisher, on node 1.
	pconn := dial(t, nodes, 0, nil)
	pconn.OnRecovery(onRecovery("publisher"))
	pch := channel(t, pconn)
	if err := pch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	if got := nodeOf(t, nodes, pconn.RemoteAddr()); got.index != 1 {
		t.Fatalf("publisher on %s, want node 1", got.name)
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	confs := make(chan published, 20000)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // publish, about 500 messages a second at most
		defer wg.Done()
		defer close(confs)
		for seq := 1; pubCtx.Err() == nil; seq++ {
			at := time.Now()
			st.mu.Lock()
			st.pubAt[seq] = at
			st.mu.Unlock()
			conf, err := pch.PublishWithConfirm(pubCtx, "", queue, pika.Message{
				Properties: pika.Properties{MessageID: strconv.Itoa(seq), DeliveryMode: 2},
				Body:       []byte("failover " + strconv.Itoa(seq)),
			})
			if err != nil {
				if pubCtx.Err() != nil {
					st.mu.Lock()
					delete(st.pubAt, seq)
					st.mu.Unlock()
					return
				}
				st.mu.Lock()
				st.unknown[seq] = err
				st.mu.Unlock()
				continue
			}
			confs <- published{seq, at, conf}
			if seq%10 == 0 {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	go func() { // wait for the outcomes in order
		defer wg.Done()
		for p := range confs {
			wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
			err := p.conf.Wait(wctx)
			wcancel()
			st.mu.Lock()
			switch {
			case err == nil:
				st.confirmed[p.seq] = time.Now()
			case errors.Is(err, pika.ErrNacked):
				st.nacked[p.seq] = err
			default:
				st.unknown[p.seq] = err
			}
			st.mu.Unlock()
		}
	}()
	defer func() {
		stopPub()
		wg.Wait()
	}()

	// stopAndMeasure stops n, waits for the publisher to have a message
	// published after the stop confirmed, and starts n again.
	var results []cycleResult
	stopAndMeasure := func(cycle int, role string, n node) {
		t.Helper()
		from := time.Now()
		ctl(t, n, "-q", "stop_app")
		stopped := time.Now()
		t.Cleanup(func() { ensureStarted(t, n) })
		var took time.Duration
		eventually(t, 2*time.Minute, fmt.Sprintf("cycle %d: no message published after stopping %s (%s) was confirmed", cycle, n.name, role), func() bool {
			d, ok := st.firstConfirmAfter(stopped)
			took = d
			return ok
		})
		startNode(t, n)
		results = append(results, cycleResult{cycle: cycle, role: role, node: n.name, recover: took, from: from, to: time.Now()})
		t.Logf("cycle %d: stopped %s (%s): first confirm after %v", cycle, n.name, role, took.Round(time.Millisecond))
	}
	// waitMembers waits until the queue's three members are online again
	// and returns its leader.
	waitMembers := func() string {
		var leader string
		eventually(t, 2*time.Minute, "the quorum queue's members are not all online again", func() bool {
			info := listQueue(t, nodes[0], queue)
			leader = info.Leader
			return len(info.Online) == 3 && leader != ""
		})
		return leader
	}
	// Let the load run for a moment before the first stop.
	eventually(t, time.Minute, "nothing confirmed before the first stop", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.confirmed) > 200
	})
	// rabbitmqctl runs are slow on a busy machine: the members are
	// checked (and the leader found) once per cycle, before the leader's
	// stop; a node restarted by start_app rejoins its queue's Raft group
	// as it boots.
	for cycle := 1; cycle <= failoverCycles; cycle++ {
		stopAndMeasure(cycle, "publisher's node", nodeOf(t, nodes, pconn.RemoteAddr()))
		leader := waitMembers()
		stopAndMeasure(cycle, "leader's node", nodeNamed(t, nodes, leader))
	}
	waitMembers()
	stopPub()
	wg.Wait()

	// Every confirmed message is consumed at least once.
	st.mu.Lock()
	nconf := len(st.confirmed)
	st.mu.Unlock()
	var missing []int
	eventually(t, 2*time.Minute, "the consumer did not get every confirmed message", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		missing = missing[:0]
		for seq := range st.confirmed {
			if st.seen[seq] == 0 {
				missing = append(missing, seq)
			}
		}
		return len(missing) == 0
	})
	if err := cons.Err(); err != nil {
		t.Errorf("the consumer ended: %v", err)
	}
	if n := brokerCancels.Load(); n != 0 {
		t.Errorf("the broker cancelled the quorum queue's consumer %d times", n)
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	dups, totalDup := 0, 0
	for seq, n := range st.seen {
		if n > 1 {
			dups++
			totalDup += n - 1
		}
		_ = seq
	}
	for i := range results {
		r := &results[i]
		for seq, at := range st.pubAt {
			if at.Before(r.from) || !at.Before(r.to) {
				continue
			}
			r.msgs++
			if st.seen[seq] > 1 {
				r.dups++
			}
			if _, ok := st.unknown[seq]; ok {
				r.unknown++
			}
		}
	}
	if len(st.nacked) > 0 {
		t.Errorf("%d messages nacked by the broker (a quorum queue with 3 nodes should take them)", len(st.nacked))
	}
	for seq, err := range st.unknown {
		if !errors.Is(err, pika.ErrOutcomeUnknown) {
			t.Errorf("message %d: publish failed with %v", seq, err)
			break
		}
	}
	recMu.Lock()
	summary := fmt.Sprintf("%d published, %d confirmed, %d nacked, %d unknown, %d delivered more than once (%d extra deliveries), %d confirmed and lost; recoveries: publisher %d, consumer %d",
		len(st.pubAt), nconf, len(st.nacked), len(st.unknown), dups, totalDup, len(missing), recoveries["publisher"], recoveries["consumer"])
	recMu.Unlock()
	t.Log(summary)
	report := failoverReport(results, summary)
	t.Log("\n" + report)
	if path := os.Getenv("PIKA_CLUSTER_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			t.Errorf("writing the report: %v", err)
		}
	}
}

// failoverReport formats the failover figures as Markdown.
func failoverReport(results []cycleResult, summary string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| cycle | node stopped | role | stop to first confirm | messages in the window | duplicates | unknown outcomes |\n|---|---|---|---|---|---|---|\n")
	var times []time.Duration
	for _, r := range results {
		fmt.Fprintf(&b, "| %d | %s | %s | %v | %d | %d | %d |\n", r.cycle, r.node, r.role, r.recover.Round(time.Millisecond), r.msgs, r.dups, r.unknown)
		times = append(times, r.recover)
	}
	slices.Sort(times)
	if len(times) > 0 {
		fmt.Fprintf(&b, "\nstop to first confirm: median %v, max %v over %d stops\n", times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), len(times))
	}
	fmt.Fprintf(&b, "\n%s\n", summary)
	return b.String()
}
