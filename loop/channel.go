package loop

import (
	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/retmatch"
	"github.com/pika-go/pika/wire"
)

// Channel is an AMQP channel of a Conn. Its methods must be called on the
// loop's goroutine; its callbacks run there, in order: the callback of a
// call never runs before the callback of an earlier call on the same
// channel (publish confirmations included), and a message, return, flow
// or cancel notification runs after the callbacks of the calls made before
// it arrived. A notification therefore waits for the confirmations of
// messages published before it: publish and consume on different channels
// when that matters.
type Channel struct {
	c  *Conn
	id uint16

	// The callbacks waiting to run, in order; slots[head:] are live.
	slots    []*slot
	head     int
	draining bool
	inDrains bool

	closed     bool
	err        error
	confirming bool
	confirmOK  bool // confirm.select-ok arrived
	confirms   engine.ConfirmSet[*slot]
	returns    retmatch.Matcher[*pika.Return] // see confirm.go
	consumers  map[string]*Consumer           // nil until the first consumer

	onClose  handlers[func(error)]
	onReturn handlers[func(*pika.Return)]
	onFlow   handlers[func(active bool)]

	sc *pika.Channel // its stand-in for hooks, made on first use (see hooks.go)

	// What recovery restores (see recovery.go).
	closing   bool           // Close was called
	qos       *wire.BasicQos // the last per-consumer basic.qos
	qosGlobal *wire.BasicQos // the last global basic.qos
	tx        bool
	txLost    bool    // a recovery lost the open transaction
	tagBase   uint64  // delivery tags up to it are from a lost connection
	lastTag   uint64  // the last delivery tag given to the application
	republish []*slot // messages kept at a loss, published again by recovery
}

// slot is one callback's place in its channel's order.
type slot struct {
	ready   bool
	fn      func()
	confirm func(error) // a publish's confirmation callback, until settled
	pub     *pubRec     // a confirm-mode publish's record (see confirmSlot)
	// A delivery runs its consumer's handler: no closure to allocate.
	cons *Consumer
	d    *Delivery
	// kept is a confirm-mode message's copy for republishing.
	kept *keptMsg
}

// reserve takes the next place in the channel's callback order.
func (ch *Channel) reserve() *slot {
	s := &slot{}
	ch.slots = append(ch.slots, s)
	return s
}

// complete makes s ready to run fn; fn runs once every earlier slot ran.
func (ch *Channel) complete(s *slot, fn func()) {
	s.ready = true
	s.fn = fn
	if !ch.inDrains {
		ch.inDrains = true
		ch.c.drains = append(ch.c.drains, ch)
		ch.c.l.markDirty(ch.c)
	}
}

// push queues fn after every callback of the calls made so far.
func (ch *Channel) push(fn func()) { ch.complete(ch.reserve(), fn) }

// drain runs the ready callbacks at the head of the order.
func (ch *Channel) drain() {
	if ch.draining {
		return
	}
	ch.draining = true
	defer func() { ch.draining = false }()
	for ch.head < len(ch.slots) && ch.slots[ch.head].ready {
		s := ch.slots[ch.head]
		ch.slots[ch.head] = nil
		ch.head++
		if ch.head == len(ch.slots) {
			ch.slots = ch.slots[:0]
			ch.head = 0
		}
		switch {
		case s.fn != nil:
			s.fn()
		case s.cons != nil:
			s.cons.deliver(s.d)
		}
	}
	if ch.head > 64 && ch.head*2 > len(ch.slots) {
		n := copy(ch.slots, ch.slots[ch.head:])
		clear(ch.slots[n:])
		ch.slots = ch.slots[:n]
		ch.head = 0
	}
}

