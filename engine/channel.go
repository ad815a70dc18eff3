package engine

import (
	"strconv"

	"github.com/pika-go/pika/wire"
)

type chState uint8

const (
	chOpening chState = iota // channel.open sent or queued
	chOpen
	chClosing // channel.close sent; awaiting close-ok
	chClosed
)

// channel is the engine's state for one channel.
type channel struct {
	id    uint16
	state chState

	inflight *request    // the synchronous request sent and not yet answered
	queue    []queued    // requests and frames waiting behind inflight, in order
	closing  bool        // CloseChannel was called (close may still be queued)
	closeErr *Error      // the server's channel.close, when it crossed ours
	lastTag  uint64      // highest delivery tag received (deliveries and get-ok)
	content  *assembling // a message whose header or body is still arriving; nil before the first (see assembling)

	consumers map[string]bool // consumer tag -> no-ack
	unacked   unackedSet      // delivery tags awaiting the client's ack

	confirm bool // confirm.select requested: publishes get tags
	pending ConfirmSet[struct{}]
}

// request is a synchronous method waiting for its reply.
type request struct {
	id RequestID
	m  wire.Method
}

// queued is one item waiting on a channel: the encoded frames of a request
// (req.m != nil) or of asynchronous methods.
type queued struct {
	req    request
	frames []byte
}

// assembling is a content-bearing method whose header and body are arriving.
// A channel makes one when its first content method arrives and keeps it:
// channels that never receive content (channel 0, idle channels, those
// that only publish) do not carry one.
type assembling struct {
	active    bool
	kind      EventKind // EventDelivery, EventOrphanDelivery, EventReturn or EventGetOk
	haveHead  bool
	remaining uint64
	req       RequestID // for EventGetOk
	msg       Message
}

// startContent starts assembling the message of a content method.
func (ch *channel) startContent(a assembling) {
	if ch.content == nil {
		ch.content = new(assembling)
	}
	*ch.content = a
}

// OpenChannel allocates the lowest free channel id at or after the last one
// allocated (wrapping around), and queues channel.open. The channel may be
// used at once: requests and publishes queue behind the open. Its EventReply
// carries *wire.ChannelOpenOk. It fails with ErrNoFreeChannel when every id
// up to the negotiated channel_max is taken; ids are reused only after the
// channel's EventChannelClosed.
func (c *Conn) OpenChannel() (uint16, RequestID, error) {
	if c.state != stateOpen {
		return 0, 0, c.notOpenErr()
	}
	max := c.tune.ChannelMax
	if max == 0 {
		max = 65535
	}
	id := c.nextID
	for tries := 0; tries < int(max); tries++ {
		if id == 0 || id > max {
			id = 1
		}
		if int(id) >= len(c.chans) || c.chans[id] == nil {
			break
		}
		id++
	}
	if int(id) < len(c.chans) && c.chans[id] != nil || id == 0 || id > max {
		return 0, 0, ErrNoFreeChannel
	}
	req, err := c.openChannel(id)
	return id, req, err
}

// OpenChannelID opens channel id, like OpenChannel but with the id chosen by
// the caller (a driver restoring channels after reconnecting keeps their
// numbers). It fails with ErrBadChannel when id is 0, above the negotiated
// channel_max, or in use.
func (c *Conn) OpenChannelID(id uint16) (RequestID, error) {
	if c.state != stateOpen {
		return 0, c.notOpenErr()
	}
	max := c.tune.ChannelMax
	if max == 0 {
		max = 65535
	}
	if id == 0 || id > max || int(id) < len(c.chans) && c.chans[id] != nil {
		return 0, ErrBadChannel
	}
	return c.openChannel(id)
}

func (c *Conn) openChannel(id uint16) (RequestID, error) {
	for int(id) >= len(c.chans) {
		c.chans = append(c.chans, nil)
	}
	ch := &channel{id: id, state: chOpening}
	c.chans[id] = ch
	c.nextID = id + 1
	return c.request(ch, &wire.ChannelOpen{})
}

// CloseChannel queues channel.close (reply code 200) behind anything already
// queued on the channel. Its EventReply carries *wire.ChannelCloseOk, then
// EventChannelClosed follows. Calls on the channel after CloseChannel fail
// with ErrChannelClosed.
func (c *Conn) CloseChannel(id uint16) (RequestID, error) {
	ch, err := c.userChannel(id)
	if err != nil {
		return 0, err
	}
	r, err := c.request(ch, &wire.ChannelClose{ReplyCode: uint16(wire.ReplySuccess)})
	ch.closing = true
	return r, err
}

