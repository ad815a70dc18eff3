package loop

import (
	"errors"
	"fmt"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/wire"
)

// revive is called, with recovery on, when the broker cancelled cons
// (basic.cancel) or a restore found its queue unavailable. RabbitMQ cancels
// the consumers of a queue when the queue is deleted, and also when the
// node of a classic queue goes down (the queue still exists and comes back
// with its node), so the cancel alone does not say the queue is gone. The
// consumer is kept, and the loop asks the broker (a passive declare on a
// channel of its own) until it can tell, as pika.Conn does: a queue that
// does not exist ends the consumer with pika.ErrConsumerCancelled and is
// forgotten; a queue that is there gets the consumer back (basic.consume
// with its tag on its channel, RecoveryConsumerRestored); an unavailable
// one is asked again after the Config.Reconnect delay, each wait reported
// as RecoveryConsumerWaiting. A check the broker does not answer within
// Config.HandshakeTimeout + Config.DialTimeout counts as a failed one (its
// channel is closed if the answer comes later); a basic.consume not
// answered within Config.HandshakeTimeout ends the revival and leaves the
// consumer to its late consume-ok, as pika.Conn does. It reports false when
// the consumer is to end now (recovery off, the consumer or its channel
// ending).
func (c *Conn) revive(cons *Consumer, cause error) bool {
	ch := cons.ch
	if !c.recoveryOn() || cons.ended || cons.cancelling || ch.closed || ch.closing ||
		cons.queue == "" || cons.queue == recovery.DirectReplyTo {
		return false
	}
	if cons.rv != nil {
		return true
	}
	cons.rv = &revival{cons: cons, gen: c.recovery().linkGen, lastErr: cause}
	cons.rv.check()
	return true
}

// revival is the state of a consumer being revived.
type revival struct {
	cons    *Consumer
	gen     uint64 // the link it runs on; a loss ends it (recovery takes over)
	attempt int
	lastErr error
	timer   *Timer
}

// done reports whether the revival is over: the consumer ended or was
// cancelled, its channel is closing, the link it ran on was lost, or the
// Conn is closing.
func (rv *revival) done() bool {
	cons := rv.cons
	c := cons.ch.c
	return cons.rv != rv || cons.ended || cons.cancelling || cons.ch.closed || cons.ch.closing ||
		c.rec.linkGen != rv.gen || !c.linkUp() || c.closing()
}

// stop ends the revival without ending the consumer.
func (rv *revival) stop() {
	if rv.timer != nil {
		rv.timer.Stop()
	}
	if rv.cons.rv == rv {
		rv.cons.rv = nil
	}
}

// end ends the revival and the consumer with err.
func (rv *revival) end(err error) {
	rv.stop()
	cons := rv.cons
	ch := cons.ch
	if ch.consumers[cons.tag] == cons {
		delete(ch.consumers, cons.tag)
	}
	ch.push(func() { cons.end(err) })
}

// check asks the broker whether the consumer's queue is there, within
// Config.HandshakeTimeout + Config.DialTimeout (pika.Conn's bound).
func (rv *revival) check() {
	if rv.done() {
		rv.stop()
		return
	}
	rv.attempt++
	c := rv.cons.ch.c
	id, req, err := c.eng.OpenChannel()
	if err != nil {
		rv.retry(err)
		return
	}
	bound := c.rec.cfg.HandshakeTimeout + c.cfg.DialTimeout
	to := c.l.AfterFunc(bound, func() {
		if rv.done() {
			rv.stop()
			return
		}
		rv.retry(fmt.Errorf("pika: no answer to the check of queue %q within %v", rv.cons.queue, bound))
	})
	rv.timer = to
	// current reports whether a reply is this check's, still awaited:
	// not after its timeout, nor once the revival is over.
	current := func() bool {
		if rv.done() {
			rv.stop()
			return false
		}
		// After the timeout, rv.timer is the next check's.
		return rv.timer == to && to.Stop()
	}
	// The reply does not matter: nothing else uses the channel.
	closeCheck := func() {
		if req, err := c.eng.CloseChannel(id); err == nil {
			c.addReq(req, func(engine.Event) {})
		}
	}
	c.addReq(req, func(ev engine.Event) {
		if !current() {
			if ev.Err == nil {
				closeCheck()
			}
			return
		}
		if ev.Err != nil {
			rv.retry(ev.Err)
			return
		}
		req, err := c.eng.Call(id, &wire.QueueDeclare{Queue: rv.cons.queue, Passive: true})
		if err != nil {
			rv.retry(err)
			return
		}
		to.Reset(bound)
		c.addReq(req, func(ev engine.Event) {
			if ev.Err == nil {
				closeCheck()
			}
			if !current() {
				return
			}
			switch {
			case ev.Err == nil:
				rv.reconsume()
			case errors.Is(ev.Err, pika.ErrNotFound) && !recovery.Unavailable(ev.Err):
				// Deleted: the cancel meant it.
				c.rec.topo.RemoveQueue(rv.cons.queue)
				rv.end(pika.ErrConsumerCancelled)
			default:
				rv.retry(ev.Err)
			}
		})
		c.l.markDirty(c)
	})
	c.l.markDirty(c)
}

// retry waits for the next check, or ends the consumer when
// Config.Reconnect gives up.
func (rv *revival) retry(err error) {
	if recovery.Unavailable(err) {
		err = &recovery.UnavailableErr{Err: err}
	}
	rv.lastErr = err
	c := rv.cons.ch.c
	delay, ok := c.rec.cfg.Reconnect.NextDelay(rv.attempt, err)
	if !ok {
		rv.end(err)
		return
	}
	c.event(pika.RecoveryEvent{Kind: pika.RecoveryConsumerWaiting, Attempt: rv.attempt, Delay: delay, Err: err,
		Queue: rv.cons.queue, ConsumerTag: rv.cons.tag})
	rv.timer = c.l.AfterFunc(delay, rv.check)
}

// reconsume starts the consumer again on its channel, with its tag.
func (rv *revival) reconsume() {
	cons := rv.cons
	c := cons.ch.c
	cons.decl.Queue = cons.queue
	req, err := c.eng.Call(cons.ch.id, cons.decl)
	if err != nil {
		rv.retry(err)
		return
	}
	// No answer in time: the request stays on the wire, and another
	// basic.consume with the tag would close the channel. The revival
	// ends, leaving the consumer to its late consume-ok or, when the
	// connection is dead, to the connection's recovery.
	rv.timer = c.l.AfterFunc(c.rec.cfg.HandshakeTimeout, rv.stop)
	c.addReq(req, func(ev engine.Event) {
		if rv.done() {
			rv.stop()
			return
		}
		rv.timer.Stop()
		if ev.Err != nil {
			// The broker refused it: its NOT_FOUND (the queue went down
			// again) closed the consumer's channel, which ends it.
			rv.end(ev.Err)
			return
		}
		rv.stop()
		c.event(pika.RecoveryEvent{Kind: pika.RecoveryConsumerRestored, Attempt: rv.attempt, Queue: cons.queue, ConsumerTag: cons.tag})
	})
	c.l.markDirty(c)
}
