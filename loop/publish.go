package loop

import (
	"errors"
	"fmt"
	"slices"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// errMandatoryConfirm refuses PublishConfirm of a mandatory message.
var errMandatoryConfirm = errors.New("loop: PublishConfirm of a mandatory message is not supported yet (a return cannot be matched to its confirmation here): publish it with Publish and watch OnReturn")

// ConfirmSelect puts the channel in confirm mode (confirm.select) and
// calls cb, which may be nil, with the outcome. Publishes made after the
// call, even before cb runs, are numbered for confirmation.
func (ch *Channel) ConfirmSelect(cb func(error)) {
	if ch.unusable() == nil && !ch.confirming {
		ch.confirming = true
		ch.confirms.Reset(1)
	}
	ch.callErr(&wire.ConfirmSelect{}, false, cb)
}

// Publish publishes msg to exchange with routingKey. It queues the message
// for the socket and returns at once; the error says why nothing was
// queued (the channel or connection is closed, the message cannot be
// encoded). It never waits: see Conn.Buffered for pacing and
// Conn.OnBlocked for the broker's resource alarms. The body is copied.
// In confirm mode the message takes a sequence number but its outcome is
// reported to nobody: use PublishConfirm to learn it.
func (ch *Channel) Publish(exchange, routingKey string, msg pika.Message) error {
	_, err := ch.publish(exchange, routingKey, &msg, nil)
	return err
}

// PublishConfirm publishes msg like Publish on a channel in confirm mode
// and calls cb with its outcome, in the channel's callback order: nil when
// the broker confirmed it, pika.ErrNacked when the broker refused it, an
// error matching pika.ErrOutcomeUnknown (wrapping the cause) when the
// channel or connection ended first: the broker may or may not have taken
// it. It fails at once (cb is not called) with pika.ErrNotConfirmMode on a
// channel without ConfirmSelect, and for a mandatory message (not
// supported yet).
//
// With recovery on (see Recovery in the package documentation), a
// connection loss does not end the wait: the message is published again
// on the recovered channel and cb gets the copy's outcome (at-least-once:
// the broker may have taken the first one); cb gets pika.ErrOutcomeUnknown
// only when recovery gives up, the channel closes, or DisableRepublish is
// set.
func (ch *Channel) PublishConfirm(exchange, routingKey string, msg pika.Message, cb func(error)) error {
	if cb == nil {
		return errors.New("loop: PublishConfirm needs a callback")
	}
	if msg.Mandatory {
		return errMandatoryConfirm
	}
	if !ch.confirming {
		return pika.ErrNotConfirmMode
	}
	_, err := ch.publish(exchange, routingKey, &msg, cb)
	return err
}

func (ch *Channel) publish(exchange, routingKey string, msg *pika.Message, cb func(error)) (uint64, error) {
	if err := ch.unusable(); err != nil {
		return 0, err
	}
	tag, err := ch.c.eng.Publish(ch.id, exchange, routingKey, msg.Mandatory, false, &msg.Properties, msg.Body)
	if err != nil {
		return 0, err
	}
	ch.c.l.markDirty(ch.c)
	if tag == 0 {
		return 0, nil
	}
	var s *slot
	if cb != nil {
		s = ch.reserve()
		s.confirm = cb
	}
	if ch.c.rec.republishing() {
		if s == nil {
			s = &slot{} // no callback: not in the channel's order
		}
		s.kept = &keptMsg{exchange: exchange, routingKey: routingKey, mandatory: msg.Mandatory,
			props: msg.Properties, body: slices.Clone(msg.Body)}
	}
	if got := ch.confirms.Add(s); got != tag {
		// The engine and this channel disagree on numbering: a bug here,
		// reported rather than hidden.
		return tag, fmt.Errorf("loop: internal error: publish tag %d, expected %d", tag, got)
	}
	return tag, nil
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
