package loop

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/amqpdial"
	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/wire"
)

// recState is the recovery state of a Conn whose Config leaves recovery on,
// made on first use (see Conn.recovery): a declaration to record, a
// consumer, an OnRecovery handler, a loss. An idle connection that has
// recorded nothing holds none, only its Config. Everything in it belongs
// to the loop goroutine.
type recState struct {
	cfg        *pika.Config
	topo       recovery.Record
	onRecovery handlers[func(pika.RecoveryEvent)]
	consSeq    uint64 // numbers consumers in the order they started

	recovering bool // from the loss until the recovery ends
	done       bool // the Conn ends: no further recovery
	appClosed  bool // by Close, during a recovery
	attempt    int
	cause      error // the loss
	lastErr    error // why the last attempt failed
	inUseUntil time.Time
	wait       *Timer   // the delay before the next attempt
	gen        uint64   // the attempt's restore; replies to an older one are ignored
	linkGen    uint64   // counts the links lost: revivals of a lost one stop
	rs         *restore // the restore in progress, or nil
}

// setRecoveryDefaults fills in the fields of cfg that recovery reads, when
// cfg leaves recovery on.
func setRecoveryDefaults(cfg *pika.Config) {
	if cfg.DisableRecovery {
		return
	}
	if cfg.Reconnect == nil {
		cfg.Reconnect = pika.DefaultBackoff
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = engine.DefaultHandshakeTimeout
	}
}

// recoveryOn reports whether c recovers a lost link: its Config leaves
// recovery on (a Conn with recovery off lets go of its Config once open).
func (c *Conn) recoveryOn() bool { return c.cfg != nil && !c.cfg.DisableRecovery }

// recovery returns c's recovery state, made now if this is its first use;
// nil with recovery off.
func (c *Conn) recovery() *recState {
	if c.rec == nil && c.recoveryOn() {
		c.rec = &recState{cfg: c.cfg}
	}
	return c.rec
}

// republishing reports whether messages published in confirm mode are
// kept to be published again after a loss.
func (c *Conn) republishing() bool { return c.recoveryOn() && !c.cfg.DisableRepublish }

// OnRecovery registers fn to run with every recovery event of the
// connection (pika.RecoveryEvent: the loss, each attempt with its delay,
// the recovery with its report, or the end of attempts; a consumer
// waiting for its queue, and restored), on the loop's goroutine, in order,
// after the work at hand. It returns a function that unregisters fn. With
// Config.DisableRecovery, fn never runs.
func (c *Conn) OnRecovery(fn func(pika.RecoveryEvent)) func() {
	r := c.recovery()
	if r == nil {
		return func() {}
	}
	return r.onRecovery.add(fn)
}

// Recovering reports whether the connection is lost and being recovered.
// Calls made meanwhile fail with pika.ErrRecovering.
func (c *Conn) Recovering() bool { return c.rec != nil && c.rec.recovering }

// linkUp reports whether the connection has an open link: not while a
// recovery waits or dials, but during its restore.
func (c *Conn) linkUp() bool {
	return c.eng != nil && c.open && !c.eng.IsClosed()
}

// recErr returns pika.ErrRecovering while the connection recovers.
func (c *Conn) recErr() error {
	if c.Recovering() {
		return pika.ErrRecovering
	}
	return nil
}

// event reports ev to the RecoveryHooks of Config.Hooks, now, and to the
// OnRecovery handlers, after the work at hand.
func (c *Conn) event(ev pika.RecoveryEvent) {
	if hooks, pc := c.hk.recoveryHooks(); len(hooks) > 0 {
		for _, x := range hooks {
			x.OnRecovery(pc, ev)
		}
	}
	if c.rec == nil {
		return
	}
	fns := c.rec.onRecovery.list()
	if len(fns) == 0 {
		return
	}
	c.l.defer_(func() {
		for _, fn := range fns {
			fn(ev)
		}
	})
}

