package pika

import (
	"context"
	"sync/atomic"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/internal/standin"
	"github.com/pika-go/pika/wire"
)

// Channel is an AMQP channel: the unit on which queues and exchanges are
// declared, messages published and consumed. It is safe for concurrent use
// by many goroutines: concurrent calls each get their own reply (the channel
// sends one synchronous request at a time and queues the others in order),
// and the frames of one published message are never interleaved with
// another's.
//
// A channel closes when the application calls Close, when the broker closes
// it because of an error (a *Error with Conn false, after which the
// connection and its other channels go on), or when its connection closes.
type Channel struct {
	conn *Conn
	id   uint16
	// lastPub is the sequence number of the newest message published in
	// confirm mode, lowered to the newest one still unconfirmed when the
	// broker confirms the newest before older ones (0 when none is): a
	// wait for an older one's confirmation lets the reader linger (see
	// Confirmation.countWaitLocked). Stored under conn.mu.
	lastPub atomic.Uint64

	// All below are guarded by conn.mu.
	err       error         // why the channel closed; nil while open
	done      chan struct{} // closed when the channel has closed
	consumers map[string]*Consumer
	paused    chan struct{} // non-nil while the broker's channel.flow stopped publishing
	closing   bool          // Close was called
	byApp     bool          // closed because the application closed it or its connection
	announced bool          // reported to ChannelHooks as open
	notify    chanNotifier

	// Recovery: what to restore, and the offsets that keep tags increasing
	// across connections (client tag = broker tag + base).
	qos       *wire.BasicQos // the last per-consumer basic.qos
	qosGlobal *wire.BasicQos // the last global basic.qos
	tx        bool           // tx.select was called
	txLost    bool           // a recovery lost the open transaction
	tagBase   uint64         // delivery tags: broker tag + tagBase
	lastTag   uint64         // the highest client delivery tag handed out
	pubBase   uint64         // publish tags: engine tag + pubBase

	// Confirm mode (see confirm.go and returns.go).
	confirm   bool                         // confirm.select was queued
	confirmOK bool                         // its confirm.select-ok arrived
	confirms  engine.ConfirmSet[pubRecord] // by client tag
	republish []pubRecord                  // kept at a loss, published again by recovery
	returns   returnMatcher
	flushes   []*flushWaiter            // WaitConfirms calls, by upTo
	epoch     uint64                    // the current WaitConfirms batch
	failed    map[uint64]*ConfirmsError // failed outcomes by batch
	room      chan struct{}             // closed when unconfirmed messages fall below the bound
	keptFree  keptFree
	confSlab  []Confirmation // the rest of the slab PublishWithConfirm hands out (see Confirmation)
	delivSlab []Delivery     // the rest of the slab small deliveries come from (see Delivery)

	// Manual-ack consumers that a cancel ended with deliveries still
	// buffered: dropped when the channel closes or its connection is
	// lost, as a running consumer's are. Guarded by conn.mu.
	leftovers []*Consumer

	view standin.ChannelView // a stand-in's loop channel (see standin.go); nil otherwise
}

// Channel opens a new channel. ctx bounds the wait for the broker's
// channel.open-ok; if it ends first, Channel returns ctx.Err() and the
// channel, once the broker opens it, is closed again.
func (c *Conn) Channel(ctx context.Context) (*Channel, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := c.lockReady(ctx); err != nil {
		return nil, err
	}
	l := c.l
	id, req, err := c.eng.OpenChannel()
	if err != nil {
		c.mu.Unlock()
		return nil, c.lockedCallErr(err, nil)
	}
	ch := &Channel{conn: c, id: id, done: make(chan struct{}), consumers: make(map[string]*Consumer)}
	c.chans[id] = ch
	w := newWaiter()
	l.waiters[req] = w
	if len(c.hk.channel) > 0 {
		w.reply = func(engine.Event) { ch.channelOpenLocked() }
	}
	w.late = func(engine.Event) {
		// Opened after the caller gave up: close it again.
		if r, err := l.eng.CloseChannel(id); err == nil {
			w2 := newWaiter()
			w2.abandoned = true
			l.waiters[r] = w2
		}
	}
	c.afterLocked(l)
	c.mu.Unlock()
	if _, err := w.wait(ctx, c); err != nil {
		c.mu.Lock()
		// Whether ctx ended or the connection was lost before the open-ok,
		// nobody holds this channel: recovery must not reopen it.
		if c.chans[id] == ch {
			delete(c.chans, id)
			ch.closedLocked(ErrChannelClosed)
		}
		c.mu.Unlock()
		return nil, c.lockedCallErr(err, ch)
	}
	return ch, nil
}

// lockedCallErr is callErr taking the lock.
func (c *Conn) lockedCallErr(err error, ch *Channel) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.callErr(err, ch)
}

// ID returns the channel number.
func (ch *Channel) ID() uint16 { return ch.id }