// userChannel returns the channel a caller names, or the error to give.
func (c *Conn) userChannel(id uint16) (*channel, error) {
	if c.state != stateOpen {
		return nil, c.notOpenErr()
	}
	if id == 0 || int(id) >= len(c.chans) || c.chans[id] == nil {
		return nil, ErrBadChannel
	}
	ch := c.chans[id]
	if ch.closing || ch.state >= chClosing {
		return nil, ErrChannelClosed
	}
	return ch, nil
}

// Call sends a synchronous method on channel id, or queues it behind the
// request in flight there (a channel has at most one). The reply arrives as
// an EventReply (EventGetOk for a basic.get that found a message) with the
// returned RequestID. Replies come in request order. The method must be one
// the client may send, expect a reply and not have no-wait set (use Send);
// channel.open and channel.close go through OpenChannel and CloseChannel.
//
// m is encoded before Call returns; the caller may reuse it.
//
// Call tracks what the engine must know: basic.consume registers the
// consumer tag from consume-ok, basic.cancel forgets it on cancel-ok, and
// confirm.select turns on delivery-tag counting for every publish after it.
func (c *Conn) Call(id uint16, m wire.Method) (RequestID, error) {
	mid := m.ID()
	if mid.SentBy()&wire.SentByClient == 0 || mid.Class() == wire.ClassConnection ||
		mid == wire.MethodChannelOpen || mid == wire.MethodChannelClose {
		return 0, ErrNotClientMethod
	}
	if !mid.Synchronous() || noWait(m) {
		return 0, ErrNotSynchronous
	}
	ch, err := c.userChannel(id)
	if err != nil {
		return 0, err
	}
	if mid == wire.MethodConfirmSelect {
		ch.confirm = true
	}
	return c.request(ch, m)
}

// Send sends an asynchronous method (or a synchronous one with no-wait set)
// on channel id, after anything queued there. No reply is expected.
// basic.consume with no-wait registers its consumer tag at once (the tag
// must not be empty); basic.cancel with no-wait forgets it at once; confirm
// .select with no-wait starts delivery-tag counting. Use Publish for
// basic.publish and Ack, Nack and Reject for settling deliveries: they
// check more and allocate less.
func (c *Conn) Send(id uint16, m wire.Method) error {
	mid := m.ID()
	if mid.SentBy()&wire.SentByClient == 0 || mid.Class() == wire.ClassConnection ||
		mid == wire.MethodChannelOpen || mid == wire.MethodChannelClose || mid.HasContent() {
		return ErrNotClientMethod
	}
	if mid.Synchronous() && !noWait(m) {
		return ErrNotSynchronous
	}
	ch, err := c.userChannel(id)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case *wire.BasicConsume:
		if m.ConsumerTag == "" {
			return errEmptyTagNoWait
		}
		ch.addConsumer(m.ConsumerTag, m.NoAck)
	case *wire.BasicCancel:
		delete(ch.consumers, m.ConsumerTag)
	case *wire.ConfirmSelect:
		ch.confirm = true
	}
	return c.sendAsync(ch, m)
}

var errEmptyTagNoWait = &handshakeError{err: ErrNotSynchronous, detail: "basic.consume with no-wait needs a consumer tag"}

// Publish sends basic.publish with its content header and body frames (split
// by the negotiated frame_max) on channel id, never interleaved with other
// frames of the channel. p may be nil. In confirm mode it returns the
// message's delivery tag (from 1), which a later EventConfirm settles;
// otherwise 0. body is copied into the outgoing buffer before Publish
// returns.
func (c *Conn) Publish(id uint16, exchange, routingKey string, mandatory, immediate bool, p *wire.Properties, body []byte) (uint64, error) {
	ch, err := c.userChannel(id)
	if err != nil {
		return 0, err
	}
	if p == nil {
		p = &zeroProps
	}
	c.publish = wire.BasicPublish{Exchange: exchange, RoutingKey: routingKey, Mandatory: mandatory, Immediate: immediate}
	if len(ch.queue) == 0 {
		out, err := wire.AppendMessage(c.out, id, &c.publish, p, body, c.tune.FrameMax)
		if err != nil {
			return 0, err
		}
		c.out = out
	} else {
		frames, err := wire.AppendMessage(nil, id, &c.publish, p, body, c.tune.FrameMax)
		if err != nil {
			return 0, err
		}
		c.enqueue(ch, queued{frames: frames})
	}
	if !ch.confirm {
		return 0, nil
	}
	return ch.pending.Add(struct{}{}), nil
}

