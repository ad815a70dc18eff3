package pikatest

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pika-go/pika/pikatest/internal/route"
	"github.com/pika-go/pika/pikatest/internal/store"
	"github.com/pika-go/pika/wire"
)

// This file is the publishing side: content assembly, the checks RabbitMQ
// makes on a publish, routing to queues, mandatory returns, direct
// reply-to, publisher confirms and transactions.

// publishing is a complete message waiting to be routed (at once, or at
// tx.commit).
type publishing struct {
	exchange  *exchange
	mandatory bool
	content   *store.Content
	seq       uint64
}

type confirmItem struct {
	tag uint64
	ack bool
}

const replyToPrefix = "amq.rabbitmq.reply-to."

func intArg(v any) (int64, bool) { return route.Int(v) }

// replyTokens returns the direct reply-to consumers by token. Called with
// b.mu held.
func (b *Broker) replyTokens() map[string]*consumer {
	if b.replies == nil {
		b.replies = map[string]*consumer{}
	}
	return b.replies
}

// contentFrame handles a header or body frame on ch.
func (ch *channel) contentFrame(f wire.Frame) {
	c := ch.c
	if ch.closing {
		return
	}
	if ch.pending == nil {
		c.fail(connErr(wire.ReplyUnexpectedFrame, "expected method frame, got non method frame instead"))
		return
	}
	if ch.header == nil {
		if f.Type != wire.FrameHeader {
			ch.pending = nil
			e := connErr(wire.ReplyUnexpectedFrame, "expected content header for class 60, got non content header frame instead")
			e.method = wire.MethodBasicPublish
			c.fail(e)
			return
		}
		if err := c.hdr.Decode(f.Payload, 0); err != nil {
			ch.pending = nil
			e := frameError(err)
			e.method = wire.MethodBasicPublish
			c.fail(e)
			return
		}
		if c.hdr.BodySize > c.b.cfg.MaxMessageSize {
			ch.pending = nil
			ch.fail(chanErr(wire.ReplyPreconditionFailed, "message size %d is larger than configured max size %d",
				c.hdr.BodySize, c.b.cfg.MaxMessageSize), wire.MethodBasicPublish)
			return
		}
		ch.header = append([]byte(nil), f.Payload...)
		ch.props = c.hdr.Properties
		ch.bodySize = c.hdr.BodySize
		if ch.bodySize == 0 {
			ch.complete()
		}
		return
	}
	if f.Type != wire.FrameBody {
		ch.pending = nil
		e := connErr(wire.ReplyUnexpectedFrame, "expected content body, got non content body frame instead")
		e.method = wire.MethodBasicPublish
		c.fail(e)
		return
	}
	if uint64(len(ch.body))+uint64(len(f.Payload)) > ch.bodySize {
		ch.pending = nil
		e := connErr(wire.ReplyUnexpectedFrame, "expected content body, got non content body frame instead")
		e.method = wire.MethodBasicPublish
		c.fail(e)
		return
	}
	if ch.body == nil {
		ch.body = make([]byte, 0, min(ch.bodySize, uint64(c.frameMax)))
	}
	ch.body = append(ch.body, f.Payload...)
	if uint64(len(ch.body)) == ch.bodySize {
		ch.complete()
	}
}

// complete handles a fully received publish.
func (ch *channel) complete() {
	p := ch.pending
	ch.pending = nil
	body := ch.body
	if body == nil {
		body = []byte{}
	}
	ch.body = nil
	header := ch.header
	ch.header = nil
	if err := ch.publish(p, header, body); err != nil {
		ch.fail(err, wire.MethodBasicPublish)
	}
}

