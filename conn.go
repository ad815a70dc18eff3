package pika

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/standin"
)

type connState uint8

const (
	connOpen       connState = iota // the link is open and restored
	connRecovering                  // the link was lost; recovery is running
	connClosed                      // final
)

// Conn is a connection to a RabbitMQ broker. It is safe for concurrent use by
// many goroutines.
//
// A Conn drives a protocol engine over a network connection with goroutines
// of its own (see the package documentation). None of them runs application
// code, and the socket's never wait for the application: notifications are
// delivered through bounded queues and goroutines of their own, so a
// callback that never returns cannot stall the connection (it makes
// Publish on its channel wait once Config.NotifyBuffer notifications
// queue up behind it).
//
// Unless Config.DisableRecovery is set, a Conn survives the loss of its
// network connection: it reconnects, reopens its channels and restores what
// they declared and consumed (see Recovery in the package documentation).
// The Conn, its Channels and Consumers stay valid throughout.
type Conn struct {
	cfg  Config
	log  *slog.Logger
	logs *logQueue // hands log records to log's handler; nil without a Logger

	// The reader's linger (Config.ReadLinger), for the goroutines that
	// end it without the lock (see confirmWaitStart).
	lingerOn     atomic.Pointer[fdConn] // the lingering socket; nil when the reader does not linger
	confirmWaits atomic.Int32           // goroutines waiting for a publisher confirmation

	mu    sync.Mutex
	l     *link         // the current link
	eng   *engine.Conn  // l.eng
	state connState     // guarded by mu
	ready chan struct{} // closed when state is connOpen again; nil when open
	chans map[uint16]*Channel
	topo  topology

	space chan struct{} // closed when the write buffer drains; nil when nobody waits

	blocked       bool
	blockedReason string
	unblocked     chan struct{} // closed when the broker unblocks; nil when not blocked
	blockedTimer  *time.Timer

	readPaused    bool          // the reader waits (see pauseLocked)
	resume        chan struct{} // closed to make a waiting reader check again
	fullConsumers int           // consumers at their soft buffer limit that pause the reader (see Consumer.pushLocked)
	reads         uint64        // reads from the socket so far (from 1)
	inlineReady   []*Consumer   // inline consumers with buffered deliveries (see inline.go)
	inlineSpare   []*Consumer   // inlineReady's other buffer
	wakes         []*Consumer   // consumers with a waiting Next call that the reader signals after its read (see Consumer.pushLocked)
	readerBusy    bool          // the reader runs inline handlers
	lingers       uint64        // lingers so far (Config.ReadLinger)
	confirmsRead  uint64        // confirmation frames read so far
	settlesSent   uint64        // acks, nacks and rejects of deliveries sent so far
	rpcCalls      int           // RPCClient.Call calls in progress: their replies are awaited, so the reader does not linger

	closing       bool               // the application called Close
	stopRecovery  context.CancelFunc // cancels a running recovery
	recoveryCount int
	losses        uint64                     // links lost so far (see lossCount)
	lossSubs      map[chan struct{}]struct{} // signalled at each loss (see subscribeLoss)

	done chan struct{} // closed when the connection is finally closed
	err  error         // the final close cause, set before done closes
	wg   sync.WaitGroup

	notify notifier

	// Hooks (see hooks.go): found once at dial, read without the lock.
	hk      hookSet
	hookBox mailbox   // runs the hooks that do not run on the caller's goroutine
	hookq   hookQueue // publish outcomes and byte counts waiting for hookBox

	authMu sync.Mutex // held while a SASL mechanism step runs: steps never overlap
	// Credentials: the secret the broker last accepted through
	// UpdateSecret (used when recovering), and the refresher's stop.
	secret      string // guarded by mu
	secretSet   bool   // guarded by mu
	stopRefresh context.CancelFunc

	view standin.ConnView // a stand-in's loop connection (see standin.go); nil otherwise
}

