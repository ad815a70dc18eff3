package conformance

import (
	"fmt"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Scenarios of exchange declaration, deletion and bindings.

func exDeclareKinds(e *Env) {
	_, ch := e.Open()
	for _, kind := range []string{pika.ExchangeDirect, pika.ExchangeFanout, pika.ExchangeTopic, pika.ExchangeHeaders} {
		x := e.Exchange(ch, kind, kind, pika.ExchangeDeclareOptions{})
		e.Must(ch.ExchangeDeclarePassive(e.Ctx, x), "passive declare "+x)
		e.Must(ch.ExchangeDeclare(e.Ctx, x, kind, pika.ExchangeDeclareOptions{}), "redeclare "+x)
	}
}

// redeclareMismatch declares a direct exchange, declares it again with
// kind and opts, and checks RabbitMQ's 406 inequivalent-arg close for arg.
func redeclareMismatch(e *Env, kind string, opts pika.ExchangeDeclareOptions, arg, values string) {
	e.T.Helper()
	c, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	err := ch.ExchangeDeclare(e.Ctx, x, kind, opts)
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - inequivalent arg '%s' for exchange '%s' in vhost '%s'%s", arg, x, e.Vhost(), values))
}

func exRedeclareType(e *Env) {
	redeclareMismatch(e, pika.ExchangeFanout, pika.ExchangeDeclareOptions{}, "type", ": received 'fanout' but current is 'direct'")
}

func exRedeclareDurable(e *Env) {
	redeclareMismatch(e, pika.ExchangeDirect, pika.ExchangeDeclareOptions{Durable: true}, "durable", ": received 'true' but current is 'false'")
}

func exRedeclareAutoDelete(e *Env) {
	redeclareMismatch(e, pika.ExchangeDirect, pika.ExchangeDeclareOptions{AutoDelete: true}, "auto_delete", ": received 'true' but current is 'false'")
}

func exRedeclareInternal(e *Env) {
	redeclareMismatch(e, pika.ExchangeDirect, pika.ExchangeDeclareOptions{Internal: true}, "internal", ": received 'true' but current is 'false'")
}

func exRedeclareAE(e *Env) {
	redeclareMismatch(e, pika.ExchangeDirect, pika.ExchangeDeclareOptions{Arguments: pika.Table{"alternate-exchange": "ae"}}, "alternate-exchange", ": received the value 'ae' of type 'longstr' but current is none")
}

func exPassiveMissing(e *Env) {
	c, ch := e.Open()
	x := e.Name("missing")
	err := ch.ExchangeDeclarePassive(e.Ctx, x)
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundExchange(x))
}

func exPassiveIgnoresType(e *Env) {
	_, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeTopic, pika.ExchangeDeclareOptions{})
	e.Must(ch.ExchangeDeclarePassive(e.Ctx, x), "passive declare with an empty kind of a topic exchange")
}

func exDeclareDefault(e *Env) {
	c, ch := e.Open()
	err := ch.ExchangeDeclare(e.Ctx, "", pika.ExchangeDirect, pika.ExchangeDeclareOptions{Durable: true})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
}

func exPassiveDefault(e *Env) {
	c, ch := e.Open()
	err := ch.ExchangeDeclarePassive(e.Ctx, "")
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
}

