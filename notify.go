package pika

import (
	"context"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// mailbox runs notification callbacks in order on a goroutine of its own,
// started when there is something to run and gone when there is not. Posting
// never blocks, so the connection's goroutines can post while holding the
// connection's lock; a slow callback delays only later callbacks of the
// same mailbox.
//
// The queue is bounded by making the producers wait, not the poster: full
// returns a channel to wait on while the queue holds its limit, and the
// callers that cause notifications (Publish, recovery) wait on it before
// causing more. The reader always posts.
type mailbox struct {
	mu      sync.Mutex
	queue   []posted
	running bool
	idle    chan struct{} // closed when the runner goroutine exits; nil while none runs
	limit   int           // the bound space waits for
	space   chan struct{} // closed once fewer than limit notifications wait; nil when nobody waits
	queued  atomic.Int32  // len(queue), for full's lock-free fast path
}

// posted is a notification waiting in a mailbox: f, unless live is set and
// false when its turn comes (the callback was unregistered).
type posted struct {
	f    func()
	live *atomic.Bool
}

func (m *mailbox) post(f func()) { m.postFor(nil, f) }

// postFor posts f to be run unless live is false when its turn comes.
func (m *mailbox) postFor(live *atomic.Bool, f func()) {
	m.mu.Lock()
	m.queue = append(m.queue, posted{f, live})
	m.queued.Store(int32(len(m.queue)))
	if !m.running {
		m.running = true
		m.idle = make(chan struct{})
		go m.run(m.idle)
	}
	m.mu.Unlock()
}

func (m *mailbox) run(idle chan struct{}) {
	defer close(idle)
	for {
		m.mu.Lock()
		if len(m.queue) == 0 {
			m.running = false
			m.queue = nil
			m.releaseLocked()
			m.mu.Unlock()
			return
		}
		p := m.queue[0]
		m.queue[0] = posted{}
		m.queue = m.queue[1:]
		m.queued.Store(int32(len(m.queue)))
		m.releaseLocked()
		// Checked under the lock that kill takes: once kill returns, a
		// notification still queued for the callback never runs.
		skip := p.live != nil && !p.live.Load()
		m.mu.Unlock()
		if !skip {
			p.f()
		}
	}
}

// kill marks a callback unregistered: its notifications still queued are
// dropped when their turn comes. One the runner has already taken runs.
func (m *mailbox) kill(live *atomic.Bool) {
	m.mu.Lock()
	live.Store(false)
	m.mu.Unlock()
}

// callback is one registered notification callback. live is true until it
// is unregistered.
type callback[F any] struct {
	f    F
	live atomic.Bool
}

// callbacks is a list of registered callbacks of one kind, guarded by the
// connection's lock.
type callbacks[F any] []*callback[F]

// add registers f (under mu, the connection's lock, held by the caller) and
// returns the callback and the function that unregisters it: it removes the
// callback from the list under mu and drops its notifications still queued
// in box. The function is idempotent and safe to call from any goroutine,
// a callback included, but not with mu held.
func (cs *callbacks[F]) add(mu *sync.Mutex, box *mailbox, f F) (*callback[F], func()) {
	cb := &callback[F]{f: f}
	cb.live.Store(true)
	*cs = append(*cs, cb)
	return cb, func() {
		mu.Lock()
		if i := slices.Index(*cs, cb); i >= 0 {
			*cs = slices.Delete(*cs, i, i+1)
		}
		mu.Unlock()
		box.kill(&cb.live)
	}
}

// full returns nil while fewer than limit notifications wait, and
// otherwise a channel that is closed once fewer do (or wake is called). A
// notification callback always gets nil: it might wait for itself, or for
// another callback waiting for it.
func (m *mailbox) full(limit int) chan struct{} {
	if int(m.queued.Load()) < limit {
		return nil // the common case, without the mailbox's lock
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.queue) < limit || inCallback() {
		return nil
	}
	m.limit = limit
	if m.space == nil {
		m.space = make(chan struct{})
	}
	return m.space
}

// waitSpace waits until fewer than limit notifications wait, or ctx ends.
func (m *mailbox) waitSpace(ctx context.Context, limit int) error {
	for {
		space := m.full(limit)
		if space == nil {
			return nil
		}
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// releaseLocked wakes the producers waiting in full once the queue is below
// their limit.
func (m *mailbox) releaseLocked() {
	if m.space != nil && len(m.queue) < m.limit {
		close(m.space)
		m.space = nil
	}
}

// wake wakes the producers waiting in full, to look again at why they wait
// (their channel closed, say).
func (m *mailbox) wake() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.space != nil {
		close(m.space)
		m.space = nil
	}
}

// mailboxRun is the name of the function that runs notification callbacks.
var mailboxRun = runtime.FuncForPC(reflect.ValueOf((*mailbox).run).Pointer()).Name()

// inCallback reports whether the calling goroutine runs a notification
// callback: whether (*mailbox).run is on its stack. It walks the stack, so
// it is for the rare path of a full queue only.
func inCallback() bool { return onStack(mailboxRun) }

// onStack reports whether the function named fn is on the calling
// goroutine's stack (within its innermost 512 frames).
func onStack(fn string) bool {
	var pcs [512]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs[:])])
	for {
		f, more := frames.Next()
		if f.Function == fn {
			return true
		}
		if !more {
			return false
		}
	}
}