// Dial connects to the broker at the AMQP URI rawURL (see ParseURL) and
// completes the AMQP handshake. ctx bounds the whole of it; cancelling ctx
// after Dial returns has no effect on the connection.
func Dial(ctx context.Context, rawURL string) (*Conn, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return DialConfig(ctx, cfg)
}

// DialConfig connects with cfg and completes the AMQP handshake, trying the
// configured addresses in turn. ctx bounds the whole of it, as do
// cfg.DialTimeout (each transport) and cfg.HandshakeTimeout (each AMQP
// handshake). Errors wrap ErrAuthentication, ErrVhostRefused,
// ErrHandshakeClosed or ErrHandshakeTimeout when the broker refused the
// connection, and the dial error otherwise.
func DialConfig(ctx context.Context, cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	if cfg.SecretRefresh > 0 && cfg.Credentials == nil {
		return nil, errSecretRefreshNeedsCredentials
	}
	c := &Conn{
		cfg:   cfg,
		log:   cfg.Logger,
		logs:  newLogQueue(cfg.Logger),
		chans: make(map[uint16]*Channel),
		done:  make(chan struct{}),
		hk:    newHookSet(cfg.Hooks),
	}
	c.initHookQueue()
	l, err := c.dialLink(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.installLinkLocked(l)
	if l.eng.IsClosed() {
		// Lost between open and now: report it as a failed dial.
		c.mu.Unlock()
		l.wg.Wait()
		return nil, l.err
	}
	c.startSecretRefresh()
	c.mu.Unlock()
	return c, nil
}

// dispatchLocked acts on one engine event of link l. It runs with c.mu held
// and never blocks and never calls application code.
func (c *Conn) dispatchLocked(l *link, ev engine.Event) {
	switch ev.Kind {
	case engine.EventOpen:
		close(l.opened)
		// Posted here, under the lock, so that it precedes the link's
		// OnDisconnect in the hook mailbox.
		c.connectEvent(l.addr, nil, time.Since(l.dialStart))
		return
	case engine.EventAuth:
		l.authLocked(ev)
		return
	case engine.EventReply, engine.EventGetOk:
		if w := l.waiters[ev.Request]; w != nil {
			delete(l.waiters, ev.Request)
			if w.quiet {
				l.quiet--
			}
			w.resolveLocked(ev)
		}
		return
	case engine.EventClosed:
		if l.isOpen() {
			c.disconnectEventLocked(l, ev.Err)
		}
		l.closedLocked(ev.Err)
		if c.l == l {
			c.linkLostLocked(l, ev.Err)
		}
		return
	}
	if c.l != l {
		// A link being dialled or one already replaced. A blocked state
		// the broker announces before the link is installed (it sends
		// connection.blocked right after open-ok when an alarm is in
		// effect) is kept for installLinkLocked.
		switch ev.Kind {
		case engine.EventBlocked:
			l.blocked, l.blockedReason = true, ev.Reason
		case engine.EventUnblocked:
			l.blocked, l.blockedReason = false, ""
		}
		return
	}
	switch ev.Kind {
	case engine.EventDelivery, engine.EventOrphanDelivery, engine.EventReturn,
		engine.EventConfirm, engine.EventCancel, engine.EventFlow:
		if ch := c.chans[ev.Channel]; ch != nil {
			ch.dispatchLocked(ev)
		}
	case engine.EventChannelClosed:
		if ch := c.chans[ev.Channel]; ch != nil {
			delete(c.chans, ev.Channel)
			ch.closedLocked(ev.Err)
		}
	case engine.EventBlocked:
		c.blockLocked(l, ev.Reason)
	case engine.EventUnblocked:
		c.unblockLocked()
		c.blockedEventLocked(false, "")
	}
}

// blockLocked records that the broker blocks link l, the current link.
func (c *Conn) blockLocked(l *link, reason string) {
	c.blocked = true
	c.blockedReason = reason
	if c.unblocked == nil {
		c.unblocked = make(chan struct{})
	}
	if c.cfg.BlockedTimeout > 0 && c.blockedTimer == nil {
		c.blockedTimer = time.AfterFunc(c.cfg.BlockedTimeout, func() { c.blockedTooLong(l) })
	}
	c.blockedEventLocked(true, reason)
}

// installLinkLocked makes l the Conn's link, taking over the blocked state
// the broker announced on it before.
func (c *Conn) installLinkLocked(l *link) {
	c.l, c.eng = l, l.eng
	if l.blocked && !l.eng.IsClosed() {
		l.blocked = false
		c.blockLocked(l, l.blockedReason)
	}
}

// unblockLocked clears the blocked state.
func (c *Conn) unblockLocked() {
	c.blocked = false
	c.blockedReason = ""
	if c.unblocked != nil {
		close(c.unblocked)
		c.unblocked = nil
	}
	if c.blockedTimer != nil {
		c.blockedTimer.Stop()
		c.blockedTimer = nil
	}
}

// linkLostLocked handles the end of the current link: recovery when it is
// enabled and the cause allows, the final close otherwise.
func (c *Conn) linkLostLocked(l *link, err error) {
	if c.blocked {
		c.unblockLocked()
		c.blockedEventLocked(false, "")
	}
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	if c.resume != nil {
		close(c.resume)
		c.resume = nil
	}
	c.readPaused = false
	if c.state == connClosed {
		return
	}
	if c.closing || c.cfg.DisableRecovery || c.state != connOpen || !recoverable(err) {
		if c.state == connRecovering {
			return // the recovery goroutine decides
		}
		c.finalCloseLocked(err)
		return
	}
	c.state = connRecovering
	c.ready = make(chan struct{})
	c.losses++
	for sig := range c.lossSubs {
		select {
		case sig <- struct{}{}:
		default:
		}
	}
	for id, ch := range c.chans {
		if ch.closing {
			// The application was closing it: the loss completes the close.
			delete(c.chans, id)
			ch.closedLocked(ErrChannelClosed)
			continue
		}
		ch.suspendLocked(err)
	}
	c.recoveryEventLocked(RecoveryEvent{Kind: RecoveryLost, Err: err})
	ctx, cancel := context.WithCancel(context.Background())
	c.stopRecovery = cancel
	c.wg.Add(1)
	go c.recover(ctx, l, err)
}

// lossCount returns the number of links lost so far and recovered from
// (or being recovered from). The application publishes only on an open
// link, so a publish made between two calls that return the same count
// went out on the link that was current after that many losses, and any
// answer to it arrives on that link or never.
func (c *Conn) lossCount() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.losses
}

