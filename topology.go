package pika

import (
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/wire"
)

// topology records the exchanges, queues and bindings declared through a
// Conn, so that recovery can declare them again on a new connection (see
// recovery.Record for the rules). Guarded by the Conn's mutex.
type topology = recovery.Record

// forgetAutoDeleteLocked forgets an auto-delete queue once its last
// consumer known to this Conn is cancelled: the broker deletes it then.
// (Otherwise the queue was in use until now, for its x-expires.)
func (c *Conn) forgetAutoDeleteLocked(queue string) {
	c.topo.TouchQueue(queue, time.Now())
	q := c.topo.Queue(queue)
	if q == nil || !q.Decl.AutoDelete {
		return
	}
	for _, ch := range c.chans {
		for _, cons := range ch.consumers {
			if cons.qname == queue && !cons.ended {
				return
			}
		}
	}
	c.topo.RemoveQueue(queue)
}

// consumerCancelledLocked handles the broker's basic.cancel of a consumer of
// queue: the broker cancels consumers when their queue is deleted, so
// recovery must not declare it again.
func (c *Conn) consumerCancelledLocked(queue string) {
	c.topo.RemoveQueue(queue)
}

// topologyObserver returns what to run (under the Conn's mutex) on the
// reply to m, to keep the topology record true: a use of a queue resets its
// x-expires, and NOT_FOUND says a queue or exchange is gone. nil when m
// does not matter.
func (c *Conn) topologyObserver(m wire.Method) func(engine.Event) {
	queue, exchanges, ok := recovery.Observed(m)
	if !ok {
		return nil
	}
	return func(ev engine.Event) { c.topo.Observe(ev, queue, exchanges, time.Now()) }
}