// observe keeps the topology record true after the reply ev to m (ev.Err
// nil and ev.Method nil for a no-wait method sent). The record is made
// when there is a first declaration to put in it: until then, forgetting
// or touching anything in it changes nothing.
func (c *Conn) observe(m wire.Method, ev engine.Event) {
	r := c.rec
	if r == nil {
		if ev.Err != nil || !recorded(m) {
			return
		}
		if r = c.recovery(); r == nil {
			return
		}
	}
	now := time.Now()
	if ev.Err == nil {
		t := &r.topo
		switch m := m.(type) {
		case *wire.ExchangeDeclare:
			t.AddExchange(m)
		case *wire.ExchangeDelete:
			t.RemoveExchange(m.Exchange)
		case *wire.QueueDeclare:
			name := m.Queue
			if ok, _ := ev.Method.(*wire.QueueDeclareOk); ok != nil {
				name = ok.Queue
			}
			if name != "" {
				t.AddQueue(m, name, now)
			}
		case *wire.QueueDelete:
			t.RemoveQueue(m.Queue)
		case *wire.QueueBind:
			t.AddBinding(&recovery.Binding{Destination: m.Queue, Source: m.Exchange, Key: m.RoutingKey, Args: m.Arguments})
		case *wire.QueueUnbind:
			t.RemoveBinding(&recovery.Binding{Destination: m.Queue, Source: m.Exchange, Key: m.RoutingKey, Args: m.Arguments})
		case *wire.ExchangeBind:
			t.AddBinding(&recovery.Binding{ToExchange: true, Destination: m.Destination, Source: m.Source, Key: m.RoutingKey, Args: m.Arguments})
		case *wire.ExchangeUnbind:
			t.RemoveBinding(&recovery.Binding{ToExchange: true, Destination: m.Destination, Source: m.Source, Key: m.RoutingKey, Args: m.Arguments})
		}
	}
	if queue, exchanges, ok := recovery.Observed(m); ok {
		r.topo.Observe(ev, queue, exchanges, now)
	}
}

// recorded reports whether a successful m adds to the topology record.
func recorded(m wire.Method) bool {
	switch m.(type) {
	case *wire.ExchangeDeclare, *wire.QueueDeclare, *wire.QueueBind, *wire.ExchangeBind:
		return true
	}
	return false
}

// consumerEnded notes that cons was cancelled by the application: its
// queue was in use until now, and an auto-delete queue whose last consumer
// this was is gone.
func (c *Conn) consumerEnded(cons *Consumer) {
	r := c.rec
	if r == nil {
		return
	}
	r.topo.TouchQueue(cons.queue, time.Now())
	q := r.topo.Queue(cons.queue)
	if q == nil || !q.Decl.AutoDelete {
		return
	}
	for _, ch := range c.chans {
		for _, o := range ch.consumers {
			if o != cons && o.queue == cons.queue && !o.ended {
				return
			}
		}
	}
	r.topo.RemoveQueue(cons.queue)
}

// consumerCancelled notes the broker's basic.cancel of a consumer of
// queue: the broker cancels consumers when their queue is deleted, so
// recovery must not declare it again.
func (c *Conn) consumerCancelled(queue string) {
	if c.rec != nil {
		c.rec.topo.RemoveQueue(queue)
	}
}