// subscribeLoss returns a channel that receives a value (without blocking
// the connection: one pending signal at most) each time a link is lost and
// recovery starts, and a function that ends the subscription.
func (c *Conn) subscribeLoss() (<-chan struct{}, func()) {
	sig := make(chan struct{}, 1)
	c.mu.Lock()
	if c.lossSubs == nil {
		c.lossSubs = make(map[chan struct{}]struct{})
	}
	c.lossSubs[sig] = struct{}{}
	c.mu.Unlock()
	return sig, func() {
		c.mu.Lock()
		delete(c.lossSubs, sig)
		c.mu.Unlock()
	}
}

// finalCloseLocked ends the Conn for good.
func (c *Conn) finalCloseLocked(err error) {
	if c.state == connClosed {
		return
	}
	c.state = connClosed
	c.err = err
	if c.ready != nil {
		close(c.ready)
		c.ready = nil
	}
	for id, ch := range c.chans {
		delete(c.chans, id)
		cerr := err
		if cerr == nil {
			// Conn.Close: the application closed the channel too.
			cerr = ErrClosed
			ch.byApp = ch.err == nil
		}
		ch.closedLocked(cerr)
	}
	if c.stopRecovery != nil {
		c.stopRecovery()
	}
	if c.stopRefresh != nil {
		c.stopRefresh()
	}
	close(c.done)
	c.notify.closed(err)
}