// Channel opens a channel and calls cb with it, or with the error.
func (c *Conn) Channel(cb func(*Channel, error)) {
	if err := c.recErr(); err != nil {
		c.l.defer_(func() { cb(nil, err) })
		return
	}
	if c.eng == nil || c.closed {
		err := c.err
		if err == nil {
			err = pika.ErrClosed
		}
		c.l.defer_(func() { cb(nil, err) })
		return
	}
	id, req, err := c.eng.OpenChannel()
	if err != nil {
		c.l.defer_(func() { cb(nil, err) })
		return
	}
	ch := &Channel{c: c, id: id}
	c.chans[id] = ch
	c.addReq(req, func(ev engine.Event) {
		if ev.Err != nil {
			if c.chans[id] == ch {
				delete(c.chans, id)
			}
			ch.closed = true
			ch.err = ev.Err
			cb(nil, ev.Err)
			return
		}
		c.hk.opened(ch)
		cb(ch, nil)
	})
	c.l.markDirty(c)
}

// ID returns the channel's number.
func (ch *Channel) ID() uint16 { return ch.id }

// Conn returns the connection of the channel.
func (ch *Channel) Conn() *Conn { return ch.c }

// IsClosed reports whether the channel has ended.
func (ch *Channel) IsClosed() bool { return ch.closed }

// Err returns why the channel ended, or nil.
func (ch *Channel) Err() error { return ch.err }

// OnClose registers fn to run when the channel ends, with nil after Close
// and the cause otherwise (*pika.Error for a broker's channel.close, the
// connection's error when it ended). It runs after the callbacks of every
// call made on the channel. It returns a function that unregisters fn.
func (ch *Channel) OnClose(fn func(err error)) func() { return ch.onClose.add(fn) }

// OnReturn registers fn to run with each message the broker returns
// (mandatory publishes it could not route). It returns a function that
// unregisters fn.
func (ch *Channel) OnReturn(fn func(*pika.Return)) func() { return ch.onReturn.add(fn) }

// OnFlow registers fn to run when the broker asks the channel to stop
// (active false) or resume publishing (channel.flow). It returns a function
// that unregisters fn.
func (ch *Channel) OnFlow(fn func(active bool)) func() { return ch.onFlow.add(fn) }

// call sends a synchronous method. onReply runs as soon as the reply (or
// the failure) is dispatched, to update state that later events depend on;
// the callback it returns runs in the channel's order.
func (ch *Channel) call(m wire.Method, onReply func(ev engine.Event) func()) {
	s := ch.reserve()
	if err := ch.unusable(); err != nil {
		ev := engine.Event{Kind: engine.EventReply, Channel: ch.id, Err: err}
		ch.complete(s, onReply(ev))
		return
	}
	id, err := ch.c.eng.Call(ch.id, m)
	if err != nil {
		ch.complete(s, onReply(engine.Event{Kind: engine.EventReply, Channel: ch.id, Err: err}))
		return
	}
	ch.c.addReq(id, func(ev engine.Event) {
		ch.c.rec.observe(m, ev)
		ch.complete(s, onReply(ev))
	})
	ch.c.l.markDirty(ch.c)
}

// send sends an asynchronous method (or a no-wait one); cb, when not nil,
// runs in the channel's order with the error of the send.
func (ch *Channel) send(m wire.Method, cb func(error)) {
	err := ch.unusable()
	if err == nil {
		err = ch.c.eng.Send(ch.id, m)
		ch.c.l.markDirty(ch.c)
		if err == nil {
			ch.c.rec.observe(m, engine.Event{})
		}
	}
	if cb != nil {
		ch.push(func() { cb(err) })
	}
}

// callErr is call for a method whose callback gets only an error.
func (ch *Channel) callErr(m wire.Method, noWait bool, cb func(error)) {
	if noWait {
		ch.send(m, cb)
		return
	}
	ch.call(m, func(ev engine.Event) func() {
		if cb == nil {
			return nil
		}
		return func() { cb(ev.Err) }
	})
}

// unusable returns why nothing can be sent on the channel now, or nil.
func (ch *Channel) unusable() error {
	if ch.closed {
		return ch.closedErr()
	}
	return ch.c.recErr()
}

func (ch *Channel) closedErr() error {
	if ch.err != nil {
		return ch.err
	}
	return pika.ErrChannelClosed
}

