package pika

import (
	"maps"

	"github.com/pika-go/pika/wire"
)

// topology records the exchanges, queues and bindings declared through a
// Conn, so that recovery can declare them again on a new connection. What
// the application deletes through the Conn is forgotten; passive declares
// are not recorded. Guarded by the Conn's mutex.
type topology struct {
	exchanges []*wire.ExchangeDeclare
	queues    []*recordedQueue
	bindings  []*recordedBinding
}

type recordedQueue struct {
	decl        wire.QueueDeclare // Queue holds the current name
	serverNamed bool              // declared with an empty name
}

type recordedBinding struct {
	toExchange  bool   // exchange-to-exchange binding
	destination string // queue or exchange
	source      string // exchange
	key         string
	args        wire.Table
}

func (b *recordedBinding) same(o *recordedBinding) bool {
	return b.toExchange == o.toExchange && b.destination == o.destination && b.source == o.source &&
		b.key == o.key && tablesEqual(b.args, o.args)
}

func tablesEqual(a, b wire.Table) bool {
	x, errA := wire.AppendTable(nil, a)
	y, errB := wire.AppendTable(nil, b)
	return errA == nil && errB == nil && string(x) == string(y)
}

func cloneTable(t wire.Table) wire.Table {
	if t == nil {
		return nil
	}
	return maps.Clone(t)
}

// addExchange records an exchange declaration (replacing an earlier one of
// the same name).
func (t *topology) addExchange(d *wire.ExchangeDeclare) {
	if d.Passive || d.Exchange == "" {
		return
	}
	cp := *d
	cp.NoWait = false
	cp.Arguments = cloneTable(d.Arguments)
	for i, e := range t.exchanges {
		if e.Exchange == d.Exchange {
			t.exchanges[i] = &cp
			return
		}
	}
	t.exchanges = append(t.exchanges, &cp)
}

// removeExchange forgets an exchange and every binding to or from it.
func (t *topology) removeExchange(name string) {
	t.exchanges = deleteFunc(t.exchanges, func(e *wire.ExchangeDeclare) bool { return e.Exchange == name })
	t.bindings = deleteFunc(t.bindings, func(b *recordedBinding) bool {
		return b.source == name || b.toExchange && b.destination == name
	})
}

// addQueue records a queue declaration under the name the broker gave it.
func (t *topology) addQueue(d *wire.QueueDeclare, name string) {
	if d.Passive {
		return
	}
	rq := &recordedQueue{decl: *d, serverNamed: d.Queue == ""}
	rq.decl.Queue = name
	rq.decl.NoWait = false
	rq.decl.Arguments = cloneTable(d.Arguments)
	for i, q := range t.queues {
		if q.decl.Queue == name {
			rq.serverNamed = q.serverNamed
			t.queues[i] = rq
			return
		}
	}
	t.queues = append(t.queues, rq)
}

// queue returns the record of a queue, or nil.
func (t *topology) queue(name string) *recordedQueue {
	for _, q := range t.queues {
		if q.decl.Queue == name {
			return q
		}
	}
	return nil
}

// removeQueue forgets a queue and its bindings.
func (t *topology) removeQueue(name string) {
	t.queues = deleteFunc(t.queues, func(q *recordedQueue) bool { return q.decl.Queue == name })
	t.bindings = deleteFunc(t.bindings, func(b *recordedBinding) bool { return !b.toExchange && b.destination == name })
}

// renameQueue moves a server-named queue's bindings to its new name.
func (t *topology) renameQueue(old, new string) {
	for _, b := range t.bindings {
		if !b.toExchange && b.destination == old {
			b.destination = new
		}
	}
}

func (t *topology) addBinding(b *recordedBinding) {
	b.args = cloneTable(b.args)
	for _, o := range t.bindings {
		if o.same(b) {
			return
		}
	}
	t.bindings = append(t.bindings, b)
}

func (t *topology) removeBinding(b *recordedBinding) {
	t.bindings = deleteFunc(t.bindings, func(o *recordedBinding) bool { return o.same(b) })
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

// forgetAutoDeleteLocked forgets an auto-delete queue once its last
// consumer known to this Conn is cancelled: the broker deletes it then.
func (c *Conn) forgetAutoDeleteLocked(queue string) {
	q := c.topo.queue(queue)
	if q == nil || !q.decl.AutoDelete {
		return
	}
	for _, ch := range c.chans {
		for _, cons := range ch.consumers {
			if cons.qname == queue && !cons.ended {
				return
			}
		}
	}
	c.topo.removeQueue(queue)
}
