package pikatest

import (
	"crypto/rand"
	"encoding/base64"
	"strings"

	"github.com/pika-go/pika/pikatest/internal/route"
	"github.com/pika-go/pika/wire"
)

// This file holds the topology of a virtual host: exchanges, queues and
// bindings, their declaration and deletion rules and message routing. It
// does not know about connections or frames; the broker's lock guards it.

// vhost is one virtual host.
type vhost struct {
	b         *Broker
	name      string
	exchanges map[string]*exchange
	queues    map[string]*queue
}

// exchange is one exchange; bindings are those it is the source of.
type exchange struct {
	name       string
	kind       string
	durable    bool
	autoDelete bool
	internal   bool
	args       wire.Table
	bindings   []*binding
	// inbound counts bindings whose destination is this exchange.
	inbound int
}

// binding routes from src to a queue or to another exchange.
type binding struct {
	src   *exchange
	queue *queue
	dest  *exchange
	key   string
	args  wire.Table
}

func newVHost(b *Broker, name string) *vhost {
	vh := &vhost{b: b, name: name, exchanges: map[string]*exchange{}, queues: map[string]*queue{}}
	vh.addDefaultExchanges()
	return vh
}

// addDefaultExchanges declares the default exchange and the amq.* ones.
func (vh *vhost) addDefaultExchanges() {
	for name, kind := range map[string]string{
		"": route.Direct, "amq.direct": route.Direct, "amq.fanout": route.Fanout,
		"amq.topic": route.Topic, "amq.headers": route.Headers, "amq.match": route.Headers,
	} {
		if vh.exchanges[name] == nil {
			vh.exchanges[name] = &exchange{name: name, kind: kind, durable: true}
		}
	}
}

