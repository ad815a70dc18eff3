package recovery

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// The errors recovery reports; package pika exports them under the same
// names.
var (
	ErrNotRecovered     = errors.New("pika: consumer excluded from recovery by Config.RecoveryFilter")
	ErrQueueExpired     = errors.New("pika: queue expired (x-expires) while the connection was lost")
	ErrQueueUnavailable = errors.New("pika: queue unavailable (its node is down)")
)

// MaxLockedAttempts bounds the reconnection attempts retried because an
// exclusive queue is still held by the lost connection on the broker.
const MaxLockedAttempts = 10

// DirectReplyTo is RabbitMQ's direct reply-to pseudo-queue.
const DirectReplyTo = "amq.rabbitmq.reply-to"

var (
	errNotFound       error = engine.ReplyCodeError(wire.ReplyNotFound)
	errResourceLocked error = engine.ReplyCodeError(wire.ReplyResourceLocked)
)

// queueGoneText is how RabbitMQ's NOT_FOUND for a queue that does not exist
// begins; its NOT_FOUND for a durable queue whose node is down or whose
// process stopped says so instead ("home node 'n' of durable queue 'q' in
// vhost '/' is down or inaccessible", "queue 'q' in vhost '/' process is
// stopped by supervisor", ...).
const queueGoneText = "NOT_FOUND - no queue '"

// Unavailable reports whether err is the broker's NOT_FOUND for a queue
// that exists but whose node or process is down.
func Unavailable(err error) bool {
	var e *engine.Error
	if !errors.As(err, &e) || !e.Server || e.Code != wire.ReplyNotFound {
		return false
	}
	return !strings.HasPrefix(e.Text, queueGoneText)
}

// UnavailableErr wraps Err, a NOT_FOUND saying the queue is down, so that
// it also matches ErrQueueUnavailable.
type UnavailableErr struct{ Err error }

func (e *UnavailableErr) Error() string   { return e.Err.Error() }
func (e *UnavailableErr) Unwrap() []error { return []error{ErrQueueUnavailable, e.Err} }

// ChannelMethods lists what recovery sends to restore a channel: a
// placeholder for channel.open first, then its QoS (global first) and its
// confirm and transaction modes.
func ChannelMethods(qosGlobal, qos *wire.BasicQos, confirm, tx bool) []wire.Method {
	ms := []wire.Method{&wire.ChannelOpen{}}
	if qosGlobal != nil {
		ms = append(ms, qosGlobal)
	}
	if qos != nil {
		ms = append(ms, qos)
	}
	if confirm {
		ms = append(ms, &wire.ConfirmSelect{})
	}
	if tx {
		ms = append(ms, &wire.TxSelect{})
	}
	return ms
}

// Filter is the topology part of pika.RecoveryFilter: each function, when
// set, is asked whether to restore an entity.
type Filter struct {
	Exchange func(name string) bool
	Queue    func(name string, serverNamed bool) bool
	Binding  func(source, destination, key string, toExchange bool) bool
}

// Failure is an entity that could not be restored, and why.
type Failure struct {
	Entity string
	Err    error
}

type stepKind uint8

const (
	declare      stepKind = iota + 1 // an exchange or a binding
	declareQueue                     // a queue
	probeExpiry                      // a passive declare of a queue that looks expired
	probeUse                         // a passive declare of a consumed queue not declared here
)

// Step is one declaration of a restore, to send on the restore's channel.
type Step struct {
	Method wire.Method // exchange.declare, queue.declare (passive for a check), queue.bind or exchange.bind
	Entity string      // what it restores, as a Failure names it

	kind stepKind
	q    *Queue
	name string // the queue's name before the restore
}

// Plan is the topology part of one recovery attempt: the recorded
// exchanges, then queues (each checked first with a passive declare when
// its x-expires may have run out; server-named ones declared with an empty
// name and renamed), then bindings (as renamed), then a check of every
// consumed queue not declared again. The driver sends each Step of Next on
// a channel of its own (opening a new one after a refusal, which closes
// it) and hands the outcome to Done, which updates the record. A Plan is
// used by one goroutine at a time; it takes the record's lock itself when
// it reads or changes the record.
type Plan struct {
	// OnRename, when set, runs (with the record's lock held) when a
	// server-named queue got a new name.
	OnRename func(old, new string)

	// Results.
	Failed       []Failure
	Renamed      map[string]string // server-named queues: old name -> new name
	Expired      []string          // queues forgotten because they expired
	FailedQueues map[string]error  // queues (by their name before the restore) that are not there; their consumers cannot be started

	rec        *Record
	mu         sync.Locker
	filter     Filter
	consumed   map[string]bool
	attempt    int
	now        time.Time
	inUseUntil time.Time

	exchanges []*wire.ExchangeDeclare
	queues    []*Queue
	bindings  []*Binding
	names     []string // consumed queues, sorted
	declared  map[string]bool

	phase  int
	i      int
	probed bool // the current queue's expiry check is done
	cur    Step
}

