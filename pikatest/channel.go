package pikatest

import (
	"time"

	"github.com/pika-go/pika/wire"
)

// channel is one open AMQP channel. All of its state is guarded by the
// broker's lock.
type channel struct {
	c  *conn
	id uint16

	closing bool // the broker sent channel.close; awaiting close-ok

	consumers       map[string]*consumer
	prefetch        int // basic.qos global=false: limit for new consumers
	globalPrefetch  int // basic.qos global=true: limit for the channel
	consumerUnacked int
	nextTag         uint64
	unacked         []*delivery
	head            int
	live            int
	lastQueue       string // the most recently declared queue
	replyTo         *consumer

	confirm      bool
	pubSeq       uint64
	confirmReady []confirmItem
	confirmBase  uint64
	confirmAbove map[uint64]bool
	tx           bool
	txPublishes  []*publishing
	txSettles    []txSettle

	// Content assembly: the publish awaiting its header and body.
	pending  *wire.BasicPublish
	pubMsg   wire.BasicPublish
	bodySize uint64
	props    wire.Properties
	header   []byte
	body     []byte
}

type txSettle struct {
	tag                    uint64
	multiple, ack, requeue bool
}

func newChannel(c *conn, id uint16) *channel {
	return &channel{c: c, id: id, consumers: map[string]*consumer{}}
}

// fail closes the channel with a soft error: channel.close is sent, the
// channel's consumers end and its unacked messages are requeued; frames
// other than channel.close-ok are then ignored.
func (ch *channel) fail(e *amqpError, method wire.MethodID) {
	if e.conn {
		if e.method == 0 {
			e.method = method
		}
		ch.c.fail(e)
		return
	}
	if ch.closing {
		return
	}
	ch.release()
	ch.closing = true
	ch.c.send(ch.id, &wire.ChannelClose{ReplyCode: uint16(e.code), ReplyText: replyText(e.text),
		ClassID: uint16(method.Class()), MethodID: method.Index()})
}

// release ends the channel's consumers and requeues its unacked messages.
func (ch *channel) release() {
	if ch.closing {
		return
	}
	ch.pending = nil
	ch.body = nil
	for _, cs := range ch.consumers {
		ch.removeConsumer(cs)
	}
	ch.requeueAll()
	ch.txPublishes, ch.txSettles = nil, nil
	ch.confirmReady = nil
	ch.closing = true
}

// removeConsumer ends cs on this channel (cancel, close).
func (ch *channel) removeConsumer(cs *consumer) {
	delete(ch.consumers, cs.tag)
	if cs.replyTo != "" {
		delete(ch.c.b.replyTokens(), cs.replyTo)
		ch.replyTo = nil
		return
	}
	cs.q.removeConsumer(cs)
}

// serverCancel ends cs because its queue went away, telling clients that
// understand basic.cancel from the broker.
func (ch *channel) serverCancel(cs *consumer) {
	delete(ch.consumers, cs.tag)
	if ch.c.capCancel && !ch.closing && !ch.c.closing {
		ch.c.send(ch.id, &wire.BasicCancel{ConsumerTag: cs.tag, NoWait: true})
	}
}