// blockedTooLong closes a link blocked for longer than
// Config.BlockedTimeout.
func (c *Conn) blockedTooLong(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blockedTimer = nil
	if !c.blocked || c.l != l || l.eng.IsClosed() {
		return
	}
	l.eng.Fail(fmt.Errorf("%w (%s): %s", ErrBlockedTimeout, c.cfg.BlockedTimeout, c.blockedReason))
	c.afterLocked(l)
}

// lockReady takes c.mu and returns with it held once the connection is
// usable: open, and not in the middle of a recovery. While recovering it
// waits (bounded by ctx), or fails with ErrRecovering when
// Config.FailWhileRecovering is set. It fails with the close cause once the
// connection is closed.
func (c *Conn) lockReady(ctx context.Context) error {
	c.mu.Lock()
	for {
		switch c.state {
		case connOpen:
			return nil
		case connClosed:
			err := c.closedErr()
			c.mu.Unlock()
			return err
		}
		if c.cfg.FailWhileRecovering {
			c.mu.Unlock()
			return ErrRecovering
		}
		ready := c.ready
		c.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
}

// closedErr is what calls get once the connection is closed.
func (c *Conn) closedErr() error {
	if c.err != nil {
		return c.err
	}
	return ErrClosed
}

// Close closes the connection gracefully: it sends connection.close and
// waits for the broker's close-ok, bounded by ctx (or Config.CloseTimeout
// when ctx has no deadline), then closes the socket. It stops a recovery in
// progress. Every call still waiting on the connection returns ErrClosed,
// outstanding confirmations resolve with ErrOutcomeUnknown, and consumers
// end. Close works while the broker has the connection blocked (it then
// waits at most a second for a close-ok that the blocking broker may never
// send, and returns nil). When Close
// returns, none of the connection's goroutines is left running (consumer
// handlers and notification callbacks still running or queued, OnClose
// among them, finish on their own; Close may be called from a callback,
// and from an inline handler: its goroutine, the reader's, and a recovery
// in progress end once the handler returns).
// Calling Close again waits, bounded by its own ctx, for the first Close
// to finish and returns nil (or ctx's error if ctx ends first). Close of a
// connection that ended on its own (the broker closed it, or recovery
// could not repair a loss) returns nil once its goroutines ended and the
// hooks' last events, byte counts included, were handed over (that wait
// bounded by ctx, or Config.CloseTimeout when ctx has no deadline).
func (c *Conn) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.state == connClosed || c.closing {
		l := c.l
		c.mu.Unlock()
		// Another Close is at work, or the Conn ended on its own: wait
		// for its goroutines as long as ctx allows (the link's writer may
		// still be sending the close-ok of a broker's close).
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		stopped := make(chan struct{})
		onReader := c.onReader(l)
		go func() {
			if !onReader {
				if l != nil { // nil for the hooks' stand-ins (standin.go), which have no link
					l.wg.Wait()
				}
				c.wg.Wait()
			}
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			return ctx.Err()
		}
		// A Conn that ended on its own (the broker's close, a loss
		// without recovery) has its last byte counts timed still. The
		// wait for the hooks is bounded as the first Close's is.
		ctx, cancel := c.closeCtx(ctx)
		defer cancel()
		c.flushHooks(ctx)
		return nil
	}
	c.closing = true
	c.unpauseReaderLocked()
	l := c.l
	// A blocked connection's socket is not read by the broker (that is
	// what blocking means), so its close-ok may never come: give it a
	// moment, then close the socket.
	var blockedWait <-chan time.Time
	if c.blocked {
		t := time.NewTimer(time.Second)
		defer t.Stop()
		blockedWait = t.C
	}
	if c.state == connRecovering {
		c.stopRecovery()
		c.mu.Unlock()
	} else {
		l.eng.Close("")
		c.afterLocked(l)
		c.mu.Unlock()
	}
	ctx, cancel := c.closeCtx(ctx)
	defer cancel()
	var err error
	select {
	case <-c.done:
	case <-blockedWait:
		c.mu.Lock()
		if !l.eng.IsClosed() {
			l.eng.Fail(ErrClosed)
			c.afterLocked(l)
		}
		c.finalCloseLocked(nil)
		c.mu.Unlock()
	case <-ctx.Done():
		err = ctx.Err()
		c.mu.Lock()
		if !l.eng.IsClosed() {
			l.eng.Fail(ErrClosed)
			c.afterLocked(l)
		}
		c.finalCloseLocked(nil)
		c.mu.Unlock()
	}
	if !c.onReader(l) {
		l.wg.Wait()
		c.wg.Wait()
	}
	// Notification callbacks are not waited for: Close may be called from
	// one of them, and the mailbox cannot drain while it runs. Log records
	// are, as long as ctx allows.
	c.logs.wait(ctx)
	// So are the hooks' events, the final OnDisconnect and the last byte
	// counts included, unless Close runs in a hook or callback (which the
	// wait could be behind).
	c.flushHooks(ctx)
	if err == nil && c.err != nil && !errors.Is(c.err, ErrClosed) {
		err = c.err
	}
	return err
}