type nopLocker struct{}

func (nopLocker) Lock()   {}
func (nopLocker) Unlock() {}

// NewPlan plans the topology restore of recovery attempt attempt at now, of
// rec guarded by mu (nil when the caller needs no lock). consumed holds the
// queues with consumers to restore (in use until inUseUntil, the loss).
func NewPlan(rec *Record, mu sync.Locker, f Filter, consumed map[string]bool, attempt int, now, inUseUntil time.Time) *Plan {
	if mu == nil {
		mu = nopLocker{}
	}
	p := &Plan{
		Renamed: map[string]string{}, FailedQueues: map[string]error{},
		rec: rec, mu: mu, filter: f, consumed: consumed, attempt: attempt, now: now, inUseUntil: inUseUntil,
		declared: map[string]bool{},
	}
	mu.Lock()
	p.exchanges = slices.Clone(rec.Exchanges)
	p.queues = slices.Clone(rec.Queues)
	mu.Unlock()
	for name := range consumed {
		p.names = append(p.names, name)
	}
	slices.Sort(p.names)
	return p
}

// The phases of a Plan.
const (
	phaseExchanges = iota
	phaseQueues
	phaseBindings
	phaseConsumed
	phaseDone
)

// Next returns the next declaration to send, or false when the plan is
// done. Filters are called here, without the record's lock.
func (p *Plan) Next() (Step, bool) {
	for {
		switch p.phase {
		case phaseExchanges:
			if p.i >= len(p.exchanges) {
				p.phase, p.i = phaseQueues, 0
				continue
			}
			e := p.exchanges[p.i]
			p.i++
			if p.filter.Exchange != nil && !p.filter.Exchange(e.Exchange) {
				continue
			}
			p.cur = Step{Method: e, Entity: "exchange " + strconv.Quote(e.Exchange), kind: declare}
			return p.cur, true
		case phaseQueues:
			if p.i >= len(p.queues) {
				p.phase, p.i = phaseBindings, 0
				p.mu.Lock()
				p.bindings = slices.Clone(p.rec.Bindings)
				p.mu.Unlock()
				continue
			}
			q := p.queues[p.i]
			p.mu.Lock()
			d := q.Decl
			p.mu.Unlock()
			old := d.Queue
			if !p.probed {
				if p.filter.Queue != nil && !p.filter.Queue(old, q.ServerNamed) {
					p.i++
					if q.ServerNamed || d.Exclusive {
						// It did not outlive the lost connection: a consumer
						// restarted on it would fail with NOT_FOUND and close
						// the application's channel.
						p.FailedQueues[old] = fmt.Errorf("%w: queue %s was left out and went with the lost connection", ErrNotRecovered, strconv.Quote(old))
					}
					continue
				}
				var until time.Time
				if p.consumed[old] {
					until = p.inUseUntil
				}
				p.probed = true
				p.mu.Lock()
				expired := q.Expired(p.now, until)
				p.mu.Unlock()
				if expired {
					// Unused for longer than its x-expires as far as this
					// connection knows (it does not see every use): ask the
					// broker whether the queue is still there.
					p.cur = Step{Method: &wire.QueueDeclare{Queue: old, Passive: true}, Entity: "queue " + strconv.Quote(old), kind: probeExpiry, q: q, name: old}
					return p.cur, true
				}
			}
			p.probed = false
			p.i++
			if q.ServerNamed {
				d.Queue = ""
			}
			p.cur = Step{Method: &d, Entity: "queue " + strconv.Quote(old), kind: declareQueue, q: q, name: old}
			return p.cur, true
		case phaseBindings:
			if p.i >= len(p.bindings) {
				p.phase, p.i = phaseConsumed, 0
				continue
			}
			p.mu.Lock()
			b := *p.bindings[p.i]
			p.mu.Unlock()
			p.i++
			if p.filter.Binding != nil && !p.filter.Binding(b.Source, b.Destination, b.Key, b.ToExchange) {
				continue
			}
			entity := "binding " + strconv.Quote(b.Source) + " -> " + strconv.Quote(b.Destination) + " (" + strconv.Quote(b.Key) + ")"
			p.cur = Step{Method: b.Method(), Entity: entity, kind: declare}
			return p.cur, true
		case phaseConsumed:
			// A consumed queue not declared again here (another
			// connection's, or one the filter left out) may be a classic
			// queue whose node is down: basic.consume would get NOT_FOUND
			// and close the application's channel. Ask first.
			if p.i >= len(p.names) {
				p.phase = phaseDone
				continue
			}
			name := p.names[p.i]
			p.i++
			if p.declared[name] || p.FailedQueues[name] != nil || name == "" || name == DirectReplyTo {
				continue
			}
			p.cur = Step{Method: &wire.QueueDeclare{Queue: name, Passive: true}, Entity: "queue " + strconv.Quote(name), kind: probeUse, name: name}
			return p.cur, true
		default:
			return Step{}, false
		}
	}
}

