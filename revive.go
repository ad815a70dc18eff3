package pika

import (
	"context"
	"errors"

	"github.com/pika-go/pika/internal/recovery"
)

// ErrQueueUnavailable: a queue exists but cannot be used now: RabbitMQ
// answered NOT_FOUND saying that its node is down or its process stopped or
// crashed (a classic queue whose node is down). Recovery keeps a consumer
// of such a queue and restarts it when the queue is back (see
// RecoveryConsumerWaiting).
var ErrQueueUnavailable = recovery.ErrQueueUnavailable

// reviveLocked is called when the broker cancelled cons (basic.cancel) or
// recovery found its queue unavailable. RabbitMQ cancels the consumers of a
// queue when the queue is deleted, and also when the node of a classic
// queue goes down (the queue still exists and comes back with its node), so
// the cancel alone does not say the queue is gone. With recovery on, the
// consumer is kept, and a goroutine asks the broker (a passive declare on a
// channel of its own) until it can tell: a queue that does not exist ends
// the consumer with ErrConsumerCancelled and is forgotten, as before; a
// queue that is there gets the consumer back (basic.consume with the same
// tag on the same channel); an unavailable one is asked again after the
// Config.Reconnect delay, each attempt reported to OnRecovery as
// RecoveryConsumerWaiting. It reports false when the consumer is to end now
// (recovery off, the application cancelling it or closing its channel).
func (c *Conn) reviveLocked(cons *Consumer, cause error) bool {
	ch := cons.ch
	if c.cfg.DisableRecovery || cons.ended || cons.cancelling || ch.closing || ch.err != nil || c.closing ||
		cons.qname == recovery.DirectReplyTo || cons.qname == "" {
		return false
	}
	if cons.reviving {
		return true
	}
	cons.reviving = true
	go c.revive(cons, cause)
	return true
}

// revive runs the attempts of reviveLocked.
func (c *Conn) revive(cons *Consumer, cause error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-cons.endCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	lastErr := cause
	for attempt := 1; ; attempt++ {
		c.mu.Lock()
		queue := cons.qname
		c.mu.Unlock()
		if attempt > 1 {
			// The first check runs at once: the cancel may well be a
			// deletion.
			delay, ok := c.cfg.Reconnect.NextDelay(attempt-1, lastErr)
			if !ok {
				c.mu.Lock()
				c.endRevivalLocked(cons, lastErr)
				c.mu.Unlock()
				return
			}
			c.mu.Lock()
			if cons.ended {
				c.mu.Unlock()
				return
			}
			c.notify.recovery(RecoveryEvent{Kind: RecoveryConsumerWaiting, Attempt: attempt - 1, Delay: delay, Err: lastErr, Queue: queue, ConsumerTag: cons.tag})
			c.mu.Unlock()
			if !sleepCtx(ctx, delay) {
				return
			}
		}
		err := c.probeQueue(ctx, queue)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			err = c.reconsume(ctx, cons)
			if err == nil {
				c.mu.Lock()
				c.notify.recovery(RecoveryEvent{Kind: RecoveryConsumerRestored, Attempt: attempt, Queue: queue, ConsumerTag: cons.tag})
				c.mu.Unlock()
				return
			}
			if errors.Is(err, errReviveDone) || ctx.Err() != nil {
				return
			}
		case errors.Is(err, ErrNotFound) && !recovery.Unavailable(err):
			// Deleted: the cancel meant it.
			c.mu.Lock()
			c.topo.RemoveQueue(queue)
			c.endRevivalLocked(cons, ErrConsumerCancelled)
			c.mu.Unlock()
			return
		case errors.Is(err, ErrClosed):
			return
		}
		if recovery.Unavailable(err) {
			err = &recovery.UnavailableErr{Err: err}
		}
		lastErr = err
	}
}

// errReviveDone: the consumer ended or its channel closed while it was
// being restarted.
var errReviveDone = errors.New("pika: consumer ended while restarting")

// endRevivalLocked ends a consumer being revived with err.
func (c *Conn) endRevivalLocked(cons *Consumer, err error) {
	cons.reviving = false
	if cons.ended {
		return
	}
	if cons.ch.consumers[cons.tag] == cons {
		delete(cons.ch.consumers, cons.tag)
	}
	cons.endLocked(err)
}

// probeQueue declares queue passively on a channel of its own: nil when it
// is there, the broker's NOT_FOUND when it is not (deleted, or down).
func (c *Conn) probeQueue(ctx context.Context, queue string) error {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout+c.cfg.DialTimeout)
	defer cancel()
	ch, err := c.Channel(pctx)
	if err != nil {
		return err
	}
	_, err = ch.QueueDeclarePassive(pctx, queue)
	if err == nil || !errors.Is(err, ErrNotFound) {
		_ = ch.Close(pctx)
	}
	return err
}

// reconsume starts cons again on its channel with its tag, on the current
// connection; errReviveDone when it ended meanwhile.
func (c *Conn) reconsume(ctx context.Context, cons *Consumer) error {
	ch := cons.ch
	if err := c.lockReady(ctx); err != nil {
		return err
	}
	if cons.ended || !cons.reviving || ch.err != nil || ch.closing {
		c.mu.Unlock()
		return errReviveDone
	}
	l := c.l
	id, err := l.eng.Call(ch.id, cons.consumeMethod())
	if err != nil {
		err = c.callErr(err, ch)
		c.mu.Unlock()
		return err
	}
	w := newWaiter()
	l.waiters[id] = w
	c.afterLocked(l)
	c.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	_, err = w.wait(rctx, c)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cons.ended || ch.err != nil {
		// The broker refused it (the queue went down again and its
		// NOT_FOUND closed the channel), or the application ended it.
		return errReviveDone
	}
	if err != nil && rctx.Err() != nil && ctx.Err() == nil {
		// No answer in time: the request stays on the wire, and another
		// basic.consume with the tag could close the channel. Leave the
		// consumer to its late consume-ok, or, when the connection is
		// dead, to the connection's recovery.
		cons.reviving = false
		return errReviveDone
	}
	if err != nil {
		return err
	}
	cons.reviving = false
	return nil
}
