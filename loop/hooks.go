package loop

import (
	"context"
	"maps"
	"net"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/standin"
)

// Hooks (see "Hooks, credentials" in the package documentation): a Conn
// with no hook keeps a nil *hookSet, and each event costs one nil check.

// hookSet is a Conn's hooks by interface, found once when it is dialled.
type hookSet struct {
	pc         *pika.Conn // the stand-in of the Conn
	connect    []pika.ConnectHook
	disconnect []pika.DisconnectHook
	recovery   []pika.RecoveryHook
	blocked    []pika.BlockedHook
	channel    []pika.ChannelHook
	publish    []pika.PublishHook
	outcome    []pika.PublishOutcomeHook
	delivery   []pika.DeliveryHook
	process    []pika.ProcessHook
	settle     []pika.SettleHook
	consumer   []pika.ConsumerHook
	bytes      []pika.BytesHook

	reason        string // the broker's reason while blocked
	read, written int64  // bytes not yet reported to the BytesHooks
	pub           pika.Publishing
	pubBusy       bool // pub is in use (a hook publishes from OnPublish)

	// Written by the dial goroutine while it runs (see dialNext).
	failed    []attempt // transport attempts that failed, not yet reported
	dialStart time.Time // when the transport of the current address was dialled
}

// newHookSet sorts hooks by interface; nil when none implements one.
func newHookSet(c *Conn, hooks []pika.Hook) *hookSet {
	var s hookSet
	found := false
	add := func(ok bool) bool { found = found || ok; return ok }
	for _, h := range hooks {
		if x, ok := h.(pika.ConnectHook); add(ok) {
			s.connect = append(s.connect, x)
		}
		if x, ok := h.(pika.DisconnectHook); add(ok) {
			s.disconnect = append(s.disconnect, x)
		}
		if x, ok := h.(pika.RecoveryHook); add(ok) {
			s.recovery = append(s.recovery, x)
		}
		if x, ok := h.(pika.BlockedHook); add(ok) {
			s.blocked = append(s.blocked, x)
		}
		if x, ok := h.(pika.ChannelHook); add(ok) {
			s.channel = append(s.channel, x)
		}
		if x, ok := h.(pika.PublishHook); add(ok) {
			s.publish = append(s.publish, x)
		}
		if x, ok := h.(pika.PublishOutcomeHook); add(ok) {
			s.outcome = append(s.outcome, x)
		}
		if x, ok := h.(pika.DeliveryHook); add(ok) {
			s.delivery = append(s.delivery, x)
		}
		if x, ok := h.(pika.ProcessHook); add(ok) {
			s.process = append(s.process, x)
		}
		if x, ok := h.(pika.SettleHook); add(ok) {
			s.settle = append(s.settle, x)
		}
		if x, ok := h.(pika.ConsumerHook); add(ok) {
			s.consumer = append(s.consumer, x)
		}
		if x, ok := h.(pika.BytesHook); add(ok) {
			s.bytes = append(s.bytes, x)
		}
	}
	if !found {
		return nil
	}
	s.pc = standin.NewConn(connView{c}).(*pika.Conn)
	return &s
}

// recoveryHooks returns the RecoveryHooks of the Conn and the stand-in
// they get, for the recovery to report to.
func (h *hookSet) recoveryHooks() ([]pika.RecoveryHook, *pika.Conn) {
	if h == nil {
		return nil, nil
	}
	return h.recovery, h.pc
}

func (h *hookSet) outcomes() bool  { return h != nil && len(h.outcome) > 0 }
func (h *hookSet) publishes() bool { return h != nil && len(h.publish) > 0 }
func (h *hookSet) settles() bool   { return h != nil && len(h.settle) > 0 }

// connectEvent reports the attempt on the current address: open (err
// nil) or failed.
func (h *hookSet) connectEvent(addr string, err error) {
	if h == nil {
		return
	}
	h.attemptEvent(attempt{addr, err, time.Since(h.dialStart)})
}

// attemptEvent reports one connection attempt.
func (h *hookSet) attemptEvent(a attempt) {
	ev := pika.ConnectEvent{Conn: h.pc, Addr: a.addr, Err: a.err, Duration: a.dur}
	for _, x := range h.connect {
		x.OnConnect(ev)
	}
}

// failedAttempts reports the transport attempts that failed in the dial
// goroutine.
func (c *Conn) failedAttempts() {
	if c.hk == nil {
		return
	}
	for _, a := range c.hk.failed {
		c.hk.attemptEvent(a)
	}
	c.hk.failed = nil
}

