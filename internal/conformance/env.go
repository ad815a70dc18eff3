package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Scope says what an error closed: one channel or the whole connection.
type Scope bool

// The scopes of an AMQP error.
const (
	ChannelScope Scope = false
	ConnScope    Scope = true
)

func (s Scope) String() string {
	if s == ConnScope {
		return "connection"
	}
	return "channel"
}

// dial connects with the URL's settings, without recovery (a scenario wants
// to see every close), adjusted by mod when not nil.
func (e *Env) dial(ctx context.Context, mod func(*pika.Config)) (*pika.Conn, error) {
	cfg := e.Config()
	cfg.DisableRecovery = true
	cfg.ConnectionName = e.prefix
	cfg.Dial = e.netDial
	if mod != nil {
		mod(&cfg)
	}
	return pika.DialConfig(ctx, cfg)
}

// Config returns the connection settings of the URL, parsed once per
// scenario.
func (e *Env) Config() pika.Config { return e.cfg }

// DialConfig connects with the URL's settings adjusted by mod (nil for
// none) and returns the error as is; a connection that opens is closed when
// the scenario ends.
func (e *Env) DialConfig(mod func(*pika.Config)) (*pika.Conn, error) {
	c, err := e.dial(e.Ctx, mod)
	if err == nil {
		e.T.Cleanup(func() { closeConn(c) })
	}
	return c, err
}

// Dial connects to the broker or ends the scenario; the connection is closed
// when the scenario ends.
func (e *Env) Dial() *pika.Conn {
	e.T.Helper()
	c, err := e.DialConfig(nil)
	if err != nil {
		e.T.Fatalf("dial: %v", err)
	}
	return c
}

func closeConn(c *pika.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx) // the scenario may have had it closed by the broker
}

// Chan opens a channel on c or ends the scenario.
func (e *Env) Chan(c *pika.Conn) *pika.Channel {
	e.T.Helper()
	ch, err := c.Channel(e.Ctx)
	if err != nil {
		e.T.Fatalf("open channel: %v", err)
	}
	return ch
}

// Open connects and opens one channel.
func (e *Env) Open() (*pika.Conn, *pika.Channel) {
	e.T.Helper()
	c := e.Dial()
	return c, e.Chan(c)
}

// ConfirmChan opens a channel on c in confirm mode.
func (e *Env) ConfirmChan(c *pika.Conn) *pika.Channel {
	e.T.Helper()
	ch := e.Chan(c)
	e.Must(ch.ConfirmSelect(e.Ctx), "confirm.select")
	return ch
}

// Must ends the scenario when err is not nil.
func (e *Env) Must(err error, what string) {
	e.T.Helper()
	if err != nil {
		e.T.Fatalf("%s: %v", what, err)
	}
}

// Queue declares a queue named after label with opts, tracked for deletion,
// and returns its name.
func (e *Env) Queue(ch *pika.Channel, label string, opts pika.QueueDeclareOptions) string {
	e.T.Helper()
	name := e.Name(label)
	e.TrackQueue(name)
	q, err := ch.QueueDeclare(e.Ctx, name, opts)
	e.Must(err, "queue.declare "+name)
	if q.Name != name {
		e.T.Fatalf("queue.declare %q: declare-ok names %q", name, q.Name)
	}
	return name
}

// QueueArgs declares a queue named after label with the arguments args.
func (e *Env) QueueArgs(ch *pika.Channel, label string, args pika.QueueArgs) string {
	e.T.Helper()
	t, err := args.Table()
	e.Must(err, "queue arguments")
	return e.Queue(ch, label, pika.QueueDeclareOptions{Arguments: t})
}

// Exchange declares an exchange of kind named after label, tracked for
// deletion, and returns its name.
func (e *Env) Exchange(ch *pika.Channel, label, kind string, opts pika.ExchangeDeclareOptions) string {
	e.T.Helper()
	name := e.Name(label)
	e.TrackExchange(name)
	e.Must(ch.ExchangeDeclare(e.Ctx, name, kind, opts), "exchange.declare "+name)
	return name
}

// Bind binds queue q to exchange x with key and args.
func (e *Env) Bind(ch *pika.Channel, q, x, key string, args pika.Table) {
	e.T.Helper()
	e.Must(ch.QueueBind(e.Ctx, q, x, key, pika.BindOptions{Arguments: args}), fmt.Sprintf("queue.bind %q to %q with %q", q, x, key))
}

// Publish publishes without waiting for anything.
func (e *Env) Publish(ch *pika.Channel, x, key string, msg pika.Message) {
	e.T.Helper()
	e.Must(ch.Publish(e.Ctx, x, key, msg), "basic.publish")
}

// Confirmed publishes on ch, which must be in confirm mode, and waits for
// the outcome, which it returns (nil: acked and not returned).
func (e *Env) Confirmed(ch *pika.Channel, x, key string, msg pika.Message) error {
	e.T.Helper()
	f, err := ch.PublishWithConfirm(e.Ctx, x, key, msg)
	e.Must(err, "basic.publish")
	return f.Wait(e.Ctx)
}

