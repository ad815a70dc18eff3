package pika

import (
	"context"
	"sync"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// Message is a message to publish: its properties (content type, headers,
// delivery mode, ...), its body, and the mandatory flag.
type Message struct {
	Properties
	// Body is the message body. Publish copies it before returning.
	Body []byte
	// Mandatory asks the broker to return the message (see
	// Channel.NotifyReturn, and ErrReturned in confirm mode) when no queue
	// matches its routing key, instead of dropping it.
	Mandatory bool
}

// Delivery modes for Properties.DeliveryMode.
const (
	Transient  uint8 = 1 // the broker may keep the message in memory only
	Persistent uint8 = 2 // the broker writes the message to disk (durable queues)
)

// Publish publishes msg to exchange with routingKey. It returns once the
// message is queued for the socket (it does not wait for the broker); many
// goroutines publishing at once share write calls. Publish waits, honouring
// ctx, while the broker blocks the connection (resource alarm), while the
// broker's channel.flow has paused the channel, and while more than
// Config.WriteBufferLimit bytes wait for the socket. If ctx ends during such
// a wait the message is not sent.
//
// In confirm mode the message gets the next delivery tag; use
// PublishWithConfirm to wait for its confirmation, or WaitConfirms for all
// of them.
func (ch *Channel) Publish(ctx context.Context, exchange, routingKey string, msg Message) error {
	_, err := ch.publish(ctx, exchange, routingKey, &msg, false)
	return err
}

// PublishWithConfirm publishes msg like Publish on a channel in confirm mode
// (see ConfirmSelect) and returns its Confirmation, to wait on or ignore.
// It fails with ErrNotConfirmMode on other channels.
func (ch *Channel) PublishWithConfirm(ctx context.Context, exchange, routingKey string, msg Message) (*Confirmation, error) {
	return ch.publish(ctx, exchange, routingKey, &msg, true)
}

func (ch *Channel) publish(ctx context.Context, exchange, routingKey string, msg *Message, wantConfirm bool) (*Confirmation, error) {
	c := ch.conn
	if err := c.lockReady(ctx); err != nil {
		return nil, err
	}
	for {
		if ch.err != nil {
			err := ch.err
			c.mu.Unlock()
			return nil, err
		}
		var wait chan struct{}
		switch {
		case c.blocked:
			wait = c.unblocked
		case ch.paused != nil:
			wait = ch.paused
		case c.eng.OutgoingLen()+c.eng.QueuedLen() >= c.cfg.WriteBufferLimit:
			if c.space == nil {
				c.space = make(chan struct{})
			}
			wait = c.space
		default:
			wait = ch.notify.full(c.cfg.NotifyBuffer)
		}
		if wait == nil {
			break
		}
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := c.lockReady(ctx); err != nil {
			return nil, err
		}
	}
	if wantConfirm && !ch.confirm {
		c.mu.Unlock()
		return nil, ErrNotConfirmMode
	}
	_, err := c.eng.Publish(ch.id, exchange, routingKey, msg.Mandatory, false, &msg.Properties, msg.Body)
	if err != nil {
		err = c.callErr(err, ch)
		c.mu.Unlock()
		return nil, err
	}
	var conf *Confirmation
	if ch.confirm {
		republish := c.cfg.RepublishUnconfirmed
		if wantConfirm || republish {
			conf = &Confirmation{}
			if msg.Mandatory || republish {
				conf.exchange, conf.routingKey, conf.mandatory = exchange, routingKey, msg.Mandatory
			}
			if republish {
				cp := *msg
				cp.Body = append([]byte(nil), msg.Body...)
				conf.msg = &cp
			}
		}
		tag := ch.confirms.Add(conf)
		if conf != nil {
			conf.Tag = tag
		}
	}
	c.afterLocked(c.l)
	c.mu.Unlock()
	return conf, nil
}

// ConfirmSelect puts the channel in confirm mode: the broker confirms
// (basic.ack) or refuses (basic.nack) every message published from now on.
// If ctx ends before the broker's answer, ConfirmSelect returns ctx.Err();
// the channel still enters confirm mode.
func (ch *Channel) ConfirmSelect(ctx context.Context) error {
	c := ch.conn
	c.mu.Lock()
	if ch.err == nil && !ch.confirm {
		ch.confirm = true
		ch.confirms.Reset(1)
		ch.pubBase = 0
	}
	c.mu.Unlock()
	_, err := ch.call(ctx, &wire.ConfirmSelect{})
	return err
}

// Confirmation is the broker's verdict on one message published in confirm
// mode. It is safe for concurrent use.
type Confirmation struct {
	// Tag is the message's publish sequence number on its channel. With
	// Config.RepublishUnconfirmed it changes when recovery publishes the
	// message again; read it after Done is closed.
	Tag uint64

	mu      sync.Mutex
	settled bool
	done    chan struct{} // made when someone waits before the outcome
	err     error

	// guarded by the connection's lock
	exchange, routingKey string
	mandatory, returned  bool
	msg                  *Message // kept for RepublishUnconfirmed
}

// closedChan is the Done channel of a Confirmation settled before anyone
// asked for one.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Done returns a channel closed once the outcome is known.
func (f *Confirmation) Done() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done == nil {
		if f.settled {
			return closedChan
		}
		f.done = make(chan struct{})
	}
	return f.done
}