// closeCtx bounds a Close by Config.CloseTimeout when ctx has no deadline.
func (c *Conn) closeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.CloseTimeout)
}

// Done returns a channel that is closed when the connection has closed for
// good (after Close, or a loss recovery could not or was not allowed to
// repair). Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection lives or after a Close the
// application asked for, and the reason it closed otherwise (*Error,
// ErrHeartbeatTimeout, a read or write error, ErrBlockedTimeout, a
// *RecoveryError).
func (c *Conn) Err() error {
	if c.view != nil {
		return c.view.Err()
	}
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// IsClosed reports whether the connection has closed for good.
func (c *Conn) IsClosed() bool {
	if c.view != nil {
		return c.view.IsClosed()
	}
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// IsRecovering reports whether the connection is reconnecting after a loss.
func (c *Conn) IsRecovering() bool {
	if c.view != nil {
		return c.view.IsRecovering()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == connRecovering
}

// ServerProperties returns the broker's server properties (product,
// version, cluster_name, capabilities, ...) from the current connection.
// The table is a copy (nested tables and arrays included) that the caller
// may modify.
func (c *Conn) ServerProperties() Table {
	if c.view != nil {
		return c.view.ServerProperties()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t, _ := copyFieldValue(c.eng.ServerProperties()).(Table)
	return t
}

// copyFieldValue returns a deep copy of a decoded field value: tables,
// arrays and byte arrays are copied, other values are immutable.
func copyFieldValue(v any) any {
	switch v := v.(type) {
	case Table:
		if v == nil {
			return Table(nil)
		}
		t := make(Table, len(v))
		for k, x := range v {
			t[k] = copyFieldValue(x)
		}
		return t
	case []any:
		if v == nil {
			return []any(nil)
		}
		a := make([]any, len(v))
		for i, x := range v {
			a[i] = copyFieldValue(x)
		}
		return a
	case []byte:
		if v == nil {
			return []byte(nil)
		}
		return append([]byte{}, v...)
	}
	return v
}

// Tuning is what the client and the broker agreed during the handshake
// (connection.tune-ok): the highest channel id, the largest frame and the
// heartbeat interval (0 when heartbeats are off).
type Tuning = engine.Tuning

// Tuning returns the negotiated channel_max, frame_max and heartbeat of the
// current connection (after a recovery, of the new one).
func (c *Conn) Tuning() Tuning {
	if c.view != nil {
		return c.view.Tuning()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.Tuning()
}

// LocalAddr returns the local network address of the current connection.
func (c *Conn) LocalAddr() net.Addr {
	if c.view != nil {
		return c.view.LocalAddr()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.l.nc.LocalAddr()
}

// RemoteAddr returns the network address of the broker currently connected.
func (c *Conn) RemoteAddr() net.Addr {
	if c.view != nil {
		return c.view.RemoteAddr()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.l.nc.RemoteAddr()
}

// IsBlocked reports whether the broker currently blocks publishing on this
// connection (a resource alarm), and the reason it gave.
func (c *Conn) IsBlocked() (bool, string) {
	if c.view != nil {
		return c.view.IsBlocked()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blocked, c.blockedReason
}

// UpdateSecret replaces the connection's secret (for example an expiring
// OAuth 2 token) with connection.update-secret, and waits for the broker's
// answer. If ctx ends first, UpdateSecret returns ctx.Err() and the update
// may still take effect. Once the broker has accepted it (and only then),
// the new secret is also the password recovery logs in with, PLAIN and
// AMQPLAIN entries of Config.Mechanisms included, unless
// Config.Credentials provides the credentials. (RabbitMQ 3.10 accepts
// update-secret for users of its internal database without checking the
// secret; it matters to backends with expiring secrets, such as OAuth 2.)
func (c *Conn) UpdateSecret(ctx context.Context, secret, reason string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.lockReady(ctx); err != nil {
		return err
	}
	id, err := c.eng.UpdateSecret(secret, reason)
	if err != nil {
		err = c.callErr(err, nil)
		c.mu.Unlock()
		return err
	}
	w := newWaiter()
	w.onReply = func(ev engine.Event) {
		if ev.Err == nil {
			c.secret, c.secretSet = secret, true
		}
	}
	c.l.waiters[id] = w
	c.afterLocked(c.l)
	c.mu.Unlock()
	_, err = w.wait(ctx, c)
	return err
}

// callErr turns an engine error from a call into what the caller sees: the
// reason the connection or channel closed rather than a bare sentinel.
func (c *Conn) callErr(err error, ch *Channel) error {
	if (errors.Is(err, engine.ErrChannelClosed) || errors.Is(err, engine.ErrBadChannel)) && ch != nil && ch.err != nil {
		return ch.err
	}
	if errors.Is(err, engine.ErrClosed) && c.l != nil && c.l.err != nil {
		return c.l.err
	}
	return err
}

// waiter is a caller waiting for a reply.
type waiter struct {
	done      chan struct{}
	ev        engine.Event
	abandoned bool                  // the caller's ctx ended first
	reply     func(ev engine.Event) // run (under c.mu) when a successful reply arrives
	quiet     bool                  // nobody waits for the reply: a paused reader need not read it (counted in link.quiet)
	late      func(ev engine.Event) // run (under c.mu) when an abandoned request's reply arrives
	onReply   func(ev engine.Event) // run (under c.mu) when the reply (or error) arrives, abandoned or not
}

func newWaiter() *waiter { return &waiter{done: make(chan struct{})} }

func (w *waiter) resolveLocked(ev engine.Event) {
	w.ev = ev
	if w.reply != nil && ev.Err == nil {
		w.reply(ev)
	}
	if w.onReply != nil {
		w.onReply(ev)
	}
	if w.abandoned {
		if w.late != nil && ev.Err == nil {
			w.late(ev)
		}
		return
	}
	close(w.done)
}

// wait waits for the reply or the end of ctx. If ctx ends first the request
// stays on the wire and its reply, when it comes, is absorbed.
func (w *waiter) wait(ctx context.Context, c *Conn) (engine.Event, error) {
	select {
	case <-w.done:
		return w.ev, w.ev.Err
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-w.done:
		return w.ev, w.ev.Err
	default:
	}
	w.abandoned = true
	return engine.Event{}, ctx.Err()
}
