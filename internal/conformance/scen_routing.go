package conformance

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/pika-go/pika"
)

// Scenarios of routing: which bound queues an exchange of each kind routes
// a message to.

// bnd is one binding of a routing scenario: a queue bound with key and args.
type bnd struct {
	key  string
	args pika.Table
}

// msg is one message of a routing scenario and the bindings (indexes) whose
// queues must receive it.
type msg struct {
	key     string
	headers pika.Table
	want    []int
}

// checkRoutes declares an exchange of kind, one queue per binding, publishes
// every message (confirmed), and checks that each queue received exactly the
// messages that name it, in order.
func checkRoutes(e *Env, kind string, binds []bnd, msgs []msg) {
	e.T.Helper()
	c := e.Dial()
	ch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x", kind, pika.ExchangeDeclareOptions{})
	queues := make([]string, len(binds))
	for i, b := range binds {
		queues[i] = e.Queue(ch, "q"+strconv.Itoa(i), pika.QueueDeclareOptions{})
		e.Bind(ch, queues[i], x, b.key, b.args)
	}
	wants := make([][]string, len(binds))
	for j, m := range msgs {
		body := strconv.Itoa(j)
		e.PublishSync(ch, x, m.key, pika.Message{Body: []byte(body), Properties: pika.Properties{Headers: m.headers}})
		for _, i := range m.want {
			wants[i] = append(wants[i], body)
		}
	}
	for i, q := range queues {
		var got []string
		for {
			d, ok, err := ch.Get(e.Ctx, q, true)
			e.Must(err, "basic.get")
			if !ok {
				break
			}
			got = append(got, string(d.Body))
		}
		if !slices.Equal(got, wants[i]) {
			e.T.Errorf("binding %q %v received %s, want %s", binds[i].key, binds[i].args, describe(msgs, got), describe(msgs, wants[i]))
		}
	}
}

// describe names the messages whose bodies are in bodies.
func describe(msgs []msg, bodies []string) string {
	out := "["
	for i, b := range bodies {
		j, _ := strconv.Atoi(b)
		if i > 0 {
			out += ", "
		}
		if msgs[j].headers != nil {
			out += fmt.Sprintf("%v", msgs[j].headers)
		} else {
			out += strconv.Quote(msgs[j].key)
		}
	}
	return out + "]"
}

func routeDirect(e *Env) {
	checkRoutes(e, pika.ExchangeDirect,
		[]bnd{{key: "a"}, {key: "a"}, {key: "b"}, {key: ""}},
		[]msg{{key: "a", want: []int{0, 1}}, {key: "b", want: []int{2}}, {key: "c"}, {key: "", want: []int{3}}, {key: "A"}, {key: "a.b"}})
}

func routeFanout(e *Env) {
	checkRoutes(e, pika.ExchangeFanout,
		[]bnd{{key: "a"}, {key: ""}, {key: "#"}},
		[]msg{{key: "a", want: []int{0, 1, 2}}, {key: "zzz", want: []int{0, 1, 2}}, {key: "", want: []int{0, 1, 2}}})
}

func routeTopicStar(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: "a.*"}, {key: "*.b"}, {key: "*"}, {key: "a.*.c"}},
		[]msg{
			{key: "a.b", want: []int{0, 1}},
			{key: "a", want: []int{2}},
			{key: "a.b.c", want: []int{3}},
			{key: "x.b", want: []int{1}},
			{key: "a.b.c.d"},
			{key: "b", want: []int{2}},
		})
}

func routeTopicHash(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: "a.#"}, {key: "#.c"}, {key: "a.#.c"}, {key: "#"}},
		[]msg{
			{key: "a", want: []int{0, 3}},
			{key: "a.b", want: []int{0, 3}},
			{key: "a.c", want: []int{0, 1, 2, 3}},
			{key: "a.b.b.c", want: []int{0, 1, 2, 3}},
			{key: "c", want: []int{1, 3}},
			{key: "x.y", want: []int{3}},
		})
}

func routeTopicHashZeroWords(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: "#"}, {key: "a.#"}, {key: "#.a"}, {key: "a.#.#.b"}},
		[]msg{
			{key: "", want: []int{0}},
			{key: "a", want: []int{0, 1, 2}},
			{key: "a.b", want: []int{0, 1, 3}},
		})
}

func routeTopicEmptyKey(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: ""}, {key: "*"}, {key: "#"}, {key: "*.#"}},
		[]msg{
			{key: "", want: []int{0, 2}},
			{key: "a", want: []int{1, 2, 3}},
		})
}

func routeTopicEmptyWords(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: "a.*.b"}, {key: "*.a"}, {key: "a.*"}, {key: "a..b"}},
		[]msg{
			{key: "a..b", want: []int{0, 3}},
			{key: ".a", want: []int{1}},
			{key: "a.", want: []int{2}},
			{key: "a.x.b", want: []int{0}},
		})
}

func routeTopicExact(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: "a.b"}, {key: "A.b"}, {key: "a.b.c"}},
		[]msg{
			{key: "a.b", want: []int{0}},
			{key: "A.b", want: []int{1}},
			{key: "a.b.c", want: []int{2}},
			{key: "a.bc"},
		})
}

func routeTopicStarHash(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: "*.#"}, {key: "#.*"}, {key: "*.*.#"}, {key: "#.#"}},
		[]msg{
			{key: "a", want: []int{0, 1, 3}},
			{key: "a.b", want: []int{0, 1, 2, 3}},
			{key: "", want: []int{3}},
		})
}