// method handles one method on an open channel.
func (ch *channel) method(m wire.Method) {
	id := m.ID()
	if ch.closing {
		switch id {
		case wire.MethodChannelCloseOk:
			delete(ch.c.channels, ch.id)
		case wire.MethodChannelClose:
			ch.c.send(ch.id, &wire.ChannelCloseOk{})
		}
		return
	}
	if ch.pending != nil {
		ch.pending = nil
		text := "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"
		if ch.header != nil {
			text = "UNEXPECTED_FRAME - expected content body, got non content body frame instead"
		}
		// RabbitMQ names the publish whose content was cut short.
		ch.c.fail(&amqpError{code: wire.ReplyUnexpectedFrame, conn: true, method: wire.MethodBasicPublish, text: text})
		return
	}
	var err *amqpError
	switch m := m.(type) {
	case *wire.ChannelOpen:
		err = connErr(wire.ReplyChannelError, "second 'channel.open' seen")
	case *wire.ChannelClose:
		ch.release()
		delete(ch.c.channels, ch.id)
		ch.c.send(ch.id, &wire.ChannelCloseOk{})
	case *wire.ChannelCloseOk:
		// The broker did not close this channel.
		err = connErr(wire.ReplyCommandInvalid, "unimplemented method")
	case *wire.ChannelFlow:
		if !m.Active {
			err = errNotImplemented("active=false")
		} else {
			ch.c.send(ch.id, &wire.ChannelFlowOk{Active: true})
		}
	case *wire.AccessRequest:
		ch.c.send(ch.id, &wire.AccessRequestOk{Ticket: 1})
	case *wire.ExchangeDeclare:
		if m.Exchange == "" {
			// Even a passive declaration of the default exchange.
			err = errDefaultExchange()
			break
		}
		err = ch.exchangeDeclare(m)
	case *wire.ExchangeDelete:
		err = ch.exchangeDelete(m)
	case *wire.ExchangeBind:
		err = ch.exchangeBind(m.Source, m.Destination, m.RoutingKey, m.Arguments, true, m.NoWait)
	case *wire.ExchangeUnbind:
		err = ch.exchangeBind(m.Source, m.Destination, m.RoutingKey, m.Arguments, false, m.NoWait)
	case *wire.QueueDeclare:
		err = ch.queueDeclare(m)
	case *wire.QueueBind:
		err = ch.queueBind(m.Queue, m.Exchange, m.RoutingKey, m.Arguments, true, m.NoWait)
	case *wire.QueueUnbind:
		err = ch.queueBind(m.Queue, m.Exchange, m.RoutingKey, m.Arguments, false, false)
	case *wire.QueuePurge:
		err = ch.queuePurge(m)
	case *wire.QueueDelete:
		err = ch.queueDelete(m)
	case *wire.BasicQos:
		err = ch.basicQos(m)
	case *wire.BasicConsume:
		err = ch.basicConsume(m)
	case *wire.BasicCancel:
		if cs := ch.consumers[m.ConsumerTag]; cs != nil {
			ch.removeConsumer(cs)
		}
		if !m.NoWait {
			ch.c.send(ch.id, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag})
		}
	case *wire.BasicPublish:
		if m.Immediate {
			err = errNotImplemented("immediate=true")
			break
		}
		ch.pubMsg = *m
		ch.pending = &ch.pubMsg
		ch.header, ch.body, ch.bodySize = nil, nil, 0
	case *wire.BasicGet:
		err = ch.basicGet(m)
	case *wire.BasicAck:
		err = ch.settleOrBuffer(m.DeliveryTag, m.Multiple, true, false)
	case *wire.BasicNack:
		err = ch.settleOrBuffer(m.DeliveryTag, m.Multiple, false, m.Requeue)
	case *wire.BasicReject:
		err = ch.settleOrBuffer(m.DeliveryTag, false, false, m.Requeue)
	case *wire.BasicRecover:
		if !m.Requeue {
			err = errNotImplemented("requeue=false")
			break
		}
		ch.requeueAll()
		ch.c.send(ch.id, &wire.BasicRecoverOk{})
	case *wire.BasicRecoverAsync:
		if !m.Requeue {
			err = errNotImplemented("requeue=false")
			break
		}
		ch.requeueAll()
	case *wire.ConfirmSelect:
		if ch.tx {
			err = chanErr(wire.ReplyPreconditionFailed, "cannot switch from tx to confirm mode")
			break
		}
		ch.confirm = true
		if !m.NoWait {
			ch.c.send(ch.id, &wire.ConfirmSelectOk{})
		}
	case *wire.TxSelect:
		if ch.confirm {
			err = chanErr(wire.ReplyPreconditionFailed, "cannot switch from confirm to tx mode")
			break
		}
		ch.tx = true
		ch.c.send(ch.id, &wire.TxSelectOk{})
	case *wire.TxCommit:
		err = ch.txCommit()
	case *wire.TxRollback:
		if !ch.tx {
			err = chanErr(wire.ReplyPreconditionFailed, "channel is not transactional")
			break
		}
		ch.txPublishes, ch.txSettles = nil, nil
		ch.c.send(ch.id, &wire.TxRollbackOk{})
	default:
		err = connErr(wire.ReplyCommandInvalid, "unimplemented method '%s'", id.Name())
	}
	if err != nil {
		ch.fail(err, id)
	}
}

// queueName resolves "" to the channel's most recently declared queue.
func (ch *channel) queueName(name string) (string, *amqpError) {
	if name != "" {
		return name, nil
	}
	if ch.lastQueue == "" {
		return "", chanErr(wire.ReplyNotFound, "no previously declared queue")
	}
	return ch.lastQueue, nil
}

// lookupQueue finds a queue the channel may use.
func (ch *channel) lookupQueue(name string) (*queue, *amqpError) {
	name, err := ch.queueName(name)
	if err != nil {
		return nil, err
	}
	vh := ch.c.vh
	q := vh.queues[name]
	if q == nil {
		return nil, errNoQueue(vh.name, name)
	}
	if q.exclusive && q.owner != ch.c {
		return nil, errLocked(vh.name, name)
	}
	return q, nil
}

func (ch *channel) exchangeDeclare(m *wire.ExchangeDeclare) *amqpError {
	if err := ch.c.vh.declareExchange(m); err != nil {
		return err
	}
	if !m.NoWait {
		ch.c.send(ch.id, &wire.ExchangeDeclareOk{})
	}
	return nil
}