// publish checks a publish as RabbitMQ does and routes it, or buffers it
// in a transaction.
func (ch *channel) publish(p *wire.BasicPublish, header, body []byte) *amqpError {
	c := ch.c
	vh := c.vh
	x := vh.exchanges[p.Exchange]
	if x == nil {
		return errNoExchange(vh.name, p.Exchange)
	}
	if x.internal {
		return chanErr(wire.ReplyAccessRefused, "cannot publish to internal exchange '%s' in vhost '%s'", x.name, vh.name)
	}
	props := ch.props
	if props.UserID != "" && props.UserID != c.user {
		return chanErr(wire.ReplyPreconditionFailed, "user_id property set to '%s' but authenticated user was '%s'", props.UserID, c.user)
	}
	if props.Expiration != "" {
		ms, err := strconv.ParseInt(props.Expiration, 10, 64)
		if err != nil {
			return chanErr(wire.ReplyPreconditionFailed, "invalid expiration '%s': no_integer", props.Expiration)
		}
		if ms < 0 {
			return chanErr(wire.ReplyPreconditionFailed, "invalid expiration '%s': {value_negative,%d}", props.Expiration, ms)
		}
	}
	rewrite := false
	if props.ReplyTo == "amq.rabbitmq.reply-to" {
		if ch.replyTo == nil {
			return chanErr(wire.ReplyPreconditionFailed, "fast reply consumer does not exist")
		}
		props.ReplyTo = replyToPrefix + ch.replyTo.replyTo
		rewrite = true
	}
	keys := []string{p.RoutingKey}
	if props.Headers != nil {
		for _, h := range []string{"CC", "BCC"} {
			if arr, ok := props.Headers[h].([]any); ok {
				for _, v := range arr {
					if s, ok := v.(string); ok {
						keys = append(keys, s)
					}
				}
			}
		}
		if _, ok := props.Headers["BCC"]; ok {
			h := make(wire.Table, len(props.Headers))
			for k, v := range props.Headers {
				if k != "BCC" {
					h[k] = v
				}
			}
			props.Headers = h
			rewrite = true
		}
	}
	content := &store.Content{Exchange: p.Exchange, RoutingKey: p.RoutingKey, RoutingKeys: keys, Props: props, Header: header, Body: body}
	if rewrite {
		content.Header = encodeHeader(content)
	}
	pub := &publishing{exchange: x, mandatory: p.Mandatory, content: content}
	if ch.confirm {
		ch.pubSeq++
		pub.seq = ch.pubSeq
	}
	if ch.tx {
		ch.txPublishes = append(ch.txPublishes, pub)
		return nil
	}
	ch.route(pub)
	return nil
}

// route delivers a publishing to its queues, returns it when mandatory and
// unroutable, and records its confirm.
func (ch *channel) route(p *publishing) {
	c := ch.c
	vh := c.vh
	content := p.content
	now := time.Now().UnixNano()
	routed, rejected := false, false
	if p.exchange.name == "" && strings.HasPrefix(content.RoutingKey, replyToPrefix) {
		if cs := c.b.replyTokens()[content.RoutingKey[len(replyToPrefix):]]; cs != nil {
			routed = true
			cs.ch.nextTag++
			cs.ch.c.sendRaw(cs.ch.id, &wire.BasicDeliver{ConsumerTag: cs.tag, DeliveryTag: cs.ch.nextTag,
				Exchange: content.Exchange, RoutingKey: content.RoutingKey}, content.Header, content.Body)
		}
	} else {
		var buf [4]*queue
		qs := vh.route(p.exchange, content.RoutingKeys, content.Props.Headers, buf[:0])
		routed = len(qs) > 0
		for _, q := range qs {
			if !q.enqueue(content, now) {
				rejected = true
			}
		}
	}
	if !routed && p.mandatory {
		c.sendRaw(ch.id, &wire.BasicReturn{ReplyCode: uint16(wire.ReplyNoRoute), ReplyText: "NO_ROUTE",
			Exchange: content.Exchange, RoutingKey: content.RoutingKey}, content.Header, content.Body)
	}
	if ch.confirm {
		ch.confirmed(p.seq, !rejected)
	}
}

