//go:build cluster

package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// connectionsPerNode counts, with rabbitmqctl list_connections (which lists
// the whole cluster's), the connections whose name starts with prefix, per
// node: the server port of each says which node took it.
func connectionsPerNode(t *testing.T, nodes []node, prefix string) map[string]int {
	t.Helper()
	out := ctl(t, nodes[0], "-q", "list_connections", "port", "client_properties", "--formatter", "json")
	var rows []struct {
		Port  int     `json:"port"`
		Props [][]any `json:"client_properties"` // [key, type, value] triples
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("list_connections: %v: %s", err, out)
	}
	counts := map[string]int{}
	for _, r := range rows {
		var name string
		for _, p := range r.Props {
			if len(p) == 3 && p[0] == "connection_name" {
				name, _ = p[2].(string)
			}
		}
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, n := range nodes {
			if strings.HasSuffix(n.addr, fmt.Sprintf(":%d", r.Port)) {
				counts[n.name]++
			}
		}
	}
	return counts
}

// TestShuffleAddrsSpreadsConnections opens 30 connections with the three
// nodes in Config.Addrs: in order, they all go to the first node; with
// ShuffleAddrs, to every node.
func TestShuffleAddrsSpreadsConnections(t *testing.T) {
	nodes := cluster(t)
	for _, shuffle := range []bool{false, true} {
		prefix := testenv.Name(t, fmt.Sprintf("shuffle-%v", shuffle))
		var conns []*pika.Conn
		for i := 0; i < 30; i++ {
			conns = append(conns, dial(t, nodes, 0, func(c *pika.Config) {
				c.ShuffleAddrs = shuffle
				c.ConnectionName = fmt.Sprintf("%s-%d", prefix, i)
			}))
		}
		var counts map[string]int
		eventually(t, 30*time.Second, "list_connections does not list the 30 connections", func() bool {
			counts = connectionsPerNode(t, nodes, prefix)
			total := 0
			for _, n := range counts {
				total += n
			}
			return total == 30
		})
		t.Logf("ShuffleAddrs %v: connections per node %v", shuffle, counts)
		if !shuffle && counts[nodes[0].name] != 30 {
			t.Errorf("without ShuffleAddrs: %v, want all 30 on %s (the first address)", counts, nodes[0].name)
		}
		if shuffle {
			// Each node gets none with probability (2/3)^30 < 1e-5.
			for _, n := range nodes {
				if counts[n.name] == 0 {
					t.Errorf("with ShuffleAddrs: no connection on %s: %v", n.name, counts)
				}
			}
		}
		for _, c := range conns {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c.Close(ctx)
			cancel()
		}
	}
}

// TestConsumerLocality measures a quorum queue's consumer connected to the
// node of the queue's leader against one connected to a follower. The
// leader is found with rabbitmqctl list_queues name leader (the management
// plugin's API says it too; the queue.declare-ok does not), and preferring
// its node needs no option of its own: put its address first in
// Config.Addrs and leave ShuffleAddrs off (recovery then tries it first as
// well). Each round drains the same number of messages; the rounds
// alternate, and the figures are logged, not asserted.
func TestConsumerLocality(t *testing.T) {
	nodes := cluster(t)
	queue := testenv.Name(t, "qq")
	deleteQueue(t, nodes, queue)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Declared through node 3 with client-local: the leader is there.
	decl := dial(t, nodes, 2, nil)
	args, _ := pika.QueueArgs{Type: pika.QueueQuorum, LeaderLocator: "client-local"}.Table()
	if _, err := channel(t, decl).QueueDeclare(ctx, queue, pika.QueueDeclareOptions{Durable: true, Arguments: args}); err != nil {
		t.Fatal(err)
	}
	leader := nodeNamed(t, nodes, listQueue(t, nodes[0], queue).Leader)
	follower := nodes[0]
	if follower.index == leader.index {
		follower = nodes[1]
	}
	pub := dial(t, nodes, (leader.index)%3, nil) // the third node
	pch := channel(t, pub)
	if err := pch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	const msgs = 3000
	body := make([]byte, 1024)
	drain := func(at node) time.Duration {
		t.Helper()
		for i := 0; i < msgs; i++ {
			if _, err := pch.PublishWithConfirm(ctx, "", queue, pika.Message{Body: body}); err != nil {
				t.Fatal(err)
			}
		}
		if err := pch.WaitConfirms(ctx); err != nil {
			t.Fatal(err)
		}
		c := dial(t, nodes, at.index-1, func(c *pika.Config) { c.ShuffleAddrs = false })
		defer c.Close(ctx)
		if got := nodeOf(t, nodes, c.RemoteAddr()); got.index != at.index {
			t.Fatalf("consumer on %s, want %s", got.name, at.name)
		}
		ch := channel(t, c)
		if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 200}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cons, err := ch.Consume(ctx, queue, pika.ConsumeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < msgs; i++ {
			d, err := cons.Next(ctx)
			if err != nil {
				t.Fatalf("after %d: %v", i, err)
			}
			if i%50 == 49 {
				d.Ack(true)
			}
		}
		took := time.Since(start)
		if err := cons.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		return took
	}
	var local, remote []time.Duration
	for round := 0; round < 3; round++ {
		local = append(local, drain(leader))
		remote = append(remote, drain(follower))
	}
	slices.Sort(local)
	slices.Sort(remote)
	rate := func(d time.Duration) float64 { return msgs / d.Seconds() }
	t.Logf("draining %d messages of 1 KiB from a quorum queue (leader %s), 3 alternating rounds: consumer on the leader's node %.0f msg/s median (%v), on a follower %s %.0f msg/s median (%v); ratio leader/follower %.2f",
		msgs, leader.name, rate(local[1]), local, follower.name, rate(remote[1]), remote, rate(local[1])/rate(remote[1]))
}