func (ch *channel) exchangeDelete(m *wire.ExchangeDelete) *amqpError {
	if err := ch.c.vh.deleteExchange(m.Exchange, m.IfUnused); err != nil {
		return err
	}
	if !m.NoWait {
		ch.c.send(ch.id, &wire.ExchangeDeleteOk{})
	}
	return nil
}

func (ch *channel) exchangeBind(src, dst, key string, args wire.Table, bind, noWait bool) *amqpError {
	vh := ch.c.vh
	if src == "" || dst == "" {
		return errDefaultExchange()
	}
	d := vh.exchanges[dst]
	if d == nil {
		return errNoExchange(vh.name, dst)
	}
	s := vh.exchanges[src]
	if s == nil {
		return errNoExchange(vh.name, src)
	}
	if bind {
		if err := vh.bind(s, nil, d, key, args); err != nil {
			return err
		}
		if !noWait {
			ch.c.send(ch.id, &wire.ExchangeBindOk{})
		}
		return nil
	}
	vh.unbind(s, nil, d, key, args)
	if !noWait {
		ch.c.send(ch.id, &wire.ExchangeUnbindOk{})
	}
	return nil
}

func (ch *channel) queueDeclare(m *wire.QueueDeclare) *amqpError {
	vh := ch.c.vh
	name := m.Queue
	if name == "amq.rabbitmq.reply-to" || (len(name) > 22 && name[:22] == "amq.rabbitmq.reply-to.") {
		if !m.NoWait {
			ch.c.send(ch.id, &wire.QueueDeclareOk{Queue: name})
		}
		return nil
	}
	if name == "" {
		if m.Passive {
			// The last declared queue, or a queue named "" that does
			// not exist (RabbitMQ says "no queue ''").
			name = ch.lastQueue
		} else {
			name = randomName("amq.gen-")
		}
	}
	q, err := vh.declareQueue(m, name, ch.c)
	if err != nil {
		return err
	}
	ch.lastQueue = name
	if !m.NoWait {
		ch.c.send(ch.id, &wire.QueueDeclareOk{Queue: name, MessageCount: uint32(q.ready.Len()), ConsumerCount: uint32(len(q.consumers))})
	}
	return nil
}

func (ch *channel) queueBind(qname, xname, key string, args wire.Table, bind, noWait bool) *amqpError {
	vh := ch.c.vh
	if !bind && qname != "" && xname != "" && (vh.queues[qname] == nil || vh.exchanges[xname] == nil) {
		// Unbinding what does not exist succeeds (RabbitMQ 3.x).
		ch.c.send(ch.id, &wire.QueueUnbindOk{})
		return nil
	}
	name, err := ch.queueName(qname)
	if err != nil {
		return err
	}
	if xname == "" {
		return errDefaultExchange()
	}
	// RabbitMQ looks the exchange up first: when neither exists, the
	// error names the exchange.
	x := vh.exchanges[xname]
	if x == nil {
		return errNoExchange(vh.name, xname)
	}
	q, err := ch.lookupQueue(name)
	if err != nil {
		return err
	}
	if key == "" && qname == "" {
		key = q.name
	}
	if bind {
		if err := vh.bind(x, q, nil, key, args); err != nil {
			return err
		}
		if !noWait {
			ch.c.send(ch.id, &wire.QueueBindOk{})
		}
		return nil
	}
	vh.unbind(x, q, nil, key, args)
	ch.c.send(ch.id, &wire.QueueUnbindOk{})
	return nil
}

func (ch *channel) queuePurge(m *wire.QueuePurge) *amqpError {
	q, err := ch.lookupQueue(m.Queue)
	if err != nil {
		return err
	}
	n := q.purge()
	if !m.NoWait {
		ch.c.send(ch.id, &wire.QueuePurgeOk{MessageCount: uint32(n)})
	}
	return nil
}

func (ch *channel) queueDelete(m *wire.QueueDelete) *amqpError {
	vh := ch.c.vh
	name, err := ch.queueName(m.Queue)
	if err != nil {
		return err
	}
	q := vh.queues[name]
	n := 0
	if q != nil {
		if q.exclusive && q.owner != ch.c {
			return errLocked(vh.name, name)
		}
		if m.IfUnused && len(q.consumers) > 0 {
			return chanErr(wire.ReplyPreconditionFailed, "queue '%s' in vhost '%s' in use", name, vh.name)
		}
		if m.IfEmpty && q.ready.Len() > 0 {
			return chanErr(wire.ReplyPreconditionFailed, "queue '%s' in vhost '%s' not empty", name, vh.name)
		}
		n = vh.deleteQueue(q)
	}
	if !m.NoWait {
		ch.c.send(ch.id, &wire.QueueDeleteOk{MessageCount: uint32(n)})
	}
	return nil
}