// lostLink is called first when the engine closed with err. It reports
// true when recovery takes over: the loss of an open connection that the
// application did not ask for, or the failure of a recovery attempt.
func (c *Conn) lostLink(err error) bool {
	if !c.recoveryOn() || c.dialCb != nil {
		return false
	}
	r := c.recovery()
	if r.done {
		return false
	}
	if !r.recovering {
		if c.closeTimer != nil || errors.Is(err, ErrStopped) || !recovery.Recoverable(err) {
			return false
		}
		r.recovering = true // first: the hooks of dropLink see it
		c.dropLink(err)
		if r.done {
			return true // a hook closed the Conn: endRecovery ends it
		}
		r.cause, r.lastErr, r.attempt = err, err, 0
		r.inUseUntil = time.Now()
		c.suspend(err)
		if r.done {
			return true // a PublishOutcomeHook closed the Conn
		}
		c.event(pika.RecoveryEvent{Kind: pika.RecoveryLost, Err: err})
		if !r.done {
			c.nextAttempt()
		}
		return true
	}
	opened := c.open
	c.dropLink(err)
	if r.done {
		return true
	}
	if !opened {
		// The handshake failed: the next address, if any, in the same
		// attempt.
		c.hk.connectEvent(c.remote, err)
		if r.done {
			return true
		}
		if c.redialAfter(fmt.Errorf("pika: handshake with %s: %w", c.remote, err)) {
			return true // process calls restartDial
		}
		err = amqpdial.JoinErrors(c.ds.errs)
	} else {
		// The attempt may have restarted consumers: their queues were in
		// use until now (x-expires).
		r.inUseUntil = time.Now()
	}
	c.attemptFailed(err)
	return true
}

// dropLink lets go of the link that ended with err: the last bytes are
// written, the transport closes, a block ends, the secret refreshes stop
// until the next link opens, and the hooks hear of the disconnection; the
// Conn, its channels and consumers stay.
func (c *Conn) dropLink(err error) {
	c.closed = true
	c.stopSecretRefresh()
	if c.open {
		c.open = false
		c.hk.disconnectEvent(c.remote, err)
		c.hk.bytesEvent()
	}
	if c.rec.rs != nil {
		c.rec.rs.stop()
	}
	if c.tick != nil && c.tick.index >= 0 {
		c.tick.Stop()
	}
	if c.eng.OutgoingLen() > 0 && c.t != nil {
		c.t.write(c.eng.AppendOutgoing(nil))
	}
	if c.t != nil {
		c.t.closeAfterFlush()
		c.t = nil
	}
	// The block was the lost connection's: the next one starts unblocked
	// (its broker says so again if its alarm still holds).
	if c.blocked {
		c.blocked = false
		c.hk.blockedEvent(false, "")
		for _, fn := range c.onBlocked.list() {
			fn(false, "")
		}
	}
}

// suspend prepares the channels for the next link after a loss with
// cause: a channel the application was closing is closed; confirmations
// outstanding are kept for republishing (or resolve with
// pika.ErrOutcomeUnknown); deliveries received so far become stale.
func (c *Conn) suspend(cause error) {
	c.rec.linkGen++
	for id, ch := range c.chans {
		for _, cons := range ch.consumers {
			if cons.rv != nil {
				cons.rv.stop() // the restore takes it over
			}
		}
		if ch.closing {
			delete(c.chans, id)
			ch.gone(nil)
			continue
		}
		ch.tagBase = ch.lastTag
		if ch.tx {
			ch.txLost = true
		}
		// Taken out of the set before any outcome is reported: a
		// PublishOutcomeHook may close the channel, which settles what
		// the set still holds.
		var out []outstanding
		ch.confirms.SettleAll(func(tag uint64, s *slot) {
			if s != nil {
				out = append(out, outstanding{tag, s})
			}
		})
		for _, o := range out {
			switch s := o.s; {
			case s.pub != nil && s.pub.returned != nil:
				// The broker returned it: the missing confirmation
				// changes nothing.
				ch.finish(o.tag, s, pika.OutcomeReturned, &pika.ReturnedError{Return: s.pub.returned})
			case s.kept != nil && !ch.closed:
				ch.republish = append(ch.republish, s)
			case ch.closed: // by a hook, just now
				ch.finish(o.tag, s, pika.OutcomeUnknown, outcomeUnknown(ch.err))
			default:
				ch.finish(o.tag, s, pika.OutcomeUnknown, outcomeUnknown(cause))
			}
		}
		ch.returns.Reset()
		if ch.confirming {
			ch.confirms.Reset(1)
			// On the next link confirm mode is selected before anything is
			// published: every return there is for a message in confirm
			// mode.
			ch.confirmOK = true
		}
	}
}

// outstanding is a message whose confirmation a loss cut off.
type outstanding struct {
	tag uint64
	s   *slot
}

