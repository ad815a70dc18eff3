//go:build cluster

package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// node is one node of the test cluster.
type node struct {
	index int    // 1, 2 or 3: the N of cluster.sh ctl N
	name  string // pika-cN@localhost
	url   string
	addr  string // host:port of its AMQP listener
}

var (
	clusterOnce  sync.Once
	clusterNodes []node
	clusterErr   error
)

// inCI reports whether CI is true: a missing cluster then fails the tests.
func inCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// cluster returns the three nodes of the test cluster named by
// PIKA_CLUSTER_URLS, after checking that each answers. It skips the test
// when they do not (fails it when CI is true), saying how to start them.
func cluster(t *testing.T) []node {
	t.Helper()
	clusterOnce.Do(func() {
		raw := os.Getenv("PIKA_CLUSTER_URLS")
		if raw == "" {
			clusterErr = fmt.Errorf("PIKA_CLUSTER_URLS is not set")
			return
		}
		urls := strings.Split(raw, ",")
		if len(urls) != 3 {
			clusterErr = fmt.Errorf("PIKA_CLUSTER_URLS lists %d URLs, want 3 (node 1 first): %q", len(urls), raw)
			return
		}
		for i, u := range urls {
			cfg, err := pika.ParseURL(strings.TrimSpace(u))
			if err != nil {
				clusterErr = fmt.Errorf("PIKA_CLUSTER_URLS entry %d: %v", i+1, err)
				return
			}
			clusterNodes = append(clusterNodes, node{index: i + 1, name: fmt.Sprintf("pika-c%d@localhost", i+1), url: strings.TrimSpace(u), addr: cfg.Addr})
		}
	})
	if clusterErr == nil {
		for _, n := range clusterNodes {
			if err := probe(n.addr); err != nil {
				clusterErr = fmt.Errorf("node %s at %s does not answer: %v", n.name, n.addr, err)
				break
			}
		}
	}
	if clusterErr != nil {
		msg := fmt.Sprintf("test cluster not available: %v; start it with bash scripts/cluster.sh start and set PIKA_CLUSTER_URLS=$(bash scripts/cluster.sh urls)", clusterErr)
		if inCI() {
			t.Fatal(msg + " (CI=true: a missing cluster is a failure)")
		}
		t.Skip(msg)
	}
	return clusterNodes
}

// probe checks that an AMQP broker answers at addr.
func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return fmt.Errorf("no answer to the protocol header: %w", err)
	}
	return nil
}

// script is the path of scripts/cluster.sh, from this package's directory.
func script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "cluster.sh")
}

