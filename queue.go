package pika

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/wire"
)

// Queue is a queue as the broker reported it when it was declared.
type Queue struct {
	// Name is the queue's name: the one asked for, or the name the broker
	// generated (amq.gen-...) when the declaration gave none.
	Name string
	// Messages is the number of messages ready for delivery (not counting
	// those delivered and awaiting acknowledgement).
	Messages int
	// Consumers is the number of consumers of the queue.
	Consumers int
}

// QueueDeclareOptions are the options of queue.declare. The zero value
// declares a transient, shared queue that stays when unused.
type QueueDeclareOptions struct {
	// Durable queues survive a broker restart (their persistent messages
	// too). Quorum and stream queues must be durable.
	Durable bool
	// Exclusive queues belong to the declaring connection: no other
	// connection may use them (ErrResourceLocked), and they are deleted
	// when it closes.
	Exclusive bool
	// AutoDelete deletes the queue once its last consumer is cancelled; a
	// queue that never had a consumer stays.
	AutoDelete bool
	// NoWait sends the declaration without waiting for the broker's answer:
	// the call returns once the request is queued for the socket, a refusal
	// closes the channel later (see Channel.Err), and the returned Queue
	// carries only the name (counts are zero). A server-named queue cannot
	// be declared with NoWait, since its name would be unknown.
	NoWait bool
	// Arguments are optional arguments: queue type, TTLs, length limits,
	// dead-lettering and so on. QueueArgs builds them with types and
	// checks. The call copies the table (not nested tables), so it may be
	// reused at once.
	Arguments Table
}

// QueueDeclare declares (creates if needed) the queue name and returns its
// name and counts. An empty name asks the broker for a unique generated
// name, returned in Queue.Name. Declaring an existing queue with different
// durability, exclusivity, auto-delete flag or arguments fails with a
// *Error matching ErrPreconditionFailed and closes the channel; a queue
// exclusive to another connection fails with ErrResourceLocked. The
// declaration is recorded for automatic recovery (a server-named queue gets
// a new name then; see RecoveryReport.RenamedQueues).
//
// If ctx ends before the broker's answer, QueueDeclare returns ctx.Err();
// the request stays queued or on the wire, its late answer is absorbed, and
// the queue may still be declared (it is then still recorded for recovery).
func (ch *Channel) QueueDeclare(ctx context.Context, name string, opts QueueDeclareOptions) (Queue, error) {
	if opts.NoWait && name == "" {
		return Queue{}, errors.New("pika: QueueDeclare with NoWait needs a queue name (a server-generated name would be unknown)")
	}
	m := &wire.QueueDeclare{
		Queue: name, Durable: opts.Durable, Exclusive: opts.Exclusive, AutoDelete: opts.AutoDelete,
		NoWait: opts.NoWait, Arguments: recovery.CloneTable(opts.Arguments),
	}
	ev, err := ch.topologyCall(ctx, m, opts.NoWait, func(c *Conn, ev engine.Event) {
		if opts.NoWait {
			c.topo.AddQueue(m, name, time.Now())
		} else if ok, _ := ev.Method.(*wire.QueueDeclareOk); ok != nil {
			c.topo.AddQueue(m, ok.Queue, time.Now())
		}
	})
	if err != nil || opts.NoWait {
		return Queue{Name: name}, err
	}
	return queueFromReply(ev)
}

// queueFromReply reads a queue.declare-ok.
func queueFromReply(ev engine.Event) (Queue, error) {
	ok, _ := ev.Method.(*wire.QueueDeclareOk)
	if ok == nil {
		return Queue{}, unexpectedReply("queue.declare", ev)
	}
	return Queue{Name: ok.Queue, Messages: int(ok.MessageCount), Consumers: int(ok.ConsumerCount)}, nil
}

// unexpectedReply reports a reply of the wrong kind (the engine matches
// replies to requests, so this means a bug rather than a broker fault).
func unexpectedReply(req string, ev engine.Event) error {
	got := "nothing"
	if ev.Method != nil {
		got = ev.Method.ID().Name()
	}
	return errors.New("pika: unexpected reply to " + req + ": " + got)
}

// QueueDeclarePassive checks that the queue name exists, without creating
// it, and returns its counts. A missing queue fails with a *Error matching
// ErrNotFound, and a queue exclusive to another connection with
// ErrResourceLocked; either closes the channel.
//
// If ctx ends before the broker's answer, QueueDeclarePassive returns
// ctx.Err(); the request stays queued or on the wire and its late answer
// (or the channel's closing) is absorbed.
func (ch *Channel) QueueDeclarePassive(ctx context.Context, name string) (Queue, error) {
	ev, err := ch.call(ctx, &wire.QueueDeclare{Queue: name, Passive: true})
	if err != nil {
		return Queue{}, err
	}
	return queueFromReply(ev)
}