// Close closes the channel (channel.close, then close-ok) and calls cb,
// which may be nil, after the callbacks of every earlier call, with nil
// or the error that ended the channel first.
func (ch *Channel) Close(cb func(error)) {
	s := ch.reserve()
	fin := func(err error) func() {
		if cb == nil {
			return nil
		}
		return func() { cb(err) }
	}
	if ch.closed {
		err := ch.err
		ch.complete(s, fin(err))
		return
	}
	if ch.c.Recovering() && !ch.c.linkUp() {
		// No link to tell: the channel ends here.
		if ch.c.chans[ch.id] == ch {
			delete(ch.c.chans, ch.id)
		}
		ch.gone(nil)
		ch.complete(s, fin(nil))
		return
	}
	ch.closing = true
	req, err := ch.c.eng.CloseChannel(ch.id)
	if err != nil {
		ch.complete(s, fin(err))
		return
	}
	ch.c.addReq(req, func(ev engine.Event) { ch.complete(s, fin(ev.Err)) })
	ch.c.l.markDirty(ch.c)
}

// dispatch handles a channel-level event.
func (ch *Channel) dispatch(ev engine.Event) {
	switch ev.Kind {
	case engine.EventDelivery:
		cons := ch.consumers[ev.Message.ConsumerTag]
		if cons == nil {
			ch.orphan(ev.Message)
			return
		}
		// The delivery carries its own place in the order: one
		// allocation for both.
		d := ch.newDelivery(&ev.Message)
		s := &d.slot
		s.cons, s.d = cons, d
		ch.slots = append(ch.slots, s)
		ch.complete(s, nil)
	case engine.EventOrphanDelivery:
		ch.orphan(ev.Message)
	case engine.EventReturn:
		ch.returned(&ev.Message)
	case engine.EventConfirm:
		ch.confirmed(ev)
	case engine.EventCancel:
		if cons := ch.consumers[ev.ConsumerTag]; cons != nil {
			if ch.c.revive(cons, pika.ErrConsumerCancelled) {
				return // it waits for its queue, or its end (see revive.go)
			}
			delete(ch.consumers, ev.ConsumerTag)
			ch.c.consumerCancelled(cons.queue)
			ch.push(func() { cons.end(pika.ErrConsumerCancelled) })
		}
	case engine.EventFlow:
		active := ev.Active
		ch.push(func() {
			for _, fn := range ch.onFlow.list() {
				fn(active)
			}
		})
	case engine.EventChannelClosed:
		if ch.c.chans[ch.id] == ch {
			delete(ch.c.chans, ch.id)
		}
		ch.gone(ev.Err)
	}
}

// orphan rejects (with requeue) a delivery for a consumer the channel does
// not know, so that the broker hands it to another consumer.
func (ch *Channel) orphan(m engine.Message) {
	if ch.c.eng.Outstanding(ch.id, m.DeliveryTag) {
		if ch.c.hk.settles() {
			before := ch.c.eng.Unacked(ch.id)
			err := ch.c.eng.Reject(ch.id, m.DeliveryTag, true)
			ch.settleEvent(pika.SettleReject, m.DeliveryTag, false, true, before, err, true)
		} else {
			ch.c.eng.Reject(ch.id, m.DeliveryTag, true)
		}
		ch.c.l.markDirty(ch.c)
	}
}

// settle completes the confirmation callback of one publish.
func (ch *Channel) settle(s *slot, err error) {
	if s == nil || s.ready || s.confirm == nil {
		return // no callback, or settled already
	}
	cb := s.confirm
	s.confirm = nil
	ch.complete(s, func() { cb(err) })
}

// gone ends the channel with err (nil after Close): outstanding
// confirmations resolve with pika.ErrOutcomeUnknown, consumers end, and
// the OnClose handlers run, after every earlier callback.
func (ch *Channel) gone(err error) {
	if ch.closed {
		return
	}
	ch.closed = true
	ch.err = err
	ch.failConfirms(err)
	ch.failKept(err)
	for tag, cons := range ch.consumers {
		delete(ch.consumers, tag)
		cerr := err
		if cerr == nil {
			cerr = pika.ErrChannelClosed
		}
		ch.push(func() { cons.end(cerr) })
	}
	ch.push(func() {
		ch.c.hk.channelClosed(ch, err)
		for _, fn := range ch.onClose.list() {
			fn(err)
		}
	})
}
