package pika

import (
	"errors"
	"maps"
	"strings"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// topology records the exchanges, queues and bindings declared through a
// Conn, so that recovery can declare them again on a new connection. What
// the application deletes through the Conn is forgotten, and so is what
// the broker says is gone: a queue whose consumer the broker cancelled (it
// was deleted), and a queue or exchange a call failed on with NOT_FOUND
// (404). Passive declares are not recorded. Guarded by the Conn's mutex.
type topology struct {
	exchanges []*wire.ExchangeDeclare
	queues    []*recordedQueue
	bindings  []*recordedBinding
}

type recordedQueue struct {
	decl        wire.QueueDeclare // Queue holds the current name
	serverNamed bool              // declared with an empty name
	expires     time.Duration     // x-expires; 0 if none
	lastUsed    time.Time         // last declare, get, consume or consumer end seen
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
	rq := &recordedQueue{decl: *d, serverNamed: d.Queue == "", lastUsed: time.Now()}
	rq.decl.Queue = name
	rq.decl.NoWait = false
	rq.decl.Arguments = cloneTable(d.Arguments)
	rq.expires = expiresOf(d.Arguments)
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

// expiresOf returns a queue's x-expires argument (milliseconds), or 0.
func expiresOf(args wire.Table) time.Duration {
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

// touchQueue notes a use of a queue (it resets the broker's x-expires
// timer).
func (t *topology) touchQueue(name string, now time.Time) {
	if q := t.queue(name); q != nil && now.After(q.lastUsed) {
		q.lastUsed = now
	}
}

// expired reports whether the queue, with x-expires, has been unused for
// longer than its expiry at now; inUseUntil is when a consumer of it was
// last known active (zero if none).
func (q *recordedQueue) expired(now, inUseUntil time.Time) bool {
	if q.expires <= 0 {
		return false
	}
	last := q.lastUsed
	if inUseUntil.After(last) {
		last = inUseUntil
	}
	return now.Sub(last) > q.expires
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
// (Otherwise the queue was in use until now, for its x-expires.)
func (c *Conn) forgetAutoDeleteLocked(queue string) {
	c.topo.touchQueue(queue, time.Now())
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

// consumerCancelledLocked handles the broker's basic.cancel of a consumer of
// queue: the broker cancels consumers when their queue is deleted, so
// recovery must not declare it again.
func (c *Conn) consumerCancelledLocked(queue string) {
	c.topo.removeQueue(queue)
}

// topologyObserver returns what to run (under the Conn's mutex) on the
// reply to m, to keep the topology record true: a use of a queue resets its
// x-expires, and NOT_FOUND says a queue or exchange is gone. nil when m
// does not matter.
func (c *Conn) topologyObserver(m wire.Method) func(engine.Event) {
	var queue string
	var exchanges []string
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
		return nil
	}
	if queue == "" && len(exchanges) == 0 {
		return nil
	}
	return func(ev engine.Event) {
		if ev.Err == nil {
			switch ok := ev.Method.(type) {
			case *wire.QueueDeclareOk:
				c.topo.touchQueue(ok.Queue, time.Now())
			case *wire.BasicConsumeOk, *wire.BasicGetOk, *wire.BasicGetEmpty:
				c.topo.touchQueue(queue, time.Now())
			}
			if ev.Kind == engine.EventGetOk {
				c.topo.touchQueue(queue, time.Now())
			}
			return
		}
		c.forgetNotFoundLocked(ev.Err, queue, exchanges)
	}
}

// forgetNotFoundLocked forgets the queue or exchanges that err, the
// broker's answer to a method naming them, says do not exist. Methods that
// name one queue only (declare, get, consume, purge) name it in the
// error's subject; for those naming several entities the broker's text
// ("no queue 'q' in vhost '/'", "no exchange 'x' in vhost '/'") says which.
func (c *Conn) forgetNotFoundLocked(err error, queue string, exchanges []string) {
	var e *Error
	if !errors.As(err, &e) || !e.Server || e.Code != wire.ReplyNotFound {
		return
	}
	if queue != "" && (len(exchanges) == 0 || strings.Contains(e.Text, "no queue '"+queue+"'")) {
		c.topo.removeQueue(queue)
	}
	for _, x := range exchanges {
		if x != "" && strings.Contains(e.Text, "no exchange '"+x+"'") {
			c.topo.removeExchange(x)
		}
	}
}
