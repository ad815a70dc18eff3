package loop

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// The methods below send one synchronous AMQP method each and call cb,
// which may be nil, with the outcome, in the channel's callback order.
// With NoWait set in the options, the method is sent without waiting and
// cb runs with the error of the send (a refusal then closes the channel
// later: see Channel.OnClose). A broker's refusal is a *pika.Error
// (errors.Is matches pika.ErrNotFound, pika.ErrPreconditionFailed, ...),
// and closes the channel, as AMQP has it.

// ExchangeDeclare declares an exchange of kind (exchange.declare).
func (ch *Channel) ExchangeDeclare(name, kind string, opts pika.ExchangeDeclareOptions, cb func(error)) {
	if kind == "" {
		ch.push(errCb(cb, errors.New("loop: ExchangeDeclare of "+strconv.Quote(name)+" without an exchange kind")))
		return
	}
	ch.callErr(&wire.ExchangeDeclare{
		Exchange: name, Type: kind, Durable: opts.Durable, AutoDelete: opts.AutoDelete,
		Internal: opts.Internal, NoWait: opts.NoWait, Arguments: opts.Arguments,
	}, opts.NoWait, cb)
}

// ExchangeDeclarePassive checks that exchange name exists; when it does
// not, cb gets an error matching pika.ErrNotFound and the channel closes.
func (ch *Channel) ExchangeDeclarePassive(name, kind string, cb func(error)) {
	ch.callErr(&wire.ExchangeDeclare{Exchange: name, Type: kind, Passive: true}, false, cb)
}

// ExchangeDelete deletes an exchange (exchange.delete).
func (ch *Channel) ExchangeDelete(name string, opts pika.ExchangeDeleteOptions, cb func(error)) {
	ch.callErr(&wire.ExchangeDelete{Exchange: name, IfUnused: opts.IfUnused, NoWait: opts.NoWait}, opts.NoWait, cb)
}

// ExchangeBind binds exchange destination to source (exchange.bind).
func (ch *Channel) ExchangeBind(destination, source, routingKey string, opts pika.BindOptions, cb func(error)) {
	ch.callErr(&wire.ExchangeBind{Destination: destination, Source: source, RoutingKey: routingKey,
		NoWait: opts.NoWait, Arguments: opts.Arguments}, opts.NoWait, cb)
}

// ExchangeUnbind removes an exchange-to-exchange binding (exchange.unbind).
func (ch *Channel) ExchangeUnbind(destination, source, routingKey string, opts pika.BindOptions, cb func(error)) {
	ch.callErr(&wire.ExchangeUnbind{Destination: destination, Source: source, RoutingKey: routingKey,
		NoWait: opts.NoWait, Arguments: opts.Arguments}, opts.NoWait, cb)
}

// QueueDeclare declares a queue (queue.declare) and calls cb with its name
// (the broker's choice when name is empty), message and consumer counts.
// With NoWait, cb gets a Queue with only the name given.
func (ch *Channel) QueueDeclare(name string, opts pika.QueueDeclareOptions, cb func(pika.Queue, error)) {
	m := &wire.QueueDeclare{Queue: name, Durable: opts.Durable, Exclusive: opts.Exclusive,
		AutoDelete: opts.AutoDelete, NoWait: opts.NoWait, Arguments: opts.Arguments}
	ch.queueDeclare(m, cb)
}

// QueueDeclarePassive checks that queue name exists and calls cb with its
// counts; when it does not, cb gets an error matching pika.ErrNotFound and
// the channel closes.
func (ch *Channel) QueueDeclarePassive(name string, cb func(pika.Queue, error)) {
	ch.queueDeclare(&wire.QueueDeclare{Queue: name, Passive: true}, cb)
}

func (ch *Channel) queueDeclare(m *wire.QueueDeclare, cb func(pika.Queue, error)) {
	if m.NoWait {
		ch.send(m, func(err error) {
			if cb != nil {
				cb(pika.Queue{Name: m.Queue}, err)
			}
		})
		return
	}
	ch.call(m, func(ev engine.Event) func() {
		if cb == nil {
			return nil
		}
		if ev.Err != nil {
			return func() { cb(pika.Queue{}, ev.Err) }
		}
		ok, _ := ev.Method.(*wire.QueueDeclareOk)
		if ok == nil {
			return func() { cb(pika.Queue{}, unexpected(ev)) }
		}
		q := pika.Queue{Name: ok.Queue, Messages: int(ok.MessageCount), Consumers: int(ok.ConsumerCount)}
		return func() { cb(q, nil) }
	})
}

// QueueBind binds queue to exchange with routingKey (queue.bind).
func (ch *Channel) QueueBind(queue, exchange, routingKey string, opts pika.BindOptions, cb func(error)) {
	ch.callErr(&wire.QueueBind{Queue: queue, Exchange: exchange, RoutingKey: routingKey,
		NoWait: opts.NoWait, Arguments: opts.Arguments}, opts.NoWait, cb)
}

// QueueUnbind removes a binding (queue.unbind, which has no no-wait form:
// opts.NoWait is ignored).
func (ch *Channel) QueueUnbind(queue, exchange, routingKey string, opts pika.BindOptions, cb func(error)) {
	ch.callErr(&wire.QueueUnbind{Queue: queue, Exchange: exchange, RoutingKey: routingKey,
		Arguments: opts.Arguments}, false, cb)
}

