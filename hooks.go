package pika

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Hook is a value registered in Config.Hooks to observe a connection: it
// implements one or more of the hook interfaces
// (ConnectHook, DisconnectHook, RecoveryHook, BlockedHook, ChannelHook,
// PublishHook, PublishOutcomeHook, DeliveryHook, ProcessHook, SettleHook,
// ConsumerHook, BytesHook). The connection looks for each interface once,
// when it is dialled; a value implementing none of them is ignored. The
// plugins github.com/pika-go/pika/plugins/otelpika (OpenTelemetry tracing
// and metrics) and github.com/pika-go/pika/plugins/prompika (Prometheus
// metrics) are hooks.
//
// Hooks never run while the library holds a lock, and never on the
// goroutine that reads the socket. Each interface says on which goroutine
// its methods run:
//
//   - the caller's goroutine: PublishHook (the publisher's), DeliveryHook
//     (the goroutine calling Consumer.Next or Channel.Get; for ConsumeFunc,
//     the consumer's handler goroutine), ProcessHook (the handler
//     goroutine of ConsumeFunc), SettleHook (the goroutine calling Ack,
//     Nack or Reject). These run synchronously: a slow hook slows that
//     call only.
//   - the connection's hook goroutine: every other hook. Its events come in
//     order, one at a time, on a goroutine of the library's (started when
//     there is something to run, like the notification callbacks). A slow
//     hook delays only later hook events; outcomes waiting for a slow
//     PublishOutcomeHook make Publish wait once Config.MaxUnconfirmed of
//     them are queued.
//
// The same hook value may be registered on many connections and is called
// from many goroutines at once: it must be safe for concurrent use.
//
// A connection of package loop (github.com/pika-go/pika/loop) calls the
// same hooks, every one on its loop's goroutine, synchronously, at the
// moment of the event (ProcessHook around its consumers' handlers). The
// *Conn, *Channel, *Consumer and *Delivery its hooks get
// are stand-ins for the loop's values, one per connection, channel and
// consumer: their accessors (IsClosed, Err, RemoteAddr, ServerProperties,
// ID, Conn, Tag, Channel, the Delivery's fields, and Delivery.Ack, Nack
// and Reject) answer for the loop's values; their other methods fail as on
// a closed connection.
type Hook any

// ConnectHook is told of every connection attempt: the dial's, and each of
// a recovery's. It runs on the connection's hook goroutine.
type ConnectHook interface {
	OnConnect(ConnectEvent)
}

// ConnectEvent is one connection attempt to one address.
type ConnectEvent struct {
	Conn     *Conn
	Addr     string        // the host:port dialled
	Err      error         // nil: the connection is open (transport and AMQP handshake)
	Duration time.Duration // from the start of the transport's dial to the open or the failure
}

// DisconnectHook is told when a connection that had opened (an OnConnect
// with a nil Err) ends, for any reason: Close, a loss that recovery then
// repairs, or a final failure. It runs on the connection's hook goroutine,
// after the OnConnect of the same connection.
type DisconnectHook interface {
	OnDisconnect(DisconnectEvent)
}

// DisconnectEvent is the end of one open network connection.
type DisconnectEvent struct {
	Conn *Conn
	Addr string
	Err  error // nil after a Close the application asked for
}

// RecoveryHook is told of every recovery event (see RecoveryEvent): the
// loss that starts a recovery (RecoveryLost), each attempt, its success
// (RecoveryRecovered) or its end (RecoveryGaveUp). It runs on the
// connection's hook goroutine.
type RecoveryHook interface {
	OnRecovery(c *Conn, ev RecoveryEvent)
}

// BlockedHook is told when the broker blocks the connection (a resource
// alarm) and when it unblocks it, or the blocked connection is lost. It
// runs on the connection's hook goroutine.
type BlockedHook interface {
	OnBlocked(c *Conn, blocked bool, reason string)
}

