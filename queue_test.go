package pika

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

func TestQueueMethodsSendWhatTheyAreAsked(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx := context.Background()
	args := Table{"x-queue-type": "quorum"}
	tests := []struct {
		name  string
		call  func() (any, error)
		want  wire.Method
		wantV any
	}{
		{"declare", func() (any, error) {
			return ch.QueueDeclare(ctx, "q", QueueDeclareOptions{Durable: true, Exclusive: true, AutoDelete: true, Arguments: args})
		}, &wire.QueueDeclare{Queue: "q", Durable: true, Exclusive: true, AutoDelete: true, Arguments: args},
			Queue{Name: "q", Messages: 7, Consumers: 2}},
		{"declare server-named", func() (any, error) {
			return ch.QueueDeclare(ctx, "", QueueDeclareOptions{Exclusive: true})
		}, &wire.QueueDeclare{Exclusive: true}, Queue{Name: "amq.gen-peer", Messages: 7, Consumers: 2}},
		{"passive", func() (any, error) {
			return ch.QueueDeclarePassive(ctx, "q")
		}, &wire.QueueDeclare{Queue: "q", Passive: true}, Queue{Name: "q", Messages: 7, Consumers: 2}},
		{"bind", func() (any, error) {
			return nil, ch.QueueBind(ctx, "q", "x", "k", BindOptions{Arguments: Table{"x-match": "all"}})
		}, &wire.QueueBind{Queue: "q", Exchange: "x", RoutingKey: "k", Arguments: Table{"x-match": "all"}}, nil},
		{"unbind", func() (any, error) {
			return nil, ch.QueueUnbind(ctx, "q", "x", "k", BindOptions{Arguments: Table{"x-match": "all"}})
		}, &wire.QueueUnbind{Queue: "q", Exchange: "x", RoutingKey: "k", Arguments: Table{"x-match": "all"}}, nil},
		{"purge", func() (any, error) {
			return ch.QueuePurge(ctx, "q", PurgeOptions{})
		}, &wire.QueuePurge{Queue: "q"}, 5},
		{"delete", func() (any, error) {
			return ch.QueueDelete(ctx, "q", QueueDeleteOptions{IfUnused: true, IfEmpty: true})
		}, &wire.QueueDelete{Queue: "q", IfUnused: true, IfEmpty: true}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := tt.call()
			if err != nil {
				t.Fatal(err)
			}
			p.expectSent(t, tt.want)
			if v != tt.wantV {
				t.Errorf("returned %+v, want %+v", v, tt.wantV)
			}
		})
	}
}