// disconnectEvent reports the end of an open connection: err nil after
// the application's Close.
func (h *hookSet) disconnectEvent(addr string, err error) {
	if h == nil {
		return
	}
	ev := pika.DisconnectEvent{Conn: h.pc, Addr: addr, Err: err}
	for _, x := range h.disconnect {
		x.OnDisconnect(ev)
	}
}

func (h *hookSet) blockedEvent(blocked bool, reason string) {
	if h == nil {
		return
	}
	h.reason = reason
	for _, x := range h.blocked {
		x.OnBlocked(h.pc, blocked, reason)
	}
}

// bytesEvent reports the bytes counted since the last report.
func (h *hookSet) bytesEvent() {
	if h == nil || h.read == 0 && h.written == 0 || len(h.bytes) == 0 {
		return
	}
	r, w := h.read, h.written
	h.read, h.written = 0, 0
	for _, x := range h.bytes {
		x.OnBytes(h.pc, r, w)
	}
}

// standIn returns the channel's stand-in, made on first use.
func (ch *Channel) standIn() *pika.Channel {
	if ch.sc == nil {
		ch.sc = standin.NewChannel(ch.c.hk.pc, ch.id, channelView{ch}).(*pika.Channel)
	}
	return ch.sc
}

// opened reports a channel the application opened.
func (h *hookSet) opened(ch *Channel) {
	if h == nil || len(h.channel) == 0 {
		return
	}
	sc := ch.standIn()
	for _, x := range h.channel {
		x.OnChannelOpen(sc)
	}
}

// channelClosed reports the end of a channel reported open (it has a
// stand-in only once it was handed to the application, after opened):
// err is nil after Channel.Close and after the application's Conn.Close.
func (h *hookSet) channelClosed(ch *Channel, err error) {
	if h == nil || ch.sc == nil || len(h.channel) == 0 {
		return
	}
	if ch.c.closed && ch.c.appClosed() {
		err = nil
	}
	for _, x := range h.channel {
		x.OnChannelClose(ch.sc, err)
	}
}

// reportOutcome reports the outcome of the message published with tag.
func (h *hookSet) reportOutcome(ch *Channel, tag uint64, r *pubRec, o pika.Outcome, err error) {
	ev := pika.PublishOutcome{Ctx: r.ctx, Channel: ch.standIn(), Seq: tag, Outcome: o, Err: err, Latency: time.Since(r.start)}
	for _, x := range h.outcome {
		x.OnPublishOutcome(ev)
	}
}

// publishHooked is Publish (cb nil) or PublishConfirm with PublishHooks.
func (ch *Channel) publishHooked(exchange, routingKey string, msg *pika.Message, cb func(error)) error {
	h := ch.c.hk
	p := &h.pub
	if h.pubBusy {
		p = new(pika.Publishing)
	} else {
		h.pubBusy = true
	}
	*p = pika.Publishing{Ctx: context.Background(), Channel: ch.standIn(), Exchange: exchange, RoutingKey: routingKey, Message: *msg}
	for _, x := range h.publish {
		x.OnPublish(p)
	}
	var tag uint64
	var err error
	if cb != nil {
		tag, err = ch.publishConfirm(exchange, routingKey, &p.Message, cb, p)
	} else {
		tag, err = ch.publish(exchange, routingKey, &p.Message, nil, p)
	}
	p.Seq = tag
	for _, x := range h.publish {
		x.OnPublished(p, err)
	}
	*p = pika.Publishing{} // hooks must not keep it: it is reused
	if p == &h.pub {
		h.pubBusy = false
	}
	return err
}

// deliveryEvent builds the stand-in of d (or of a Get's message), reports
// it to the DeliveryHooks and returns it.
func (h *hookSet) deliveryEvent(ch *Channel, queue string, d *Delivery) *pika.Delivery {
	pd := standin.NewDelivery(ch.standIn()).(*pika.Delivery)
	pd.ConsumerTag, pd.DeliveryTag, pd.Redelivered = d.ConsumerTag, d.DeliveryTag, d.Redelivered
	pd.Exchange, pd.RoutingKey, pd.MessageCount = d.Exchange, d.RoutingKey, d.MessageCount
	pd.Properties, pd.Body = d.Properties, d.Body
	pd.Acknowledger = ch
	for _, x := range h.delivery {
		x.OnDelivery(queue, pd)
	}
	return pd
}