// ChannelHook is told when a channel opens (Conn.Channel succeeded) and
// when it closes for good, with the cause (nil after Channel.Close). A
// recovery that reopens a channel reports neither. It runs on the
// connection's hook goroutine.
type ChannelHook interface {
	OnChannelOpen(ch *Channel)
	OnChannelClose(ch *Channel, err error)
}

// PublishHook is told of every Publish and PublishWithConfirm, on the
// publisher's goroutine. OnPublish runs first, before anything is sent or
// waited for; it may add headers to the message (Publishing.SetHeader) and
// replace Publishing.Ctx with a context derived from it (to carry a span,
// say). OnPublished runs when the call returns, with its error (nil: the
// message is queued for the socket), and Publishing.Seq set in confirm
// mode. Messages that recovery publishes again are not reported again.
type PublishHook interface {
	OnPublish(p *Publishing)
	OnPublished(p *Publishing, err error)
}

// Publishing is one Publish call as a PublishHook sees it. It is valid
// until OnPublished returns (the library reuses it after); hooks must not
// keep it, but may keep its Ctx.
type Publishing struct {
	// Ctx is the ctx given to Publish. A hook may replace it with a
	// context derived from it: later hooks, OnPublished and the message's
	// PublishOutcome (PublishOutcomeHook) see the replacement. Only its
	// values matter after Publish returns.
	Ctx        context.Context
	Channel    *Channel
	Exchange   string
	RoutingKey string
	// Message is the message to publish: a copy of the caller's, whose
	// Headers table is the caller's until a hook calls SetHeader. Hooks
	// must not modify Headers (or Body) in place: the caller owns them.
	Message Message
	// Seq is the message's publish sequence number in confirm mode (the
	// Tag of its Confirmation), set before OnPublished when it was sent;
	// 0 otherwise.
	Seq uint64

	ownHeaders bool // Message.Headers is a copy of the library's
}

// SetHeader sets a header of the message about to be published. The first
// call copies the headers table, so the caller's Message.Headers is never
// modified: the header goes only into what is sent (and into the copy
// kept for republishing).
func (p *Publishing) SetHeader(key string, value any) {
	if !p.ownHeaders {
		h := make(Table, len(p.Message.Headers)+1)
		maps.Copy(h, p.Message.Headers)
		p.Message.Headers = h
		p.ownHeaders = true
	}
	p.Message.Headers[key] = value
}

// PublishOutcomeHook is told of the outcome of every message published in
// confirm mode (see Confirmation.Err) once the library knows it, with the
// time from Publish to the outcome. It runs on the connection's hook
// goroutine; outcomes come in the order the library learns them.
type PublishOutcomeHook interface {
	OnPublishOutcome(PublishOutcome)
}

// Outcome is the final verdict on a message published in confirm mode.
type Outcome uint8

// The outcomes of PublishOutcome.
const (
	OutcomeAcked         Outcome = iota + 1 // the broker accepted it
	OutcomeNacked                           // basic.nack: ErrNacked
	OutcomeReturned                         // returned, unroutable: ErrReturned
	OutcomeMaybeReturned                    // ErrMaybeReturned
	OutcomeUnknown                          // the channel or connection closed first: ErrOutcomeUnknown
)

func (o Outcome) String() string {
	switch o {
	case OutcomeAcked:
		return "acked"
	case OutcomeNacked:
		return "nacked"
	case OutcomeReturned:
		return "returned"
	case OutcomeMaybeReturned:
		return "maybe-returned"
	case OutcomeUnknown:
		return "unknown"
	}
	return "outcome(?)"
}

// PublishOutcome is the outcome of one message published in confirm mode.
type PublishOutcome struct {
	// Ctx is the message's Publishing.Ctx as the PublishHooks left it;
	// context.Background() when no PublishHook is registered.
	Ctx     context.Context
	Channel *Channel
	Seq     uint64 // the sequence number it was first published with
	Outcome Outcome
	Err     error         // what its Confirmation reports (nil when acked)
	Latency time.Duration // from the Publish call recording it to the outcome
}

