package pikagnet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// app is the application of the tests: a state machine on the event loop.
type app struct {
	t        *testing.T
	queue    string
	n        int
	idle     time.Duration // stay open this long after the work (heartbeats)
	ch       uint16
	reqs     map[engine.RequestID]string
	confirms int
	received int
	done     chan error
	finished bool
}

func (a *app) call(eng *engine.Conn, name string, m wire.Method) {
	id, err := eng.Call(a.ch, m)
	if err != nil {
		a.t.Errorf("%s: %v", name, err)
		eng.Close("test failed")
		return
	}
	a.reqs[id] = name
}

func (a *app) handle(c *Conn, ev engine.Event) {
	eng := c.Engine()
	switch ev.Kind {
	case engine.EventOpen:
		var err error
		if a.ch, _, err = eng.OpenChannel(); err != nil {
			a.t.Errorf("open channel: %v", err)
		}
		a.call(eng, "declare", &wire.QueueDeclare{Queue: a.queue})
		a.call(eng, "select", &wire.ConfirmSelect{})
		for i := 0; i < a.n; i++ {
			if _, err := eng.Publish(a.ch, "", a.queue, false, false, &wire.Properties{}, []byte(fmt.Sprint(i))); err != nil {
				a.t.Errorf("publish: %v", err)
			}
		}
		a.call(eng, "consume", &wire.BasicConsume{Queue: a.queue})
	case engine.EventReply:
		name := a.reqs[ev.Request]
		if ev.Err != nil {
			a.t.Errorf("%s: %v", name, ev.Err)
			eng.Close("test failed")
		}
		if name == "delete" {
			eng.Close("done")
		}
	case engine.EventConfirm:
		if !ev.Ack {
			a.t.Errorf("nack of %d", ev.Tag)
		}
		a.confirms += ev.Count
		a.maybeFinish(c)
	case engine.EventDelivery:
		if got, want := string(ev.Message.Body), fmt.Sprint(a.received); got != want {
			a.t.Errorf("delivery %q, want %q", got, want)
		}
		a.received++
		if err := eng.Ack(a.ch, ev.Message.DeliveryTag, false); err != nil {
			a.t.Errorf("ack: %v", err)
		}
		a.maybeFinish(c)
	case engine.EventChannelClosed:
		a.t.Errorf("channel closed: %v", ev.Err)
	case engine.EventClosed:
		a.done <- ev.Err
	}
}

func (a *app) maybeFinish(c *Conn) {
	if a.confirms < a.n || a.received < a.n || a.finished {
		return
	}
	a.finished = true
	// Stay idle a while (the engine's heartbeats go through gnet's
	// ticker), then clean up from another goroutine through Do.
	time.AfterFunc(a.idle, func() {
		c.Do(func(eng *engine.Conn) { a.call(eng, "delete", &wire.QueueDelete{Queue: a.queue}) })
	})
}

// Publish with confirms, consume and acknowledge through gnet, then stay
// idle across several heartbeat intervals: the connection must survive
// (heartbeats sent through the ticker) and close cleanly.
func TestPublishConfirmConsume(t *testing.T) {
	url := testenv.Broker(t)
	cfg, err := pika.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Heartbeat = time.Second
	cl, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	a := &app{t: t, queue: testenv.Name(t, "gnet"), n: 500, idle: 3500 * time.Millisecond,
		reqs: make(map[engine.RequestID]string), done: make(chan error, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.Dial(ctx, cfg, a.handle); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.done:
		if err != nil {
			t.Errorf("closed with %v", err)
		}
	case <-ctx.Done():
		t.Fatal("did not finish in time")
	}
	if a.confirms != a.n || a.received != a.n {
		t.Errorf("confirmed %d, received %d, want %d", a.confirms, a.received, a.n)
	}
}

// A connection refused at the TCP level fails Dial.
func TestDialRefused(t *testing.T) {
	cl, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cfg := pika.Config{Addr: "127.0.0.1:1"}
	if _, err := cl.Dial(context.Background(), cfg, func(*Conn, engine.Event) {}); err == nil {
		t.Error("Dial to a closed port: no error")
	}
}