// deliver runs the consumer's handler with d, after the DeliveryHooks and
// through the ProcessHooks, as pika.Conn runs a ConsumeFunc handler: each
// OnProcess gets the context of the one before (context.Background() for
// the first), the handler finds the last in d.Context(), and the finish
// functions run after it in reverse order, with pika.ErrHandlerPanicked
// when it panicked (the panic then goes on).
func (cons *Consumer) deliver(d *Delivery) {
	h := cons.ch.c.hk
	if h == nil || len(h.delivery) == 0 && len(h.process) == 0 {
		cons.handler(d)
		return
	}
	pd := h.deliveryEvent(cons.ch, cons.queue, d)
	if len(h.process) == 0 {
		cons.handler(d)
		return
	}
	ctx := context.Background()
	var small [2]func(error)
	finish := small[:0]
	for _, x := range h.process {
		var f func(error)
		ctx, f = x.OnProcess(ctx, cons.queue, pd)
		if f != nil {
			finish = append(finish, f)
		}
	}
	d.ctx = ctx
	done := false
	defer func() {
		if !done {
			for i := len(finish) - 1; i >= 0; i-- {
				finish[i](pika.ErrHandlerPanicked)
			}
		}
	}()
	cons.handler(d)
	done = true
	for i := len(finish) - 1; i >= 0; i-- {
		finish[i](nil)
	}
}

// settleEvent reports an acknowledgement: unacked is the number of
// deliveries awaiting one before it.
func (ch *Channel) settleEvent(kind pika.SettleKind, tag uint64, multiple, requeue bool, unacked int, err error, byLibrary bool) {
	ev := pika.SettleEvent{Channel: ch.standIn(), Kind: kind, Tag: tag, Multiple: multiple, Requeue: requeue, Err: err, ByLibrary: byLibrary}
	if err == nil {
		ev.Count = unacked - ch.c.eng.Unacked(ch.id)
	}
	for _, x := range ch.c.hk.settle {
		x.OnSettle(ev)
	}
}

// settled runs an acknowledgement (ack, an engine call) and reports it to
// the SettleHooks.
func (ch *Channel) settled(kind pika.SettleKind, tag uint64, multiple, requeue bool, ack func() error) error {
	if !ch.c.hk.settles() {
		return ack()
	}
	before := ch.c.eng.Unacked(ch.id)
	err := ack()
	ch.settleEvent(kind, tag, multiple, requeue, before, err, false)
	return err
}

// consumerStandIn returns the consumer's stand-in, made on first use.
func (cons *Consumer) standIn() *pika.Consumer {
	if cons.sc == nil {
		cons.sc = standin.NewConsumer(cons.ch.standIn(), cons.tag, consumerView{cons}).(*pika.Consumer)
	}
	return cons.sc
}

// consumerStarted reports a consumer the broker started.
func (h *hookSet) consumerStarted(cons *Consumer) {
	if h == nil || len(h.consumer) == 0 {
		return
	}
	sc := cons.standIn()
	for _, x := range h.consumer {
		x.OnConsumerStart(sc)
	}
}

// consumerEnded reports the end of a consumer reported started.
func (h *hookSet) consumerEnded(cons *Consumer, err error) {
	if h == nil || cons.sc == nil || len(h.consumer) == 0 {
		return
	}
	for _, x := range h.consumer {
		x.OnConsumerEnd(cons.sc, err)
	}
}

// connView answers a stand-in *pika.Conn's accessors.
type connView struct{ c *Conn }

func (v connView) IsClosed() bool     { return v.c.IsClosed() }
func (v connView) Err() error         { return v.c.err }
func (v connView) IsRecovering() bool { return v.c.Recovering() }
func (v connView) IsBlocked() (bool, string) {
	if !v.c.blocked {
		return false, ""
	}
	return true, v.c.hk.reason
}

func (v connView) ServerProperties() pika.Table {
	if v.c.eng == nil {
		return nil
	}
	return maps.Clone(v.c.eng.ServerProperties())
}

func (v connView) Tuning() engine.Tuning {
	if v.c.eng == nil {
		return engine.Tuning{}
	}
	return v.c.eng.Tuning()
}

func (v connView) LocalAddr() net.Addr  { return addr("") }
func (v connView) RemoteAddr() net.Addr { return addr(v.c.remote) }

// appClosed reports whether the application's Close ended the
// connection (or is ending it).
func (c *Conn) appClosed() bool { return c.closeTimer != nil && !c.timedOut }

// addr is a TCP address as dialled (host:port).
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }

// consumerView answers a stand-in *pika.Consumer's Queue with the
// consumer's queue as recovery renamed it.
type consumerView struct{ cons *Consumer }

func (v consumerView) Queue() string { return v.cons.queue }

// channelView answers a stand-in *pika.Channel's accessors.
type channelView struct{ ch *Channel }

func (v channelView) IsClosed() bool { return v.ch.closed }
func (v channelView) Err() error     { return v.ch.err }
