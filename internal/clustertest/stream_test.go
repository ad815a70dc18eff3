//go:build cluster

package clustertest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// publishN publishes bodies prefix+i for i in [from, to) with confirms.
func publishN(t *testing.T, ch *pika.Channel, queue string, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := from; i < to; i++ {
		if _, err := ch.PublishWithConfirm(ctx, "", queue, pika.Message{Body: []byte("m" + strconv.Itoa(i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := ch.WaitConfirms(ctx); err != nil {
		t.Fatalf("confirms: %v", err)
	}
}

// streamRead consumes queue from offset (an x-stream-offset value) on a new
// channel of c until it has n deliveries or, with n < 0, until nothing
// arrives for a second, and returns their offsets and bodies.
func streamRead(t *testing.T, c *pika.Conn, queue string, offset any, n int) (offs []int64, bodies []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ch := channel(t, c)
	defer ch.Close(ctx)
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 100}); err != nil {
		t.Fatal(err)
	}
	args, err := pika.ConsumerArgs{StreamOffset: offset}.Table()
	if err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, queue, pika.ConsumeOptions{Arguments: args})
	if err != nil {
		t.Fatalf("consume from %v: %v", offset, err)
	}
	for n < 0 || len(offs) < n {
		wait := ctx
		if n < 0 {
			var wcancel context.CancelFunc
			wait, wcancel = context.WithTimeout(ctx, time.Second)
			defer wcancel()
		}
		d, err := cons.Next(wait)
		if err != nil {
			if n < 0 && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				break
			}
			t.Fatalf("consume from %v: after %d deliveries: %v", offset, len(offs), err)
		}
		off, err := pika.StreamOffsetOf(d)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
		bodies = append(bodies, string(d.Body))
		d.Ack(false)
	}
	return offs, bodies
}

// TestStreamOverAMQP091 declares a stream replicated on the three nodes,
// publishes to it with confirms and consumes it from first, last, next, an
// offset and a timestamp; stream filtering, which RabbitMQ 3.10 does not
// have, is refused with a clear error.
func TestStreamOverAMQP091(t *testing.T) {
	nodes := cluster(t)
	queue := testenv.Name(t, "stream")
	deleteQueue(t, nodes, queue)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := dial(t, nodes, 0, nil)
	ch := channel(t, c)
	args, err := pika.QueueArgs{Type: pika.QueueStream, StreamMaxSegmentSizeBytes: 1 << 20}.Table()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ctx, queue, pika.QueueDeclareOptions{Durable: true, Arguments: args}); err != nil {
		t.Fatalf("declaring the stream: %v", err)
	}
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	if info := listQueue(t, nodes[0], queue); info.Type != "stream" || len(info.Members) != 3 {
		t.Errorf("stream %s: type %q, members %v; want a stream on 3 nodes", queue, info.Type, info.Members)
	}
	publishN(t, ch, queue, 0, 50)
	// Stream timestamps are per chunk, to the millisecond; x-stream-offset
	// timestamps are whole seconds.
	time.Sleep(1100 * time.Millisecond)
	mark := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(mark) + 100*time.Millisecond)
	publishN(t, ch, queue, 50, 100)

	offs, bodies := streamRead(t, c, queue, pika.StreamFirst, 100)
	for i, off := range offs {
		if off != int64(i) || bodies[i] != "m"+strconv.Itoa(i) {
			t.Fatalf("from first: delivery %d has offset %d body %q, want offset %d body m%d", i, off, bodies[i], i, i)
		}
	}

	offs, _ = streamRead(t, c, queue, int64(42), 10)
	if offs[0] != 42 {
		t.Errorf("from offset 42: first delivery at offset %d", offs[0])
	}

	offs, _ = streamRead(t, c, queue, pika.StreamLast, -1)
	if len(offs) == 0 || offs[len(offs)-1] != 99 || offs[0] == 0 {
		t.Errorf("from last: offsets %v, want the last chunk, ending at 99", offs)
	}
	t.Logf("from last: %d deliveries, offsets %d to %d (the last chunk)", len(offs), offs[0], offs[len(offs)-1])

	offs, bodies = streamRead(t, c, queue, mark, -1)
	if len(offs) == 0 || bodies[0] != "m50" || offs[len(offs)-1] != 99 {
		t.Errorf("from timestamp %s: %d deliveries, first %v, want m50 to m99", mark.Format(time.RFC3339), len(offs), bodies[:min(1, len(bodies))])
	}

	// next: only what is published after the consumer attached.
	nch := channel(t, c)
	if err := nch.Qos(ctx, pika.QosOptions{PrefetchCount: 10}); err != nil {
		t.Fatal(err)
	}
	nargs, _ := pika.ConsumerArgs{StreamOffset: pika.StreamNext}.Table()
	ncons, err := nch.Consume(ctx, queue, pika.ConsumeOptions{Arguments: nargs})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, ch, queue, 100, 101)
	d, err := ncons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if off, _ := pika.StreamOffsetOf(d); off != 100 || string(d.Body) != "m100" {
		t.Errorf("from next: offset %d body %q, want 100 m100", off, d.Body)
	}

	// Filtering arrived in RabbitMQ 3.13.
	fch := channel(t, c)
	_, err = fch.Consume(ctx, queue, pika.ConsumeOptions{Arguments: pika.Table{"x-stream-filter": "eu"}})
	if version, _ := c.ServerProperties()["version"].(string); strings.HasPrefix(version, "3.10.") {
		if err == nil || !strings.Contains(err.Error(), "3.13") {
			t.Errorf("consume with x-stream-filter on RabbitMQ %s: %v, want an error saying filtering needs 3.13", version, err)
		}
	} else if err != nil {
		t.Errorf("consume with x-stream-filter on RabbitMQ %s: %v", version, err)
	}
}

