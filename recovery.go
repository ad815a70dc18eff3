package pika

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/recovery"
)

// ErrRecovering is returned, with Config.FailWhileRecovering, by calls made
// while the connection is being recovered.
var ErrRecovering = errors.New("pika: connection is recovering")

// ErrNotRecovered ends a consumer that Config.RecoveryFilter excluded from
// a recovery.
var ErrNotRecovered = recovery.ErrNotRecovered

// ErrQueueExpired ends, at a recovery, a consumer whose queue expired
// (x-expires) while the connection was lost.
var ErrQueueExpired = recovery.ErrQueueExpired

// RecoveryFilter selects what recovery restores (see Config.RecoveryFilter).
// Each function is called, during every recovery, for each recorded entity
// of its kind; returning false leaves that entity out of this recovery. A
// nil function keeps every entity of its kind. They run on the recovery's
// goroutine and must not call the Conn.
type RecoveryFilter struct {
	// Exchange is called with an exchange's name.
	Exchange func(name string) bool
	// Queue is called with a queue's current name (a server-named queue's
	// name on the lost connection) and whether the broker named it.
	Queue func(name string, serverNamed bool) bool
	// Binding is called with a binding's source exchange, its destination
	// (a queue, or an exchange when toExchange) and its routing key.
	Binding func(source, destination, key string, toExchange bool) bool
	// Consumer is called with a consumer's queue and tag.
	Consumer func(queue, tag string) bool
}

// ErrStaleDelivery is returned by Ack, Nack and Reject for a delivery
// received before a connection recovery: the broker forgot its tag with the
// old connection (and will deliver the message again unless it was
// auto-acked), so the acknowledgement is absorbed, not sent — sending it
// would close the new channel with PRECONDITION_FAILED.
var ErrStaleDelivery = errors.New("pika: delivery tag from before a connection recovery (not sent)")

// ReconnectStrategy decides, after a connection loss, how long to wait
// before each reconnection attempt and when to give up. Implementations must
// be safe for concurrent use (several Conns may share one).
type ReconnectStrategy interface {
	// NextDelay returns the delay before attempt (1 for the first attempt
	// after a loss), or false to stop recovering. lastErr is why the
	// previous attempt failed (the loss itself before attempt 1).
	NextDelay(attempt int, lastErr error) (time.Duration, bool)
}

// Backoff is the exponential-backoff ReconnectStrategy: the delay starts at
// Initial and is multiplied by Multiplier after every failed attempt, up to
// Max, each delay varied at random by ±Jitter (a fraction) so that many
// clients do not reconnect in step.
type Backoff struct {
	Initial     time.Duration // delay before the first attempt; default 100 ms
	Max         time.Duration // cap on the delay; default 30 s
	Multiplier  float64       // growth per attempt; default 2
	Jitter      float64       // random variation, 0 to 1; default 0.2
	MaxAttempts int           // attempts before giving up; 0 means never give up
}

// DefaultBackoff is the default ReconnectStrategy: from 100 ms doubling to
// 30 s with ±20% jitter, retrying forever.
var DefaultBackoff ReconnectStrategy = Backoff{}