// DeliveryHook is told of every delivery handed to the application: by
// Consumer.Next (and All, and ConsumeFunc's handler goroutine) on the
// goroutine that takes it, and by Channel.Get on its caller's goroutine,
// before the call returns it. queue is the consumer's queue (its current
// name, for a server-named queue that recovery declared again) or Get's.
type DeliveryHook interface {
	OnDelivery(queue string, d *Delivery)
}

// ProcessHook wraps each call of a ConsumeFunc handler, on the consumer's
// handler goroutine. OnProcess runs before the handler, with the consumer's
// context; the context it returns is the handler's (return ctx itself to
// leave it). The function it returns (nil for none) runs after the handler
// returns, with nil, or with ErrHandlerPanicked when the handler panicked
// (the panic then goes on). With several ProcessHooks, each gets the
// context of the one before, and the finish functions run in reverse
// order. For pull consumers (Next, All), a plugin offers its own helper.
type ProcessHook interface {
	OnProcess(ctx context.Context, queue string, d *Delivery) (context.Context, func(error))
}

// ErrHandlerPanicked is what ProcessHook finish functions get when a
// ConsumeFunc handler panicked.
var ErrHandlerPanicked = errors.New("pika: consumer handler panicked")

// SettleHook is told of every acknowledgement the application sends
// (Ack, Nack, Reject, on the Channel or the Delivery), on the caller's
// goroutine once it is queued for the socket (or failed).
//
// It is also told, with SettleEvent.ByLibrary set, of the deliveries the
// library settles itself, one event per delivery, on the connection's hook
// goroutine: those it rejects with requeue (past a ConsumerDiscard
// buffer's hard limit, for a consumer abandoned when Consume failed, a
// Get answered after its ctx ended), those of a stream consumer it acks
// because they were seen before a resume, and the buffered deliveries of a
// manual-ack consumer dropped when its channel closed (Kind SettleReject,
// Requeue true, Err the consumer's end: nothing is sent, the broker
// requeues them).
type SettleHook interface {
	OnSettle(SettleEvent)
}

// SettleKind is an acknowledgement's method.
type SettleKind uint8

// The kinds of SettleEvent.
const (
	SettleAck    SettleKind = iota + 1 // basic.ack
	SettleNack                         // basic.nack
	SettleReject                       // basic.reject
)

func (k SettleKind) String() string {
	switch k {
	case SettleAck:
		return "ack"
	case SettleNack:
		return "nack"
	case SettleReject:
		return "reject"
	}
	return "settle(?)"
}

// SettleEvent is one acknowledgement.
type SettleEvent struct {
	Channel  *Channel
	Kind     SettleKind
	Tag      uint64 // the delivery tag given (0 with Multiple: all)
	Multiple bool
	Requeue  bool
	Count    int   // deliveries it settled (0 when Err is set)
	Err      error // why it was not sent
	// ByLibrary is set when the library settled the delivery itself, not
	// the application (see SettleHook).
	ByLibrary bool
}

// ConsumerHook is told when a consumer starts (the broker's
// basic.consume-ok for Consume or ConsumeFunc) and when it ends, with
// Consumer.Err's reason. A recovery that restarts a consumer reports
// neither (Consumer.Queue then names its queue as recovery renamed it).
// It runs on the connection's hook goroutine.
type ConsumerHook interface {
	OnConsumerStart(cons *Consumer)
	OnConsumerEnd(cons *Consumer, err error)
}

// BytesHook is told how many bytes the connection read from and wrote to
// its network connection (the transport's, TLS records included). It runs
// on the connection's hook goroutine at most every 100 ms: the counts made
// in between, or while it was busy, are added up into one call. The last
// counts of a connection reach it before Conn.Close returns.
type BytesHook interface {
	OnBytes(c *Conn, read, written int64)
}