var zeroProps wire.Properties

// Ack acknowledges delivery tag (or every tag up to it with multiple) on
// channel id. Tag 0 with multiple acknowledges every outstanding delivery.
// A tag that is not outstanding — never delivered, already settled,
// delivered to a no-ack consumer or fetched with no-ack, or 0 without
// multiple — fails with an error matching ErrUnknownTag and nothing is sent:
// the broker would close the channel with PRECONDITION_FAILED.
func (c *Conn) Ack(id uint16, tag uint64, multiple bool) error {
	ch, err := c.settleChannel(id, tag, multiple)
	if err != nil {
		return err
	}
	c.ack = wire.BasicAck{DeliveryTag: tag, Multiple: multiple}
	return c.sendAsync(ch, &c.ack)
}

// Nack rejects delivery tag (or every tag up to it with multiple) on channel
// id, requeueing the messages when requeue is set. Tags are checked as by
// Ack.
func (c *Conn) Nack(id uint16, tag uint64, multiple, requeue bool) error {
	ch, err := c.settleChannel(id, tag, multiple)
	if err != nil {
		return err
	}
	c.nack = wire.BasicNack{DeliveryTag: tag, Multiple: multiple, Requeue: requeue}
	return c.sendAsync(ch, &c.nack)
}

// Reject rejects one delivery tag on channel id, requeueing the message when
// requeue is set. Tags are checked as by Ack.
func (c *Conn) Reject(id uint16, tag uint64, requeue bool) error {
	ch, err := c.settleChannel(id, tag, false)
	if err != nil {
		return err
	}
	c.reject = wire.BasicReject{DeliveryTag: tag, Requeue: requeue}
	return c.sendAsync(ch, &c.reject)
}

// Outstanding reports whether delivery tag awaits an acknowledgement on
// channel id.
func (c *Conn) Outstanding(id uint16, tag uint64) bool {
	if int(id) >= len(c.chans) || c.chans[id] == nil {
		return false
	}
	return c.chans[id].unacked.has(tag)
}

// Unacked returns the number of delivery tags on channel id that await an
// acknowledgement.
func (c *Conn) Unacked(id uint16) int {
	if int(id) >= len(c.chans) || c.chans[id] == nil {
		return 0
	}
	return c.chans[id].unacked.n
}

// settleChannel checks a settlement of tag on channel id the way RabbitMQ
// does (the tag itself must be outstanding, multiple or not; 0 with
// multiple means all) and records it.
func (c *Conn) settleChannel(id uint16, tag uint64, multiple bool) (*channel, error) {
	ch, err := c.userChannel(id)
	if err != nil {
		return nil, err
	}
	switch {
	case tag == 0 && multiple:
		ch.unacked.clearAll()
	case tag == 0:
		return nil, &TagError{Channel: id, Tag: tag, Reason: "0 is not a delivery tag (only multiple settles with tag 0)"}
	case tag > ch.lastTag:
		return nil, &TagError{Channel: id, Tag: tag, Reason: "never delivered on this channel"}
	case !ch.unacked.has(tag):
		return nil, &TagError{Channel: id, Tag: tag, Reason: "not awaiting an acknowledgement (already settled, or delivered with no-ack)"}
	case multiple:
		ch.unacked.clearUpTo(tag)
	default:
		ch.unacked.clearTag(tag)
	}
	return ch, nil
}

// Unconfirmed returns the number of publishes on channel id that await a
// confirmation.
func (c *Conn) Unconfirmed(id uint16) int {
	if int(id) >= len(c.chans) || c.chans[id] == nil {
		return 0
	}
	return c.chans[id].pending.Len()
}