// len returns the number of notifications waiting (not counting one
// running).
func (m *mailbox) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queue)
}

// wait waits until the mailbox has run everything posted so far, or ctx
// ends.
func (m *mailbox) wait(ctx context.Context) {
	m.mu.Lock()
	idle := m.idle
	m.mu.Unlock()
	if idle == nil {
		return
	}
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// notifier holds a connection's notification callbacks (guarded by the
// connection's lock) and the mailbox that runs them.
type notifier struct {
	box        mailbox
	onClose    callbacks[func(error)]
	onBlock    callbacks[func(blocked bool, reason string)]
	onRecovery callbacks[func(RecoveryEvent)]
}

func (n *notifier) recovery(ev RecoveryEvent) {
	for _, cb := range n.onRecovery {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(ev) })
	}
}

func (n *notifier) closed(err error) {
	for _, cb := range n.onClose {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(err) })
	}
}

func (n *notifier) blocked(b bool, reason string) {
	for _, cb := range n.onBlock {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(b, reason) })
	}
}

// OnClose registers f to be called once when the connection closes for
// good, with nil after a Close the application asked for and the cause
// otherwise (see Conn.Err); a loss that recovery repairs is reported by
// OnRecovery, not here. f runs on a goroutine of the library's, never while
// the library holds a lock; it may call the Conn. Registering after the
// close calls f at once (on that goroutine). It returns a function that
// unregisters f (see Callbacks in the package documentation).
func (c *Conn) OnClose(f func(err error)) (unregister func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cb, unregister := c.notify.onClose.add(&c.mu, &c.notify.box, f)
	if c.state == connClosed {
		err := c.err
		c.notify.box.postFor(&cb.live, func() { f(err) })
	}
	return unregister
}

// OnBlocked registers f to be called when the broker blocks the connection
// (blocked true, with the broker's reason, e.g. "low on memory") and when it
// unblocks it. Calls come in order, on a goroutine of the library's. It
// returns a function that unregisters f (see Callbacks in the package
// documentation).
func (c *Conn) OnBlocked(f func(blocked bool, reason string)) (unregister func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, unregister = c.notify.onBlock.add(&c.mu, &c.notify.box, f)
	return unregister
}

// ConfirmEvent is a publisher confirmation as seen by Channel.OnConfirm: one
// basic.ack or basic.nack frame, and what it settled. An ack also confirms
// mandatory messages the broker returned (it dropped them): Returned counts
// those, and MaybeReturned those that may have been (see
// ErrMaybeReturned), so the messages this confirmation shows delivered are
// Count - Returned - MaybeReturned when Ack is true.
type ConfirmEvent struct {
	Tag           uint64 // the delivery tag, or the highest one with Multiple
	Multiple      bool   // every outstanding tag up to Tag
	Ack           bool   // true: accepted (unless returned); false: refused (basic.nack)
	Count         int    // messages it settled (0: a tag already settled or never published)
	Returned      int    // of those, messages returned by the broker
	MaybeReturned int    // of those, messages that may have been returned
}

// chanNotifier holds a channel's notification callbacks (guarded by the
// connection's lock) and the mailbox that runs them.
type chanNotifier struct {
	box       mailbox
	onClose   callbacks[func(error)]
	onReturn  callbacks[func(*Return)]
	onConfirm callbacks[func(ConfirmEvent)]
	onCancel  callbacks[func(string)]
	onFlow    callbacks[func(bool)]
	onOrphan  callbacks[func(string, uint64)]
}

func (n *chanNotifier) closed(err error) {
	for _, cb := range n.onClose {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(err) })
	}
	// Publishers waiting for the queue to drain return the close cause.
	n.box.wake()
}

// full returns nil while the channel's notification queue is below limit
// (Config.NotifyBuffer), and otherwise a channel closed when Publish should
// look again. Publish waits on it: the publishers, who cause returns and
// confirmations, wait for the callbacks, never the reader.
func (n *chanNotifier) full(limit int) chan struct{} { return n.box.full(limit) }

func (n *chanNotifier) returned(r *Return) {
	for _, cb := range n.onReturn {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(r) })
	}
}