func (ch *channel) basicQos(m *wire.BasicQos) *amqpError {
	if m.PrefetchSize != 0 {
		return errNotImplemented("prefetch_size!=0 (%d)", m.PrefetchSize)
	}
	if m.Global {
		ch.globalPrefetch = int(m.PrefetchCount)
	} else {
		ch.prefetch = int(m.PrefetchCount)
	}
	ch.c.send(ch.id, &wire.BasicQosOk{})
	ch.redispatch(nil)
	return nil
}

func (ch *channel) basicConsume(m *wire.BasicConsume) *amqpError {
	vh := ch.c.vh
	if m.ConsumerTag != "" && ch.consumers[m.ConsumerTag] != nil {
		return connErr(wire.ReplyNotAllowed, "attempt to reuse consumer tag '%s'", m.ConsumerTag)
	}
	tag := m.ConsumerTag
	if tag == "" {
		tag = randomName("amq.ctag-")
	}
	if m.Queue == "amq.rabbitmq.reply-to" {
		if !m.NoAck {
			return chanErr(wire.ReplyPreconditionFailed, "reply consumer cannot acknowledge")
		}
		if ch.replyTo != nil {
			return chanErr(wire.ReplyPreconditionFailed, "reply consumer already set")
		}
		cs := &consumer{ch: ch, tag: tag, noAck: true, replyTo: randomName("")}
		ch.consumers[tag] = cs
		ch.replyTo = cs
		ch.c.b.replyTokens()[cs.replyTo] = cs
		if !m.NoWait {
			ch.c.send(ch.id, &wire.BasicConsumeOk{ConsumerTag: tag})
		}
		return nil
	}
	q, err := ch.lookupQueue(m.Queue)
	if err != nil {
		return err
	}
	for _, other := range q.consumers {
		if other.exclusive || m.Exclusive {
			return chanErr(wire.ReplyAccessRefused, "queue '%s' in vhost '%s' in exclusive use", q.name, vh.name)
		}
	}
	cs := &consumer{ch: ch, q: q, tag: tag, noAck: m.NoAck, exclusive: m.Exclusive, prefetch: ch.prefetch}
	if v, ok := m.Arguments["x-priority"]; ok {
		if p, ok := intArg(v); ok {
			cs.priority = p
		}
	}
	ch.consumers[tag] = cs
	q.addConsumer(cs)
	if !m.NoWait {
		ch.c.send(ch.id, &wire.BasicConsumeOk{ConsumerTag: tag})
	}
	q.dispatch(time.Now().UnixNano())
	return nil
}

func (ch *channel) basicGet(m *wire.BasicGet) *amqpError {
	q, err := ch.lookupQueue(m.Queue)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	q.touch()
	q.expire(now)
	msg := q.ready.Pop()
	if msg == nil {
		ch.c.send(ch.id, &wire.BasicGetEmpty{})
		return nil
	}
	// Messages that expired behind the one taken do not count as left,
	// as in RabbitMQ.
	q.expire(now)
	ch.nextTag++
	tag := ch.nextTag
	if !m.NoAck {
		ch.track(&delivery{tag: tag, q: q, m: msg})
		q.unacked++
	}
	ch.c.sendRaw(ch.id, &wire.BasicGetOk{DeliveryTag: tag, Redelivered: msg.Redelivered, Exchange: msg.Exchange,
		RoutingKey: msg.RoutingKey, MessageCount: uint32(q.ready.Len())}, deliveryHeader(q, msg), msg.Body)
	return nil
}

// settleOrBuffer settles now, or at commit in a transaction. Unknown tags
// fail at once either way.
func (ch *channel) settleOrBuffer(tag uint64, multiple, ack, requeue bool) *amqpError {
	if !ch.tx {
		return ch.settle(tag, multiple, ack, requeue)
	}
	if !(multiple && tag == 0) && ch.find(tag) == nil {
		return chanErr(wire.ReplyPreconditionFailed, "unknown delivery tag %d", tag)
	}
	ch.txSettles = append(ch.txSettles, txSettle{tag, multiple, ack, requeue})
	return nil
}

func (ch *channel) txCommit() *amqpError {
	if !ch.tx {
		return chanErr(wire.ReplyPreconditionFailed, "channel is not transactional")
	}
	pubs, settles := ch.txPublishes, ch.txSettles
	ch.txPublishes, ch.txSettles = nil, nil
	for _, p := range pubs {
		ch.route(p)
	}
	for _, s := range settles {
		if err := ch.settle(s.tag, s.multiple, s.ack, s.requeue); err != nil {
			return err
		}
	}
	ch.c.send(ch.id, &wire.TxCommitOk{})
	return nil
}
