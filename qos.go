package pika

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// QosOptions are the options of basic.qos: how many unacknowledged
// deliveries the broker may have outstanding. The zero value removes the
// limit.
//
// On RabbitMQ, Global selects what the limit applies to (which differs from
// the AMQP specification, where it would select the channel or the
// connection):
//
//   - Global false: the limit applies to each consumer separately, and only
//     to consumers started on the channel after the call.
//   - Global true: the limit is shared by all consumers on the channel.
//     Quorum queues do not support it: use per-consumer limits for them.
//
// Both may be set on one channel; each delivery then respects both.
type QosOptions struct {
	// PrefetchCount is the maximum number of unacknowledged deliveries,
	// 0 to 65535; 0 means no limit. Deliveries of AutoAck consumers are
	// not counted.
	PrefetchCount int
	// PrefetchSize is the maximum total body size in bytes of
	// unacknowledged deliveries, 0 to 4294967295; 0 means no limit.
	// RabbitMQ does not implement it (it would close the whole connection
	// with 540 NOT_IMPLEMENTED), so Qos refuses a non-zero size on a
	// RabbitMQ connection without sending anything.
	PrefetchSize int
	// Global shares the limit across the channel rather than per consumer;
	// see QosOptions.
	Global bool
}

// method checks the ranges of the fields and builds the basic.qos.
func (o QosOptions) method() (*wire.BasicQos, error) {
	if o.PrefetchCount < 0 || o.PrefetchCount > math.MaxUint16 {
		return nil, fmt.Errorf("pika: Qos PrefetchCount %d out of range (0 to %d; 0 means no limit)", o.PrefetchCount, math.MaxUint16)
	}
	if o.PrefetchSize < 0 || int64(o.PrefetchSize) > math.MaxUint32 {
		return nil, fmt.Errorf("pika: Qos PrefetchSize %d out of range (0 to %d; 0 means no limit)", o.PrefetchSize, uint32(math.MaxUint32))
	}
	return &wire.BasicQos{PrefetchCount: uint16(o.PrefetchCount), PrefetchSize: uint32(o.PrefetchSize), Global: o.Global}, nil
}

// errPrefetchSizeRabbitMQ refuses a prefetch size on RabbitMQ, which would
// close the connection.
var errPrefetchSizeRabbitMQ = errors.New("pika: Qos PrefetchSize is not implemented by RabbitMQ (the broker would close the connection with 540 NOT_IMPLEMENTED); use PrefetchCount")

// Qos sets the channel's prefetch limit (basic.qos): how many deliveries
// (and, on brokers that support it, how many body bytes) the broker sends
// before it waits for acknowledgements. It is the main tool to spread work
// over several consumers and to bound what a consumer buffers; see
// QosOptions for RabbitMQ's meaning of Global. Out-of-range options fail
// without sending anything. The setting is restored by automatic recovery.
//
// If ctx ends before the broker's answer, Qos returns ctx.Err(); the
// request stays queued or on the wire, its late answer is absorbed, and the
// limit may still take effect (it is then still restored by recovery).
func (ch *Channel) Qos(ctx context.Context, opts QosOptions) error {
	m, err := opts.method()
	if err != nil {
		return err
	}
	if m.PrefetchSize != 0 && ch.conn.isRabbitMQ() {
		return errPrefetchSizeRabbitMQ
	}
	record := func() {
		cp := *m
		if m.Global {
			ch.qosGlobal = &cp
		} else {
			ch.qos = &cp
		}
	}
	if _, err := ch.callLate(ctx, m, func(engine.Event) { record() }); err != nil {
		return err
	}
	ch.conn.mu.Lock()
	record()
	ch.conn.mu.Unlock()
	return nil
}

// isRabbitMQ reports whether the broker says it is RabbitMQ.
func (c *Conn) isRabbitMQ() bool {
	p, _ := c.ServerProperties()["product"].(string)
	return p == "RabbitMQ"
}

