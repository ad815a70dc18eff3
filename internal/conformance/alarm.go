package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// Alarm raises (on true) or clears a resource alarm on the broker under
// test, as RabbitMQ's memory alarm does: connections that publish are
// blocked until it clears. It may return before the broker acts on it; the
// alarm scenarios wait for the broker themselves. It fails t when it cannot
// act.
type Alarm func(t *testing.T, on bool)

// RunAlarm runs the alarm scenarios (blocked connections) as subtests of t
// against the broker at url, one after another since the alarm is global to
// the broker, raising and clearing it with alarm. Every scenario clears the
// alarm before it ends, whatever happened.
func RunAlarm(t *testing.T, url string, alarm Alarm) {
	t.Helper()
	if err := checkTable(alarmTable); err != nil {
		t.Fatalf("conformance: %v", err)
	}
	ss := newSession(Target{URL: url})
	defer ss.close()
	for _, s := range alarmTable {
		t.Run(s.Name, func(t *testing.T) {
			runScenario(t, ss, s, alarm)
		})
	}
}

// AlarmScenarios returns a copy of the alarm table, in order.
func AlarmScenarios() []Scenario {
	return append([]Scenario(nil), alarmTable...)
}

// alarmTable lists the scenarios that need a resource alarm; they run only
// through RunAlarm.
var alarmTable = []Scenario{
	{Name: "alarm/blocked-on-publish", Func: alarmBlockedOnPublish,
		Checks:   "during an alarm, a connection that publishes gets connection.blocked with the reason, then connection.unblocked when the alarm clears, and the held message is routed",
		RabbitMQ: "reason \"low on memory\" for the memory alarm; the message published while blocked is processed after unblocked."},
	{Name: "alarm/idle-not-blocked", Func: alarmIdleNotBlocked,
		Checks:   "during an alarm, a connection that does not publish gets no connection.blocked and its other methods are answered",
		RabbitMQ: "Only publishing connections are blocked; consumers keep working."},
	{Name: "alarm/consumers-continue", Func: alarmConsumersContinue,
		Checks:   "during an alarm, messages already queued are delivered to consumers and basic.get",
		RabbitMQ: "The alarm throttles publishers only."},
	{Name: "alarm/blocked-reads-nothing", Func: alarmBlockedReadsNothing,
		Checks:   "once blocked, the connection's later methods are not answered until the alarm clears, then they are, in order",
		RabbitMQ: "Surprise: the broker stops reading the blocked connection's socket altogether, so even a queue.declare waits."},
	{Name: "alarm/no-capability", Func: alarmNoCapability,
		Checks:   "a client that does not announce connection.blocked is blocked silently and its message is routed after the alarm clears",
		RabbitMQ: "No connection.blocked or unblocked frames for clients without the capability."},
	{Name: "alarm/client-blocked", Func: alarmClientBlocked,
		Checks:   "the pika client reports the block (OnBlocked, IsBlocked) with the broker's reason, and the unblock",
		RabbitMQ: "As alarm/blocked-on-publish, seen through the client."},
}

// alarmOn raises the alarm and registers its clearing, then waits until the
// broker blocks a probe connection that publishes.
func (e *Env) alarmOn() {
	e.T.Helper()
	if e.alarm == nil {
		e.T.Fatalf("scenario needs an alarm: run it through RunAlarm")
	}
	e.alarm(e.T, true)
	e.T.Cleanup(func() { e.alarm(e.T, false) })
	probe := e.RawDial(0)
	probe.OpenChannel(1)
	probe.Publish(1, &wire.BasicPublish{RoutingKey: e.Name("probe")}, nil, []byte("probe"))
	probe.Expect(0, &wire.ConnectionBlocked{})
	probe.Close()
}

// alarmOff clears the alarm; scenarios then wait for its effects.
func (e *Env) alarmOff() {
	e.T.Helper()
	e.alarm(e.T, false)
}