// PublishSync publishes on ch, in confirm mode, and ends the scenario unless
// the broker acks the message.
func (e *Env) PublishSync(ch *pika.Channel, x, key string, msg pika.Message) {
	e.T.Helper()
	e.Must(e.Confirmed(ch, x, key, msg), fmt.Sprintf("confirmed publish to %q with key %q", x, key))
}

// Body returns a message with body s.
func Body(s string) pika.Message { return pika.Message{Body: []byte(s)} }

// Get fetches one message from q (manual ack) or ends the scenario when q
// is empty.
func (e *Env) Get(ch *pika.Channel, q string) *pika.Delivery {
	e.T.Helper()
	d, ok, err := ch.Get(e.Ctx, q, pika.GetOptions{AutoAck: false})
	e.Must(err, "basic.get "+q)
	if !ok {
		e.T.Fatalf("basic.get %q: get-empty, want a message", q)
	}
	return d
}

// GetBody fetches one message with auto-ack and checks its body.
func (e *Env) GetBody(ch *pika.Channel, q, want string) *pika.Delivery {
	e.T.Helper()
	d, ok, err := ch.Get(e.Ctx, q, pika.GetOptions{AutoAck: true})
	e.Must(err, "basic.get "+q)
	if !ok {
		e.T.Fatalf("basic.get %q: get-empty, want %q", q, want)
	}
	if string(d.Body) != want {
		e.T.Fatalf("basic.get %q: body %q, want %q", q, d.Body, want)
	}
	return d
}

// GetEmpty checks that q has no ready message.
func (e *Env) GetEmpty(ch *pika.Channel, q string) {
	e.T.Helper()
	d, ok, err := ch.Get(e.Ctx, q, pika.GetOptions{AutoAck: true})
	e.Must(err, "basic.get "+q)
	if ok {
		e.T.Fatalf("basic.get %q: got %q, want get-empty", q, d.Body)
	}
}

// Depth returns the ready messages of q as queue.declare-ok (passive)
// reports them.
func (e *Env) Depth(ch *pika.Channel, q string) int {
	e.T.Helper()
	st, err := ch.QueueDeclarePassive(e.Ctx, q)
	e.Must(err, "passive queue.declare "+q)
	return st.Messages
}

// Next waits for the next delivery of cons.
func (e *Env) Next(cons *pika.Consumer) *pika.Delivery {
	e.T.Helper()
	d, err := cons.Next(e.Ctx)
	e.Must(err, "next delivery of "+cons.Tag())
	return d
}

// NextBody waits for the next delivery of cons and checks its body.
func (e *Env) NextBody(cons *pika.Consumer, want string) *pika.Delivery {
	e.T.Helper()
	d := e.Next(cons)
	if string(d.Body) != want {
		e.T.Fatalf("delivery to %s: body %q, want %q", cons.Tag(), d.Body, want)
	}
	return d
}

// Quiet checks that cons receives nothing for a short while. It is the only
// way to observe that a broker withholds a delivery; scenarios use it after
// synchronising with the broker, so a broker that would deliver does so
// well within the wait.
func (e *Env) Quiet(cons *pika.Consumer) {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(e.Ctx, 150*time.Millisecond)
	defer cancel()
	d, err := cons.Next(ctx)
	if err == nil {
		e.T.Fatalf("consumer %s received %q (tag %d), want nothing", cons.Tag(), d.Body, d.DeliveryTag)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		e.T.Fatalf("consumer %s: %v, want no delivery and no end", cons.Tag(), err)
	}
}