// Conn returns the connection the channel belongs to.
func (ch *Channel) Conn() *Conn { return ch.conn }

// Done returns a channel closed when this channel has closed; Err then says
// why.
func (ch *Channel) Done() <-chan struct{} { return ch.done }

// Err returns nil while the channel is open or after a close the
// application asked for (Channel.Close, or Conn.Close of its connection),
// and why it closed otherwise: the broker's *Error, or the connection's
// close cause. Calls on a closed channel fail with ErrChannelClosed, or
// ErrClosed when its connection closed, whichever way it closed.
func (ch *Channel) Err() error {
	if ch.view != nil {
		return ch.view.Err()
	}
	select {
	case <-ch.done:
	default:
		return nil
	}
	ch.conn.mu.Lock()
	defer ch.conn.mu.Unlock()
	if ch.byApp {
		return nil
	}
	return ch.err
}

// IsClosed reports whether the channel has closed.
func (ch *Channel) IsClosed() bool {
	if ch.view != nil {
		return ch.view.IsClosed()
	}
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

// Close closes the channel (channel.close / close-ok). ctx bounds the wait
// for the broker's close-ok; if it ends first, Close returns ctx.Err() and
// the close completes in the background. Consumers on the channel end and
// outstanding confirmations resolve with ErrOutcomeUnknown. Closing a closed
// channel returns nil. During a recovery Close does not wait for it: a
// channel not yet reopened is closed at once (recovery will not reopen it),
// and one the recovery already reopened is closed on the new connection,
// consumers restarted there included.
func (ch *Channel) Close(ctx context.Context) error {
	c := ch.conn
	c.mu.Lock()
	if ch.err != nil || c.state == connClosed {
		c.mu.Unlock()
		return nil
	}
	ch.closing = true
	c.unpauseReaderLocked()
	id, err := c.eng.CloseChannel(ch.id)
	if err != nil {
		// The connection is lost and the recovery has not reopened the
		// channel (nor will it: it is closing), or the channel is already
		// closing. While recovering, a channel the restore reopened on the
		// new connection is closed there like on an open one.
		if c.state == connRecovering && c.chans[ch.id] == ch {
			delete(c.chans, ch.id)
			ch.closedLocked(ErrChannelClosed)
		}
		c.mu.Unlock()
		return nil
	}
	w := newWaiter()
	c.l.waiters[id] = w
	c.afterLocked(c.l)
	c.mu.Unlock()
	if _, err := w.wait(ctx, c); err != nil && ctx.Err() != nil {
		return err
	}
	select {
	case <-ch.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// call sends a synchronous method and waits for its reply. If ctx has
// already ended, call returns ctx.Err() and sends nothing. If ctx ends
// later, call returns ctx.Err(); the request stays queued or on the wire and
// its reply is absorbed when it comes, so the channel stays consistent.
func (ch *Channel) call(ctx context.Context, m wire.Method) (engine.Event, error) {
	return ch.callHooks(ctx, m, callHooks{})
}

// callLate is call with a function to run (under the connection's lock) if
// the reply arrives after the caller gave up.
func (ch *Channel) callLate(ctx context.Context, m wire.Method, late func(engine.Event)) (engine.Event, error) {
	return ch.callHooks(ctx, m, callHooks{late: late})
}

// callHooks are functions a call runs under the connection's lock.
type callHooks struct {
	sent  func()             // right after the request is queued
	reply func(engine.Event) // when its successful reply arrives, waited for or not
	late  func(engine.Event) // when its reply arrives after the caller gave up
}

// callHooks is call with hooks.
func (ch *Channel) callHooks(ctx context.Context, m wire.Method, h callHooks) (engine.Event, error) {
	c := ch.conn
	if err := ctx.Err(); err != nil {
		return engine.Event{}, err
	}
	if err := c.lockReady(ctx); err != nil {
		return engine.Event{}, err
	}
	if ch.err != nil {
		err := ch.err
		c.mu.Unlock()
		return engine.Event{}, err
	}
	id, err := c.eng.Call(ch.id, m)
	if err != nil {
		err = c.callErr(err, ch)
		c.mu.Unlock()
		return engine.Event{}, err
	}
	if h.sent != nil {
		h.sent()
	}
	w := newWaiter()
	w.late = h.late
	w.reply = h.reply
	w.onReply = c.topologyObserver(m)
	c.l.waiters[id] = w
	c.afterLocked(c.l)
	c.mu.Unlock()
	ev, err := w.wait(ctx, c)
	if err != nil && ctx.Err() == nil {
		err = c.lockedCallErr(err, ch)
	}
	return ev, err
}

// sendCtx sends an asynchronous method (or a no-wait variant), waiting for a
// recovery in progress as long as ctx allows. It sends nothing when ctx has
// already ended.
func (ch *Channel) sendCtx(ctx context.Context, m wire.Method) error {
	c := ch.conn
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.lockReady(ctx); err != nil {
		return err
	}
	defer c.mu.Unlock()
	if ch.err != nil {
		return ch.err
	}
	if err := c.eng.Send(ch.id, m); err != nil {
		return c.callErr(err, ch)
	}
	c.afterLocked(c.l)
	return nil
}

// dispatchLocked handles a channel-level engine event. It never blocks.
func (ch *Channel) dispatchLocked(ev engine.Event) {
	switch ev.Kind {
	case engine.EventDelivery:
		if cons := ch.consumers[ev.Message.ConsumerTag]; cons != nil {
			cons.pushLocked(ch.newDelivery(&ev.Message))
			return
		}
		fallthrough
	case engine.EventOrphanDelivery:
		// A delivery for a consumer nobody here knows. Rejecting it could
		// close the channel (a no-ack consumer's tags are not ackable), so
		// it is reported and left for the broker to requeue when the
		// channel closes.
		// Its tag is reported numbered like Delivery.DeliveryTag, which
		// keeps increasing across recoveries.
		tag := ev.Message.DeliveryTag + ch.tagBase
		ch.lastTag = max(ch.lastTag, tag)
		ch.conn.logWarn("pika: delivery for unknown consumer", "channel", ch.id,
			"consumer_tag", ev.Message.ConsumerTag, "delivery_tag", tag)
		ch.notify.orphan(ev.Message.ConsumerTag, tag)
	case engine.EventReturn:
		ret := newReturn(&ev.Message)
		ch.onReturnLocked(ret)
		ch.notify.returned(ret)
	case engine.EventConfirm:
		// Tag 0 with multiple is every outstanding message, whatever the
		// offset of the link's tags.
		tag := ev.Tag
		if tag != 0 || !ev.Multiple {
			tag += ch.pubBase
		}
		ch.confirmLocked(tag, ev.Multiple, ev.Ack)
	case engine.EventCancel:
		if cons := ch.consumers[ev.ConsumerTag]; cons != nil && !ch.conn.reviveLocked(cons, ErrConsumerCancelled) {
			delete(ch.consumers, ev.ConsumerTag)
			cons.endLocked(ErrConsumerCancelled)
			ch.conn.consumerCancelledLocked(cons.qname)
		}
		ch.notify.cancelled(ev.ConsumerTag)
	case engine.EventFlow:
		if !ev.Active && ch.paused == nil {
			ch.paused = make(chan struct{})
		} else if ev.Active && ch.paused != nil {
			close(ch.paused)
			ch.paused = nil
		}
		ch.notify.flow(ev.Active)
	}
}

// closedLocked ends the channel's client-side state.
func (ch *Channel) closedLocked(err error) {
	if ch.err != nil {
		return
	}
	if err == nil {
		err = ErrChannelClosed
	}
	if err == ErrChannelClosed {
		ch.byApp = true
	}
	ch.err = err
	for tag, cons := range ch.consumers {
		delete(ch.consumers, tag)
		cons.endLocked(err)
	}
	ch.dropLeftoversLocked(err)
	ch.failConfirmsLocked(err)
	if ch.paused != nil {
		close(ch.paused)
		ch.paused = nil
	}
	close(ch.done)
	if ch.byApp {
		err = nil
	}
	ch.notify.closed(err)
	ch.channelCloseLocked(err)
}

// suspendLocked prepares the channel for a lost connection: outstanding
// confirmations wait for republishing (or resolve with ErrOutcomeUnknown,
// see suspendConfirmsLocked), delivery tags handed out so far become stale,
// and buffered deliveries of manual-ack consumers are dropped (the broker
// delivers them again).
func (ch *Channel) suspendLocked(cause error) {
	ch.tagBase = ch.lastTag
	if ch.tx {
		ch.txLost = true
	}
	ch.suspendConfirmsLocked(cause)
	// On the next link confirm mode is selected before anything is
	// published: every return there is for a message in confirm mode, even
	// if the confirm.select-ok of this link never came.
	if ch.confirm {
		ch.confirmOK = true
	}
	if ch.paused != nil {
		close(ch.paused)
		ch.paused = nil
	}
	ch.dropLeftoversLocked(nil)
	for _, cons := range ch.consumers {
		if !cons.autoAck {
			cons.dropLocked(false)
		} else {
			// Its buffer stays; whether it is full is decided again on
			// the new link, where a suspension of the old one no longer
			// holds the broker back.
			cons.overRead = 0
			cons.notFullLocked()
		}
	}
}

// restoreMethods lists what recovery sends to restore the channel: a
// placeholder for channel.open first, then its QoS and modes.
func (ch *Channel) restoreMethods() []wire.Method {
	return recovery.ChannelMethods(ch.qosGlobal, ch.qos, ch.confirm, ch.tx)
}