// confirmed schedules the confirm of seq according to the broker's
// ConfirmPolicy.
func (ch *channel) confirmed(seq uint64, ack bool) {
	pol := ch.c.b.confirm
	if pol.Drop {
		return
	}
	if pol.Nack {
		ack = false
	}
	item := confirmItem{tag: seq, ack: ack}
	if pol.Delay > 0 {
		b := ch.c.b
		time.AfterFunc(pol.Delay, func() {
			b.mu.Lock()
			defer b.unlock()
			if ch.closing || ch.c.gone {
				return
			}
			ch.queueConfirm(item)
			ch.c.flushConfirmsLocked()
		})
		return
	}
	ch.queueConfirm(item)
}

func (ch *channel) queueConfirm(item confirmItem) {
	if len(ch.confirmReady) == 0 {
		ch.c.confirmDirty = append(ch.c.confirmDirty, ch)
	}
	ch.confirmReady = append(ch.confirmReady, item)
}

// flushConfirms sends the confirms decided so far, coalescing runs of acks
// into one basic.ack with multiple=true where every earlier tag has been
// confirmed.
func (c *conn) flushConfirms() {
	b := c.b
	b.mu.Lock()
	c.flushConfirmsLocked()
	b.unlock()
}

func (c *conn) flushConfirmsLocked() {
	if len(c.confirmDirty) == 0 || c.closing {
		c.confirmDirty = c.confirmDirty[:0]
		return
	}
	for _, ch := range c.confirmDirty {
		ch.flushConfirms()
	}
	c.confirmDirty = c.confirmDirty[:0]
}

func (ch *channel) flushConfirms() {
	items := ch.confirmReady
	ch.confirmReady = nil
	if ch.closing || len(items) == 0 {
		return
	}
	if !sort.SliceIsSorted(items, func(i, j int) bool { return items[i].tag < items[j].tag }) {
		sort.Slice(items, func(i, j int) bool { return items[i].tag < items[j].tag })
	}
	for i := 0; i < len(items); {
		it := items[i]
		if it.ack && it.tag == ch.confirmBase+1 {
			j := i
			for j+1 < len(items) && items[j+1].ack && items[j+1].tag == items[j].tag+1 {
				j++
			}
			last := items[j].tag
			ch.c.send(ch.id, &wire.BasicAck{DeliveryTag: last, Multiple: j > i})
			ch.confirmBase = last
			ch.advanceBase()
			i = j + 1
			continue
		}
		if it.ack {
			ch.c.send(ch.id, &wire.BasicAck{DeliveryTag: it.tag})
		} else {
			ch.c.send(ch.id, &wire.BasicNack{DeliveryTag: it.tag})
		}
		if it.tag == ch.confirmBase+1 {
			ch.confirmBase = it.tag
			ch.advanceBase()
		} else {
			if ch.confirmAbove == nil {
				ch.confirmAbove = map[uint64]bool{}
			}
			ch.confirmAbove[it.tag] = true
		}
		i++
	}
}

// advanceBase moves the contiguous-confirm mark over tags confirmed
// individually before it.
func (ch *channel) advanceBase() {
	for ch.confirmAbove[ch.confirmBase+1] {
		delete(ch.confirmAbove, ch.confirmBase+1)
		ch.confirmBase++
	}
}

// deliveryHeader returns the header payload to deliver m from q with:
// quorum queues add x-delivery-count, the number of times the message was
// returned to the queue (0 on its first delivery, as RabbitMQ 3.10 sends).
func deliveryHeader(q *queue, m *store.Message) []byte {
	if q == nil || q.qtype != "quorum" {
		return m.Header
	}
	c := *m.Content
	h := make(wire.Table, len(c.Props.Headers)+1)
	for k, v := range c.Props.Headers {
		h[k] = v
	}
	h["x-delivery-count"] = m.DeliveryCount
	c.Props.Headers = h
	return encodeHeader(&c)
}