// QueueBind binds queue to exchange with routingKey (for a direct or topic
// exchange; ignored by fanout and headers exchanges, which match on
// opts.Arguments for headers). A missing queue or exchange fails with
// ErrNotFound and closes the channel. The binding is recorded for automatic
// recovery.
//
// If ctx ends before the broker's answer, QueueBind returns ctx.Err(); the
// request stays queued or on the wire, its late answer is absorbed, and the
// binding may still be made (it is then still recorded).
func (ch *Channel) QueueBind(ctx context.Context, queue, exchange, routingKey string, opts BindOptions) error {
	m := &wire.QueueBind{Queue: queue, Exchange: exchange, RoutingKey: routingKey, NoWait: opts.NoWait, Arguments: recovery.CloneTable(opts.Arguments)}
	_, err := ch.topologyCall(ctx, m, opts.NoWait, func(c *Conn, _ engine.Event) {
		c.topo.AddBinding(&recovery.Binding{Destination: queue, Source: exchange, Key: routingKey, Args: m.Arguments})
	})
	return err
}

// QueueUnbind removes a binding made with QueueBind; routingKey and
// opts.Arguments must be those of the binding. RabbitMQ answers success for a
// binding that does not exist. The binding is forgotten by automatic
// recovery. queue.unbind has no no-wait variant: opts.NoWait set fails with
// ErrUnbindNoWait and sends nothing.
//
// If ctx ends before the broker's answer, QueueUnbind returns ctx.Err(); the
// request stays queued or on the wire, its late answer is absorbed, and the
// binding may still be removed.
func (ch *Channel) QueueUnbind(ctx context.Context, queue, exchange, routingKey string, opts BindOptions) error {
	if opts.NoWait {
		return ErrUnbindNoWait
	}
	m := &wire.QueueUnbind{Queue: queue, Exchange: exchange, RoutingKey: routingKey, Arguments: recovery.CloneTable(opts.Arguments)}
	_, err := ch.topologyCall(ctx, m, false, func(c *Conn, _ engine.Event) {
		c.topo.RemoveBinding(&recovery.Binding{Destination: queue, Source: exchange, Key: routingKey, Args: m.Arguments})
	})
	return err
}

// ErrUnbindNoWait is the error of QueueUnbind with BindOptions.NoWait set:
// AMQP's queue.unbind always has an answer, so the call cannot return
// before it.
var ErrUnbindNoWait = errors.New("pika: QueueUnbind: queue.unbind has no no-wait form (BindOptions.NoWait must be false)")

// PurgeOptions are the options of queue.purge.
type PurgeOptions struct {
	// NoWait sends the request without waiting for the broker's answer;
	// the count returned is then 0.
	NoWait bool
}

// QueuePurge removes every message ready in queue name (not those
// delivered and awaiting acknowledgement) and returns how many it removed.
// A missing queue fails with ErrNotFound and closes the channel.
//
// If ctx ends before the broker's answer, QueuePurge returns ctx.Err(); the
// request stays queued or on the wire, its late answer is absorbed, and the
// queue may still be purged.
func (ch *Channel) QueuePurge(ctx context.Context, name string, opts PurgeOptions) (int, error) {
	m := &wire.QueuePurge{Queue: name, NoWait: opts.NoWait}
	if opts.NoWait {
		return 0, ch.sendNoWait(ctx, m)
	}
	ev, err := ch.call(ctx, m)
	if err != nil {
		return 0, err
	}
	ok, _ := ev.Method.(*wire.QueuePurgeOk)
	if ok == nil {
		return 0, unexpectedReply("queue.purge", ev)
	}
	return int(ok.MessageCount), nil
}

// QueueDeleteOptions are the options of queue.delete.
type QueueDeleteOptions struct {
	// IfUnused deletes the queue only if it has no consumers; otherwise the
	// broker refuses with ErrPreconditionFailed and closes the channel.
	IfUnused bool
	// IfEmpty deletes the queue only if it has no messages; otherwise the
	// broker refuses with ErrPreconditionFailed and closes the channel.
	IfEmpty bool
	// NoWait sends the request without waiting for the broker's answer;
	// the count returned is then 0.
	NoWait bool
}

// QueueDelete deletes the queue name, with its bindings and messages, and
// returns how many messages it held. Its consumers are cancelled by the
// broker (Consumer.Err returns ErrConsumerCancelled). RabbitMQ answers
// success, with a count of 0, for a queue that does not exist. The queue
// and its bindings are forgotten by automatic recovery.
//
// If ctx ends before the broker's answer, QueueDelete returns ctx.Err(); the
// request stays queued or on the wire, its late answer is absorbed, and the
// queue may still be deleted.
func (ch *Channel) QueueDelete(ctx context.Context, name string, opts QueueDeleteOptions) (int, error) {
	m := &wire.QueueDelete{Queue: name, IfUnused: opts.IfUnused, IfEmpty: opts.IfEmpty, NoWait: opts.NoWait}
	ev, err := ch.topologyCall(ctx, m, opts.NoWait, func(c *Conn, _ engine.Event) { c.topo.RemoveQueue(name) })
	if err != nil || opts.NoWait {
		return 0, err
	}
	ok, _ := ev.Method.(*wire.QueueDeleteOk)
	if ok == nil {
		return 0, unexpectedReply("queue.delete", ev)
	}
	return int(ok.MessageCount), nil
}

// quoteName quotes a queue or exchange name for an error message.
func quoteName(name string) string { return strconv.Quote(name) }