// blockedRaw opens a raw connection with a queue, raises the alarm and
// publishes "held" to the queue; it returns once the broker sent
// connection.blocked, which it checks.
func blockedRaw(e *Env) (*Raw, string) {
	e.T.Helper()
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	e.alarmOn()
	r.Publish(1, &wire.BasicPublish{RoutingKey: q}, nil, []byte("held"))
	b := r.Expect(0, &wire.ConnectionBlocked{}).(*wire.ConnectionBlocked)
	Equal(e, "blocked reason", b.Reason, "low on memory")
	return r, q
}

func alarmBlockedOnPublish(e *Env) {
	r, q := blockedRaw(e)
	e.alarmOff()
	r.Expect(0, &wire.ConnectionUnblocked{})
	r.WaitDepth(1, q, 1)
	r.Send(1, &wire.BasicGet{Queue: q, NoAck: true})
	_, _, body := r.Deliver(1)
	Equal(e, "body", string(body), "held")
}

func alarmIdleNotBlocked(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	e.alarmOn()
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Sync(1)
	r.Send(1, &wire.BasicGet{Queue: q})
	r.Expect(1, &wire.BasicGetEmpty{})
}

func alarmConsumersContinue(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	for _, b := range []string{"1", "2"} {
		e.PublishSync(ch, "", q, Body(b))
	}
	e.alarmOn()
	reader := e.Dial()
	rch := e.Chan(reader)
	e.GetBody(rch, q, "1")
	cons, err := rch.Consume(e.Ctx, q, pika.ConsumeOptions{AutoAck: true})
	e.Must(err, "consume during the alarm")
	e.NextBody(cons, "2")
}

func alarmBlockedReadsNothing(e *Env) {
	r, q := blockedRaw(e)
	r.Send(1, &wire.QueueDeclare{Queue: q, Passive: true})
	r.ExpectSilenceFor(300 * time.Millisecond)
	e.alarmOff()
	r.Expect(0, &wire.ConnectionUnblocked{})
	r.Expect(1, &wire.QueueDeclareOk{})
	r.WaitDepth(1, q, 1)
}

func alarmNoCapability(e *Env) {
	r := e.RawDialProps(0, wire.Table{"product": "old client"})
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	e.alarmOn()
	r.Publish(1, &wire.BasicPublish{RoutingKey: q}, nil, []byte("held"))
	r.Send(1, &wire.BasicQos{})
	r.ExpectSilenceFor(300 * time.Millisecond)
	e.alarmOff()
	r.Expect(1, &wire.BasicQosOk{}) // no unblocked frame before it
	r.WaitDepth(1, q, 1)
	r.Send(1, &wire.BasicGet{Queue: q, NoAck: true})
	_, _, body := r.Deliver(1)
	Equal(e, "body", string(body), "held")
}

func alarmClientBlocked(e *Env) {
	c := e.Dial()
	events := make(chan string, 8)
	c.OnBlocked(func(blocked bool, reason string) {
		if blocked {
			events <- "blocked: " + reason
		} else {
			events <- "unblocked"
		}
	})
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	e.alarmOn()
	f, err := ch.PublishWithConfirm(e.Ctx, "", q, Body("held"))
	e.Must(err, "publish during the alarm")
	next := func() string {
		select {
		case ev := <-events:
			return ev
		case <-e.Ctx.Done():
			e.T.Fatalf("no OnBlocked notification")
			return ""
		}
	}
	Equal(e, "first notification", next(), "blocked: low on memory")
	if b, reason := c.IsBlocked(); !b || reason != "low on memory" {
		e.T.Errorf("IsBlocked() = %v, %q", b, reason)
	}
	e.alarmOff()
	Equal(e, "second notification", next(), "unblocked")
	ctx, cancel := context.WithTimeout(e.Ctx, 10*time.Second)
	defer cancel()
	e.Must(f.Wait(ctx), "confirm after the alarm")
	e.GetBody(ch, q, "held")
}
