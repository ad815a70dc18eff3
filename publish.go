package pika

import (
	"context"

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
	// Channel.OnReturn, and ErrReturned in confirm mode) when no queue
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
// goroutines publishing at once share write calls. It returns ctx.Err() at
// once, sending nothing, when ctx has already ended. Publish waits,
// honouring ctx, while the broker blocks the connection (resource alarm),
// while the broker's channel.flow has paused the channel, while more than
// Config.WriteBufferLimit bytes wait for the socket, and, in confirm mode,
// while Config.MaxUnconfirmed messages of the channel await their outcome.
// If ctx ends during such a wait the message is not sent.
//
// In confirm mode the message gets the next sequence number; use
// PublishWithConfirm to wait for its outcome, or WaitConfirms for a batch.
// Unless Config.DisableRepublish (or DisableRecovery) is set, the library
// keeps a copy of the message until its outcome is known, and publishes it
// again if the connection is lost first (see Recovery in the package
// documentation).
func (ch *Channel) Publish(ctx context.Context, exchange, routingKey string, msg Message) error {
	_, err := ch.publish(ctx, exchange, routingKey, &msg, false, nil)
	return err
}

// PublishWithConfirm publishes msg like Publish on a channel in confirm mode
// (see ConfirmSelect) and returns its Confirmation, to wait on or ignore.
// It fails with ErrNotConfirmMode on other channels.
func (ch *Channel) PublishWithConfirm(ctx context.Context, exchange, routingKey string, msg Message) (*Confirmation, error) {
	return ch.publish(ctx, exchange, routingKey, &msg, true, nil)
}

// publish publishes msg. p is the PublishHooks' view of it when
// publishHooked calls; nil from Publish, which then goes through
// publishHooked when there are PublishHooks. (The check is here, not in a
// function of its own between Publish and this one: that one could not be
// inlined, and its call cost the path without hooks 1 ns.)
func (ch *Channel) publish(ctx context.Context, exchange, routingKey string, msg *Message, wantConfirm bool, p *Publishing) (*Confirmation, error) {
	if p == nil && len(ch.conn.hk.publish) > 0 {
		return ch.publishHooked(ctx, exchange, routingKey, msg, wantConfirm)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
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
		case ch.confirm && c.cfg.MaxUnconfirmed > 0 && ch.unconfirmedLocked() >= c.cfg.MaxUnconfirmed:
			if ch.room == nil {
				ch.room = make(chan struct{})
			}
			wait = ch.room
		case len(c.hk.outcome) > 0 && ch.confirm && c.hookq.outcomesFull(c.cfg.MaxUnconfirmed) != nil:
			// Outcomes wait for a slow PublishOutcomeHook: bound them.
			wait = c.hookq.outcomesFull(c.cfg.MaxUnconfirmed)
		default:
			wait = ch.notify.full(c.cfg.NotifyBuffer)
		}
		if wait == nil {
			break
		}
		// What the publisher waits for may come from the broker.
		c.unlingerLocked()
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
		conf = ch.recordPublishLocked(exchange, routingKey, msg, wantConfirm, p)
	}
	c.afterLocked(c.l)
	c.mu.Unlock()
	return conf, nil
}

// ConfirmSelect puts the channel in confirm mode: the broker confirms
// (basic.ack) or refuses (basic.nack) every message published from now on.
// The switch is atomic with respect to Publish on the same channel from any
// goroutine: a message published concurrently either precedes
// confirm.select (and gets no confirmation) or follows it and is tracked
// under the tag the broker gives it. If ctx has already ended, ConfirmSelect
// returns ctx.Err() and changes nothing; if ctx ends before the broker's
// answer, it returns ctx.Err() and the channel still enters confirm mode.
func (ch *Channel) ConfirmSelect(ctx context.Context) error {
	_, err := ch.callHooks(ctx, &wire.ConfirmSelect{}, callHooks{
		sent: func() {
			// Under the connection's lock, in the same step that queues
			// confirm.select: the engine counts tags from here too.
			if !ch.confirm {
				ch.confirm = true
				ch.confirms.Reset(1)
				ch.pubBase = 0
			}
		},
		reply: func(engine.Event) { ch.confirmOK = true },
	})
	return err
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
