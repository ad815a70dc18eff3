package recovery

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

func notFound(text string) error {
	return &engine.Error{Code: wire.ReplyNotFound, Text: "NOT_FOUND - " + text, Server: true}
}

// stepName names a step as the tests expect it.
func stepName(s Step) string {
	switch m := s.Method.(type) {
	case *wire.ExchangeDeclare:
		return "exchange " + m.Exchange
	case *wire.QueueDeclare:
		if m.Passive {
			return "check " + m.Queue
		}
		return "queue " + m.Queue
	case *wire.QueueBind:
		return "bind " + m.Queue + " " + m.Exchange
	case *wire.ExchangeBind:
		return "xbind " + m.Destination + " " + m.Source
	}
	return s.Method.ID().String()
}

// A plan declares exchanges, queues (checking first those whose x-expires
// may have run out; server-named ones with an empty name), bindings (as
// renamed), then checks the consumed queues not declared; refusals are
// reported and the record follows what the broker said.
func TestPlan(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var rec Record
	rec.AddExchange(&wire.ExchangeDeclare{Exchange: "x", Type: "direct"})
	rec.AddExchange(&wire.ExchangeDeclare{Exchange: "filtered", Type: "direct"})
	rec.AddQueue(&wire.QueueDeclare{Exclusive: true}, "amq.gen-1", t0)
	rec.AddQueue(&wire.QueueDeclare{Queue: "old", Arguments: wire.Table{"x-expires": int32(1000)}}, "old", t0)
	rec.AddQueue(&wire.QueueDeclare{Queue: "refused"}, "refused", t0)
	rec.AddQueue(&wire.QueueDeclare{Queue: "gone-in-use", Arguments: wire.Table{"x-expires": int32(1000)}}, "gone-in-use", t0)
	rec.AddBinding(&Binding{Destination: "amq.gen-1", Source: "x", Key: "k"})
	rec.AddBinding(&Binding{Destination: "old", Source: "x", Key: "k"})
	rec.AddBinding(&Binding{ToExchange: true, Destination: "x", Source: "amq.fanout"})
	consumed := map[string]bool{"amq.gen-1": true, "other": true, "down": true, "gone-in-use": true, DirectReplyTo: true}
	rec.AddQueue(&wire.QueueDeclare{Queue: "down"}, "down", t0)
	f := Filter{
		Exchange: func(name string) bool { return name != "filtered" },
		Queue:    func(name string, _ bool) bool { return name != "down" },
	}
	// The loss came 500 ms after t0, the restore 2 s after: "old" is
	// unused for longer than its expiry, "gone-in-use" was in use until
	// the loss.
	p := NewPlan(&rec, nil, f, consumed, 1, t0.Add(2*time.Second), t0.Add(1500*time.Millisecond))
	var renamed []string
	p.OnRename = func(old, new string) { renamed = append(renamed, old+"->"+new) }
	answers := map[string]func() (wire.Method, error){
		"queue ":    func() (wire.Method, error) { return &wire.QueueDeclareOk{Queue: "amq.gen-2"}, nil },
		"check old": func() (wire.Method, error) { return nil, notFound("no queue 'old' in vhost '/'") },
		"queue refused": func() (wire.Method, error) {
			return nil, &engine.Error{Code: wire.ReplyPreconditionFailed, Server: true}
		},
		"check other": func() (wire.Method, error) { return nil, notFound("no queue 'other' in vhost '/'") },
		"check down": func() (wire.Method, error) {
			return nil, notFound("home node 'n' of durable queue 'down' in vhost '/' is down or inaccessible")
		},
	}
	var got []string
	for {
		s, ok := p.Next()
		if !ok {
			break
		}
		name := stepName(s)
		got = append(got, name)
		reply, err := wire.Method(nil), error(nil)
		if a := answers[name]; a != nil {
			reply, err = a()
		} else if d, ok := s.Method.(*wire.QueueDeclare); ok {
			reply = &wire.QueueDeclareOk{Queue: d.Queue}
		}
		if err := p.Done(reply, err); err != nil {
			t.Fatalf("Done(%s): %v", name, err)
		}
	}
	want := "exchange x|queue |check old|queue refused|queue gone-in-use|bind amq.gen-2 x|xbind x amq.fanout|check down|check other"
	if g := strings.Join(got, "|"); g != want {
		t.Errorf("steps\n\t%s\nwant\n\t%s", g, want)
	}
	if len(renamed) != 1 || renamed[0] != "amq.gen-1->amq.gen-2" || p.Renamed["amq.gen-1"] != "amq.gen-2" {
		t.Errorf("renames %v %v", renamed, p.Renamed)
	}
	if len(p.Expired) != 1 || p.Expired[0] != "old" || rec.Queue("old") != nil {
		t.Errorf("expired %v, old still recorded: %v", p.Expired, rec.Queue("old") != nil)
	}
	if !errors.Is(p.FailedQueues["old"], ErrQueueExpired) || !errors.Is(p.FailedQueues["refused"], engine.ReplyCodeError(wire.ReplyPreconditionFailed)) ||
		!errors.Is(p.FailedQueues["other"], errNotFound) || !Unavailable(p.FailedQueues["down"]) || len(p.FailedQueues) != 4 {
		t.Errorf("failed queues %v", p.FailedQueues)
	}
	if len(p.Failed) != 1 || p.Failed[0].Entity != `queue "refused"` {
		t.Errorf("failures %v", p.Failed)
	}
}

// An exclusive queue still held by the lost connection ends the attempt
// (the next one may succeed), until MaxLockedAttempts; a left-out
// server-named queue cannot have outlived the connection.
func TestPlanExclusiveQueues(t *testing.T) {
	locked := &engine.Error{Code: wire.ReplyResourceLocked, Server: true}
	for _, attempt := range []int{1, MaxLockedAttempts} {
		var rec Record
		rec.AddQueue(&wire.QueueDeclare{Queue: "mine", Exclusive: true}, "mine", time.Now())
		p := NewPlan(&rec, nil, Filter{}, nil, attempt, time.Now(), time.Now())
		if _, ok := p.Next(); !ok {
			t.Fatal("no step")
		}
		err := p.Done(nil, locked)
		if (err != nil) != (attempt < MaxLockedAttempts) {
			t.Errorf("attempt %d: Done = %v", attempt, err)
		}
	}
	var rec Record
	rec.AddQueue(&wire.QueueDeclare{Exclusive: true}, "amq.gen-1", time.Now())
	p := NewPlan(&rec, nil, Filter{Queue: func(string, bool) bool { return false }}, nil, 1, time.Now(), time.Now())
	if s, ok := p.Next(); ok {
		t.Errorf("step %s for a left-out queue", stepName(s))
	}
	if !errors.Is(p.FailedQueues["amq.gen-1"], ErrNotRecovered) {
		t.Errorf("failed queues %v", p.FailedQueues)
	}
}