// request sends or queues a synchronous method and returns its id.
func (c *Conn) request(ch *channel, m wire.Method) (RequestID, error) {
	r := request{id: c.nextReq + 1, m: m}
	if ch.inflight == nil && len(ch.queue) == 0 {
		if err := c.sendMethod(ch.id, m); err != nil {
			return 0, err
		}
		c.nextReq++
		ch.startRequest(r)
		return r.id, nil
	}
	// Encode now, so that a bad table fails this call rather than being
	// lost later, and so that the caller may reuse m.
	frames, err := wire.AppendMethodFrame(nil, ch.id, m)
	if err != nil {
		return 0, err
	}
	c.nextReq++
	c.enqueue(ch, queued{req: r, frames: frames})
	return r.id, nil
}

// enqueue appends q to the items waiting on ch, counting its bytes for
// QueuedLen.
func (c *Conn) enqueue(ch *channel, q queued) {
	ch.queue = append(ch.queue, q)
	c.queued += len(q.frames)
}

// startRequest makes r, whose frame was just written, the one in flight.
func (ch *channel) startRequest(r request) {
	if _, ok := r.m.(*wire.ChannelClose); ok {
		ch.state = chClosing
	}
	ch.inflight = &r
}

// sendAsync writes an asynchronous method, or queues its encoding when
// something waits on the channel so that order is kept.
func (c *Conn) sendAsync(ch *channel, m wire.Method) error {
	if len(ch.queue) == 0 {
		return c.sendMethod(ch.id, m)
	}
	frames, err := wire.AppendMethodFrame(nil, ch.id, m)
	if err != nil {
		return err
	}
	c.enqueue(ch, queued{frames: frames})
	return nil
}

// flushQueue writes queued items until the next request goes in flight.
func (c *Conn) flushQueue(ch *channel) {
	for len(ch.queue) > 0 && ch.inflight == nil && ch.state != chClosed {
		q := ch.queue[0]
		ch.queue[0] = queued{}
		ch.queue = ch.queue[1:]
		c.queued -= len(q.frames)
		c.out = append(c.out, q.frames...)
		if q.req.m != nil {
			ch.startRequest(q.req)
		}
	}
	if len(ch.queue) == 0 {
		ch.queue = nil
	}
}

// failRequests fails the request in flight and every queued request on ch
// with err, in order. Queued frames are dropped.
func (c *Conn) failRequests(ch *channel, err error) {
	if ch.inflight != nil {
		c.emit(Event{Kind: EventReply, Channel: ch.id, Request: ch.inflight.id, Err: err})
		ch.inflight = nil
	}
	for _, q := range ch.queue {
		c.queued -= len(q.frames)
		if q.req.m != nil {
			c.emit(Event{Kind: EventReply, Channel: ch.id, Request: q.req.id, Err: err})
		}
	}
	ch.queue = nil
}

// maxDeliveryTagJump is how far past the highest delivery tag so far a
// delivery's tag may be. RabbitMQ numbers a channel's deliveries 1, 2,
// 3, ...; a broker that skips further would make the window of unacked
// tags grow with the jump.
const maxDeliveryTagJump = 1 << 16

// deliveryTagOK checks the tag of a delivery or get-ok on ch, failing the
// connection when it jumps more than maxDeliveryTagJump ahead.
func (c *Conn) deliveryTagOK(ch *channel, tag uint64) bool {
	if tag > ch.lastTag && tag-ch.lastTag > maxDeliveryTagJump {
		c.protocolFail(wire.ReplyCommandInvalid, "delivery tag "+strconv.FormatUint(tag, 10)+" on channel "+itoa(int(ch.id))+
			" skips more than "+itoa(maxDeliveryTagJump)+" tags past "+strconv.FormatUint(ch.lastTag, 10), nil)
		return false
	}
	return true
}