// hookSet holds a Conn's hooks by interface, found once when it is dialled.
// It does not change after: reading it needs no lock.
type hookSet struct {
	connect    []ConnectHook
	disconnect []DisconnectHook
	recovery   []RecoveryHook
	blocked    []BlockedHook
	channel    []ChannelHook
	publish    []PublishHook
	outcome    []PublishOutcomeHook
	delivery   []DeliveryHook
	process    []ProcessHook
	settle     []SettleHook
	consumer   []ConsumerHook
	bytes      []BytesHook
}

func newHookSet(hooks []Hook) hookSet {
	var s hookSet
	for _, h := range hooks {
		if x, ok := h.(ConnectHook); ok {
			s.connect = append(s.connect, x)
		}
		if x, ok := h.(DisconnectHook); ok {
			s.disconnect = append(s.disconnect, x)
		}
		if x, ok := h.(RecoveryHook); ok {
			s.recovery = append(s.recovery, x)
		}
		if x, ok := h.(BlockedHook); ok {
			s.blocked = append(s.blocked, x)
		}
		if x, ok := h.(ChannelHook); ok {
			s.channel = append(s.channel, x)
		}
		if x, ok := h.(PublishHook); ok {
			s.publish = append(s.publish, x)
		}
		if x, ok := h.(PublishOutcomeHook); ok {
			s.outcome = append(s.outcome, x)
		}
		if x, ok := h.(DeliveryHook); ok {
			s.delivery = append(s.delivery, x)
		}
		if x, ok := h.(ProcessHook); ok {
			s.process = append(s.process, x)
		}
		if x, ok := h.(SettleHook); ok {
			s.settle = append(s.settle, x)
		}
		if x, ok := h.(ConsumerHook); ok {
			s.consumer = append(s.consumer, x)
		}
		if x, ok := h.(BytesHook); ok {
			s.bytes = append(s.bytes, x)
		}
	}
	return s
}

// hookEpoch is the origin of monotonic publish times (see pubHook).
var hookEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(hookEpoch)) }

// pubHook is what a confirm-mode record keeps for PublishOutcomeHook: the
// publishing's context and when it was published. Records have one only
// when such a hook is registered.
type pubHook struct {
	ctx   context.Context
	start int64 // monoNow at the publish
}

// hookQueue hands the events of the hot paths that happen under the
// connection's lock or on the socket's goroutines (publish outcomes, bytes)
// to the hook goroutine: they are added up here, and one drain at a time
// is posted to the hook mailbox, so that a burst costs one post.
type hookQueue struct {
	mu       sync.Mutex
	outcomes []PublishOutcome
	spare    []PublishOutcome
	posted   bool
	space    chan struct{} // closed once the outcomes drain; nil when nobody waits
	pending  atomic.Int32  // len(outcomes), for full's lock-free fast path

	read, written atomic.Int64
	bytesPosted   atomic.Bool  // a drain of the counts is posted, or timed by bytesTimer
	bytesLast     atomic.Int64 // monoNow at the last drain
	bytesTimer    *time.Timer  // posts a drain due too early after the last; nil without BytesHooks

	// The drains as func values made once (a method value made at each
	// post would allocate).
	drainOutcomes, drainBytes func()
}

// hookPost posts f to the connection's hook mailbox (callable under the
// connection's lock: posting never blocks).
func (c *Conn) hookPost(f func()) { c.hookBox.post(f) }