// nextAttempt waits for the delay Config.Reconnect gives before the next
// attempt, or gives up.
func (c *Conn) nextAttempt() {
	r := c.rec
	r.attempt++
	delay, ok := r.cfg.Reconnect.NextDelay(r.attempt, r.lastErr)
	if !ok {
		c.giveUp(&pika.RecoveryError{Attempts: r.attempt - 1, Cause: r.cause, Last: r.lastErr})
		return
	}
	c.event(pika.RecoveryEvent{Kind: pika.RecoveryAttempt, Attempt: r.attempt, Delay: delay, Err: r.lastErr})
	if r.done {
		return // a RecoveryHook closed the Conn
	}
	r.wait = c.l.AfterFunc(delay, c.startAttempt)
}

// startAttempt dials again, over every address of the Config.
func (c *Conn) startAttempt() {
	r := c.rec
	r.wait = nil
	c.eng, c.t, c.tick, c.closeTimer = nil, nil, nil, nil
	c.closed, c.open, c.err, c.armed = false, false, nil, time.Time{}
	c.redial = false
	c.ds = &dialState{hk: c.hk}
	c.startDial()
}

// attemptFailed is the end of an attempt that failed with err: the next
// attempt, unless the broker refused the login or closed the attempt's
// connection with a code that is final for a first loss too
// (recovery.AttemptFinal).
func (c *Conn) attemptFailed(err error) {
	r := c.rec
	r.lastErr = err
	if recovery.AttemptFinal(err) {
		c.giveUp(err)
		return
	}
	// The attempt may have restarted consumers and republished messages:
	// their tags and confirmations are as dead as the first link's.
	c.suspend(err)
	c.nextAttempt()
}

// giveUp ends the recovery and the Conn with err.
func (c *Conn) giveUp(err error) {
	c.event(pika.RecoveryEvent{Kind: pika.RecoveryGaveUp, Err: err})
	if !c.rec.done { // (a RecoveryHook may have closed the Conn)
		c.endRecovery(err)
	}
}

// endRecovery ends the Conn while it recovers with err (after Close, the
// Conn ends with nil: see appClosed).
func (c *Conn) endRecovery(err error) {
	c.stopRecovery()
	if c.eng != nil && !c.eng.IsClosed() {
		c.eng.Fail(err)
		c.l.markDirty(c)
		return
	}
	// No link: between attempts, or dialing (attach then drops the dial's
	// transport: the Conn is closed). The end runs from the loop, not
	// inside Close.
	c.closed = true
	c.l.defer_(func() { c.closedEvent(err) })
}

// stopRecovery stops the recovery for good: no further attempt, and the
// restore in progress (if any) is over.
func (c *Conn) stopRecovery() {
	r := c.rec
	r.recovering, r.done = false, true
	r.gen++
	if r.wait != nil {
		r.wait.Stop()
		r.wait = nil
	}
	if r.rs != nil {
		r.rs.stop()
	}
}

// closeRecovering is Close while the connection recovers: the recovery
// stops, the attempt's link (if any) closes, and the Conn ends with nil.
func (c *Conn) closeRecovering(cb func(error)) {
	if cb != nil {
		c.closeCbs = append(c.closeCbs, cb)
	}
	c.rec.appClosed = true
	if c.linkUp() {
		// The attempt's link is open (its restore runs): it closes as
		// Close closes a link, with connection.close and close-ok.
		c.stopRecovery()
		c.closeLink()
		return
	}
	c.endRecovery(pika.ErrClosed)
}

// restore is the restore of one attempt, after the handshake: channels,
// topology, consumers, then the messages to republish.
type restore struct {
	c       *Conn
	gen     uint64
	report  *pika.RecoveryReport
	timer   *Timer // bounds each step
	pending int

	failed      map[*Channel]error // channels that could not be restored
	failedOrder []*Channel

	plan   *recovery.Plan
	chID   uint16 // the topology's channel, 0 when none is open
	queues map[string]error
}