// onReply matches a reply to the request in flight on ch.
func (c *Conn) onReply(ch *channel, m wire.Method) {
	r := ch.inflight
	if r == nil || !answers(r.m.ID(), m.ID()) {
		what := "no request"
		if r != nil {
			what = r.m.ID().String()
		}
		c.protocolFail(wire.ReplyCommandInvalid, "unexpected "+m.ID().String()+" on channel "+itoa(int(ch.id))+" (pending: "+what+")", nil)
		return
	}
	if g, ok := m.(*wire.BasicGetOk); ok && !c.deliveryTagOK(ch, g.DeliveryTag) {
		return
	}
	ch.inflight = nil
	switch m := m.(type) {
	case *wire.ChannelOpenOk:
		ch.state = chOpen
	case *wire.BasicConsumeOk:
		noAck := false
		if req, ok := r.m.(*wire.BasicConsume); ok {
			noAck = req.NoAck
		}
		ch.addConsumer(m.ConsumerTag, noAck)
	case *wire.BasicCancelOk:
		delete(ch.consumers, m.ConsumerTag)
	case *wire.BasicGetOk:
		ch.lastTag = max(ch.lastTag, m.DeliveryTag)
		if req, ok := r.m.(*wire.BasicGet); !ok || !req.NoAck {
			ch.unacked.mark(m.DeliveryTag)
		}
		ch.startContent(assembling{active: true, kind: EventGetOk, req: r.id, msg: Message{
			DeliveryTag: m.DeliveryTag, Redelivered: m.Redelivered, Exchange: m.Exchange,
			RoutingKey: m.RoutingKey, MessageCount: m.MessageCount,
		}})
		c.flushQueue(ch)
		return
	case *wire.ChannelCloseOk:
		c.emit(Event{Kind: EventReply, Channel: ch.id, Request: r.id, Method: m})
		c.channelGone(ch, nilIfNoError(ch.closeErr))
		return
	}
	c.emit(Event{Kind: EventReply, Channel: ch.id, Request: r.id, Method: m})
	c.flushQueue(ch)
}

func nilIfNoError(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}

// answers reports whether reply answers request, from the spec's tables.
func answers(request, reply wire.MethodID) bool {
	for _, r := range request.Responses() {
		if r == reply {
			return true
		}
	}
	return false
}

func (ch *channel) addConsumer(tag string, noAck bool) {
	if ch.consumers == nil {
		ch.consumers = make(map[string]bool)
	}
	ch.consumers[tag] = noAck
}

// channelGone ends a channel: pending requests fail, outstanding
// confirmations are dropped, EventChannelClosed is queued and the id becomes
// free.
func (c *Conn) channelGone(ch *channel, err error) {
	reqErr := err
	if reqErr == nil {
		reqErr = ErrChannelClosed
	}
	c.failRequests(ch, reqErr)
	ch.state = chClosed
	ch.pending.Reset(1)
	c.chans[ch.id] = nil
	c.emit(Event{Kind: EventChannelClosed, Channel: ch.id, Err: err})
}

// handleChannelMethod handles a server method on an open channel.
func (c *Conn) handleChannelMethod(ch *channel, m wire.Method) {
	if ch.state == chClosing {
		// After sending channel.close only close and close-ok count, with
		// two exceptions that lose nothing and tell the application what
		// became of what it published before closing: basic.return and the
		// broker's basic.ack/nack. Deliveries are discarded (their content
		// is skipped by handleHeader/handleBody); the broker requeues them.
		switch m := m.(type) {
		case *wire.ChannelClose:
			ch.closeErr = channelError(ch.id, m)
			c.sendMethod(ch.id, &wire.ChannelCloseOk{})
			return
		case *wire.ChannelCloseOk:
			c.onReply(ch, m)
			return
		case *wire.BasicReturn, *wire.BasicAck, *wire.BasicNack:
			// handled below
		default:
			if m.ID().HasContent() {
				ch.startContent(assembling{active: true, kind: 0})
			}
			return
		}
	}
	switch m := m.(type) {
	case *wire.BasicDeliver:
		if !c.deliveryTagOK(ch, m.DeliveryTag) {
			return
		}
		ch.lastTag = max(ch.lastTag, m.DeliveryTag)
		kind := EventDelivery
		noAck, ok := ch.consumers[m.ConsumerTag]
		if !ok {
			// A consumer this side does not know: whether it was no-ack
			// is unknown, so the tag stays ackable.
			kind = EventOrphanDelivery
		}
		if !noAck {
			ch.unacked.mark(m.DeliveryTag)
		}
		ch.startContent(assembling{active: true, kind: kind, msg: Message{
			ConsumerTag: m.ConsumerTag, DeliveryTag: m.DeliveryTag, Redelivered: m.Redelivered,
			Exchange: m.Exchange, RoutingKey: m.RoutingKey,
		}})
	case *wire.BasicReturn:
		ch.startContent(assembling{active: true, kind: EventReturn, msg: Message{
			ReplyCode: wire.ReplyCode(m.ReplyCode), ReplyText: m.ReplyText,
			Exchange: m.Exchange, RoutingKey: m.RoutingKey,
		}})
	case *wire.BasicAck:
		c.onConfirm(ch, m.DeliveryTag, m.Multiple, true)
	case *wire.BasicNack:
		c.onConfirm(ch, m.DeliveryTag, m.Multiple, false)
	case *wire.BasicCancel:
		delete(ch.consumers, m.ConsumerTag)
		if !m.NoWait {
			c.sendAsync(ch, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag})
		}
		c.emit(Event{Kind: EventCancel, Channel: ch.id, ConsumerTag: m.ConsumerTag})
	case *wire.ChannelFlow:
		c.sendMethod(ch.id, &wire.ChannelFlowOk{Active: m.Active})
		c.emit(Event{Kind: EventFlow, Channel: ch.id, Active: m.Active})
	case *wire.ChannelClose:
		c.sendMethod(ch.id, &wire.ChannelCloseOk{})
		c.channelGone(ch, channelError(ch.id, m))
	default:
		c.onReply(ch, m)
	}
}

