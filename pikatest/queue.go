package pikatest

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/pika-go/pika/pikatest/internal/route"
	"github.com/pika-go/pika/pikatest/internal/store"
	"github.com/pika-go/pika/wire"
)

// queue is one broker queue: its declaration, its ready messages (in
// internal/queue), its consumers and the timers of TTL and x-expires.
type queue struct {
	vh         *vhost
	name       string
	durable    bool
	exclusive  bool
	autoDelete bool
	owner      *conn // the declaring connection of an exclusive queue
	args       wire.Table
	qtype      string // "classic" or "quorum"

	ready       *store.Ready
	consumers   []*consumer
	rr          int // round-robin position among consumers
	unacked     int // delivered, not yet settled
	bindings    []*binding
	hadConsumer bool

	ttl           int64 // x-message-ttl in ms, -1 none
	expires       int64 // x-expires in ms, 0 none
	maxLen        int64 // -1 none
	maxBytes      int64 // -1 none
	overflow      string
	dlx           *string
	dlrk          *string
	sac           bool  // x-single-active-consumer
	deliveryLimit int64 // quorum x-delivery-limit, 0 none

	deleted     bool
	dispatching bool
	ttlTimer    *time.Timer
	ttlAt       int64
	expTimer    *time.Timer
	lastUsed    time.Time
}

// queueArgs validates the x-arguments of queue.declare the way RabbitMQ
// does and fills in q's settings.
func (q *queue) applyArgs(args wire.Table) *amqpError {
	q.ttl, q.maxLen, q.maxBytes, q.overflow, q.qtype = -1, -1, -1, "drop-head", "classic"
	invalid := func(arg, detail string) *amqpError {
		return chanErr(wire.ReplyPreconditionFailed, "invalid arg '%s' for queue '%s' in vhost '%s': %s", arg, q.name, q.vh.name, detail)
	}
	intArg := func(name string, min int64) (int64, bool, *amqpError) {
		v, ok := args[name]
		if !ok {
			return 0, false, nil
		}
		n, isInt := route.Int(v)
		if !isInt {
			return 0, false, invalid(name, `"expected integer, got `+typeName(v)+`"`)
		}
		if n < min {
			if n < 0 {
				return 0, false, invalid(name, "{value_negative,"+strconv.FormatInt(n, 10)+"}")
			}
			return 0, false, invalid(name, "{value_zero,"+strconv.FormatInt(n, 10)+"}")
		}
		return n, true, nil
	}
	if v, ok := args["x-queue-type"]; ok {
		s, _ := v.(string)
		switch s {
		case "classic", "quorum":
			q.qtype = s
		case "stream":
			return errNotImplemented("stream queues (x-queue-type 'stream') are not implemented by pikatest")
		default:
			return invalid("x-queue-type", fmt.Sprintf(`"unsupported queue type '%s'"`, showValue(v)))
		}
	}
	if n, ok, err := intArg("x-message-ttl", 0); err != nil {
		return err
	} else if ok {
		q.ttl = n
	}
	if n, ok, err := intArg("x-expires", 1); err != nil {
		return err
	} else if ok {
		q.expires = n
	}
	if n, ok, err := intArg("x-max-length", 0); err != nil {
		return err
	} else if ok {
		q.maxLen = n
	}
	if n, ok, err := intArg("x-max-length-bytes", 0); err != nil {
		return err
	} else if ok {
		q.maxBytes = n
	}
	maxPriority := 0
	if n, ok, err := intArg("x-max-priority", 0); err != nil {
		return err
	} else if ok {
		if n > 255 {
			return invalid("x-max-priority", fmt.Sprintf("{max_value_exceeded,%d}", n))
		}
		maxPriority = int(n)
	}
	if v, ok := args["x-overflow"]; ok {
		s, _ := v.(string)
		switch s {
		case "drop-head", "reject-publish", "reject-publish-dlx":
			q.overflow = s
		default:
			return invalid("x-overflow", "invalid_overflow")
		}
	}
	if v, ok := args["x-dead-letter-exchange"]; ok {
		s, isStr := v.(string)
		if !isStr {
			return invalid("x-dead-letter-exchange", "{unacceptable_type,"+typeName(v)+"}")
		}
		q.dlx = &s
	}
	if v, ok := args["x-dead-letter-routing-key"]; ok {
		s, isStr := v.(string)
		if !isStr {
			return invalid("x-dead-letter-routing-key", "{unacceptable_type,"+typeName(v)+"}")
		}
		if q.dlx == nil {
			return invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
		}
		q.dlrk = &s
	}
	if n, ok, err := intArg("x-delivery-limit", 0); err != nil {
		return err
	} else if ok {
		q.deliveryLimit = n
	}
	if v, ok := args["x-single-active-consumer"]; ok {
		bv, isBool := v.(bool)
		if !isBool {
			return invalid("x-single-active-consumer", "{unacceptable_type,"+typeName(v)+"}")
		}
		q.sac = bv
	}
	if q.qtype == "quorum" {
		prop := ""
		switch {
		case !q.durable:
			prop = "non-durable"
		case q.exclusive:
			prop = "exclusive-owner"
		case q.autoDelete:
			prop = "auto-delete"
		}
		if prop != "" {
			return chanErr(wire.ReplyPreconditionFailed, "invalid property '%s' for queue '%s' in vhost '%s'", prop, q.name, q.vh.name)
		}
		if _, ok := args["x-max-priority"]; ok {
			return chanErr(wire.ReplyPreconditionFailed, "invalid arg 'x-max-priority' for queue '%s' in vhost '%s' of queue type rabbit_quorum_queue", q.name, q.vh.name)
		}
		maxPriority = 0
	}
	q.args = args
	q.ready = store.NewReady(maxPriority)
	return nil
}