// Done takes the outcome of the Step Next returned last: the broker's reply
// (nil after a refusal) or its refusal, which closed the channel. An error
// return ends the attempt (an exclusive queue still held by the lost
// connection: the broker has not noticed the loss yet, and the next
// attempt may succeed).
func (p *Plan) Done(reply wire.Method, refused error) error {
	s := p.cur
	switch s.kind {
	case declare:
		if refused != nil {
			p.Failed = append(p.Failed, Failure{s.Entity, refused})
		}
	case probeExpiry:
		// A NOT_FOUND saying its node is down is not an expiry: the
		// declaration fails the same way and its consumers wait for it.
		if errors.Is(refused, errNotFound) && !Unavailable(refused) {
			p.mu.Lock()
			p.rec.RemoveQueue(s.name)
			p.mu.Unlock()
			p.Expired = append(p.Expired, s.name)
			p.FailedQueues[s.name] = fmt.Errorf("%w: %s (x-expires %v)", ErrQueueExpired, strconv.Quote(s.name), s.q.Expires)
			p.probed = false
			p.i++
		}
	case declareQueue:
		if refused != nil {
			p.Failed = append(p.Failed, Failure{s.Entity, refused})
			if d, _ := s.Method.(*wire.QueueDeclare); d != nil && d.Exclusive && errors.Is(refused, errResourceLocked) && p.attempt < MaxLockedAttempts {
				return fmt.Errorf("pika: exclusive queue %s still held by the lost connection: %w", strconv.Quote(s.name), refused)
			}
			p.FailedQueues[s.name] = refused
			return nil
		}
		p.declared[s.name] = true
		ok, _ := reply.(*wire.QueueDeclareOk)
		if ok != nil && ok.Queue != s.name {
			p.mu.Lock()
			s.q.Decl.Queue = ok.Queue
			p.rec.RenameQueue(s.name, ok.Queue)
			if p.OnRename != nil {
				p.OnRename(s.name, ok.Queue)
			}
			p.mu.Unlock()
			p.Renamed[s.name] = ok.Queue
		}
	case probeUse:
		if errors.Is(refused, errNotFound) {
			p.FailedQueues[s.name] = refused
		}
	}
	return nil
}

// Terminal reports whether a connection attempt's error rules out further
// attempts: the broker refused the login or the virtual host, or no SASL
// mechanism is shared.
func Terminal(err error) bool {
	return errors.Is(err, engine.ErrAuthentication) || errors.Is(err, engine.ErrVhostRefused) || errors.Is(err, engine.ErrNoMechanism)
}

// Recoverable reports whether a lost connection should be recovered: every
// loss the application did not ask for, except a broker close with a code
// that reconnecting cannot fix (access refused, vhost gone, ...), and
// authentication failures.
func Recoverable(err error) bool {
	if err == nil || Terminal(err) {
		return false
	}
	var e *engine.Error
	if errors.As(err, &e) && e.Server {
		return recoverableCode(e.Code)
	}
	return true
}

// recoverableCode reports whether a broker's close with code leaves room
// for a new connection to work.
func recoverableCode(code wire.ReplyCode) bool {
	switch code {
	case wire.ReplyConnectionForced, wire.ReplyInternalError, wire.ReplyResourceError,
		wire.ReplyFrameError, wire.ReplySyntaxError, wire.ReplyCommandInvalid,
		wire.ReplyChannelError, wire.ReplyUnexpectedFrame:
		return true
	}
	return false
}

// AttemptFinal reports whether a failed recovery attempt's error rules out
// further attempts: Terminal, or the broker closed the attempt's
// connection (in its handshake or during the restore) with a code that
// Recoverable treats as final for the first loss (403 ACCESS_REFUSED, 530
// NOT_ALLOWED, ...). Both clients' recoveries give up on it.
func AttemptFinal(err error) bool {
	if Terminal(err) {
		return true
	}
	var e *engine.Error
	return errors.As(err, &e) && e.Server && e.Conn && !recoverableCode(e.Code)
}
