package loop

import (
	"context"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/retmatch"
)

// pubRec is what a message published in confirm mode keeps until its
// outcome besides its callback: made only for a mandatory message (the
// return matcher needs its signature, and a return may be attributed to it)
// or when PublishOutcomeHooks are registered (the context and start time
// they report). A mandatory message gets one even without a callback: a
// return of it must not be attributed to an identical message that has
// one.
type pubRec struct {
	sig       uint64
	mandatory bool
	returned  *pika.Return // the return attributed to it
	// For PublishOutcomeHooks (see hooks.go).
	ctx   context.Context
	start time.Time
}

// confirmSlot returns what the confirm set keeps for a message just
// published in confirm mode: nil when nobody waits for its outcome, a slot
// in the channel's callback order when cb is set, and a slot out of that
// order (which delays no callback) for a record without callback.
func (ch *Channel) confirmSlot(exchange, routingKey string, msg *pika.Message, cb func(error), p *pika.Publishing) *slot {
	hooked := ch.c.hk.outcomes()
	if cb == nil && !msg.Mandatory && !hooked {
		return nil
	}
	var s *slot
	if cb != nil {
		s = ch.reserve()
		s.confirm = cb
	} else {
		s = &slot{}
	}
	if msg.Mandatory || hooked {
		r := &pubRec{mandatory: msg.Mandatory}
		if msg.Mandatory {
			r.sig = retmatch.Sig(exchange, routingKey, msg.MessageID, msg.Body)
		}
		if hooked {
			r.ctx, r.start = context.Background(), time.Now()
			if p != nil && p.Ctx != nil {
				r.ctx = p.Ctx
			}
		}
		s.pub = r
	}
	return s
}

// recorded tells the return matcher of a mandatory message published with
// tag while returns are pending.
func (ch *Channel) recorded(tag uint64, s *slot) {
	if s != nil && s.pub != nil && s.pub.mandatory && ch.returns.Active() {
		ch.returns.Published(tag, s.pub.sig)
	}
}

// returned handles a basic.return: in confirm mode it is attributed to the
// outstanding mandatory message it returns when the order of returns and
// confirmations says which one it is (see internal/retmatch), whose
// callback then gets a *pika.ReturnedError; then the OnReturn handlers run
// with it, after every earlier callback.
func (ch *Channel) returned(m *engine.Message) {
	ret := newReturn(m)
	// A return before confirm.select-ok is for a message published before
	// confirm mode: no record can be its.
	if ch.confirmOK {
		sig := retmatch.Sig(ret.Exchange, ret.RoutingKey, ret.MessageID, ret.Body)
		ch.returns.Returned(sig, ch.confirms.Next()-1, ret, ch.returnCandidates, ch.attributeReturn)
	}
	ch.push(func() {
		for _, fn := range ch.onReturn.list() {
			fn(ret)
		}
	})
}

// returnCandidates lists the outstanding mandatory messages with signature
// sig not attributed to a return yet, by ascending tag.
func (ch *Channel) returnCandidates(sig uint64) []uint64 {
	var tags []uint64
	ch.confirms.Each(func(tag uint64, s *slot) bool {
		if s != nil && s.pub != nil && s.pub.mandatory && s.pub.returned == nil && s.pub.sig == sig {
			tags = append(tags, tag)
		}
		return true
	})
	return tags
}

// attributeReturn records that the message with tag was returned: its
// callback gets the outcome now, in its place; the confirmation that
// follows changes nothing but the PublishOutcomeHooks' report.
func (ch *Channel) attributeReturn(tag uint64, ret *pika.Return) {
	p, ok := ch.confirms.Lookup(tag)
	if !ok || *p == nil || (*p).pub == nil {
		return
	}
	s := *p
	s.pub.returned = ret
	ch.settle(s, &pika.ReturnedError{Return: ret})
}

// confirmed handles a basic.ack or basic.nack: each message it covers, in
// tag order, gets its outcome.
func (ch *Channel) confirmed(ev engine.Event) {
	ch.confirms.Settle(ev.Tag, ev.Multiple, func(tag uint64, s *slot) {
		if s == nil {
			return
		}
		o, err := pika.OutcomeAcked, error(nil)
		switch r := s.pub; {
		case r != nil && r.returned != nil:
			o, err = pika.OutcomeReturned, &pika.ReturnedError{Return: r.returned}
		case r != nil && r.mandatory && ch.returns.Active() &&
			ch.returns.Confirmed(tag, r.sig, ch.attributeReturn) == retmatch.MaybeReturned:
			o, err = pika.OutcomeMaybeReturned, pika.ErrMaybeReturned
		case !ev.Ack:
			o, err = pika.OutcomeNacked, pika.ErrNacked
		}
		ch.finish(tag, s, o, err)
	})
}

// failConfirms resolves every outstanding message when the channel ended
// with cause: returned if a return was attributed to it (the broker
// dropped it; the missing confirmation changes nothing), unknown
// otherwise.
func (ch *Channel) failConfirms(cause error) {
	ch.confirms.SettleAll(func(tag uint64, s *slot) {
		if s == nil {
			return
		}
		if s.pub != nil && s.pub.returned != nil {
			ch.finish(tag, s, pika.OutcomeReturned, &pika.ReturnedError{Return: s.pub.returned})
			return
		}
		ch.finish(tag, s, pika.OutcomeUnknown, outcomeUnknown(cause))
	})
	ch.returns.Reset()
}

// finish reports the outcome of the message with tag: to its callback,
// unless a return already settled it, and to the PublishOutcomeHooks.
func (ch *Channel) finish(tag uint64, s *slot, o pika.Outcome, err error) {
	ch.settle(s, err)
	if s.pub != nil && ch.c.hk.outcomes() {
		ch.c.hk.reportOutcome(ch, tag, s.pub, o, err)
	}
}