func routeTopicSpecialChars(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: "a*.b"}, {key: "a#"}, {key: "*b"}},
		[]msg{
			{key: "a*.b", want: []int{0}},
			{key: "ax.b"},
			{key: "a#", want: []int{1}},
			{key: "ab"},
		})
}

func routeHeadersAll(e *Env) {
	checkRoutes(e, pika.ExchangeHeaders,
		[]bnd{{args: pika.Table{"x-match": "all", "a": "1", "b": "2"}}},
		[]msg{
			{headers: pika.Table{"a": "1", "b": "2"}, want: []int{0}},
			{headers: pika.Table{"a": "1", "b": "2", "c": "3"}, want: []int{0}},
			{headers: pika.Table{"a": "1"}},
			{headers: pika.Table{"a": "1", "b": "3"}},
			{},
		})
}

func routeHeadersAny(e *Env) {
	checkRoutes(e, pika.ExchangeHeaders,
		[]bnd{{args: pika.Table{"x-match": "any", "a": "1", "b": "2"}}},
		[]msg{
			{headers: pika.Table{"a": "1"}, want: []int{0}},
			{headers: pika.Table{"b": "2", "z": "0"}, want: []int{0}},
			{headers: pika.Table{"a": "2", "b": "1"}},
			{},
		})
}

func routeHeadersDefaultAll(e *Env) {
	checkRoutes(e, pika.ExchangeHeaders,
		[]bnd{{args: pika.Table{"a": "1", "b": "2"}}},
		[]msg{
			{headers: pika.Table{"a": "1", "b": "2"}, want: []int{0}},
			{headers: pika.Table{"a": "1"}},
		})
}

func routeHeadersEmptyBinding(e *Env) {
	checkRoutes(e, pika.ExchangeHeaders,
		[]bnd{{args: nil}, {args: pika.Table{"x-match": "any"}}},
		[]msg{
			{headers: pika.Table{"a": "1"}, want: []int{0}},
			{want: []int{0}},
		})
}

func routeHeadersXKeysIgnored(e *Env) {
	checkRoutes(e, pika.ExchangeHeaders,
		[]bnd{{args: pika.Table{"x-match": "all", "x-foo": "bar", "a": "1"}}, {args: pika.Table{"x-match": "any", "x-foo": "bar"}}},
		[]msg{
			{headers: pika.Table{"a": "1"}, want: []int{0}},
			{headers: pika.Table{"x-foo": "bar"}},
			{headers: pika.Table{"a": "1", "x-foo": "bar"}, want: []int{0}},
		})
}

func routeHeadersTypes(e *Env) {
	checkRoutes(e, pika.ExchangeHeaders,
		[]bnd{{args: pika.Table{"n": int32(1)}}, {args: pika.Table{"s": "1"}}, {args: pika.Table{"b": true}}},
		[]msg{
			{headers: pika.Table{"n": int32(1)}, want: []int{0}},
			{headers: pika.Table{"n": "1"}},
			{headers: pika.Table{"s": "1"}, want: []int{1}},
			{headers: pika.Table{"s": int32(1)}},
			{headers: pika.Table{"b": true}, want: []int{2}},
			{headers: pika.Table{"b": false}},
		})
}

func routeHeadersIgnoresKey(e *Env) {
	checkRoutes(e, pika.ExchangeHeaders,
		[]bnd{{key: "k", args: pika.Table{"a": "1"}}},
		[]msg{
			{key: "other", headers: pika.Table{"a": "1"}, want: []int{0}},
			{key: "k", headers: pika.Table{"a": "2"}},
		})
}

func routeHeadersVoid(e *Env) {
	checkRoutes(e, pika.ExchangeHeaders,
		[]bnd{{args: pika.Table{"a": nil}}},
		[]msg{
			{headers: pika.Table{"a": nil}, want: []int{0}},
			{headers: pika.Table{"a": "1"}, want: []int{0}},
			{headers: pika.Table{"b": nil}},
		})
}

func routeDefaultExchange(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.PublishSync(ch, "", q, Body("direct to queue"))
	d := e.GetBody(ch, q, "direct to queue")
	Equal(e, "exchange", d.Exchange, "")
	Equal(e, "routing key", d.RoutingKey, q)
	err := e.Confirmed(ch, "", e.Name("missing"), pika.Message{Body: []byte("m"), Mandatory: true})
	returned(e, err)
}

func routeAmqDirect(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Bind(ch, q, "amq.direct", q, nil)
	e.PublishSync(ch, "amq.direct", q, Body("m"))
	d := e.GetBody(ch, q, "m")
	Equal(e, "exchange", d.Exchange, "amq.direct")
	e.Must(ch.QueueUnbind(e.Ctx, q, "amq.direct", q, nil), "unbind")
}

func routeMultipleBindingsOneCopy(e *Env) {
	checkRoutes(e, pika.ExchangeTopic,
		[]bnd{{key: "a.*"}, {key: "a.b"}},
		[]msg{{key: "a.b", want: []int{0, 1}}})
	// Same queue bound twice with matching patterns: one copy.
	c := e.Dial()
	ch := e.ConfirmChan(c)
	x := e.Exchange(ch, "x2", pika.ExchangeTopic, pika.ExchangeDeclareOptions{})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.Bind(ch, q, x, "a.*", nil)
	e.Bind(ch, q, x, "#", nil)
	e.PublishSync(ch, x, "a.b", Body("one"))
	e.GetBody(ch, q, "one")
	e.GetEmpty(ch, q)
}
