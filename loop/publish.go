package loop

import (
	"errors"
	"fmt"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// ConfirmSelect puts the channel in confirm mode (confirm.select) and
// calls cb, which may be nil, with the outcome. Publishes made after the
// call, even before cb runs, are numbered for confirmation.
func (ch *Channel) ConfirmSelect(cb func(error)) {
	if ch.unusable() == nil && !ch.confirming {
		ch.confirming = true
		ch.confirms.Reset(1)
	}
	ch.call(&wire.ConfirmSelect{}, func(ev engine.Event) func() {
		if ev.Err == nil {
			ch.confirmOK = true
		}
		if cb == nil {
			return nil
		}
		return func() { cb(ev.Err) }
	})
}

// Publish publishes msg to exchange with routingKey. It queues the message
// for the socket and returns at once; the error says why nothing was
// queued (the channel or connection is closed, the connection recovers,
// the message cannot be encoded, too many messages await confirmation).
// It never waits: see Conn.Buffered for pacing and Conn.OnBlocked for the
// broker's resource alarms. The body is copied. In confirm mode the
// message takes a sequence number but its outcome is reported only to the
// PublishOutcomeHooks of pika.Config.Hooks: use PublishConfirm to learn
// it.
//
// In confirm mode, where pika.Conn's Publish waits while
// pika.Config.MaxUnconfirmed messages of the channel await their outcome
// (default pika.DefaultMaxUnconfirmed; negative: no bound), Publish and
// PublishConfirm fail at once with ErrTooManyUnconfirmed, sending nothing:
// see Channel.Unconfirmed for what counts. A message leaves the count when
// the broker's ack or nack for it arrives, before its PublishConfirm
// callback runs, so an application that publishes again from its
// confirmation callbacks keeps to the bound without polling (the callback
// of a returned mandatory message can run before its ack: the message
// still counts there). The copies that recovery keeps for republishing
// count too, so the bound is also the bound on the memory they hold.
func (ch *Channel) Publish(exchange, routingKey string, msg pika.Message) error {
	if ch.c.hk.publishes() {
		return ch.publishHooked(exchange, routingKey, &msg, nil)
	}
	_, err := ch.publish(exchange, routingKey, &msg, nil, nil)
	return err
}

// PublishConfirm publishes msg like Publish on a channel in confirm mode
// and calls cb with its outcome, in the channel's callback order: nil when
// the broker confirmed it, pika.ErrNacked when the broker refused it, an
// error matching pika.ErrOutcomeUnknown (wrapping the cause) when the
// channel or connection ended first: the broker may or may not have taken
// it. It fails at once (cb is not called) with pika.ErrNotConfirmMode on a
// channel without ConfirmSelect.
//
// A mandatory message that the broker could not route is returned before
// its confirmation; its outcome is a *pika.ReturnedError (errors.Is
// pika.ErrReturned) holding the return, reported once, when the return
// arrives or, at the latest, with the confirmation. A return does not say
// which message it returns: it is matched as package pika matches it (same
// exchange, routing key, message-id and body, and the order of returns and
// confirmations), and when several identical mandatory messages are
// outstanding and the order cannot tell which was returned, each of them
// gets pika.ErrMaybeReturned. A returned message is also reported to the
// OnReturn handlers, after its callback.
//
// With recovery on (see Recovery in the package documentation), a
// connection loss does not end the wait: the message is published again
// on the recovered channel and cb gets the copy's outcome (at-least-once:
// the broker may have taken the first one). The copy, kept until the
// outcome, holds the message as it was at the call, headers included: an
// application changing msg.Headers (or a table in it) or its body
// afterwards does not change what is republished. cb gets
// pika.ErrOutcomeUnknown only when recovery gives up, the channel closes,
// or DisableRepublish is set.
func (ch *Channel) PublishConfirm(exchange, routingKey string, msg pika.Message, cb func(error)) error {
	if cb == nil {
		return errors.New("loop: PublishConfirm needs a callback")
	}
	if ch.c.hk.publishes() {
		return ch.publishHooked(exchange, routingKey, &msg, cb)
	}
	_, err := ch.publishConfirm(exchange, routingKey, &msg, cb, nil)
	return err
}

func (ch *Channel) publishConfirm(exchange, routingKey string, msg *pika.Message, cb func(error), p *pika.Publishing) (uint64, error) {
	if !ch.confirming {
		return 0, pika.ErrNotConfirmMode
	}
	return ch.publish(exchange, routingKey, msg, cb, p)
}

func (ch *Channel) publish(exchange, routingKey string, msg *pika.Message, cb func(error), p *pika.Publishing) (uint64, error) {
	if err := ch.unusable(); err != nil {
		return 0, err
	}
	if ch.confirming && ch.c.maxUnconf > 0 && ch.Unconfirmed() >= ch.c.maxUnconf {
		return 0, ErrTooManyUnconfirmed
	}
	tag, err := ch.c.eng.Publish(ch.id, exchange, routingKey, msg.Mandatory, false, &msg.Properties, msg.Body)
	if err != nil {
		return 0, err
	}
	ch.c.l.markDirty(ch.c)
	if tag == 0 {
		return 0, nil
	}
	s := ch.confirmSlot(exchange, routingKey, msg, cb, p)
	s = ch.keep(s, exchange, routingKey, msg)
	if got := ch.confirms.Add(s); got != tag {
		// The engine and this channel disagree on numbering: a bug here,
		// reported rather than hidden.
		return tag, fmt.Errorf("loop: internal error: publish tag %d, expected %d", tag, got)
	}
	ch.recorded(tag, s)
	return tag, nil
}

// Unconfirmed returns the number of messages published on the channel in
// confirm mode whose outcome is pending: published and not yet confirmed
// or nacked by the broker, or kept for republishing after a connection
// loss. pika.Config.MaxUnconfirmed bounds it: see Publish.
func (ch *Channel) Unconfirmed() int { return ch.confirms.Len() + len(ch.republish) }

// maxUnconfirmed maps Config.MaxUnconfirmed to the bound a Conn applies:
// pika.DefaultMaxUnconfirmed for 0, and 0 (no bound) for a negative value.
func maxUnconfirmed(n int) int {
	switch {
	case n == 0:
		return pika.DefaultMaxUnconfirmed
	case n < 0:
		return 0
	}
	return n
}

// outcomeUnknown is the outcome of a publish whose channel ended before
// its confirmation.
func outcomeUnknown(cause error) error {
	if cause == nil {
		cause = pika.ErrChannelClosed
	}
	return fmt.Errorf("%w: %w", pika.ErrOutcomeUnknown, cause)
}

func newReturn(m *engine.Message) *pika.Return {
	return &pika.Return{
		ReplyCode:  m.ReplyCode,
		ReplyText:  m.ReplyText,
		Exchange:   m.Exchange,
		RoutingKey: m.RoutingKey,
		Properties: m.Properties,
		Body:       m.Body,
	}
}
