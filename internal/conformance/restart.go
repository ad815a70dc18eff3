package conformance

import (
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/wire"
)

// restartTimeout bounds a restart scenario, the restart included.
const restartTimeout = 2 * time.Minute

// Restart stops and starts the broker under test, as a node restart does:
// durable entities and persistent messages stay, the rest goes, and every
// connection is closed. It returns once the broker accepts connections
// again, and fails t when it cannot.
type Restart func(t *testing.T)

// RunRestart runs the restart scenarios as subtests of t against the broker
// at url. They run together and share one restart: each prepares the broker,
// calls Env.Restart, which waits until every scenario has got there (or
// ended) and the broker has restarted once, then checks what survived.
func RunRestart(t *testing.T, url string, restart Restart) {
	t.Helper()
	if err := checkTable(restartTable); err != nil {
		t.Fatalf("conformance: %v", err)
	}
	b := &barrier{waiting: len(restartTable), done: make(chan struct{})}
	b.restart = func() { restart(t) }
	ss := newSession(Target{URL: url})
	defer ss.close()
	var wg sync.WaitGroup
	for _, s := range restartTable {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(s.Name, func(t *testing.T) {
				arrived := false
				defer func() {
					if !arrived {
						b.arrive() // a scenario that ended early must not hold the others
					}
				}()
				runScenarioWith(t, ss, s, restartTimeout, func(e *Env) {
					e.restart = func() {
						arrived = true
						b.arrive()
						b.wait(e)
					}
				})
			})
		}()
	}
	wg.Wait()
}

// RestartScenarios returns a copy of the restart table, in order.
func RestartScenarios() []Scenario {
	return append([]Scenario(nil), restartTable...)
}

// barrier lets the restart scenarios meet before the one restart.
type barrier struct {
	mu      sync.Mutex
	waiting int
	restart func()
	done    chan struct{}
}

// arrive counts one scenario at the barrier; the last one restarts the
// broker and releases them all.
func (b *barrier) arrive() {
	b.mu.Lock()
	b.waiting--
	last := b.waiting == 0
	b.mu.Unlock()
	if last {
		b.restart()
		close(b.done)
	}
}

func (b *barrier) wait(e *Env) {
	select {
	case <-b.done:
	case <-e.Ctx.Done():
		e.T.Fatalf("the broker restart did not happen within the scenario's deadline")
	}
}

// Restart waits until every restart scenario is ready and the broker has
// restarted. Only restart scenarios may call it.
func (e *Env) Restart() {
	e.T.Helper()
	if e.restart == nil {
		e.T.Fatalf("scenario needs a broker restart: run it through RunRestart")
	}
	e.restart()
}

// restartTable lists the scenarios that need a broker restart; they run
// only through RunRestart.
var restartTable = []Scenario{
	{Name: "restart/persistent-messages", Func: restartPersistent,
		Checks:   "a durable classic queue keeps its persistent messages across a restart and loses its transient ones",
		RabbitMQ: "Transient messages, even in a durable queue, are not recovered."},
	{Name: "restart/transient-entities-gone", Func: restartTransientGone,
		Checks:   "a non-durable queue and a non-durable exchange are gone after a restart",
		RabbitMQ: "Only durable entities are recovered."},
	{Name: "restart/durable-topology", Func: restartDurableTopology,
		Checks:   "a durable exchange, a durable queue and the binding between them survive a restart and still route",
		RabbitMQ: "Bindings between durable entities are durable."},
	{Name: "restart/exclusive-gone", Func: restartExclusiveGone,
		Checks:   "a durable exclusive queue is gone after a restart",
		RabbitMQ: "Its connection did not survive."},
	{Name: "restart/connection-forced", Func: restartConnectionForced,
		Checks:   "a connection open during the restart gets connection.close 320 CONNECTION_FORCED, then the socket closes",
		RabbitMQ: "\"CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'\"; surprise: the broker closes the socket without waiting for close-ok."},
	{Name: "restart/unacked-redelivered", Func: restartUnackedRedelivered,
		Checks:   "a persistent message delivered but not acknowledged before the restart is delivered again, marked redelivered",
		RabbitMQ: "Unacknowledged messages go back to the queue."},
	{Name: "restart/quorum-keeps-transient", Func: restartQuorumTransient,
		Checks:   "a quorum queue keeps even its transient messages across a restart",
		RabbitMQ: "Surprise for classic-queue users: quorum queues persist every message, whatever its delivery mode."},
}

func restartPersistent(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("persistent"), Properties: pika.Properties{DeliveryMode: pika.Persistent}})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("transient")})
	e.Restart()
	_, ch = e.Open()
	d := e.GetBody(ch, q, "persistent")
	Equal(e, "delivery mode", d.DeliveryMode, pika.Persistent)
	e.GetEmpty(ch, q)
}

func restartTransientGone(e *Env) {
	_, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{})
	x := e.Exchange(ch, "x", pika.ExchangeFanout, pika.ExchangeDeclareOptions{})
	e.Restart()
	c := e.Dial()
	e.Gone(c, q)
	e.ExchangeGone(c, x)
}

func restartDurableTopology(e *Env) {
	_, ch := e.Open()
	x := e.Exchange(ch, "x", pika.ExchangeTopic, pika.ExchangeDeclareOptions{Durable: true})
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true})
	e.Bind(ch, q, x, "a.#", nil)
	e.Restart()
	c := e.Dial()
	ch = e.ConfirmChan(c)
	e.PublishSync(ch, x, "a.b", Body("routed"))
	e.GetBody(ch, q, "routed")
}

func restartExclusiveGone(e *Env) {
	_, ch := e.Open()
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true, Exclusive: true})
	e.Restart()
	e.EventuallyGone(e.Dial(), q)
}

func restartConnectionForced(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	e.Restart()
	// The broker closes the socket right after the close, without waiting
	// for close-ok: read the close, then the end.
	f := r.Next()
	cl, ok := f.Method.(*wire.ConnectionClose)
	if !ok || f.Channel != 0 {
		e.T.Fatalf("got %v, want connection.close", f)
	}
	want := "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
	if wire.ReplyCode(cl.ReplyCode) != wire.ReplyConnectionForced || cl.ReplyText != want {
		e.T.Fatalf("connection.close %d %q, want 320 %q", cl.ReplyCode, cl.ReplyText, want)
	}
	r.ExpectEOF()
}

func restartUnackedRedelivered(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := e.Queue(ch, "q", pika.QueueDeclareOptions{Durable: true})
	e.PublishSync(ch, "", q, pika.Message{Body: []byte("m"), Properties: pika.Properties{DeliveryMode: pika.Persistent}})
	d := e.Get(ch, q)
	Equal(e, "redelivered before the restart", d.Redelivered, false)
	e.Restart()
	_, ch = e.Open()
	d = e.GetBody(ch, q, "m")
	Equal(e, "redelivered after the restart", d.Redelivered, true)
}

func restartQuorumTransient(e *Env) {
	c := e.Dial()
	ch := e.ConfirmChan(c)
	q := quorumQueue(e, ch, nil)
	e.PublishSync(ch, "", q, Body("transient"))
	e.Restart()
	c = e.Dial()
	ch = e.Chan(c)
	e.Eventually("the quorum queue to be back", func() bool {
		_, err := e.Chan(c).QueueDeclarePassive(e.Ctx, q)
		return err == nil
	})
	e.WaitDepth(ch, q, 1)
	e.GetBody(ch, q, "transient")
}