// NextDelay implements ReconnectStrategy.
func (b Backoff) NextDelay(attempt int, _ error) (time.Duration, bool) {
	if b.MaxAttempts > 0 && attempt > b.MaxAttempts {
		return 0, false
	}
	initial, max, mult, jitter := b.Initial, b.Max, b.Multiplier, b.Jitter
	if initial <= 0 {
		initial = 100 * time.Millisecond
	}
	if max <= 0 {
		max = 30 * time.Second
	}
	if mult < 1 {
		mult = 2
	}
	if jitter <= 0 || jitter > 1 {
		jitter = 0.2
	}
	d := float64(initial)
	for i := 1; i < attempt && d < float64(max); i++ {
		d *= mult
	}
	d = min(d, float64(max))
	d *= 1 + jitter*(2*rand.Float64()-1)
	if d >= math.MaxInt64 {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(d), true
}

// RecoveryKind says what a RecoveryEvent reports.
type RecoveryKind uint8

// The kinds of RecoveryEvent.
const (
	RecoveryLost      RecoveryKind = iota + 1 // the connection was lost; Err is the cause
	RecoveryAttempt                           // attempt Attempt starts after Delay
	RecoveryRecovered                         // the connection is back; Report says how
	RecoveryGaveUp                            // recovery stopped; Err is the final error
	// RecoveryConsumerWaiting: the consumer ConsumerTag of Queue is
	// stopped, because the broker cancelled it or recovery could not
	// restart it, while its queue exists but is unavailable (Err matches
	// ErrQueueUnavailable: a classic queue whose node is down) or could
	// not be checked; attempt Attempt to restart it starts after Delay
	// (Config.Reconnect decides, and ends the consumer with Err when it
	// gives up).
	RecoveryConsumerWaiting
	// RecoveryConsumerRestored: the consumer ConsumerTag of Queue runs
	// again, with its tag, on its channel, after Attempt attempts.
	RecoveryConsumerRestored
)

func (k RecoveryKind) String() string {
	switch k {
	case RecoveryLost:
		return "lost"
	case RecoveryAttempt:
		return "attempt"
	case RecoveryRecovered:
		return "recovered"
	case RecoveryGaveUp:
		return "gave-up"
	case RecoveryConsumerWaiting:
		return "consumer-waiting"
	case RecoveryConsumerRestored:
		return "consumer-restored"
	}
	return "recovery-kind(" + strconv.Itoa(int(k)) + ")"
}

// RecoveryEvent reports the progress of automatic recovery (see
// Conn.OnRecovery).
type RecoveryEvent struct {
	Kind    RecoveryKind
	Err     error           // RecoveryLost: the cause; RecoveryAttempt: why the previous attempt failed; RecoveryGaveUp: the final error
	Attempt int             // RecoveryAttempt, RecoveryRecovered: the attempt number
	Delay   time.Duration   // RecoveryAttempt: the wait before it
	Report  *RecoveryReport // RecoveryRecovered

	Queue       string // RecoveryConsumerWaiting, RecoveryConsumerRestored: the consumer's queue
	ConsumerTag string // RecoveryConsumerWaiting, RecoveryConsumerRestored: the consumer
}

// RecoveryReport says what a recovery restored.
type RecoveryReport struct {
	Addr          string            // the broker address connected to
	Channels      int               // channels reopened
	Consumers     int               // consumers restarted
	Republished   int               // unconfirmed messages published again
	RenamedQueues map[string]string // server-named queues: old name -> new name
	Expired       []string          // queues with x-expires that expired while the connection was lost: forgotten, not declared again
	Failed        []RecoveryFailure // entities that could not be restored
}

// RecoveryFailure is an entity that recovery could not restore, and why.
type RecoveryFailure struct {
	Entity string // e.g. `queue "orders"`, `consumer "ctag" on channel 3`
	Err    error
}

// RecoveryError is the final error of a connection whose recovery gave up.
// It matches ErrClosed (errors.Is), as well as the loss and the last
// attempt's error.
type RecoveryError struct {
	Attempts int   // attempts made
	Cause    error // the loss that started the recovery
	Last     error // why the last attempt failed
}

func (e *RecoveryError) Error() string {
	return fmt.Sprintf("pika: recovery gave up after %d attempts (connection lost: %v; last attempt: %v)", e.Attempts, e.Cause, e.Last)
}

// Unwrap returns the cause and the last attempt's error.
func (e *RecoveryError) Unwrap() []error { return []error{e.Cause, e.Last} }

// Is makes errors.Is(err, ErrClosed) true: a connection whose recovery gave
// up is closed for good.
func (e *RecoveryError) Is(target error) bool { return target == ErrClosed }

// OnRecovery registers f to be called with every recovery event: the loss,
// each attempt, the recovery (with its report), or the end of attempts. Calls
// come in order, on a goroutine of the library's; a slow f delays only later
// notifications. It returns a function that unregisters f (see Callbacks in
// the package documentation).
func (c *Conn) OnRecovery(f func(RecoveryEvent)) (unregister func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, unregister = c.notify.onRecovery.add(&c.mu, &c.notify.box, f)
	return unregister
}

// recover runs after the current link was lost with cause: it reconnects
// with the configured strategy and restores the Conn's state on the new
// link. It ends the Conn when the strategy gives up, the broker refuses the
// credentials or closes an attempt's connection with a code that is final
// for a first loss too (recovery.AttemptFinal), or the application closes
// the Conn.
func (c *Conn) recover(ctx context.Context, lost *link, cause error) {
	defer c.wg.Done()
	// The recorded consumers were active until the loss: their queues'
	// x-expires timers start then (or after a failed attempt that may have
	// restarted them).
	inUseUntil := time.Now()
	lost.wg.Wait()
	lastErr := cause
	for attempt := 1; ; attempt++ {
		delay, ok := c.cfg.Reconnect.NextDelay(attempt, lastErr)
		if !ok {
			c.giveUp(&RecoveryError{Attempts: attempt - 1, Cause: cause, Last: lastErr})
			return
		}
		// Each attempt notifies OnRecovery: wait while the connection's
		// callbacks are Config.NotifyBuffer notifications behind.
		if c.notify.box.waitSpace(ctx, c.cfg.NotifyBuffer) != nil {
			c.giveUp(nil)
			return
		}
		c.mu.Lock()
		c.recoveryEventLocked(RecoveryEvent{Kind: RecoveryAttempt, Attempt: attempt, Delay: delay, Err: lastErr})
		c.mu.Unlock()
		if !sleepCtx(ctx, delay) {
			c.giveUp(nil)
			return
		}
		l, err := c.dialLink(ctx)
		if err != nil {
			if ctx.Err() != nil {
				c.giveUp(nil)
				return
			}
			lastErr = err
			if recovery.AttemptFinal(err) {
				c.giveUp(err)
				return
			}
			continue
		}
		report, err := c.restore(ctx, l, attempt, inUseUntil)
		c.mu.Lock()
		if err == nil {
			// Close may have stopped the recovery, or the link may have
			// died, after the last step restore waited for.
			if ctx.Err() != nil {
				err = ctx.Err()
			} else if l.eng.IsClosed() {
				err = l.err
				if err == nil {
					err = ErrClosed
				}
			}
		}
		if err != nil {
			if !l.eng.IsClosed() {
				l.eng.Fail(err)
				c.afterLocked(l)
			}
			// The failed attempt may have restarted consumers (which
			// received deliveries) and republished messages: its tags and
			// confirmations are as dead as the first link's.
			for id, ch := range c.chans {
				if ch.closing {
					// Closed by the application during the attempt:
					// the failed connection completes the close.
					delete(c.chans, id)
					ch.closedLocked(ErrChannelClosed)
					continue
				}
				ch.suspendLocked(err)
			}
			c.mu.Unlock()
			l.wg.Wait()
			inUseUntil = time.Now()
			if ctx.Err() != nil {
				c.giveUp(nil)
				return
			}
			lastErr = err
			if recovery.AttemptFinal(err) {
				// The broker closed the attempt's connection with a
				// code that would have ended a first loss too.
				c.giveUp(err)
				return
			}
			continue
		}
		if c.state == connRecovering {
			c.state = connOpen
			close(c.ready)
			c.ready = nil
			c.recoveryCount++
			c.recoveryEventLocked(RecoveryEvent{Kind: RecoveryRecovered, Attempt: attempt, Report: report})
		}
		c.mu.Unlock()
		return
	}
}

// giveUp ends the Conn after recovery stopped; err nil means the
// application closed it.
func (c *Conn) giveUp(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.recoveryEventLocked(RecoveryEvent{Kind: RecoveryGaveUp, Err: err})
	}
	if c.l != nil && !c.l.eng.IsClosed() {
		c.l.eng.Fail(ErrClosed)
		c.afterLocked(c.l)
	}
	c.finalCloseLocked(err)
}