// QueuePurge removes the queue's ready messages (queue.purge) and calls cb
// with how many (0 with NoWait).
func (ch *Channel) QueuePurge(name string, opts pika.PurgeOptions, cb func(int, error)) {
	ch.countCall(&wire.QueuePurge{Queue: name, NoWait: opts.NoWait}, opts.NoWait, cb)
}

// QueueDelete deletes a queue (queue.delete) and calls cb with the number
// of messages it held (0 with NoWait).
func (ch *Channel) QueueDelete(name string, opts pika.QueueDeleteOptions, cb func(int, error)) {
	ch.countCall(&wire.QueueDelete{Queue: name, IfUnused: opts.IfUnused, IfEmpty: opts.IfEmpty,
		NoWait: opts.NoWait}, opts.NoWait, cb)
}

// countCall is call for purge and delete, whose replies carry a count.
func (ch *Channel) countCall(m wire.Method, noWait bool, cb func(int, error)) {
	if noWait {
		ch.send(m, func(err error) {
			if cb != nil {
				cb(0, err)
			}
		})
		return
	}
	ch.call(m, func(ev engine.Event) func() {
		if cb == nil {
			return nil
		}
		if ev.Err != nil {
			return func() { cb(0, ev.Err) }
		}
		var n uint32
		switch ok := ev.Method.(type) {
		case *wire.QueuePurgeOk:
			n = ok.MessageCount
		case *wire.QueueDeleteOk:
			n = ok.MessageCount
		default:
			return func() { cb(0, unexpected(ev)) }
		}
		return func() { cb(int(n), nil) }
	})
}

// Qos sets the channel's prefetch limits (basic.qos); see pika.QosOptions.
// Out-of-range options, and a PrefetchSize on RabbitMQ (which would close
// the connection with NOT_IMPLEMENTED), fail without sending anything.
func (ch *Channel) Qos(opts pika.QosOptions, cb func(error)) {
	if opts.PrefetchCount < 0 || opts.PrefetchCount > math.MaxUint16 {
		ch.push(errCb(cb, fmt.Errorf("loop: Qos PrefetchCount %d out of range (0 to %d; 0 means no limit)", opts.PrefetchCount, math.MaxUint16)))
		return
	}
	if opts.PrefetchSize < 0 || int64(opts.PrefetchSize) > math.MaxUint32 {
		ch.push(errCb(cb, fmt.Errorf("loop: Qos PrefetchSize %d out of range (0 to %d; 0 means no limit)", opts.PrefetchSize, uint32(math.MaxUint32))))
		return
	}
	if opts.PrefetchSize != 0 && !ch.closed && ch.c.isRabbitMQ() {
		ch.push(errCb(cb, errors.New("loop: Qos PrefetchSize is not implemented by RabbitMQ (the broker would close the connection with 540 NOT_IMPLEMENTED); use PrefetchCount")))
		return
	}
	m := &wire.BasicQos{PrefetchCount: uint16(opts.PrefetchCount), PrefetchSize: uint32(opts.PrefetchSize), Global: opts.Global}
	ch.call(m, func(ev engine.Event) func() {
		if ev.Err == nil {
			// Recovery sets it again.
			if m.Global {
				ch.qosGlobal = m
			} else {
				ch.qos = m
			}
		}
		return errCb(cb, ev.Err)
	})
}

// isRabbitMQ reports whether the broker says it is RabbitMQ.
func (c *Conn) isRabbitMQ() bool {
	p, _ := c.ServerProperties()["product"].(string)
	return p == "RabbitMQ"
}

// Recover asks the broker to redeliver the channel's unacknowledged
// messages (basic.recover).
func (ch *Channel) Recover(requeue bool, cb func(error)) {
	ch.callErr(&wire.BasicRecover{Requeue: requeue}, false, cb)
}

// TxSelect puts the channel in transaction mode (tx.select).
func (ch *Channel) TxSelect(cb func(error)) {
	ch.call(&wire.TxSelect{}, func(ev engine.Event) func() {
		if ev.Err == nil {
			ch.tx = true // recovery selects it again
		}
		return errCb(cb, ev.Err)
	})
}

// TxCommit commits the current transaction (tx.commit). If a connection
// recovery happened since the transaction began, its work was lost with
// the old connection: TxCommit then rolls back and cb gets pika.ErrTxLost
// (committing only what came after the recovery would be wrong); do the
// work again.
func (ch *Channel) TxCommit(cb func(error)) {
	if ch.txLost {
		ch.txLost = false
		ch.callErr(&wire.TxRollback{}, false, func(err error) {
			if err == nil {
				err = pika.ErrTxLost
			}
			if cb != nil {
				cb(err)
			}
		})
		return
	}
	ch.callErr(&wire.TxCommit{}, false, cb)
}

// TxRollback abandons the current transaction (tx.rollback).
func (ch *Channel) TxRollback(cb func(error)) {
	ch.txLost = false
	ch.callErr(&wire.TxRollback{}, false, cb)
}

// errCb returns the callback that gives cb err, or nil when cb is nil.
func errCb(cb func(error), err error) func() {
	if cb == nil {
		return nil
	}
	return func() { cb(err) }
}

// unexpected is the error for a reply of the wrong type: the engine
// matches replies to requests, so it means a bug here.
func unexpected(ev engine.Event) error {
	name := "none"
	if ev.Method != nil {
		name = ev.Method.ID().String()
	}
	return fmt.Errorf("loop: internal error: unexpected reply %s", name)
}