func (n *chanNotifier) confirmed(c ConfirmEvent) {
	for _, cb := range n.onConfirm {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(c) })
	}
}

func (n *chanNotifier) cancelled(tag string) {
	for _, cb := range n.onCancel {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(tag) })
	}
}

func (n *chanNotifier) flow(active bool) {
	for _, cb := range n.onFlow {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(active) })
	}
}

func (n *chanNotifier) orphan(tag string, deliveryTag uint64) {
	for _, cb := range n.onOrphan {
		f := cb.f
		n.box.postFor(&cb.live, func() { f(tag, deliveryTag) })
	}
}

// OnClose registers f to be called once when the channel closes, with the
// same value Channel.Err returns then: nil when the application asked for
// the close, with Channel.Close or with Conn.Close of its connection (the
// rule of Conn.OnClose), and the cause otherwise (a *Error from the broker,
// or the connection's failure). A connection loss that recovery repairs
// does not close the channel. f runs on a goroutine of the library's;
// registering after the close calls f at once (on that goroutine). It
// returns a function that unregisters f (see Callbacks in the package
// documentation).
func (ch *Channel) OnClose(f func(err error)) (unregister func()) {
	c := ch.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	cb, unregister := ch.notify.onClose.add(&c.mu, &ch.notify.box, f)
	if ch.err != nil {
		var err error
		if !ch.byApp {
			err = ch.err
		}
		ch.notify.box.postFor(&cb.live, func() { f(err) })
	}
	return unregister
}

// OnReturn registers f to be called with every message the broker returns
// on this channel (mandatory and unroutable). Calls come in order, on a
// goroutine of the library's; a slow f delays only this channel's
// notifications and, once Config.NotifyBuffer of them wait, Publish on this
// channel (see Concurrency in the package documentation). It returns a
// function that unregisters f (see Callbacks in the package documentation).
func (ch *Channel) OnReturn(f func(*Return)) (unregister func()) {
	ch.conn.mu.Lock()
	defer ch.conn.mu.Unlock()
	_, unregister = ch.notify.onReturn.add(&ch.conn.mu, &ch.notify.box, f)
	return unregister
}

// OnConfirm registers f to be called with every confirmation (basic.ack or
// basic.nack) the broker sends on this channel in confirm mode, in order,
// with how many messages it settled and how many of those were returned
// (see ConfirmEvent). Like OnReturn, a slow f makes Publish on this channel
// wait once Config.NotifyBuffer notifications wait for it. It returns a
// function that unregisters f (see Callbacks in the package documentation).
func (ch *Channel) OnConfirm(f func(ConfirmEvent)) (unregister func()) {
	ch.conn.mu.Lock()
	defer ch.conn.mu.Unlock()
	_, unregister = ch.notify.onConfirm.add(&ch.conn.mu, &ch.notify.box, f)
	return unregister
}

// OnCancel registers f to be called with the tag of every consumer the
// broker cancels on this channel (queue deleted, node down). With recovery
// on, a cancelled consumer ends only once the broker says its queue no
// longer exists: when the queue still exists (a classic queue whose node
// went down), the consumer waits for it and restarts (see
// RecoveryConsumerWaiting). It returns a
// function that unregisters f (see Callbacks in the package documentation).
func (ch *Channel) OnCancel(f func(consumerTag string)) (unregister func()) {
	ch.conn.mu.Lock()
	defer ch.conn.mu.Unlock()
	_, unregister = ch.notify.onCancel.add(&ch.conn.mu, &ch.notify.box, f)
	return unregister
}

// OnFlow registers f to be called when the broker pauses (false) or resumes
// (true) publishing on this channel with channel.flow. Publish waits by
// itself while paused. It returns a function that unregisters f (see
// Callbacks in the package documentation).
func (ch *Channel) OnFlow(f func(active bool)) (unregister func()) {
	ch.conn.mu.Lock()
	defer ch.conn.mu.Unlock()
	_, unregister = ch.notify.onFlow.add(&ch.conn.mu, &ch.notify.box, f)
	return unregister
}

// OnOrphanDelivery registers f to be called for a delivery whose consumer
// tag no consumer on this channel has (it stays unacknowledged until the
// channel closes and the broker requeues it). deliveryTag is numbered like
// Delivery.DeliveryTag: Channel.Ack, Nack and Reject take it. It returns a
// function that unregisters f (see Callbacks in the package documentation).
func (ch *Channel) OnOrphanDelivery(f func(consumerTag string, deliveryTag uint64)) (unregister func()) {
	ch.conn.mu.Lock()
	defer ch.conn.mu.Unlock()
	_, unregister = ch.notify.onOrphan.add(&ch.conn.mu, &ch.notify.box, f)
	return unregister
}