func TestQueueNoWait(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	q, err := ch.QueueDeclare(ctx, "q", QueueDeclareOptions{Durable: true, NoWait: true})
	if err != nil || q != (Queue{Name: "q"}) {
		t.Fatalf("no-wait declare: %+v, %v; want the name only", q, err)
	}
	if _, err := ch.QueueDeclare(ctx, "", QueueDeclareOptions{NoWait: true}); err == nil || !strings.Contains(err.Error(), "NoWait") {
		t.Errorf("no-wait declare of a server-named queue: %v, want an error about NoWait", err)
	}
	if err := ch.QueueBind(ctx, "q", "x", "k", BindOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	// queue.unbind has no no-wait bit: refused, nothing sent.
	if err := ch.QueueUnbind(ctx, "q", "x", "k", BindOptions{NoWait: true}); !errors.Is(err, ErrUnbindNoWait) {
		t.Fatalf("no-wait unbind: %v, want ErrUnbindNoWait", err)
	}
	if n, err := ch.QueuePurge(ctx, "q", PurgeOptions{NoWait: true}); n != 0 || err != nil {
		t.Fatalf("no-wait purge: %d, %v", n, err)
	}
	if n, err := ch.QueueDelete(ctx, "q", QueueDeleteOptions{NoWait: true}); n != 0 || err != nil {
		t.Fatalf("no-wait delete: %d, %v", n, err)
	}
	if _, err := ch.QueueDeclarePassive(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	p.expectSent(t,
		&wire.QueueDeclare{Queue: "q", Durable: true, NoWait: true},
		&wire.QueueBind{Queue: "q", Exchange: "x", RoutingKey: "k", NoWait: true},
		&wire.QueuePurge{Queue: "q", NoWait: true},
		&wire.QueueDelete{Queue: "q", NoWait: true},
		&wire.QueueDeclare{Queue: "q", Passive: true},
	)
}

func TestQueueTopologyIsRecorded(t *testing.T) {
	c, _ := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx := context.Background()
	if _, err := ch.QueueDeclare(ctx, "", QueueDeclareOptions{Exclusive: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ctx, "named", QueueDeclareOptions{Durable: true, NoWait: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclarePassive(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"amq.gen-peer", "named"} {
		if err := ch.QueueBind(ctx, q, "x", "k", BindOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	if len(c.topo.Queues) != 2 {
		t.Fatalf("recorded queues %+v, want 2 (passive declarations are not recorded)", c.topo.Queues)
	}
	gen, named := c.topo.Queues[0], c.topo.Queues[1]
	if gen.Decl.Queue != "amq.gen-peer" || !gen.ServerNamed || !gen.Decl.Exclusive {
		t.Errorf("server-named queue recorded as %+v", gen)
	}
	if named.Decl.Queue != "named" || named.ServerNamed || !named.Decl.Durable || named.Decl.NoWait {
		t.Errorf("named queue recorded as %+v", named)
	}
	if len(c.topo.Bindings) != 2 {
		t.Errorf("bindings %+v, want 2", c.topo.Bindings)
	}
	c.mu.Unlock()

	if err := ch.QueueUnbind(ctx, "named", "x", "k", BindOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(ctx, "amq.gen-peer", QueueDeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	if len(c.topo.Queues) != 1 || c.topo.Queues[0].Decl.Queue != "named" || len(c.topo.Bindings) != 0 {
		t.Errorf("after unbind and delete: queues %+v bindings %+v, want named and no bindings", c.topo.Queues, c.topo.Bindings)
	}
	c.mu.Unlock()
}

func TestQueueRefusals(t *testing.T) {
	c, _ := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
		if d, ok := m.(*wire.QueueDeclare); ok {
			switch d.Queue {
			case "missing":
				p.closeChannel(ch, wire.ReplyNotFound, "NOT_FOUND - no queue 'missing'", m)
				return
			case "locked":
				p.closeChannel(ch, wire.ReplyResourceLocked, "RESOURCE_LOCKED - exclusive queue", m)
				return
			}
		}
		p.reply(ch, okReply(m))
	})
	ctx := context.Background()
	for _, tt := range []struct {
		queue string
		want  error
	}{{"missing", ErrNotFound}, {"locked", ErrResourceLocked}} {
		ch := peerChannel(t, c)
		q, err := ch.QueueDeclarePassive(ctx, tt.queue)
		if !errors.Is(err, tt.want) || q != (Queue{}) {
			t.Errorf("passive declare of %q: %+v, %v; want %v", tt.queue, q, err, tt.want)
		}
		<-ch.Done()
	}
}

func TestQueueNameTooLong(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx := context.Background()
	long := strings.Repeat("q", 256)
	if _, err := ch.QueueDeclare(ctx, long, QueueDeclareOptions{}); err == nil {
		t.Fatal("QueueDeclare with a 256-byte name succeeded")
	} else {
		t.Logf("QueueDeclare with a 256-byte name: %v", err)
	}
	if err := ch.QueueBind(ctx, "q", "x", long, BindOptions{NoWait: true}); err == nil {
		t.Fatal("no-wait QueueBind with a 256-byte routing key succeeded")
	}
	// Nothing was sent, and the channel is still usable.
	if _, err := ch.QueuePurge(ctx, "q", PurgeOptions{}); err != nil {
		t.Fatal(err)
	}
	p.expectSent(t, &wire.QueuePurge{Queue: "q"})
	c.mu.Lock()
	n := len(c.topo.Queues) + len(c.topo.Bindings)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d entities recorded after failed calls, want none", n)
	}
}

func TestQueueArgumentsAreCopied(t *testing.T) {
	// A request queued behind a slow one is written later: changing the
	// caller's table after an abandoned call must not change what is sent.
	arrived, release := make(chan struct{}), make(chan struct{})
	c, p := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
		if d, ok := m.(*wire.QueueDeclare); ok && d.Queue == "slow" {
			close(arrived)
			<-release
		}
		p.reply(ch, okReply(m))
	})
	ch := peerChannel(t, c)
	slowDone := make(chan error, 1)
	go func() {
		_, err := ch.QueueDeclare(context.Background(), "slow", QueueDeclareOptions{})
		slowDone <- err
	}()
	<-arrived
	args := Table{"x-match": "all", "k": "v"}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ch.QueueBind(ctx, "q", "x", "", BindOptions{Arguments: args}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("bind queued behind a blocked request: %v, want context.DeadlineExceeded", err)
	}
	args["k"] = "changed"
	args["extra"] = int64(1)
	close(release)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclarePassive(context.Background(), "q"); err != nil {
		t.Fatal(err)
	}
	p.expectSent(t,
		&wire.QueueDeclare{Queue: "slow"},
		&wire.QueueBind{Queue: "q", Exchange: "x", Arguments: Table{"x-match": "all", "k": "v"}},
		&wire.QueueDeclare{Queue: "q", Passive: true},
	)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.topo.Bindings) != 1 || c.topo.Bindings[0].Args["k"] != "v" || len(c.topo.Bindings[0].Args) != 2 {
		t.Errorf("binding recorded from the late reply: %+v, want the arguments as sent", c.topo.Bindings)
	}
}
