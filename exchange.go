package pika

import (
	"context"
	"errors"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/wire"
)

// Exchange kinds built into RabbitMQ, for ExchangeDeclare. Plugins add
// others (for example "x-consistent-hash" or "x-delayed-message"); pass
// their names as they are.
const (
	ExchangeDirect  = "direct"  // routes on an exact routing-key match
	ExchangeFanout  = "fanout"  // routes to every bound queue, ignoring the key
	ExchangeTopic   = "topic"   // routes on dot-separated key patterns with * and #
	ExchangeHeaders = "headers" // routes on message headers (x-match any/all)
)

// ExchangeDeclareOptions are the options of exchange.declare. The zero value
// declares a transient exchange that stays when unused.
type ExchangeDeclareOptions struct {
	// Durable exchanges survive a broker restart.
	Durable bool
	// AutoDelete deletes the exchange once its last binding (to a queue or
	// exchange) is removed; an exchange never bound stays.
	AutoDelete bool
	// Internal exchanges cannot be published to by clients, only bound to
	// other exchanges (exchange-to-exchange bindings).
	Internal bool
	// NoWait sends the declaration without waiting for the broker's answer:
	// the call returns once the request is queued for the socket, and a
	// refusal closes the channel later (see Channel.Err).
	NoWait bool
	// Arguments are extra arguments, e.g. "alternate-exchange". The call
	// copies the table (not nested tables), so it may be reused at once.
	Arguments Table
}

// ExchangeDeclare declares (creates if needed) the exchange name of the given
// kind (ExchangeDirect, ExchangeFanout, ExchangeTopic, ExchangeHeaders or a
// plugin's kind). Declaring an existing exchange with different kind,
// durability, auto-delete, internal flag or arguments fails with a *Error
// matching ErrPreconditionFailed and closes the channel; names starting
// with "amq." are reserved (ErrAccessRefused). The declaration is recorded
// for automatic recovery.
//
// If ctx ends before the broker's answer, ExchangeDeclare returns
// ctx.Err(); the request stays queued or on the wire, its late answer is
// absorbed, and the exchange may still be declared (it is then still
// recorded for recovery).
func (ch *Channel) ExchangeDeclare(ctx context.Context, name, kind string, opts ExchangeDeclareOptions) error {
	if kind == "" {
		return errors.New("pika: ExchangeDeclare of " + quoteName(name) + " without an exchange kind")
	}
	m := &wire.ExchangeDeclare{
		Exchange: name, Type: kind, Durable: opts.Durable, AutoDelete: opts.AutoDelete,
		Internal: opts.Internal, NoWait: opts.NoWait, Arguments: recovery.CloneTable(opts.Arguments),
	}
	_, err := ch.topologyCall(ctx, m, opts.NoWait, func(c *Conn, _ engine.Event) { c.topo.AddExchange(m) })
	return err
}

// ExchangeDeclarePassive checks that the exchange name exists, without
// creating it. A missing exchange fails with a *Error matching ErrNotFound,
// and the broker closes the channel. The exchange's kind is not checked
// (RabbitMQ ignores the kind of a passive declare).
//
// If ctx ends before the broker's answer, ExchangeDeclarePassive returns
// ctx.Err(); the request stays queued or on the wire and its late answer
// (or the channel's closing, for a missing exchange) is absorbed.
func (ch *Channel) ExchangeDeclarePassive(ctx context.Context, name string) error {
	_, err := ch.call(ctx, &wire.ExchangeDeclare{Exchange: name, Passive: true})
	return err
}

// ExchangeDeleteOptions are the options of exchange.delete.
type ExchangeDeleteOptions struct {
	// IfUnused deletes the exchange only if it has no bindings; otherwise
	// the broker refuses with ErrPreconditionFailed and closes the channel.
	IfUnused bool
	// NoWait sends the request without waiting for the broker's answer.
	NoWait bool
}

// ExchangeDelete deletes the exchange name and its bindings. RabbitMQ
// answers success for an exchange that does not exist. The exchange and its
// bindings are forgotten by automatic recovery.
//
// If ctx ends before the broker's answer, ExchangeDelete returns ctx.Err();
// the request stays queued or on the wire, its late answer is absorbed, and
// the exchange may still be deleted.
func (ch *Channel) ExchangeDelete(ctx context.Context, name string, opts ExchangeDeleteOptions) error {
	m := &wire.ExchangeDelete{Exchange: name, IfUnused: opts.IfUnused, NoWait: opts.NoWait}
	_, err := ch.topologyCall(ctx, m, opts.NoWait, func(c *Conn, _ engine.Event) { c.topo.RemoveExchange(name) })
	return err
}

