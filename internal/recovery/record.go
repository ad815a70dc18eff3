// Package recovery holds the part of automatic connection recovery that is
// pure logic, shared by package pika (pika.Conn, goroutines and waits) and
// package loop (callbacks on an event loop): the record of the topology
// declared through a connection, the rules that keep it true, and the plan
// of a topology restore — what to declare again, in which order, with
// which renames, expiries and filters. The clients execute the plan, each
// in its own way; nothing here does I/O, starts a goroutine or reads the
// clock.
package recovery

import (
	"errors"
	"maps"
	"strings"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// Record records the exchanges, queues and bindings declared through a
// connection, so that recovery can declare them again on a new connection.
// What the application deletes is forgotten, and so is what the broker says
// is gone (see ForgetNotFound). Passive declares are not recorded. A Record
// is not safe for concurrent use: its owner guards it.
type Record struct {
	Exchanges []*wire.ExchangeDeclare
	Queues    []*Queue
	Bindings  []*Binding
}

// Queue is a recorded queue declaration.
type Queue struct {
	Decl        wire.QueueDeclare // Queue holds the current name
	ServerNamed bool              // declared with an empty name
	Expires     time.Duration     // x-expires; 0 if none
	LastUsed    time.Time         // last declare, get, consume or consumer end seen
}

// Binding is a recorded queue or exchange binding.
type Binding struct {
	ToExchange  bool   // exchange-to-exchange binding
	Destination string // queue or exchange
	Source      string // exchange
	Key         string
	Args        wire.Table
}

// Same reports whether b and o are the same binding.
func (b *Binding) Same(o *Binding) bool {
	return b.ToExchange == o.ToExchange && b.Destination == o.Destination && b.Source == o.Source &&
		b.Key == o.Key && TablesEqual(b.Args, o.Args)
}

// Method returns the method that declares b.
func (b *Binding) Method() wire.Method {
	if b.ToExchange {
		return &wire.ExchangeBind{Destination: b.Destination, Source: b.Source, RoutingKey: b.Key, Arguments: b.Args}
	}
	return &wire.QueueBind{Queue: b.Destination, Exchange: b.Source, RoutingKey: b.Key, Arguments: b.Args}
}

// TablesEqual reports whether two tables encode alike.
func TablesEqual(a, b wire.Table) bool {
	x, errA := wire.AppendTable(nil, a)
	y, errB := wire.AppendTable(nil, b)
	return errA == nil && errB == nil && string(x) == string(y)
}

// CloneTable returns a shallow copy of t (nil for nil).
func CloneTable(t wire.Table) wire.Table {
	if t == nil {
		return nil
	}
	return maps.Clone(t)
}

// AddExchange records an exchange declaration (replacing an earlier one of
// the same name).
func (t *Record) AddExchange(d *wire.ExchangeDeclare) {
	if d.Passive || d.Exchange == "" {
		return
	}
	cp := *d
	cp.NoWait = false
	cp.Arguments = CloneTable(d.Arguments)
	for i, e := range t.Exchanges {
		if e.Exchange == d.Exchange {
			t.Exchanges[i] = &cp
			return
		}
	}
	t.Exchanges = append(t.Exchanges, &cp)
}

// RemoveExchange forgets an exchange and every binding to or from it.
func (t *Record) RemoveExchange(name string) {
	t.Exchanges = deleteFunc(t.Exchanges, func(e *wire.ExchangeDeclare) bool { return e.Exchange == name })
	t.Bindings = deleteFunc(t.Bindings, func(b *Binding) bool {
		return b.Source == name || b.ToExchange && b.Destination == name
	})
}

// AddQueue records a queue declaration under the name the broker gave it,
// used at now.
func (t *Record) AddQueue(d *wire.QueueDeclare, name string, now time.Time) {
	if d.Passive {
		return
	}
	rq := &Queue{Decl: *d, ServerNamed: d.Queue == "", LastUsed: now}
	rq.Decl.Queue = name
	rq.Decl.NoWait = false
	rq.Decl.Arguments = CloneTable(d.Arguments)
	rq.Expires = ExpiresOf(d.Arguments)
	for i, q := range t.Queues {
		if q.Decl.Queue == name {
			rq.ServerNamed = q.ServerNamed
			t.Queues[i] = rq
			return
		}
	}
	t.Queues = append(t.Queues, rq)
}

// Queue returns the record of a queue, or nil.
func (t *Record) Queue(name string) *Queue {
	for _, q := range t.Queues {
		if q.Decl.Queue == name {
			return q
		}
	}
	return nil
}

// ExpiresOf returns a queue's x-expires argument (milliseconds), or 0.
func ExpiresOf(args wire.Table) time.Duration {
	var ms int64
	switch v := args["x-expires"].(type) {
	case int8:
		ms = int64(v)
	case int16:
		ms = int64(v)
	case int32:
		ms = int64(v)
	case int64:
		ms = v
	case int:
		ms = int64(v)
	case uint8:
		ms = int64(v)
	case uint16:
		ms = int64(v)
	case uint32:
		ms = int64(v)
	case uint64:
		ms = int64(min(v, 1<<62))
	}
	if ms <= 0 || ms > int64(1<<62)/int64(time.Millisecond) {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// TouchQueue notes a use of a queue at now (it resets the broker's
// x-expires timer).
func (t *Record) TouchQueue(name string, now time.Time) {
	if q := t.Queue(name); q != nil && now.After(q.LastUsed) {
		q.LastUsed = now
	}
}

// Expired reports whether the queue, with x-expires, has been unused for
// longer than its expiry at now; inUseUntil is when a consumer of it was
// last known active (zero if none).
func (q *Queue) Expired(now, inUseUntil time.Time) bool {
	if q.Expires <= 0 {
		return false
	}
	last := q.LastUsed
	if inUseUntil.After(last) {
		last = inUseUntil
	}
	return now.Sub(last) > q.Expires
}

// RemoveQueue forgets a queue and its bindings.
func (t *Record) RemoveQueue(name string) {
	t.Queues = deleteFunc(t.Queues, func(q *Queue) bool { return q.Decl.Queue == name })
	t.Bindings = deleteFunc(t.Bindings, func(b *Binding) bool { return !b.ToExchange && b.Destination == name })
}

// RenameQueue moves a server-named queue's bindings to its new name.
func (t *Record) RenameQueue(old, new string) {
	for _, b := range t.Bindings {
		if !b.ToExchange && b.Destination == old {
			b.Destination = new
		}
	}
}

// AddBinding records a binding (once).
func (t *Record) AddBinding(b *Binding) {
	b.Args = CloneTable(b.Args)
	for _, o := range t.Bindings {
		if o.Same(b) {
			return
		}
	}
	t.Bindings = append(t.Bindings, b)
}

// RemoveBinding forgets a binding.
func (t *Record) RemoveBinding(b *Binding) {
	t.Bindings = deleteFunc(t.Bindings, func(o *Binding) bool { return o.Same(b) })
}

func deleteFunc[T any](s []T, del func(T) bool) []T {
	k := 0
	for _, v := range s {
		if !del(v) {
			s[k] = v
			k++
		}
	}
	clear(s[k:])
	return s[:k]
}

// Observed returns the queue and exchanges a method names, whose reply
// says something about them: a use of a queue resets its x-expires, and
// NOT_FOUND says a queue or exchange is gone. ok is false when the reply
// to m does not matter to the record.
func Observed(m wire.Method) (queue string, exchanges []string, ok bool) {
	switch m := m.(type) {
	case *wire.QueueDeclare:
		queue = m.Queue
	case *wire.BasicGet:
		queue = m.Queue
	case *wire.BasicConsume:
		queue = m.Queue
	case *wire.QueuePurge:
		queue = m.Queue
	case *wire.QueueBind:
		queue, exchanges = m.Queue, []string{m.Exchange}
	case *wire.QueueUnbind:
		queue, exchanges = m.Queue, []string{m.Exchange}
	case *wire.ExchangeDeclare:
		exchanges = []string{m.Exchange}
	case *wire.ExchangeBind:
		exchanges = []string{m.Destination, m.Source}
	case *wire.ExchangeUnbind:
		exchanges = []string{m.Destination, m.Source}
	default:
		return "", nil, false
	}
	return queue, exchanges, queue != "" || len(exchanges) > 0
}

// Observe updates the record with ev, the reply to a method that Observed
// returned queue and exchanges for, at now.
func (t *Record) Observe(ev engine.Event, queue string, exchanges []string, now time.Time) {
	if ev.Err == nil {
		switch ok := ev.Method.(type) {
		case *wire.QueueDeclareOk:
			t.TouchQueue(ok.Queue, now)
		case *wire.BasicConsumeOk, *wire.BasicGetOk, *wire.BasicGetEmpty:
			t.TouchQueue(queue, now)
		}
		if ev.Kind == engine.EventGetOk {
			t.TouchQueue(queue, now)
		}
		return
	}
	t.ForgetNotFound(ev.Err, queue, exchanges)
}

// ForgetNotFound forgets the queue or exchanges that err, the broker's
// answer to a method naming them, says do not exist. Methods that name one
// queue only (declare, get, consume, purge) name it in the error's subject;
// for those naming several entities the broker's text ("no queue 'q' in
// vhost '/'", "no exchange 'x' in vhost '/'") says which.
func (t *Record) ForgetNotFound(err error, queue string, exchanges []string) {
	var e *engine.Error
	if !errors.As(err, &e) || !e.Server || e.Code != wire.ReplyNotFound {
		return
	}
	if queue != "" && (len(exchanges) == 0 || strings.Contains(e.Text, "no queue '"+queue+"'")) {
		t.RemoveQueue(queue)
	}
	for _, x := range exchanges {
		if x != "" && strings.Contains(e.Text, "no exchange '"+x+"'") {
			t.RemoveExchange(x)
		}
	}
}