func exDeleteDefault(e *Env) {
	c, ch := e.Open()
	err := ch.ExchangeDelete(e.Ctx, "", pika.ExchangeDeleteOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
}

func exBindDefault(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	err := ch.QueueBind(e.Ctx, q, "", "k", pika.BindOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
}

func exUnbindDefault(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	err := ch.QueueUnbind(e.Ctx, q, "", q, pika.BindOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
}

func exBindToDefaultE2E(e *Env) {
	c, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	err := ch.ExchangeBind(e.Ctx, "", x, "", pika.BindOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
}

func exDeclareReserved(e *Env) {
	c, ch := e.Open()
	x := "amq." + e.Name("x")
	err := ch.ExchangeDeclare(e.Ctx, x, pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, fmt.Sprintf(
		"ACCESS_REFUSED - exchange name '%s' contains reserved prefix 'amq.*'", x))
	e.ExchangeGone(c, x)
}

func exRedeclareAmqDirect(e *Env) {
	_, ch := e.Open()
	e.Must(ch.ExchangeDeclare(e.Ctx, "amq.direct", pika.ExchangeDirect, pika.ExchangeDeclareOptions{Durable: true}),
		"declare amq.direct with its own properties")
}

func exRedeclareAmqMismatch(e *Env) {
	c, ch := e.Open()
	err := ch.ExchangeDeclare(e.Ctx, "amq.fanout", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.fanout' in vhost '%s': received 'false' but current is 'true'", e.Vhost()))
}

func exPredeclared(e *Env) {
	_, ch := e.Open()
	for _, x := range []string{"amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} {
		e.Must(ch.ExchangeDeclarePassive(e.Ctx, x), "passive declare "+x)
	}
}

func exDeleteReserved(e *Env) {
	c, ch := e.Open()
	err := ch.ExchangeDelete(e.Ctx, "amq.direct", pika.ExchangeDeleteOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, fmt.Sprintf(
		"ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '%s' not allowed", e.Vhost()))
}

func exUnknownType(e *Env) {
	c, ch := e.Open()
	x := e.Name("x")
	e.TrackExchange(x)
	err := ch.ExchangeDeclare(e.Ctx, x, "no-such-kind", pika.ExchangeDeclareOptions{})
	e.ConnClosed(c, err, wire.ReplyCommandInvalid, "COMMAND_INVALID - unknown exchange type 'no-such-kind'")
}

func exDeleteMissing(e *Env) {
	_, ch := e.Open()
	e.Must(ch.ExchangeDelete(e.Ctx, e.Name("missing"), pika.ExchangeDeleteOptions{}), "delete a missing exchange")
	e.Must(ch.ExchangeDelete(e.Ctx, e.Name("missing"), pika.ExchangeDeleteOptions{IfUnused: true}), "delete a missing exchange if unused")
}

func exDeleteIfUnused(e *Env) {
	c, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Bind(ch, q, x, "k", nil)
	err := ch.ExchangeDelete(e.Ctx, x, pika.ExchangeDeleteOptions{IfUnused: true})
	e.ChannelClosed(c, ch, err, wire.ReplyPreconditionFailed, fmt.Sprintf(
		"PRECONDITION_FAILED - exchange '%s' in vhost '%s' in use", x, e.Vhost()))
}

func exDeleteIfUnusedE2ESource(e *Env) {
	c, ch := e.Open()
	src := e.Exchange(ch, "src", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	dst := e.Exchange(ch, "dst", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	e.Must(ch.ExchangeBind(e.Ctx, dst, src, "", pika.BindOptions{}), "exchange.bind")
	// The destination of an exchange binding counts as unused...
	e.Must(ch.ExchangeDelete(e.Ctx, dst, pika.ExchangeDeleteOptions{IfUnused: true}), "delete the destination if unused")
	e.ExchangeGone(c, dst)
	// ...and its deletion removed the binding, so the source is unused too.
	e.Must(ch.ExchangeDelete(e.Ctx, src, pika.ExchangeDeleteOptions{IfUnused: true}), "delete the source if unused")
}

func exDeleteRemovesBindings(e *Env) {
	c, ch := e.Open()
	cch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Bind(ch, q, x, "k", nil)
	e.Must(ch.ExchangeDelete(e.Ctx, x, pika.ExchangeDeleteOptions{}), "exchange.delete")
	e.Must(ch.ExchangeDeclare(e.Ctx, x, pika.ExchangeDirect, pika.ExchangeDeclareOptions{}), "declare again")
	e.PublishSync(cch, x, "k", Body("m"))
	e.GetEmpty(ch, q)
}

func exPublishMissing(e *Env) {
	c, ch := e.Open()
	x := e.Name("missing")
	e.Publish(ch, x, "k", Body("m"))
	_, _, err := ch.Get(e.Ctx, e.Name("any"), pika.GetOptions{AutoAck: true})
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundExchange(x))
}

func exPublishInternal(e *Env) {
	c, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeFanout, pika.ExchangeDeclareOptions{Internal: true})
	e.Publish(ch, x, "k", Body("m"))
	err := ch.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 1})
	e.ChannelClosed(c, ch, err, wire.ReplyAccessRefused, fmt.Sprintf(
		"ACCESS_REFUSED - cannot publish to internal exchange '%s' in vhost '%s'", x, e.Vhost()))
}

func exInternalViaE2E(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	pub := e.Exchange(ch, "pub", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	in := e.Exchange(ch, "internal", pika.ExchangeFanout, pika.ExchangeDeclareOptions{Internal: true})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Must(ch.ExchangeBind(e.Ctx, in, pub, "", pika.BindOptions{}), "exchange.bind")
	e.Bind(ch, q, in, "", nil)
	e.PublishSync(ch, pub, "k", Body("through"))
	e.GetBody(ch, q, "through")
}

func exAutoDelete(e *Env) {
	c, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{AutoDelete: true})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Bind(ch, q, x, "a", nil)
	e.Bind(ch, q, x, "b", nil)
	e.Must(ch.QueueUnbind(e.Ctx, q, x, "a", pika.BindOptions{}), "unbind a")
	e.Must(ch.ExchangeDeclarePassive(e.Ctx, x), "exchange still bound once")
	e.Must(ch.QueueUnbind(e.Ctx, q, x, "b", pika.BindOptions{}), "unbind b")
	e.ExchangeGone(c, x)
}

func exAutoDeleteNeverBound(e *Env) {
	_, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{AutoDelete: true})
	e.Must(ch.ExchangeDeclarePassive(e.Ctx, x), "an auto-delete exchange never bound stays")
}

func exAutoDeleteQueueDeleted(e *Env) {
	c, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeFanout, pika.ExchangeDeclareOptions{AutoDelete: true})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Bind(ch, q, x, "", nil)
	_, err := ch.QueueDelete(e.Ctx, q, pika.QueueDeleteOptions{})
	e.Must(err, "queue.delete")
	e.ExchangeGone(c, x)
}

func exBindMissingQueue(e *Env) {
	c, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	q := e.Name("missing")
	err := ch.QueueBind(e.Ctx, q, x, "k", pika.BindOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundQueue(q))
}

func exBindMissingExchange(e *Env) {
	c, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	x := e.Name("missing")
	err := ch.QueueBind(e.Ctx, q, x, "k", pika.BindOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundExchange(x))
}

func exUnbindMissingBinding(e *Env) {
	_, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Must(ch.QueueUnbind(e.Ctx, q, x, "never-bound", pika.BindOptions{}), "unbind a binding that does not exist")
}

func exUnbindMissingQueue(e *Env) {
	_, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	e.Must(ch.QueueUnbind(e.Ctx, e.Name("missing"), x, "k", pika.BindOptions{}), "unbind from a missing queue")
}

func exBindTwice(e *Env) {
	c, ch := e.Open()
	cch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Bind(ch, q, x, "k", nil)
	e.Bind(ch, q, x, "k", nil)
	e.PublishSync(cch, x, "k", Body("once"))
	e.GetBody(ch, q, "once")
	e.GetEmpty(ch, q)
	// One unbind removes the one binding.
	e.Must(ch.QueueUnbind(e.Ctx, q, x, "k", pika.BindOptions{}), "unbind")
	e.PublishSync(cch, x, "k", Body("none"))
	e.GetEmpty(ch, q)
}

func exE2EBinding(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	src := e.Exchange(ch, "src", pika.ExchangeTopic, pika.ExchangeDeclareOptions{})
	dst := e.Exchange(ch, "dst", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Must(ch.ExchangeBind(e.Ctx, dst, src, "a.*", pika.BindOptions{}), "exchange.bind")
	e.Bind(ch, q, dst, "a.b", nil)
	e.PublishSync(ch, src, "a.b", Body("1"))
	e.PublishSync(ch, src, "a.c", Body("2")) // through src, not through dst
	e.PublishSync(ch, src, "x.b", Body("3")) // not through src
	e.GetBody(ch, q, "1")
	e.GetEmpty(ch, q)
	e.Must(ch.ExchangeUnbind(e.Ctx, dst, src, "a.*", pika.BindOptions{}), "exchange.unbind")
	e.PublishSync(ch, src, "a.b", Body("4"))
	e.GetEmpty(ch, q)
}

func exE2ECycle(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	a := e.Exchange(ch, "a", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	b := e.Exchange(ch, "b", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Must(ch.ExchangeBind(e.Ctx, b, a, "", pika.BindOptions{}), "bind b to a")
	e.Must(ch.ExchangeBind(e.Ctx, a, b, "", pika.BindOptions{}), "bind a to b")
	e.Bind(ch, q, a, "", nil)
	e.Bind(ch, q, b, "", nil)
	e.PublishSync(ch, a, "k", Body("once"))
	e.GetBody(ch, q, "once")
	e.GetEmpty(ch, q)
}

func exE2EMissing(e *Env) {
	c, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	missing := e.Name("missing")
	err := ch.ExchangeBind(e.Ctx, missing, x, "", pika.BindOptions{})
	e.ChannelClosed(c, ch, err, wire.ReplyNotFound, e.NotFoundExchange(missing))
}

func exAlternate(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	ae := e.Exchange(ch, "ae", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{Arguments: pika.Table{"alternate-exchange": ae}})
	routed := e.Queue(ch, "routed", pika.QueueDeclareOptions{})
	unrouted := e.Queue(ch, "unrouted", pika.QueueDeclareOptions{})
	e.Bind(ch, routed, x, "k", nil)
	e.Bind(ch, unrouted, ae, "", nil)
	e.PublishSync(ch, x, "k", Body("routed"))
	// Mandatory, but the alternate exchange takes it: no basic.return.
	e.PublishSync(ch, x, "other", pika.Message{Body: []byte("alternate"), Mandatory: true})
	e.GetBody(ch, routed, "routed")
	e.GetEmpty(ch, routed)
	d := e.GetBody(ch, unrouted, "alternate")
	Equal(e, "exchange of the alternate delivery", d.Exchange, x)
	Equal(e, "routing key of the alternate delivery", d.RoutingKey, "other")
}

func exAlternateMissing(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{Arguments: pika.Table{"alternate-exchange": e.Name("missing")}})
	err := e.Confirmed(ch, x, "k", pika.Message{Body: []byte("m"), Mandatory: true})
	if r := returned(e, err); r.ReplyCode != wire.ReplyNoRoute {
		e.T.Fatalf("return code %d, want 312", r.ReplyCode)
	}
}

func exAlternateUnroutable(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	ae := e.Exchange(ch, "ae", pika.ExchangeDirect, pika.ExchangeDeclareOptions{})
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{Arguments: pika.Table{"alternate-exchange": ae}})
	err := e.Confirmed(ch, x, "k", pika.Message{Body: []byte("m"), Mandatory: true})
	returned(e, err)
}

func exAlternateChain(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	ae2 := e.Exchange(ch, "ae2", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	ae1 := e.Exchange(ch, "ae1", pika.ExchangeDirect, pika.ExchangeDeclareOptions{Arguments: pika.Table{"alternate-exchange": ae2}})
	x := e.Exchange(ch, "x", pika.ExchangeDirect, pika.ExchangeDeclareOptions{Arguments: pika.Table{"alternate-exchange": ae1}})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Bind(ch, q, ae2, "", nil)
	e.PublishSync(ch, x, "k", Body("m"))
	e.GetBody(ch, q, "m")
}