// stale reports whether the restore is over: its link failed, or the Conn
// moved on.
func (rs *restore) stale() bool {
	c := rs.c
	return c.rec.gen != rs.gen || c.eng == nil || c.eng.IsClosed()
}

func (rs *restore) stop() {
	rs.timer.Stop()
	if rs.c.rec.rs == rs {
		rs.c.rec.rs = nil
	}
}

// step (re)arms the step timer before a request: a broker that does not
// answer within Config.HandshakeTimeout fails the attempt.
func (rs *restore) step() {
	rs.timer.Reset(rs.c.rec.cfg.HandshakeTimeout)
}

// fail ends the attempt with err.
func (rs *restore) fail(err error) {
	if rs.stale() {
		return
	}
	rs.c.eng.Fail(err)
	rs.c.l.markDirty(rs.c)
}

// req registers the reply of a restore request; fn does not run once the
// restore is stale.
func (rs *restore) req(id engine.RequestID, err error, fn func(engine.Event)) bool {
	if err != nil {
		rs.fail(err)
		return false
	}
	rs.step()
	rs.c.addReq(id, func(ev engine.Event) {
		if !rs.stale() {
			fn(ev)
		}
	})
	rs.c.l.markDirty(rs.c)
	return true
}

// restoreLink starts the restore on the new link, once its handshake is
// done.
func (c *Conn) restoreLink() {
	r := c.rec
	r.gen++
	rs := &restore{c: c, gen: r.gen, failed: map[*Channel]error{},
		report: &pika.RecoveryReport{Addr: c.remote, RenamedQueues: map[string]string{}}}
	rs.timer = c.l.AfterFunc(r.cfg.HandshakeTimeout, func() {
		rs.fail(fmt.Errorf("pika: recovery: no answer from %s within %v", c.remote, r.cfg.HandshakeTimeout))
	})
	r.rs = rs
	rs.channels()
}

// channels reopens every channel with its number, QoS and modes.
func (rs *restore) channels() {
	c := rs.c
	ids := slices.Sorted(maps.Keys(c.chans))
	for _, id := range ids {
		ch := c.chans[id]
		for i, m := range recovery.ChannelMethods(ch.qosGlobal, ch.qos, ch.confirming, ch.tx) {
			var req engine.RequestID
			var err error
			if i == 0 {
				req, err = c.eng.OpenChannelID(id)
			} else {
				req, err = c.eng.Call(id, m)
			}
			if err != nil {
				if c.eng.IsClosed() {
					return
				}
				if i == 0 && errors.Is(err, engine.ErrBadChannel) {
					err = fmt.Errorf("pika: channel %d is beyond the channel_max %d of the new connection: %w", id, c.eng.Tuning().ChannelMax, err)
				}
				rs.channelFailed(ch, m.ID().Name(), err)
				break
			}
			rs.pending++
			what := m.ID().Name()
			rs.req(req, nil, func(ev engine.Event) {
				if ev.Err != nil {
					rs.channelFailed(ch, what, ev.Err)
				}
				if rs.pending--; rs.pending == 0 {
					rs.channelsDone()
				}
			})
		}
	}
	if rs.pending == 0 {
		rs.channelsDone()
	}
}

func (rs *restore) channelFailed(ch *Channel, what string, err error) {
	if _, ok := rs.failed[ch]; ok {
		return
	}
	rs.failed[ch] = err
	rs.failedOrder = append(rs.failedOrder, ch)
	rs.report.Failed = append(rs.report.Failed, pika.RecoveryFailure{Entity: "channel " + strconv.Itoa(int(ch.id)) + " (" + what + ")", Err: err})
}