// Err returns the outcome once it is known (nil before): nil when the
// broker accepted the message, ErrNacked when it refused it, a
// *ReturnedError (ErrReturned) for a mandatory message it could not route,
// and ErrOutcomeUnknown when the channel or connection closed first.
func (f *Confirmation) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Wait waits for the outcome (see Err) or the end of ctx, which only ends
// the wait.
func (f *Confirmation) Wait(ctx context.Context) error {
	f.mu.Lock()
	if f.settled {
		err := f.err
		f.mu.Unlock()
		return err
	}
	if f.done == nil {
		f.done = make(chan struct{})
	}
	done := f.done
	f.mu.Unlock()
	select {
	case <-done:
		return f.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle records the outcome once; later calls do nothing.
func (f *Confirmation) settle(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.settled {
		return
	}
	f.settled = true
	f.err = err
	if f.done != nil {
		close(f.done)
	}
}

// resolve settles the confirmation after the broker's ack or nack, or the
// channel's loss (called with the connection's lock held).
func (f *Confirmation) resolve(err error) {
	f.msg = nil
	if f.returned {
		return // resolved with ErrReturned already
	}
	f.settle(err)
}

// WaitConfirms waits until every message published on the channel before the
// call has its outcome, and returns ErrNacked if any of them was refused
// (returned and unknown outcomes do not count: see PublishWithConfirm for
// per-message outcomes). ctx ends only the wait.
func (ch *Channel) WaitConfirms(ctx context.Context) error {
	c := ch.conn
	if err := c.lockReady(ctx); err != nil {
		return err
	}
	if !ch.confirm {
		c.mu.Unlock()
		return ErrNotConfirmMode
	}
	if ch.err != nil {
		err := ch.err
		c.mu.Unlock()
		return err
	}
	upTo := ch.confirms.Next() - 1
	if ch.confirms.FirstUnsettled() > upTo {
		c.mu.Unlock()
		return nil
	}
	fw := &flushWaiter{upTo: upTo, done: make(chan struct{})}
	ch.flushes = append(ch.flushes, fw)
	c.mu.Unlock()
	select {
	case <-fw.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if fw.lost != nil {
		return fw.lost
	}
	if fw.nacked {
		return ErrNacked
	}
	return nil
}

// flushWaiter is a WaitConfirms call waiting for tags up to upTo.
type flushWaiter struct {
	upTo   uint64
	done   chan struct{}
	nacked bool  // a tag up to upTo was nacked
	lost   error // the connection or channel was lost first
}

// confirmLocked settles tags after an EventConfirm (tag is the client tag).
func (ch *Channel) confirmLocked(tag uint64, multiple, ack bool) {
	var err error
	if !ack {
		err = ErrNacked
		for _, fw := range ch.flushes {
			if tag <= fw.upTo || multiple {
				fw.nacked = true
			}
		}
	}
	ch.confirms.Settle(tag, multiple, func(_ uint64, f *Confirmation) {
		if f != nil {
			f.resolve(err)
		}
	})
	ch.notify.confirmed(tag, multiple, ack)
	ch.releaseFlushesLocked()
}

// releaseFlushesLocked wakes WaitConfirms callers whose messages are all
// settled.
func (ch *Channel) releaseFlushesLocked() {
	if len(ch.flushes) == 0 {
		return
	}
	first := ch.confirms.FirstUnsettled()
	k := 0
	for _, fw := range ch.flushes {
		if first > fw.upTo {
			close(fw.done)
		} else {
			ch.flushes[k] = fw
			k++
		}
	}
	clear(ch.flushes[k:])
	ch.flushes = ch.flushes[:k]
}

// matchReturnLocked attaches a returned message to the earliest outstanding
// mandatory publish with the same exchange and routing key: the broker sends
// basic.return before the basic.ack of the same message, and in publish
// order.
func (ch *Channel) matchReturnLocked(ret *Return) {
	var match *Confirmation
	ch.confirms.Each(func(_ uint64, f *Confirmation) bool {
		if f != nil && f.mandatory && !f.returned && f.exchange == ret.Exchange && f.routingKey == ret.RoutingKey {
			match = f
			return false
		}
		return true
	})
	if match != nil {
		match.returned = true
		match.settle(&ReturnedError{Return: ret})
	}
}

// failConfirmsLocked resolves every outstanding confirmation with
// ErrOutcomeUnknown after the channel closed with cause.
func (ch *Channel) failConfirmsLocked(cause error) {
	if cause == ErrChannelClosed {
		cause = nil
	}
	oe := &outcomeError{cause: cause}
	ch.confirms.SettleAll(func(_ uint64, f *Confirmation) {
		if f != nil {
			f.resolve(oe)
		}
	})
	// Messages kept for republishing (Config.RepublishUnconfirmed) after a
	// loss are outstanding too.
	for _, f := range ch.republish {
		f.resolve(oe)
	}
	clear(ch.republish)
	ch.republish = nil
	for _, fw := range ch.flushes {
		fw.lost = oe
		close(fw.done)
	}
	ch.flushes = nil
}

// Return is a message the broker returned: a mandatory message it could not
// route.
type Return struct {
	ReplyCode  ReplyCode // e.g. 312 NO_ROUTE
	ReplyText  string
	Exchange   string
	RoutingKey string
	Properties
	Body []byte
}

func newReturn(m *engine.Message) *Return {
	return &Return{
		ReplyCode:  m.ReplyCode,
		ReplyText:  m.ReplyText,
		Exchange:   m.Exchange,
		RoutingKey: m.RoutingKey,
		Properties: m.Properties,
		Body:       m.Body,
	}
}