// equivalentArgs are the queue arguments RabbitMQ compares on redeclaration.
var equivalentArgs = []string{"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-expires",
	"x-max-length", "x-max-length-bytes", "x-max-priority", "x-message-ttl", "x-overflow",
	"x-queue-mode", "x-queue-type", "x-single-active-consumer", "x-delivery-limit", "x-queue-master-locator", "x-quorum-initial-group-size"}

// declareQueue implements queue.declare for a name already chosen (a
// server-generated name when the client sent "").
func (vh *vhost) declareQueue(m *wire.QueueDeclare, name string, owner *conn) (*queue, *amqpError) {
	q := vh.queues[name]
	if m.Passive {
		if q == nil {
			return nil, errNoQueue(vh.name, name)
		}
		if q.exclusive && q.owner != owner {
			return nil, errLocked(vh.name, name)
		}
		// RabbitMQ counts a passive declare as a use: x-expires restarts.
		q.touch()
		return q, nil
	}
	if q != nil {
		if q.exclusive && q.owner != owner || q.exclusive != m.Exclusive {
			return nil, errLocked(vh.name, name)
		}
		what := "queue '" + name + "' in vhost '" + vh.name + "'"
		if q.durable != m.Durable {
			return nil, inequivalent("durable", what, m.Durable, q.durable)
		}
		if q.autoDelete != m.AutoDelete {
			return nil, inequivalent("auto_delete", what, m.AutoDelete, q.autoDelete)
		}
		args := m.Arguments
		if rt, ok := args["x-queue-type"]; (!ok || rt == "classic") && q.qtype == "classic" {
			// An absent x-queue-type is equivalent to classic, both ways.
		} else if err := checkArgsEquivalent(what, args, q.args, "x-queue-type"); err != nil {
			return nil, err
		}
		keys := equivalentArgs[:]
		for _, k := range keys {
			if k == "x-queue-type" {
				continue
			}
			if err := checkArgsEquivalent(what, args, q.args, k); err != nil {
				return nil, err
			}
		}
		q.touch()
		return q, nil
	}
	if reservedName(name) && m.Queue != "" {
		return nil, chanErr(wire.ReplyAccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", name)
	}
	q = &queue{vh: vh, name: name, durable: m.Durable, exclusive: m.Exclusive, autoDelete: m.AutoDelete}
	if m.Exclusive {
		q.owner = owner
	}
	if err := q.applyArgs(m.Arguments); err != nil {
		return nil, err
	}
	vh.queues[name] = q
	q.touch()
	return q, nil
}

// touch records a use of the queue for x-expires and rearms its timer.
func (q *queue) touch() {
	if q.expires <= 0 || q.deleted {
		return
	}
	q.lastUsed = time.Now()
	if q.expTimer == nil {
		b := q.vh.b
		q.expTimer = time.AfterFunc(millis(q.expires), func() {
			b.mu.Lock()
			defer b.unlock()
			q.checkExpires()
		})
		return
	}
	if len(q.consumers) == 0 {
		q.expTimer.Reset(millis(q.expires))
	}
}

// checkExpires deletes a queue unused for x-expires.
func (q *queue) checkExpires() {
	if q.deleted || len(q.consumers) > 0 {
		return
	}
	left := millis(q.expires) - time.Since(q.lastUsed)
	if left > 0 {
		q.expTimer.Reset(left)
		return
	}
	q.vh.deleteQueue(q)
}

// deleteQueue removes q: its bindings, its consumers (told with
// basic.cancel when their client understands it), and its messages.
func (vh *vhost) deleteQueue(q *queue) int {
	if q.deleted {
		return 0
	}
	q.deleted = true
	n := q.ready.Len()
	delete(vh.queues, q.name)
	for _, bd := range q.bindings {
		bd.src.bindings = removeBinding(bd.src.bindings, bd)
		vh.maybeAutoDelete(bd.src)
	}
	q.bindings = nil
	for _, cs := range append([]*consumer(nil), q.consumers...) {
		cs.ch.serverCancel(cs)
	}
	q.consumers = nil
	q.ready.Purge()
	q.stopTimers()
	return n
}

func (q *queue) stopTimers() {
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	if q.expTimer != nil {
		q.expTimer.Stop()
	}
}

// enqueue adds a message routed to q at now (unix ns). It returns false if
// the queue refused it (reject-publish overflow).
func (q *queue) enqueue(c *store.Content, now int64) bool {
	if q.deleted {
		return true
	}
	full := (q.maxLen >= 0 && int64(q.ready.Len()) >= q.maxLen) ||
		(q.maxBytes >= 0 && q.ready.Bytes()+int64(len(c.Body)) > q.maxBytes)
	if q.qtype == "quorum" {
		// A quorum queue checks its limits before the enqueue: it takes
		// messages while it is not over them yet, so one more gets in.
		full = (q.maxLen >= 0 && int64(q.ready.Len()) > q.maxLen) ||
			(q.maxBytes >= 0 && q.ready.Bytes() > q.maxBytes)
	}
	if full && q.overflow != "drop-head" {
		// A consumer able to take the message at once still gets it.
		if !(q.ready.Len() == 0 && q.canDeliverNow()) {
			if q.overflow == "reject-publish-dlx" {
				q.deadLetter(&store.Message{Content: c}, "maxlen")
			}
			return false
		}
	}
	m := &store.Message{Content: c}
	exp := int64(0)
	if q.ttl >= 0 {
		exp = expiry(now, q.ttl)
	}
	if c.Props.Expiration != "" {
		if ms, err := strconv.ParseInt(c.Props.Expiration, 10, 64); err == nil {
			if e := expiry(now, ms); e != 0 && (exp == 0 || e < exp) {
				exp = e
			}
		}
	}
	m.ExpiresAt = exp
	q.ready.Push(m)
	if q.overflow == "drop-head" {
		for (q.maxLen >= 0 && int64(q.ready.Len()) > q.maxLen) ||
			(q.maxBytes >= 0 && q.ready.Bytes() > q.maxBytes) {
			old := q.ready.PopOldest()
			if old == nil {
				break
			}
			q.deadLetter(old, "maxlen")
		}
	}
	q.dispatch(now)
	q.expire(now)
	return true
}

// expire dead-letters the expired messages at the head of the queue and
// arms the timer for the next expiry.
func (q *queue) expire(now int64) {
	if q.deleted {
		return
	}
	for _, m := range q.ready.Expire(now, nil) {
		q.deadLetter(m, "expired")
	}
	q.armTTL()
}

func (q *queue) armTTL() {
	next := q.ready.NextExpiry()
	if next == 0 || (q.ttlTimer != nil && q.ttlAt != 0 && q.ttlAt <= next) {
		return
	}
	q.ttlAt = next
	d := time.Duration(next - time.Now().UnixNano())
	b := q.vh.b
	if q.ttlTimer == nil {
		q.ttlTimer = time.AfterFunc(d, func() {
			b.mu.Lock()
			defer b.unlock()
			q.ttlAt = 0
			q.expire(time.Now().UnixNano())
		})
		return
	}
	q.ttlTimer.Reset(d)
}

// requeue returns a delivered message to the queue (nack/reject with
// requeue, a closed channel, basic.recover).
func (q *queue) requeue(m *store.Message) {
	if q.deleted {
		return
	}
	m.Redelivered = true
	m.DeliveryCount++
	if q.qtype == "quorum" && q.deliveryLimit > 0 && m.DeliveryCount > q.deliveryLimit {
		q.deadLetter(m, "delivery_limit")
		return
	}
	q.ready.Requeue(m)
}

// purge drops the ready messages.
func (q *queue) purge() int { return q.ready.Purge() }

// sortedQueues returns the queues of vh by name.
func (vh *vhost) sortedQueues() []*queue {
	out := make([]*queue, 0, len(vh.queues))
	for _, q := range vh.queues {
		out = append(out, q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// maxMillis is the longest TTL or x-expires honoured; longer ones (RabbitMQ
// accepts up to years) never come due in a test.
const maxMillis = int64(math.MaxInt64 / int64(time.Millisecond) / 2)

// millis converts a millisecond argument to a Duration without overflow.
func millis(ms int64) time.Duration {
	return time.Duration(min(ms, maxMillis)) * time.Millisecond
}

// expiry returns the unix-nanosecond time ms milliseconds after now, or 0
// (never) when that is beyond what the clock can represent.
func expiry(now, ms int64) int64 {
	if ms > maxMillis || now > math.MaxInt64-ms*int64(time.Millisecond) {
		return 0
	}
	return now + ms*int64(time.Millisecond)
}