func channelError(id uint16, m *wire.ChannelClose) *Error {
	return &Error{
		Code:    wire.ReplyCode(m.ReplyCode),
		Text:    m.ReplyText,
		Method:  wire.MethodID(uint32(m.ClassID)<<16 | uint32(m.MethodID)),
		Server:  true,
		Channel: id,
	}
}

// onConfirm handles a broker basic.ack or basic.nack in confirm mode.
func (c *Conn) onConfirm(ch *channel, tag uint64, multiple, ack bool) {
	if !ch.confirm {
		c.protocolFail(wire.ReplyCommandInvalid, "basic.ack/nack from server on channel "+itoa(int(ch.id))+" which is not in confirm mode", nil)
		return
	}
	n := ch.pending.Settle(tag, multiple, nil)
	if n == 0 {
		// A tag never published, or already settled: the server is confused
		// but the channel's data is intact; report it with Count 0.
		c.emit(Event{Kind: EventConfirm, Channel: ch.id, Tag: tag, Multiple: multiple, Ack: ack})
		return
	}
	c.emit(Event{Kind: EventConfirm, Channel: ch.id, Tag: tag, Multiple: multiple, Ack: ack, Count: n})
}

// handleHeader handles a content header frame.
func (c *Conn) handleHeader(ch *channel, f wire.Frame) {
	a := ch.content
	if a == nil || !a.active || a.haveHead {
		c.protocolFail(wire.ReplyUnexpectedFrame, "content header on channel "+itoa(int(ch.id))+" without a content method before it", nil)
		return
	}
	if err := c.header.Decode(f.Payload, c.s.MaxBodySize); err != nil {
		c.protocolFail(replyCodeFor(err), "bad content header", err)
		return
	}
	a.haveHead = true
	a.remaining = c.header.BodySize
	a.msg.Properties = c.header.Properties
	if a.remaining == 0 {
		c.completeContent(ch)
		return
	}
	if a.kind != 0 {
		a.msg.Body = c.bodies.alloc(int(min(a.remaining, bodyPrealloc)))
	}
}

// handleBody handles a content body frame.
func (c *Conn) handleBody(ch *channel, f wire.Frame) {
	a := ch.content
	if a == nil || !a.active || !a.haveHead {
		c.protocolFail(wire.ReplyUnexpectedFrame, "content body on channel "+itoa(int(ch.id))+" without a content header before it", nil)
		return
	}
	if uint64(len(f.Payload)) > a.remaining {
		c.protocolFail(wire.ReplyFrameError, "content body on channel "+itoa(int(ch.id))+" is larger than its header announced", nil)
		return
	}
	a.remaining -= uint64(len(f.Payload))
	if a.kind != 0 {
		a.msg.Body = append(a.msg.Body, f.Payload...)
	}
	if a.remaining == 0 {
		c.completeContent(ch)
	}
}

// completeContent emits the assembled message.
func (c *Conn) completeContent(ch *channel) {
	a := *ch.content
	*ch.content = assembling{}
	if a.kind == 0 {
		// Content of a method discarded while closing. (A get-ok still
		// answers its request: the close went out after it; a return still
		// reports a message published before it.)
		return
	}
	if a.msg.Body == nil {
		a.msg.Body = []byte{}
	}
	c.emit(Event{Kind: a.kind, Channel: ch.id, Request: a.req, Message: a.msg})
}