// Recover asks the broker to redeliver every message delivered on this
// channel and not yet acknowledged (basic.recover). With requeue true the
// messages go back to their queues and may be delivered to any consumer,
// flagged Redelivered; requeue false (redeliver to the original consumers
// only) is refused by RabbitMQ with 540 NOT_IMPLEMENTED, which closes the
// connection, so Recover refuses it on a RabbitMQ connection without
// sending anything. Delivery tags received before the call are no longer
// valid afterwards: acknowledging one fails with a channel error, so drop
// such deliveries (they come again with new tags).
//
// If ctx ends before the broker's answer, Recover returns ctx.Err(); the
// request stays queued or on the wire, its late answer is absorbed, and the
// messages may still be redelivered.
func (ch *Channel) Recover(ctx context.Context, requeue bool) error {
	if !requeue && ch.conn.isRabbitMQ() {
		return errors.New("pika: Recover with requeue false is not implemented by RabbitMQ (the broker would close the connection with 540 NOT_IMPLEMENTED)")
	}
	_, err := ch.call(ctx, &wire.BasicRecover{Requeue: requeue})
	return err
}

// TxSelect puts the channel in transaction mode (tx.select): from then on,
// messages published and acknowledgements sent on the channel take effect
// only when TxCommit is called, and are discarded by TxRollback. A channel
// in confirm mode cannot use transactions, nor the reverse (the broker
// refuses with ErrPreconditionFailed and closes the channel). Transactions
// are slow on RabbitMQ; publisher confirms (ConfirmSelect) are usually the
// better way to know that messages arrived. The mode is restored by
// automatic recovery, but an open transaction is not: what was published
// or acknowledged in it before a connection loss is lost with it.
//
// If ctx ends before the broker's answer, TxSelect returns ctx.Err(); the
// request stays queued or on the wire, its late answer is absorbed, and the
// channel may still enter transaction mode (it is then still restored by
// recovery).
func (ch *Channel) TxSelect(ctx context.Context) error {
	record := func() { ch.tx = true }
	if _, err := ch.callLate(ctx, &wire.TxSelect{}, func(engine.Event) { record() }); err != nil {
		return err
	}
	ch.conn.mu.Lock()
	record()
	ch.conn.mu.Unlock()
	return nil
}

// TxCommit commits the current transaction (tx.commit): the messages
// published and the acknowledgements sent since TxSelect or the last
// TxCommit or TxRollback take effect, and a new transaction begins. On a
// channel not in transaction mode the broker refuses with
// ErrPreconditionFailed and closes the channel.
//
// If a connection recovery happened since the transaction began, its work
// was lost with the old connection: TxCommit then fails with ErrTxLost
// (committing only what came after the recovery would be wrong) and the
// channel starts a new transaction; do the work again.
//
// If ctx ends before the broker's answer, TxCommit returns ctx.Err(); the
// commit stays queued or on the wire and its late answer is absorbed: the
// transaction may or may not have been committed.
func (ch *Channel) TxCommit(ctx context.Context) error {
	if ch.takeTxLost() {
		if err := ch.TxRollback(ctx); err != nil {
			return err
		}
		return ErrTxLost
	}
	_, err := ch.call(ctx, &wire.TxCommit{})
	return err
}

// ErrTxLost is returned by TxCommit when a connection recovery happened
// during the transaction: what it published and acknowledged before the
// recovery was lost.
var ErrTxLost = errors.New("pika: transaction lost in a connection recovery (nothing committed; do the work again)")

// takeTxLost reports and clears the flag recovery sets on a channel in
// transaction mode.
func (ch *Channel) takeTxLost() bool {
	ch.conn.mu.Lock()
	defer ch.conn.mu.Unlock()
	lost := ch.txLost
	ch.txLost = false
	return lost
}

// TxRollback discards the current transaction (tx.rollback): the messages
// published and the acknowledgements sent since TxSelect or the last
// TxCommit or TxRollback are dropped, and a new transaction begins. Messages
// whose acknowledgements are rolled back stay unacknowledged (they are not
// redelivered until the channel closes or Recover is called). On a channel
// not in transaction mode the broker refuses with ErrPreconditionFailed and
// closes the channel.
//
// If ctx ends before the broker's answer, TxRollback returns ctx.Err(); the
// rollback stays queued or on the wire and its late answer is absorbed: the
// transaction may or may not have been rolled back.
func (ch *Channel) TxRollback(ctx context.Context) error {
	ch.takeTxLost()
	_, err := ch.call(ctx, &wire.TxRollback{})
	return err
}