// restore makes l the Conn's link and restores, in this order: every open
// channel with its number, its QoS, confirm and tx modes; the recorded
// exchanges, queues (server-named ones get new names) and bindings; the
// consumers, with their tags; and, unless DisableRepublish is set, the
// unconfirmed messages. The application's calls wait until it is done, so
// nothing it publishes reaches a channel before that channel's modes are
// back. A failure to restore one entity is reported, not fatal; an error
// return means the link itself failed.
func (c *Conn) restore(ctx context.Context, l *link, attempt int, inUseUntil time.Time) (*RecoveryReport, error) {
	report := &RecoveryReport{Addr: l.nc.RemoteAddr().String(), RenamedQueues: map[string]string{}}
	c.mu.Lock()
	c.installLinkLocked(l)
	ids := slices.Sorted(maps.Keys(c.chans))
	type step struct {
		ch   *Channel
		what string
		w    *waiter
	}
	var steps []step
	// failed holds each channel that could not be restored with its own
	// cause.
	failed := map[*Channel]error{}
	var failedOrder []*Channel
	fail := func(ch *Channel, what string, err error) {
		if _, ok := failed[ch]; ok {
			return
		}
		failed[ch] = err
		failedOrder = append(failedOrder, ch)
		report.Failed = append(report.Failed, RecoveryFailure{Entity: "channel " + strconv.Itoa(int(ch.id)) + " (" + what + ")", Err: err})
	}
	for _, id := range ids {
		ch := c.chans[id]
		for i, m := range ch.restoreMethods() {
			var w *waiter
			var err error
			if i == 0 {
				w, err = c.rawLocked(l, func() (engine.RequestID, error) { return l.eng.OpenChannelID(id) })
			} else {
				w, err = c.rawLocked(l, func() (engine.RequestID, error) { return l.eng.Call(id, m) })
			}
			if err != nil {
				if l.eng.IsClosed() {
					c.mu.Unlock()
					return nil, err
				}
				// The new connection cannot take this channel (its
				// number is beyond the broker's channel_max): the others
				// go on.
				if i == 0 && errors.Is(err, engine.ErrBadChannel) {
					err = fmt.Errorf("pika: channel %d is beyond the channel_max %d of the new connection: %w", id, l.eng.Tuning().ChannelMax, err)
				}
				fail(ch, m.ID().Name(), err)
				break
			}
			steps = append(steps, step{ch, m.ID().Name(), w})
		}
	}
	c.mu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	for _, s := range steps {
		if _, err := s.w.wait(wctx, c); err != nil {
			if linkErr := c.linkFailed(l, err); linkErr != nil {
				return nil, linkErr
			}
			fail(s.ch, s.what, err)
		}
	}
	c.mu.Lock()
	for _, ch := range failedOrder {
		if c.chans[ch.id] == ch {
			delete(c.chans, ch.id)
			ch.closedLocked(fmt.Errorf("pika: channel %d not recovered: %w", ch.id, failed[ch]))
		}
	}
	report.Channels = len(c.chans)
	c.mu.Unlock()

	failedQueues, err := c.restoreTopology(ctx, l, report, attempt, inUseUntil)
	if err != nil {
		return nil, err
	}
	if err := c.restoreConsumers(ctx, l, report, failedQueues); err != nil {
		return nil, err
	}
	c.mu.Lock()
	for _, ch := range c.chans {
		report.Republished += ch.republishLocked()
	}
	c.afterLocked(l)
	c.mu.Unlock()
	return report, nil
}