// channelsDone closes the channels that could not be restored and starts
// the topology's restore.
func (rs *restore) channelsDone() {
	c := rs.c
	for _, ch := range rs.failedOrder {
		if c.chans[ch.id] == ch {
			delete(c.chans, ch.id)
			ch.gone(fmt.Errorf("pika: channel %d not recovered: %w", ch.id, rs.failed[ch]))
		}
	}
	rs.report.Channels = len(c.chans)
	r := c.rec
	// Queues with a consumer to restore were in use until the loss.
	consumed := map[string]bool{}
	for _, ch := range c.chans {
		for _, cons := range ch.consumers {
			if !cons.ended {
				consumed[cons.queue] = true
			}
		}
	}
	f := r.cfg.RecoveryFilter
	rs.plan = recovery.NewPlan(&r.topo, nil, recovery.Filter{Exchange: f.Exchange, Queue: f.Queue, Binding: f.Binding},
		consumed, r.attempt, time.Now(), r.inUseUntil)
	rs.plan.OnRename = func(old, name string) {
		for _, ch := range c.chans {
			for _, cons := range ch.consumers {
				if cons.queue == old {
					cons.queue = name
				}
			}
		}
	}
	rs.topology()
}

// topology sends the plan's next declaration.
func (rs *restore) topology() {
	c := rs.c
	step, ok := rs.plan.Next()
	if !ok {
		for _, f := range rs.plan.Failed {
			rs.report.Failed = append(rs.report.Failed, pika.RecoveryFailure{Entity: f.Entity, Err: f.Err})
		}
		for old, name := range rs.plan.Renamed {
			rs.report.RenamedQueues[old] = name
		}
		rs.report.Expired = rs.plan.Expired
		rs.queues = rs.plan.FailedQueues
		if rs.chID != 0 {
			// The reply does not matter: nothing else uses the channel.
			req, err := c.eng.CloseChannel(rs.chID)
			rs.req(req, err, func(engine.Event) {})
		}
		rs.consumers()
		return
	}
	if rs.chID == 0 {
		id, req, err := c.eng.OpenChannel()
		rs.req(req, err, func(ev engine.Event) {
			if ev.Err != nil {
				rs.fail(ev.Err)
				return
			}
			rs.chID = id
			rs.declare(step)
		})
		return
	}
	rs.declare(step)
}

func (rs *restore) declare(step recovery.Step) {
	req, err := rs.c.eng.Call(rs.chID, step.Method)
	rs.req(req, err, func(ev engine.Event) {
		if ev.Err != nil {
			rs.chID = 0 // the refusal closed the channel
		}
		if err := rs.plan.Done(ev.Method, ev.Err); err != nil {
			rs.fail(err)
			return
		}
		rs.topology()
	})
}

// consumers starts every consumer again, on its channel, with its tag.
func (rs *restore) consumers() {
	c := rs.c
	var conss []*Consumer
	for _, ch := range c.chans {
		if ch.closing {
			continue // the application closes it
		}
		for _, cons := range ch.consumers {
			if !cons.ended {
				conss = append(conss, cons)
			}
		}
	}
	slices.SortFunc(conss, func(a, b *Consumer) int { return int(a.seq - b.seq) })
	filter := c.rec.cfg.RecoveryFilter.Consumer
	for _, cons := range conss {
		ch := cons.ch
		endErr := error(nil)
		if filter != nil && !filter(cons.queue, cons.tag) {
			endErr = pika.ErrNotRecovered
		} else if qerr, failed := rs.queues[cons.queue]; failed {
			// Its queue is not there: basic.consume would fail and close
			// the application's channel with it.
			if recovery.Unavailable(qerr) {
				qerr = &recovery.UnavailableErr{Err: qerr}
				if c.revive(cons, qerr) {
					// It exists, on a node that is down: the consumer
					// waits for it instead of ending.
					rs.report.Failed = append(rs.report.Failed, pika.RecoveryFailure{
						Entity: "consumer " + strconv.Quote(cons.tag) + " on channel " + strconv.Itoa(int(ch.id)) + " (waiting for its queue)", Err: qerr})
					continue
				}
			}
			rs.report.Failed = append(rs.report.Failed, pika.RecoveryFailure{
				Entity: "consumer " + strconv.Quote(cons.tag) + " on channel " + strconv.Itoa(int(ch.id)), Err: qerr})
			endErr = qerr
		}
		if endErr != nil {
			delete(ch.consumers, cons.tag)
			ch.push(func() { cons.end(endErr) })
			continue
		}
		cons.decl.Queue = cons.queue // as renamed
		req, err := c.eng.Call(ch.id, cons.decl)
		if err != nil {
			rs.fail(err)
			return
		}
		rs.pending++
		rs.req(req, nil, func(ev engine.Event) {
			if ev.Err != nil {
				rs.report.Failed = append(rs.report.Failed, pika.RecoveryFailure{
					Entity: "consumer " + strconv.Quote(cons.tag) + " on channel " + strconv.Itoa(int(ch.id)), Err: ev.Err})
				if ch.consumers[cons.tag] == cons {
					delete(ch.consumers, cons.tag)
				}
				ch.push(func() { cons.end(ev.Err) })
			} else {
				rs.report.Consumers++
			}
			if rs.pending--; rs.pending == 0 {
				rs.finish()
			}
		})
	}
	if rs.pending == 0 {
		rs.finish()
	}
}