func randomName(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

func reservedName(name string) bool { return strings.HasPrefix(name, "amq.") }

// declareExchange implements exchange.declare.
func (vh *vhost) declareExchange(m *wire.ExchangeDeclare) *amqpError {
	x := vh.exchanges[m.Exchange]
	if m.Passive {
		if x == nil {
			return errNoExchange(vh.name, m.Exchange)
		}
		return nil
	}
	if m.Exchange == "" {
		return errDefaultExchange()
	}
	if !route.KnownType(m.Type) {
		// RabbitMQ says "invalid" when the name happens to be an atom
		// of its VM (such as "foo") and "unknown" otherwise; plain
		// lower-case words stand in for atoms here.
		if plainWord(m.Type) {
			return connErr(wire.ReplyCommandInvalid, "invalid exchange type '%s'", m.Type)
		}
		return connErr(wire.ReplyCommandInvalid, "unknown exchange type '%s'", m.Type)
	}
	if x == nil && reservedName(m.Exchange) {
		return chanErr(wire.ReplyAccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", m.Exchange)
	}
	if x != nil {
		what := "exchange '" + x.name + "' in vhost '" + vh.name + "'"
		switch {
		case x.kind != m.Type:
			return inequivalent("type", what, m.Type, x.kind)
		case x.durable != m.Durable:
			return inequivalent("durable", what, m.Durable, x.durable)
		case x.autoDelete != m.AutoDelete:
			return inequivalent("auto_delete", what, m.AutoDelete, x.autoDelete)
		case x.internal != m.Internal:
			return inequivalent("internal", what, m.Internal, x.internal)
		}
		return checkArgsEquivalent(what, m.Arguments, x.args, "alternate-exchange")
	}
	if m.Type == route.Headers {
		// nothing to validate on the exchange itself
	}
	vh.exchanges[m.Exchange] = &exchange{name: m.Exchange, kind: m.Type, durable: m.Durable,
		autoDelete: m.AutoDelete, internal: m.Internal, args: m.Arguments}
	return nil
}

// deleteExchange implements exchange.delete.
func (vh *vhost) deleteExchange(name string, ifUnused bool) *amqpError {
	if name == "" {
		return errDefaultExchange()
	}
	x := vh.exchanges[name]
	if x == nil {
		return nil
	}
	if reservedName(name) {
		return chanErr(wire.ReplyAccessRefused, "deletion of system exchange '%s' in vhost '%s' not allowed", name, vh.name)
	}
	if ifUnused && len(x.bindings) > 0 {
		return chanErr(wire.ReplyPreconditionFailed, "exchange '%s' in vhost '%s' in use", name, vh.name)
	}
	vh.removeExchange(x)
	return nil
}

// removeExchange deletes x with every binding from or to it.
func (vh *vhost) removeExchange(x *exchange) {
	delete(vh.exchanges, x.name)
	for _, bd := range x.bindings {
		if bd.queue != nil {
			bd.queue.bindings = removeBinding(bd.queue.bindings, bd)
		} else {
			bd.dest.inbound--
		}
	}
	x.bindings = nil
	for _, other := range vh.exchanges {
		var keep []*binding
		var removed bool
		for _, bd := range other.bindings {
			if bd.dest == x {
				removed = true
				continue
			}
			keep = append(keep, bd)
		}
		if removed {
			other.bindings = keep
			vh.maybeAutoDelete(other)
		}
	}
}

func removeBinding(list []*binding, bd *binding) []*binding {
	for i, x := range list {
		if x == bd {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

// maybeAutoDelete deletes an auto-delete exchange that lost its last
// binding as a source.
func (vh *vhost) maybeAutoDelete(x *exchange) {
	if x.autoDelete && len(x.bindings) == 0 && vh.exchanges[x.name] == x {
		vh.removeExchange(x)
	}
}

// bind adds a binding from src to a queue or exchange (idempotent).
func (vh *vhost) bind(src *exchange, q *queue, dest *exchange, key string, args wire.Table) *amqpError {
	if src.kind == route.Headers {
		v, ok := args["x-match"]
		if !route.ValidMatchMode(v, ok) {
			return chanErr(wire.ReplyPreconditionFailed, "Invalid x-match field value %s; expected all, any, all-with-x, or any-with-x", erlangValue(v))
		}
	}
	for _, bd := range src.bindings {
		if bd.queue == q && bd.dest == dest && bd.key == key && route.ValuesEqual(bd.args, args) {
			return nil
		}
	}
	bd := &binding{src: src, queue: q, dest: dest, key: key, args: args}
	src.bindings = append(src.bindings, bd)
	if q != nil {
		q.bindings = append(q.bindings, bd)
	} else {
		dest.inbound++
	}
	return nil
}

// unbind removes a binding if it exists.
func (vh *vhost) unbind(src *exchange, q *queue, dest *exchange, key string, args wire.Table) {
	for _, bd := range src.bindings {
		if bd.queue == q && bd.dest == dest && bd.key == key && route.ValuesEqual(bd.args, args) {
			src.bindings = removeBinding(src.bindings, bd)
			if q != nil {
				q.bindings = removeBinding(q.bindings, bd)
			} else {
				dest.inbound--
			}
			vh.maybeAutoDelete(src)
			return
		}
	}
}

// route returns the queues a message published to x with routingKey and
// headers reaches: through bindings, exchange-to-exchange bindings and
// alternate exchanges, each queue once. The default exchange routes to the
// queue named by the key.
func (vh *vhost) route(x *exchange, keys []string, headers wire.Table, out []*queue) []*queue {
	if x.name == "" && len(keys) == 1 {
		// The hot path: one key on the default exchange.
		if q := vh.queues[keys[0]]; q != nil {
			out = append(out, q)
		}
		return out
	}
	seen := map[*exchange]bool{}
	start := len(out)
	for _, k := range keys {
		out = vh.routeKey(x, k, headers, seen, out, start)
		clear(seen)
	}
	return out
}

func (vh *vhost) routeKey(x *exchange, key string, headers wire.Table, seen map[*exchange]bool, out []*queue, start int) []*queue {
	if seen[x] {
		return out
	}
	seen[x] = true
	before := len(out)
	matched := false
	if x.name == "" {
		if q := vh.queues[key]; q != nil {
			matched = true
			out = appendQueueOnce(out, start, q)
		}
	}
	for _, bd := range x.bindings {
		if !route.Match(x.kind, bd.key, bd.args, key, headers) {
			continue
		}
		if bd.queue != nil {
			matched = true
			out = appendQueueOnce(out, start, bd.queue)
		} else {
			n := len(out)
			out = vh.routeKey(bd.dest, key, headers, seen, out, start)
			if len(out) > n {
				matched = true
			}
		}
	}
	if !matched || len(out) == before {
		if ae, ok := x.args["alternate-exchange"].(string); ok {
			if alt := vh.exchanges[ae]; alt != nil {
				out = vh.routeKey(alt, key, headers, seen, out, start)
			}
		}
	}
	return out
}

func appendQueueOnce(out []*queue, start int, q *queue) []*queue {
	for _, x := range out[start:] {
		if x == q {
			return out
		}
	}
	return append(out, q)
}

// stopTimers stops every queue's timers (broker shutdown).
func (vh *vhost) stopTimers() {
	for _, q := range vh.queues {
		q.stopTimers()
	}
}

func plainWord(s string) bool {
	for _, r := range s {
		if (r < 'a' || r > 'z') && r != '_' {
			return false
		}
	}
	return s != ""
}