// outcomeLocked queues a publish outcome for the PublishOutcomeHooks.
func (c *Conn) outcomeLocked(ch *Channel, rec *pubRecord, o outcome, err error) {
	ev := PublishOutcome{Ctx: context.Background(), Channel: ch, Seq: rec.seq, Outcome: Outcome(o + 1), Err: err}
	if rec.hk != nil {
		if rec.hk.ctx != nil {
			ev.Ctx = rec.hk.ctx
		}
		ev.Latency = time.Duration(monoNow() - rec.hk.start)
	}
	q := &c.hookq
	q.mu.Lock()
	q.outcomes = append(q.outcomes, ev)
	q.pending.Store(int32(min(len(q.outcomes), 1<<30)))
	post := !q.posted
	q.posted = true
	q.mu.Unlock()
	if post {
		c.hookPost(q.drainOutcomes)
	}
}

// drainOutcomes runs the PublishOutcomeHooks on the queued outcomes.
func (c *Conn) drainOutcomes() {
	q := &c.hookq
	for {
		q.mu.Lock()
		batch := q.outcomes
		if len(batch) == 0 {
			q.posted = false
			q.mu.Unlock()
			return
		}
		q.outcomes = q.spare[:0]
		q.spare = nil
		q.pending.Store(0)
		if q.space != nil {
			close(q.space)
			q.space = nil
		}
		q.mu.Unlock()
		for i := range batch {
			for _, h := range c.hk.outcome {
				h.OnPublishOutcome(batch[i])
			}
		}
		clear(batch)
		q.mu.Lock()
		if q.spare == nil && cap(batch) <= 4096 {
			q.spare = batch[:0]
		}
		q.mu.Unlock()
	}
}

// outcomesFull returns nil while fewer than limit outcomes wait for the
// PublishOutcomeHooks, and otherwise a channel closed once they were
// handed over. The hook goroutine itself always gets nil.
func (q *hookQueue) outcomesFull(limit int) chan struct{} {
	if limit <= 0 || int(q.pending.Load()) < limit {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.outcomes) < limit || inCallback() {
		return nil
	}
	if q.space == nil {
		q.space = make(chan struct{})
	}
	return q.space
}

// bytesEvery is the least time between two drains of the byte counts to
// the BytesHooks. Posting a drain at every read of the socket started the
// hook goroutine at every read when reads were far apart (about 500 ns of
// CPU and 3 allocations each: BenchmarkBytesHookRead); a drain every 5 ms
// still made consuming through the broker cost about 50 % more CPU (the
// timer's and the hook goroutine's wake-ups, BENCHMARKS.md), every 100 ms
// no measurable amount.
const bytesEvery = 100 * time.Millisecond

// initHookQueue makes what the hook queue needs: its drains as func values,
// and the byte counts' timer when there are BytesHooks.
func (c *Conn) initHookQueue() {
	q := &c.hookq
	q.drainOutcomes, q.drainBytes = c.drainOutcomes, c.drainBytes
	if len(c.hk.bytes) > 0 {
		q.bytesTimer = time.AfterFunc(time.Hour, func() { c.hookPost(q.drainBytes) })
		q.bytesTimer.Stop()
		q.bytesLast.Store(monoNow() - int64(bytesEvery)) // the first drain is not delayed
	}
}

// addBytes counts bytes read or written for the BytesHooks; called on the
// socket's goroutines without the connection's lock. It posts a drain of
// the counts, at once or, within bytesEvery of the last one, when that
// time is up.
func (c *Conn) addBytes(read, written int) {
	q := &c.hookq
	if read > 0 {
		q.read.Add(int64(read))
	}
	if written > 0 {
		q.written.Add(int64(written))
	}
	if q.bytesPosted.CompareAndSwap(false, true) {
		if wait := bytesEvery - time.Duration(monoNow()-q.bytesLast.Load()); wait > 0 {
			q.bytesTimer.Reset(wait)
		} else {
			c.hookPost(q.drainBytes)
		}
	}
}

// flushBytes posts a drain of the byte counts now if one is timed: Close
// calls it once the socket's goroutines have ended, so that the last
// counts reach the BytesHooks before it returns.
func (c *Conn) flushBytes() {
	q := &c.hookq
	if q.bytesTimer == nil {
		return
	}
	q.bytesTimer.Stop()
	if q.bytesPosted.Load() {
		// Posted already or not, one more drain is harmless: it finds
		// nothing to report.
		c.hookPost(q.drainBytes)
	}
}