// ctl runs rabbitmqctl against node n through cluster.sh and returns its
// output; it fails the test when the command fails.
func ctl(t testing.TB, n node, args ...string) string {
	t.Helper()
	out, err := ctlErr(n, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

func ctlErr(n node, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script(), "ctl", strconv.Itoa(n.index)}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("cluster.sh ctl %d %s: %v\nstdout: %s\nstderr: %s", n.index, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// stopNode stops the RabbitMQ application on n (rabbitmqctl stop_app) and
// registers its restart in the test's cleanup, so that a failing test
// leaves the cluster whole.
func stopNode(t *testing.T, n node) {
	t.Helper()
	ctl(t, n, "-q", "stop_app")
	t.Cleanup(func() { ensureStarted(t, n) })
}

// startNode starts the application on n again and waits until it answers.
func startNode(t testing.TB, n node) {
	t.Helper()
	ctl(t, n, "-q", "start_app")
	deadline := time.Now().Add(60 * time.Second)
	for probe(n.addr) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("node %s does not answer 60s after start_app", n.name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ensureStarted starts n if its AMQP port does not answer.
func ensureStarted(t testing.TB, n node) {
	if probe(n.addr) == nil {
		return
	}
	if _, err := ctlErr(n, "-q", "start_app"); err != nil {
		t.Errorf("restoring node %s: %v", n.name, err)
	}
}

// nodeOf returns the node whose AMQP address is addr.
func nodeOf(t testing.TB, nodes []node, addr net.Addr) node {
	t.Helper()
	for _, n := range nodes {
		if n.addr == addr.String() {
			return n
		}
	}
	t.Fatalf("connected to %v, which is none of the cluster's nodes", addr)
	return node{}
}

// nodeNamed returns the node called name (pika-cN@localhost).
func nodeNamed(t testing.TB, nodes []node, name string) node {
	t.Helper()
	for _, n := range nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no cluster node is called %q", name)
	return node{}
}

// queueInfo is a row of rabbitmqctl list_queues about a quorum queue or a
// stream.
type queueInfo struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Leader  string   `json:"leader"`
	Members []string `json:"members"`
	Online  []string `json:"online"`
}

// listQueue returns what rabbitmqctl list_queues, run on a running node,
// says about queue, a quorum queue or a stream: its leader and members (the
// documented way to find a queue's leader without the management plugin;
// the queue.declare-ok does not say).
func listQueue(t testing.TB, via node, queue string) queueInfo {
	t.Helper()
	out := ctl(t, via, "-q", "list_queues", "name", "type", "leader", "members", "online", "--formatter", "json")
	var rows []queueInfo
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("list_queues output: %v: %s", err, out)
	}
	for _, r := range rows {
		if r.Name == queue {
			return r
		}
	}
	t.Fatalf("list_queues on %s does not show queue %q: %s", via.name, queue, out)
	return queueInfo{}
}

// dial connects to the cluster with addrs (in that order) and closes the
// connection in the test's cleanup.
func dial(t testing.TB, nodes []node, first int, mod func(*pika.Config)) *pika.Conn {
	t.Helper()
	cfg, err := pika.ParseURL(nodes[0].url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addrs = nil
	for i := range nodes {
		cfg.Addrs = append(cfg.Addrs, nodes[(first+i)%len(nodes)].addr)
	}
	cfg.Reconnect = pika.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}
	cfg.ConnectionName = testenv.Name(t, "conn")
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig %v: %v", cfg.Addrs, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// channel opens a channel on c.
func channel(t testing.TB, c *pika.Conn) *pika.Channel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := c.Channel(ctx)
	if err != nil {
		t.Fatalf("Channel: %v", err)
	}
	return ch
}

// deleteQueue deletes queue in the test's cleanup, through a connection of
// its own to any node that answers.
func deleteQueue(t *testing.T, nodes []node, queue string) {
	t.Helper()
	t.Cleanup(func() {
		for _, n := range nodes {
			ensureStarted(t, n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg, _ := pika.ParseURL(nodes[0].url)
		cfg.Addrs = []string{nodes[0].addr, nodes[1].addr, nodes[2].addr}
		cfg.DisableRecovery = true
		c, err := pika.DialConfig(ctx, cfg)
		if err != nil {
			t.Errorf("cleanup: dial: %v", err)
			return
		}
		defer c.Close(ctx)
		ch, err := c.Channel(ctx)
		if err != nil {
			t.Errorf("cleanup: channel: %v", err)
			return
		}
		if _, err := ch.QueueDelete(ctx, queue, pika.QueueDeleteOptions{}); err != nil {
			t.Errorf("cleanup: deleting queue %q: %v", queue, err)
		}
	})
}

// eventually polls cond every 100 ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterFormed checks the cluster the other tests rely on: three
// running nodes, every feature flag the queue types need enabled, and no
// plugin listening on a fixed port.
func TestClusterFormed(t *testing.T) {
	nodes := cluster(t)
	out := ctl(t, nodes[0], "-q", "cluster_status", "--formatter", "json")
	var st struct {
		Running []string `json:"running_nodes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster_status: %v: %s", err, out)
	}
	if len(st.Running) != 3 {
		t.Fatalf("running nodes %v, want 3", st.Running)
	}
	flags := ctl(t, nodes[0], "-q", "list_feature_flags", "name", "state", "--formatter", "json")
	for _, f := range []string{"quorum_queue", "stream_queue"} {
		if !strings.Contains(flags, `"name":"`+f+`","state":"enabled"`) {
			t.Errorf("feature flag %s is not enabled: %s", f, flags)
		}
	}
	// No plugin binds a fixed port (management 15672, prometheus 15692,
	// stream 5552): cluster_status lists every node's listeners.
	if !strings.Contains(out, `"protocol":"amqp"`) {
		t.Fatalf("cluster_status lists no listeners: %s", out)
	}
	for _, port := range []string{"15672", "15692", "5552"} {
		if strings.Contains(out, `"port":`+port+`,`) {
			t.Errorf("a node listens on port %s: %s", port, out)
		}
	}
}