// Eventually polls cond every 10 ms until it holds, and ends the scenario
// if it does not before the scenario's deadline.
func (e *Env) Eventually(what string, cond func() bool) {
	e.T.Helper()
	for !cond() {
		select {
		case <-e.Ctx.Done():
			e.T.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Vhost returns the virtual host of the URL.
func (e *Env) Vhost() string {
	cfg := e.Config()
	if cfg.Vhost == "" {
		return "/"
	}
	return cfg.Vhost
}

// Fail checks that err is an AMQP error sent by the broker with code,
// closing what scope says, and, when text is not empty, with a reply text
// matching it (see textMatches: "*" matches anything).
func (e *Env) Fail(err error, code wire.ReplyCode, scope Scope, text string) *pika.Error {
	e.T.Helper()
	var perr *pika.Error
	if !errors.As(err, &perr) {
		e.T.Fatalf("got %v, want the broker to close the %s with %d %s", err, scope, code, code)
		return nil
	}
	if perr.Code != code || Scope(perr.Conn) != scope || !perr.Server {
		e.T.Fatalf("got %v (code %d, connection %v, from server %v), want the broker to close the %s with %d %s",
			err, perr.Code, perr.Conn, perr.Server, scope, code, code)
	}
	e.T.Logf("%s closed by the broker: %d %q", scope, perr.Code, perr.Text)
	if text != "" && !textMatches(perr.Text, text) {
		e.T.Fatalf("reply text %q, want %q", perr.Text, text)
	}
	return perr
}

// textMatches reports whether got matches the pattern want, in which each
// "*" stands for any run of characters (a literal "*" in RabbitMQ's text,
// as in 'amq.*', matches itself too).
func textMatches(got, want string) bool {
	parts := strings.Split(want, "*")
	if len(parts) == 1 {
		return got == want
	}
	if !strings.HasPrefix(got, parts[0]) {
		return false
	}
	got = got[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(got, p)
		if i < 0 {
			return false
		}
		got = got[i+len(p):]
	}
	return strings.HasSuffix(got, parts[len(parts)-1])
}

// ChannelClosed checks that a call on ch failed because the broker closed
// ch with code (and text, see Fail) and that ch is closed while its
// connection c stays usable.
func (e *Env) ChannelClosed(c *pika.Conn, ch *pika.Channel, err error, code wire.ReplyCode, text string) {
	e.T.Helper()
	e.Fail(err, code, ChannelScope, text)
	select {
	case <-ch.Done():
	case <-e.Ctx.Done():
		e.T.Fatalf("channel %d not closed after %v", ch.ID(), err)
	}
	if c.IsClosed() {
		e.T.Fatalf("connection closed after a channel error: %v", c.Err())
	}
	// The connection still works: a new channel opens and answers.
	ch2 := e.Chan(c)
	e.Must(ch2.Qos(e.Ctx, pika.QosOptions{PrefetchCount: 1}), "basic.qos on a new channel after the channel error")
	e.Must(ch2.Close(e.Ctx), "channel.close")
}

// ConnClosed checks that err is a connection error with code (and text, see
// Fail) and that c is closed.
func (e *Env) ConnClosed(c *pika.Conn, err error, code wire.ReplyCode, text string) {
	e.T.Helper()
	e.Fail(err, code, ConnScope, text)
	select {
	case <-c.Done():
	case <-e.Ctx.Done():
		e.T.Fatalf("connection not closed after %v", err)
	}
}

// NotFoundQueue is RabbitMQ's text for a missing queue.
func (e *Env) NotFoundQueue(q string) string {
	return fmt.Sprintf("NOT_FOUND - no queue '%s' in vhost '%s'", q, e.Vhost())
}

// NotFoundExchange is RabbitMQ's text for a missing exchange.
func (e *Env) NotFoundExchange(x string) string {
	return fmt.Sprintf("NOT_FOUND - no exchange '%s' in vhost '%s'", x, e.Vhost())
}

// Gone checks that queue q no longer exists (a passive declare on a channel
// of its own fails with 404).
func (e *Env) Gone(c *pika.Conn, q string) {
	e.T.Helper()
	ch := e.Chan(c)
	_, err := ch.QueueDeclarePassive(e.Ctx, q)
	e.Fail(err, wire.ReplyNotFound, ChannelScope, e.NotFoundQueue(q))
}

// EventuallyGone waits until queue q no longer exists, then checks the 404
// as Gone does. Deletions that follow a close or a cancel (exclusive and
// auto-delete queues) and expiries complete asynchronously.
func (e *Env) EventuallyGone(c *pika.Conn, q string) {
	e.T.Helper()
	e.Eventually("queue "+q+" to be deleted", func() bool {
		_, err := e.Chan(c).QueueDeclarePassive(e.Ctx, q)
		return err != nil
	})
	e.Gone(c, q)
}

// WaitDepth waits until queue q holds n ready messages: requeues after a
// channel or connection close, and publishes without confirms, reach a
// queue asynchronously from other channels' methods.
func (e *Env) WaitDepth(ch *pika.Channel, q string, n int) {
	e.T.Helper()
	e.Eventually(fmt.Sprintf("%d messages in %s", n, q), func() bool { return e.Depth(ch, q) == n })
}

// Exists checks that queue q exists.
func (e *Env) Exists(c *pika.Conn, q string) {
	e.T.Helper()
	ch := e.Chan(c)
	_, err := ch.QueueDeclarePassive(e.Ctx, q)
	e.Must(err, "passive queue.declare "+q)
	e.Must(ch.Close(e.Ctx), "channel.close")
}

// ExchangeGone checks that exchange x no longer exists.
func (e *Env) ExchangeGone(c *pika.Conn, x string) {
	e.T.Helper()
	ch := e.Chan(c)
	err := ch.ExchangeDeclarePassive(e.Ctx, x)
	e.Fail(err, wire.ReplyNotFound, ChannelScope, e.NotFoundExchange(x))
}

// Equal ends the scenario when got != want.
func Equal[T comparable](e *Env, what string, got, want T) {
	e.T.Helper()
	if got != want {
		e.T.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// returned checks that err is the outcome of a returned mandatory message
// and returns the basic.return.
func returned(e *Env, err error) *pika.Return {
	e.T.Helper()
	var re *pika.ReturnedError
	if !errors.As(err, &re) {
		e.T.Fatalf("publish outcome %v, want the message returned", err)
	}
	return re.Return
}