// TestStreamTrackerAcrossNodeFailure consumes a stream replicated on the
// three nodes with a StreamTracker, through a connection to node 1, and
// stops node 1 halfway: recovery reconnects to another node and the
// consumer resumes after the last processed offset, so that every offset
// is processed exactly once, in order, none lost and none read twice.
func TestStreamTrackerAcrossNodeFailure(t *testing.T) {
	nodes := cluster(t)
	queue := testenv.Name(t, "stream")
	deleteQueue(t, nodes, queue)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pub := dial(t, nodes, 1, nil)
	pch := channel(t, pub)
	args, _ := pika.QueueArgs{Type: pika.QueueStream}.Table()
	if _, err := pch.QueueDeclare(ctx, queue, pika.QueueDeclareOptions{Durable: true, Arguments: args}); err != nil {
		t.Fatal(err)
	}
	if err := pch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	const total = 400
	publishN(t, pch, queue, 0, total/2)

	c := dial(t, nodes, 0, nil)
	ev := watch(c)
	ch := channel(t, c)
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: 20}); err != nil {
		t.Fatal(err)
	}
	tr := pika.NewStreamTracker(pika.StreamFirst)
	cons, err := ch.Consume(ctx, queue, pika.ConsumeOptions{Stream: tr})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	process := func(d *pika.Delivery) {
		off, err := pika.StreamOffsetOf(d)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, off)
		if err := tr.Processed(d); err != nil {
			t.Fatal(err)
		}
		_ = d.Ack(false)
	}
	for len(got) < total/4 {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		process(d)
	}
	stopNode(t, nodes[0])
	publishN(t, pch, queue, total/2, total)
	for len(got) < total {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("after %d offsets: %v", len(got), err)
		}
		process(d)
	}
	if ev.count(pika.RecoveryRecovered) == 0 {
		t.Errorf("the consumer's connection did not recover")
	}
	for i, off := range got {
		if off != int64(i) {
			t.Fatalf("processed offsets not 0..%d in order: at %d got %d (%s)", total-1, i, off, around(got, i))
		}
	}
	startNode(t, nodes[0])
	t.Logf("processed offsets 0..%d once each across the loss of node 1 (recovered to %s)", total-1, ev.last(pika.RecoveryRecovered).Report.Addr)
}

// around formats got near index i.
func around(got []int64, i int) string {
	return fmt.Sprint(got[max(0, i-3):min(len(got), i+4)])
}