// BindOptions are the options of queue.bind, queue.unbind, exchange.bind
// and exchange.unbind.
type BindOptions struct {
	// NoWait sends the request without waiting for the broker's answer: the
	// call returns once the request is queued for the socket, and a refusal
	// closes the channel later (see Channel.Err). QueueUnbind refuses it
	// (queue.unbind has no no-wait form).
	NoWait bool
	// Arguments are the binding's arguments, e.g. the header match of a
	// headers exchange ("x-match": "all", ...). To remove a binding, pass
	// the same arguments it was made with. The call copies the table (not
	// nested tables), so it may be reused at once.
	Arguments Table
}

// ExchangeBind binds exchange destination to exchange source (a RabbitMQ
// extension): messages routed by source with a matching routingKey are
// routed on by destination. A missing exchange fails with ErrNotFound and
// closes the channel. The binding is recorded for automatic recovery.
//
// If ctx ends before the broker's answer, ExchangeBind returns ctx.Err();
// the request stays queued or on the wire, its late answer is absorbed, and
// the binding may still be made (it is then still recorded).
func (ch *Channel) ExchangeBind(ctx context.Context, destination, source, routingKey string, opts BindOptions) error {
	m := &wire.ExchangeBind{Destination: destination, Source: source, RoutingKey: routingKey, NoWait: opts.NoWait, Arguments: recovery.CloneTable(opts.Arguments)}
	_, err := ch.topologyCall(ctx, m, opts.NoWait, func(c *Conn, _ engine.Event) {
		c.topo.AddBinding(&recovery.Binding{ToExchange: true, Destination: destination, Source: source, Key: routingKey, Args: m.Arguments})
	})
	return err
}

// ExchangeUnbind removes a binding made with ExchangeBind; routingKey and
// opts.Arguments must be those of the binding. RabbitMQ answers success for
// a binding that does not exist. The binding is forgotten by automatic
// recovery.
//
// If ctx ends before the broker's answer, ExchangeUnbind returns ctx.Err();
// the request stays queued or on the wire, its late answer is absorbed, and
// the binding may still be removed.
func (ch *Channel) ExchangeUnbind(ctx context.Context, destination, source, routingKey string, opts BindOptions) error {
	m := &wire.ExchangeUnbind{Destination: destination, Source: source, RoutingKey: routingKey, NoWait: opts.NoWait, Arguments: recovery.CloneTable(opts.Arguments)}
	_, err := ch.topologyCall(ctx, m, opts.NoWait, func(c *Conn, _ engine.Event) {
		c.topo.RemoveBinding(&recovery.Binding{ToExchange: true, Destination: destination, Source: source, Key: routingKey, Args: m.Arguments})
	})
	return err
}

// topologyCall sends a method that declares, binds or deletes, and on
// success runs record (under the connection's lock) to keep the topology
// that recovery restores. With noWait the method is sent without waiting
// for an answer and recorded at once. When ctx ends before the answer, a
// late successful answer still runs record.
func (ch *Channel) topologyCall(ctx context.Context, m wire.Method, noWait bool, record func(c *Conn, ev engine.Event)) (engine.Event, error) {
	c := ch.conn
	if noWait {
		if err := ch.sendNoWait(ctx, m); err != nil {
			return engine.Event{}, err
		}
		c.mu.Lock()
		record(c, engine.Event{})
		c.mu.Unlock()
		return engine.Event{}, nil
	}
	ev, err := ch.callLate(ctx, m, func(ev engine.Event) { record(c, ev) })
	if err != nil {
		return engine.Event{}, err
	}
	c.mu.Lock()
	record(c, ev)
	c.mu.Unlock()
	return ev, nil
}

// sendNoWait sends the no-wait variant of a synchronous method, unless ctx
// has already ended; ctx also bounds a wait for a recovery in progress.
func (ch *Channel) sendNoWait(ctx context.Context, m wire.Method) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return ch.sendCtx(ctx, m)
}