// flushHooks reports the last byte counts (see flushBytes) and waits,
// bounded by ctx, for the hooks' events queued so far, unless it runs in a
// hook or callback (which the wait could be behind). Close calls it once
// the socket's goroutines have ended.
func (c *Conn) flushHooks(ctx context.Context) {
	c.flushBytes()
	if !inCallback() {
		c.hookBox.wait(ctx)
	}
}

// drainBytes runs the BytesHooks with the bytes counted since the last
// call.
func (c *Conn) drainBytes() {
	q := &c.hookq
	q.bytesLast.Store(monoNow())
	q.bytesPosted.Store(false)
	r, w := q.read.Swap(0), q.written.Swap(0)
	if r == 0 && w == 0 {
		return
	}
	for _, h := range c.hk.bytes {
		h.OnBytes(c, r, w)
	}
}

// connectEvent reports a connection attempt to the ConnectHooks.
func (c *Conn) connectEvent(addr string, err error, d time.Duration) {
	if len(c.hk.connect) == 0 {
		return
	}
	ev := ConnectEvent{Conn: c, Addr: addr, Err: err, Duration: d}
	c.hookPost(func() {
		for _, h := range c.hk.connect {
			h.OnConnect(ev)
		}
	})
}

// disconnectEventLocked reports the end of an open link.
func (c *Conn) disconnectEventLocked(l *link, err error) {
	if len(c.hk.disconnect) == 0 {
		return
	}
	if errors.Is(err, ErrClosed) && c.closing {
		err = nil
	}
	ev := DisconnectEvent{Conn: c, Addr: l.addr, Err: err}
	c.hookPost(func() {
		for _, h := range c.hk.disconnect {
			h.OnDisconnect(ev)
		}
	})
}

// recoveryEventLocked reports a recovery event to OnRecovery callbacks and
// RecoveryHooks.
func (c *Conn) recoveryEventLocked(ev RecoveryEvent) {
	c.notify.recovery(ev)
	if len(c.hk.recovery) == 0 {
		return
	}
	c.hookPost(func() {
		for _, h := range c.hk.recovery {
			h.OnRecovery(c, ev)
		}
	})
}

// blockedEventLocked reports a change of the blocked state to OnBlocked
// callbacks and BlockedHooks.
func (c *Conn) blockedEventLocked(blocked bool, reason string) {
	c.notify.blocked(blocked, reason)
	if len(c.hk.blocked) == 0 {
		return
	}
	c.hookPost(func() {
		for _, h := range c.hk.blocked {
			h.OnBlocked(c, blocked, reason)
		}
	})
}

// channelOpenLocked reports a channel opened by the application.
func (ch *Channel) channelOpenLocked() {
	c := ch.conn
	if len(c.hk.channel) == 0 {
		return
	}
	ch.announced = true
	c.hookPost(func() {
		for _, h := range c.hk.channel {
			h.OnChannelOpen(ch)
		}
	})
}

// channelCloseLocked reports the close of a channel reported open.
func (ch *Channel) channelCloseLocked(err error) {
	c := ch.conn
	if !ch.announced {
		return
	}
	c.hookPost(func() {
		for _, h := range c.hk.channel {
			h.OnChannelClose(ch, err)
		}
	})
}

// consumerStartLocked reports a consumer the broker started.
func (cons *Consumer) consumerStartLocked() {
	c := cons.ch.conn
	if len(c.hk.consumer) == 0 || cons.announced || cons.ended {
		return
	}
	cons.announced = true
	c.hookPost(func() {
		for _, h := range c.hk.consumer {
			h.OnConsumerStart(cons)
		}
	})
}