// finish republishes the messages kept at the loss, in order, and ends the
// recovery.
func (rs *restore) finish() {
	c := rs.c
	ids := slices.Sorted(maps.Keys(c.chans))
	for _, id := range ids {
		rs.report.Republished += c.chans[id].republishKept()
	}
	r := c.rec
	rs.stop()
	r.recovering = false
	r.cause, r.lastErr = nil, nil
	c.event(pika.RecoveryEvent{Kind: pika.RecoveryRecovered, Attempt: r.attempt, Report: rs.report})
	c.l.markDirty(c)
}

// keep adds to s, the confirm set's entry of a message just published in
// confirm mode, the copy that recovery publishes again after a loss (s nil,
// when nobody waits for the outcome, becomes an entry out of the channel's
// callback order).
func (ch *Channel) keep(s *slot, exchange, routingKey string, msg *pika.Message) *slot {
	if !ch.c.republishing() {
		return s
	}
	if s == nil {
		s = &slot{}
	}
	k := &keptMsg{exchange: exchange, routingKey: routingKey, mandatory: msg.Mandatory, props: msg.Properties}
	k.props.Headers = nil // encoded in buf
	k.buf, k.hdrLen = recovery.AppendKept(nil, msg.Headers, msg.Body)
	s.kept = k
	return s
}

// failKept resolves the messages kept for republishing when the channel
// ended with cause.
func (ch *Channel) failKept(cause error) {
	for _, s := range ch.republish {
		ch.finish(0, s, pika.OutcomeUnknown, outcomeUnknown(cause))
	}
	ch.republish = nil
}

// keptMsg is the copy of a message published in confirm mode, kept until
// its confirmation for republishing after a loss: its headers encoded, as
// pika.Conn keeps them (a table changed after the publish does not change
// the copy).
type keptMsg struct {
	exchange, routingKey string
	mandatory            bool
	props                pika.Properties // Headers nil: they are encoded in buf
	buf                  []byte          // the headers (hdrLen bytes), then the body
	hdrLen               int
}

// republishKept publishes the messages kept at the loss again, in their
// order, and returns how many.
func (ch *Channel) republishKept() int {
	n := 0
	for _, s := range ch.republish {
		k := s.kept
		props := k.props
		headers, body, err := recovery.Kept(k.buf, k.hdrLen)
		var tag uint64
		if err == nil {
			props.Headers = headers
			tag, err = ch.c.eng.Publish(ch.id, k.exchange, k.routingKey, k.mandatory, false, &props, body)
		}
		if err == nil {
			if got := ch.confirms.Add(s); got != tag {
				err = fmt.Errorf("loop: internal error: republish tag %d, expected %d", tag, got)
			}
		}
		if err != nil {
			ch.finish(0, s, pika.OutcomeUnknown, outcomeUnknown(err))
			continue
		}
		ch.recorded(tag, s)
		n++
	}
	clear(ch.republish)
	ch.republish = ch.republish[:0]
	return n
}