// rawLocked makes an engine request on link l regardless of the Conn's
// state, and registers a waiter for its reply.
func (c *Conn) rawLocked(l *link, req func() (engine.RequestID, error)) (*waiter, error) {
	id, err := req()
	if err != nil {
		return nil, err
	}
	w := newWaiter()
	l.waiters[id] = w
	c.afterLocked(l)
	return w, nil
}

// linkFailed returns l's close cause if l has closed (the error came from
// the link, not the entity), and nil otherwise.
func (c *Conn) linkFailed(l *link, err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l.eng.IsClosed() {
		if l.err != nil {
			return l.err
		}
		return ErrClosed
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// restoreTopology executes the topology part of the restore
// (recovery.Plan) on a channel of its own.
func (c *Conn) restoreTopology(ctx context.Context, l *link, report *RecoveryReport, attempt int, inUseUntil time.Time) (map[string]error, error) {
	filter := c.cfg.RecoveryFilter
	c.mu.Lock()
	// Queues with a consumer (or several) to restore were in use until
	// the loss.
	consumed := map[string]bool{}
	for _, ch := range c.chans {
		for _, cons := range ch.consumers {
			if !cons.ended {
				consumed[cons.qname] = true
			}
		}
	}
	c.mu.Unlock()
	plan := recovery.NewPlan(&c.topo, &c.mu, recovery.Filter{Exchange: filter.Exchange, Queue: filter.Queue, Binding: filter.Binding},
		consumed, attempt, time.Now(), inUseUntil)
	plan.OnRename = func(old, name string) {
		for _, ch := range c.chans {
			for _, cons := range ch.consumers {
				if cons.qname == old {
					cons.qname = name
				}
			}
		}
	}
	var chID uint16
	openCh := func() error {
		c.mu.Lock()
		var id uint16
		w, err := c.rawLocked(l, func() (engine.RequestID, error) {
			var r engine.RequestID
			var err error
			id, r, err = l.eng.OpenChannel()
			return r, err
		})
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if _, err := c.waitStep(ctx, l, w); err != nil {
			return err
		}
		chID = id
		return nil
	}
	for {
		step, ok := plan.Next()
		if !ok {
			break
		}
		if chID == 0 {
			if err := openCh(); err != nil {
				return nil, err
			}
		}
		c.mu.Lock()
		w, err := c.rawLocked(l, func() (engine.RequestID, error) { return l.eng.Call(chID, step.Method) })
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		ev, err := c.waitStep(ctx, l, w)
		if err != nil {
			if linkErr := c.linkFailed(l, err); linkErr != nil {
				return nil, linkErr
			}
			chID = 0 // the refusal closed the channel
			ev.Method = nil
		}
		if err := plan.Done(ev.Method, err); err != nil {
			return nil, err
		}
	}
	for _, f := range plan.Failed {
		report.Failed = append(report.Failed, RecoveryFailure{Entity: f.Entity, Err: f.Err})
	}
	maps.Copy(report.RenamedQueues, plan.Renamed)
	report.Expired = plan.Expired
	if chID != 0 {
		c.mu.Lock()
		w, err := c.rawLocked(l, func() (engine.RequestID, error) { return l.eng.CloseChannel(chID) })
		c.mu.Unlock()
		if err == nil {
			_, err = c.waitStep(ctx, l, w)
		}
		if err != nil {
			if linkErr := c.linkFailed(l, err); linkErr != nil {
				return nil, linkErr
			}
		}
	}
	return plan.FailedQueues, nil
}

// waitStep waits for one restore step's reply, bounded by the handshake
// timeout.
func (c *Conn) waitStep(ctx context.Context, l *link, w *waiter) (engine.Event, error) {
	wctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	ev, err := w.wait(wctx, c)
	if err != nil {
		if linkErr := c.linkFailed(l, err); linkErr != nil {
			return ev, linkErr
		}
	}
	return ev, err
}

// restoreConsumers starts every consumer again, on its channel, with its
// tag.
func (c *Conn) restoreConsumers(ctx context.Context, l *link, report *RecoveryReport, failedQueues map[string]error) error {
	type pending struct {
		cons *Consumer
		w    *waiter
	}
	var all []pending
	// The filter is application code: it runs without the lock.
	var excluded map[*Consumer]bool
	if f := c.cfg.RecoveryFilter.Consumer; f != nil {
		type named struct {
			cons       *Consumer
			queue, tag string
		}
		var list []named
		c.mu.Lock()
		for _, ch := range c.chans {
			for _, cons := range ch.consumers {
				list = append(list, named{cons, cons.qname, cons.tag})
			}
		}
		c.mu.Unlock()
		excluded = map[*Consumer]bool{}
		for _, n := range list {
			if !f(n.queue, n.tag) {
				excluded[n.cons] = true
			}
		}
	}
	c.mu.Lock()
	var conss []*Consumer
	for _, ch := range c.chans {
		if ch.closing {
			continue // the application closed it during the restore
		}
		for _, cons := range ch.consumers {
			if !cons.ended {
				conss = append(conss, cons)
			}
		}
	}
	slices.SortFunc(conss, func(a, b *Consumer) int { return int(a.seq - b.seq) })
	for _, cons := range conss {
		if excluded[cons] {
			if cons.ch.consumers[cons.tag] == cons {
				delete(cons.ch.consumers, cons.tag)
			}
			cons.endLocked(ErrNotRecovered)
			continue
		}
		if cons.reviving {
			continue // its reviver restarts it (see Conn.reviveLocked)
		}
		if qerr, failed := failedQueues[cons.qname]; failed && recovery.Unavailable(qerr) && c.reviveLocked(cons, &recovery.UnavailableErr{Err: qerr}) {
			// Its queue exists but its node is down: the consumer waits
			// for it instead of ending.
			report.Failed = append(report.Failed, RecoveryFailure{
				Entity: "consumer " + strconv.Quote(cons.tag) + " on channel " + strconv.Itoa(int(cons.ch.id)) + " (waiting for its queue)", Err: &recovery.UnavailableErr{Err: qerr}})
			continue
		}
		if qerr, failed := failedQueues[cons.qname]; failed {
			// Its queue is not there: basic.consume would fail and close
			// the application's channel with it.
			report.Failed = append(report.Failed, RecoveryFailure{
				Entity: "consumer " + strconv.Quote(cons.tag) + " on channel " + strconv.Itoa(int(cons.ch.id)), Err: qerr})
			if cons.ch.consumers[cons.tag] == cons {
				delete(cons.ch.consumers, cons.tag)
			}
			cons.endLocked(qerr)
			continue
		}
		m := cons.consumeMethod()
		id := cons.ch.id
		w, err := c.rawLocked(l, func() (engine.RequestID, error) { return l.eng.Call(id, m) })
		if err != nil {
			c.mu.Unlock()
			return err
		}
		all = append(all, pending{cons, w})
	}
	c.mu.Unlock()
	for _, p := range all {
		if _, err := c.waitStep(ctx, l, p.w); err != nil {
			if linkErr := c.linkFailed(l, err); linkErr != nil {
				return linkErr
			}
			report.Failed = append(report.Failed, RecoveryFailure{
				Entity: "consumer " + strconv.Quote(p.cons.tag) + " on channel " + strconv.Itoa(int(p.cons.ch.id)), Err: err})
			c.mu.Lock()
			if p.cons.ch.consumers[p.cons.tag] == p.cons {
				delete(p.cons.ch.consumers, p.cons.tag)
			}
			p.cons.endLocked(err)
			c.mu.Unlock()
			continue
		}
		report.Consumers++
	}
	return nil
}

// sleepCtx waits for d, or until ctx ends (false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