// consumerEndLocked reports the end of a consumer reported started.
func (cons *Consumer) consumerEndLocked(err error) {
	c := cons.ch.conn
	if !cons.announced {
		return
	}
	c.hookPost(func() {
		for _, h := range c.hk.consumer {
			h.OnConsumerEnd(cons, err)
		}
	})
}

// publishHooked is Publish with PublishHooks.
func (ch *Channel) publishHooked(ctx context.Context, exchange, routingKey string, msg *Message, wantConfirm bool) (*Confirmation, error) {
	hooks := ch.conn.hk.publish
	p := publishingPool.Get().(*Publishing)
	// Every field is set: a pooled Publishing keeps its last strings.
	p.Ctx, p.Channel, p.Exchange, p.RoutingKey, p.Seq, p.ownHeaders = ctx, ch, exchange, routingKey, 0, false
	p.Message = *msg
	for _, h := range hooks {
		h.OnPublish(p)
	}
	conf, err := ch.publish(ctx, exchange, routingKey, &p.Message, wantConfirm, p)
	for _, h := range hooks {
		h.OnPublished(p, err)
	}
	// Hooks must not keep p: it is reused. Drop what may hold much memory
	// while it waits in the pool (the caller's body and headers, a context
	// carrying a span); the next take overwrites the rest.
	p.Ctx, p.Channel, p.Message.Body, p.Message.Headers = nil, nil, nil, nil
	publishingPool.Put(p)
	return conf, err
}

// publishingPool recycles Publishings: one is valid only until its
// OnPublished calls return. A pool, not a spare per connection: taking
// from it and giving back costs no atomic read-modify-write (a spare
// taken by Swap and given back by CompareAndSwap cost two, about 10 ns
// here), and concurrent publishers do not fight over one cache line.
var publishingPool = sync.Pool{New: func() any { return new(Publishing) }}

// deliveryEvent reports a delivery handed to the application.
func (c *Conn) deliveryEvent(queue string, d *Delivery) {
	for _, h := range c.hk.delivery {
		h.OnDelivery(queue, d)
	}
}

// settleEvent reports an acknowledgement.
func (c *Conn) settleEvent(ev SettleEvent) {
	for _, h := range c.hk.settle {
		h.OnSettle(ev)
	}
}

// librarySettleLocked reports deliveries the library settled itself
// (client tags) to the SettleHooks, through the hook goroutine: the
// connection's lock is held. err is the engine's (or why nothing was
// sent).
func (ch *Channel) librarySettleLocked(kind SettleKind, requeue bool, err error, tags ...uint64) {
	c := ch.conn
	if len(c.hk.settle) == 0 || len(tags) == 0 {
		return
	}
	evs := make([]SettleEvent, len(tags))
	for i, t := range tags {
		evs[i] = SettleEvent{Channel: ch, Kind: kind, Tag: t, Requeue: requeue, Count: 1, Err: err, ByLibrary: true}
		if err != nil {
			evs[i].Count = 0
		}
	}
	c.hookPost(func() {
		for i := range evs {
			for _, h := range c.hk.settle {
				h.OnSettle(evs[i])
			}
		}
	})
}

// process calls the handler of a ConsumeFunc consumer for d through the
// ProcessHooks.
func (cons *Consumer) process(ctx context.Context, queue string, d *Delivery) {
	hooks := cons.ch.conn.hk.process
	var small [2]func(error)
	finish := small[:0]
	for _, h := range hooks {
		var f func(error)
		ctx, f = h.OnProcess(ctx, queue, d)
		if f != nil {
			finish = append(finish, f)
		}
	}
	done := false
	defer func() {
		if !done {
			for i := len(finish) - 1; i >= 0; i-- {
				finish[i](ErrHandlerPanicked)
			}
		}
	}()
	cons.handler(ctx, d)
	done = true
	for i := len(finish) - 1; i >= 0; i-- {
		finish[i](nil)
	}
}
