package loop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/amqpdial"
	"github.com/pika-go/pika/wire"
)

// Errors of package loop besides those of package pika, which it reports
// as they are (pika.ErrClosed, pika.ErrNacked, *pika.Error, ...).
var (
	// ErrCloseTimeout: the broker did not answer connection.close within
	// Config.CloseTimeout; the connection was dropped.
	ErrCloseTimeout = errors.New("loop: the broker did not confirm the close in time")
	// ErrTooManyUnconfirmed: Publish or PublishConfirm on a channel in
	// confirm mode found Config.MaxUnconfirmed messages of the channel
	// awaiting their outcome (see Channel.Unconfirmed); nothing was sent.
	// Publish again once confirmations came back, for example from a
	// PublishConfirm callback.
	ErrTooManyUnconfirmed = errors.New("loop: Config.MaxUnconfirmed messages of the channel await their confirmation")
)

// Conn is one AMQP connection run by a Loop. Its methods must be called on
// the loop's goroutine; its callbacks run there.
type Conn struct {
	l      *Loop
	cfg    *pika.Config // until the handshake ends (memory: see attach)
	eng    *engine.Conn
	t      transport
	log    *slog.Logger // frames at Debug level; nil when not enabled
	remote string

	dialCb  func(*Conn, error)
	open    bool
	closed  bool
	err     error
	inDirty bool

	chans  map[uint16]*Channel
	reqs   map[engine.RequestID]func(engine.Event) // nil when empty
	drains []*Channel                              // channels with callbacks ready to run

	closeTimeout time.Duration
	maxUnconf    int // Config.MaxUnconfirmed as applied: 0 for no bound
	ds           dialState
	redial       bool // the handshake failed: dial the next address

	spare      []byte // the other outgoing buffer
	tick       *Timer // the engine's deadline
	armed      time.Time
	closeTimer *Timer
	timedOut   bool // Close gave up waiting for close-ok

	onClose   handlers[func(error)]
	onBlocked handlers[func(blocked bool, reason string)]
	closeCbs  []func(error)
	blocked   bool

	hk  *hookSet     // Config.Hooks; nil without (see hooks.go)
	sec *secretState // Config.Credentials, UpdateSecret; nil without (see secret.go)
	rec *recState    // nil with Config.DisableRecovery (see recovery.go)
}

// Dial connects to the broker at the AMQP URI rawURL (parsed by
// pika.ParseURL: the same options, TLS files and defaults) and calls cb on
// the loop's goroutine with the open connection or the error. See
// DialConfig.
func (l *Loop) Dial(rawURL string, cb func(*Conn, error)) {
	cfg, err := pika.ParseURL(rawURL)
	if err != nil {
		l.defer_(func() { cb(nil, err) })
		return
	}
	l.DialConfig(cfg, cb)
}

// DialConfig connects with cfg and calls cb on the loop's goroutine with
// the open connection (after the AMQP handshake) or the error.
//
// The transport is established by a short-lived goroutine (the TCP
// connect, name resolution and TLS handshake block), which tries cfg's
// addresses in order (Config.Addrs, ShuffleAddrs, every address of a host
// name) until one accepts the TCP and TLS connection; the AMQP handshake
// then runs on the loop. A handshake that fails moves on to the next
// address, like pika.DialConfig, unless the broker refused the login or
// the virtual host; cb gets every address's error when none is left. A plain TCP connection (or a *net.TCPConn or *net.UnixConn
// returned by Config.Dial) takes the descriptor path; TLS and other
// connections the fallback path (see the package documentation).
//
// Used as pika.Conn uses them: the addresses, TLS, Dial, DialTimeout,
// HandshakeTimeout, CloseTimeout, credentials, mechanisms, vhost,
// heartbeat, frame_max, channel_max, connection name, client properties,
// MaxBodySize and Logger (every frame at Debug level, logged on the loop
// goroutine), Hooks (run on the loop goroutine: see the package
// documentation), Credentials (called on the dial goroutine, at every
// connection attempt, recovery's included) and SecretRefresh (see
// UpdateSecret). The recovery fields (DisableRecovery, Reconnect,
// DisableRepublish, RecoveryFilter) work as for pika.Conn: see Recovery in
// the package documentation; a Conn with recovery on keeps its Config (for
// reconnecting) and a copy of each message published in confirm mode until
// its confirmation. MaxUnconfirmed bounds the messages awaiting their
// confirmation per channel, as for pika.Conn, but a publish at the bound
// fails at once with ErrTooManyUnconfirmed instead of waiting (see
// Channel.Publish). Ignored: FailWhileRecovering (calls always fail at
// once with pika.ErrRecovering while recovering, as with
// FailWhileRecovering set: see Recovery in the package documentation), and
// WriteBufferLimit, NotifyBuffer and BlockedTimeout, whose waits have no
// place on a loop (see Conn.Buffered).
func (l *Loop) DialConfig(cfg pika.Config, cb func(*Conn, error)) {
	if cfg.SecretRefresh > 0 && cfg.Credentials == nil {
		l.defer_(func() { cb(nil, errSecretRefreshNeedsCredentials) })
		return
	}
	if cfg.Addr == "" {
		cfg.Addr = "localhost:5672"
		if cfg.TLS != nil {
			cfg.Addr = "localhost:5671"
		}
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = pika.DefaultDialTimeout
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = pika.DefaultCloseTimeout
	}
	c := &Conn{
		l:            l,
		cfg:          &cfg,
		dialCb:       cb,
		chans:        make(map[uint16]*Channel, 1),
		closeTimeout: cfg.CloseTimeout,
		maxUnconf:    maxUnconfirmed(cfg.MaxUnconfirmed),
	}
	c.rec = newRecState(c.cfg)
	if cfg.Logger != nil && cfg.Logger.Enabled(context.Background(), slog.LevelDebug) {
		c.log = cfg.Logger
	}
	c.hk = newHookSet(c, cfg.Hooks)
	c.sec = newSecretState(&cfg)
	c.ds.hk = c.hk
	l.conns[c] = struct{}{}
	c.startDial()
}

// dialState is what a connection's dial has left to try.
type dialState struct {
	resolved bool
	eps      []amqpdial.Endpoint // the addresses not tried yet
	errs     []error             // how the tried ones failed

	login *login   // what Config.Credentials gave this dial (see secret.go)
	hk    *hookSet // the Conn's: keeps the attempts for the ConnectHooks
}

// attempt is a failed transport dial, for the ConnectHooks.
type attempt struct {
	addr string
	err  error
	dur  time.Duration
}

// startDial starts a goroutine that establishes the transport to the next
// address that accepts and hands it to attach.
func (c *Conn) startDial() {
	l, cfg, ds := c.l, c.cfg, &c.ds
	ctx := l.base
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		nc, remote, err := dialNext(ctx, cfg, ds)
		if !l.Post(func() { c.attach(nc, remote, err) }) && nc != nil {
			nc.Close()
		}
	}()
}

// dialNext establishes the transport to the first address of ds that
// accepts, resolving cfg's addresses the first time. Only the dial
// goroutine touches ds while it runs.
func dialNext(ctx context.Context, cfg *pika.Config, ds *dialState) (netConn, string, error) {
	if !ds.resolved {
		ds.resolved = true
		var err error
		if ds.login, err = askCredentials(ctx, cfg); err != nil {
			return nil, "", err
		}
		addrs := cfg.Addrs
		if len(addrs) == 0 {
			addrs = []string{cfg.Addr}
		}
		ds.eps = amqpdial.Endpoints(ctx, addrs, cfg.ShuffleAddrs, cfg.Dial != nil)
	}
	for len(ds.eps) > 0 {
		ep := ds.eps[0]
		ds.eps = ds.eps[1:]
		t0 := time.Now()
		nc, err := amqpdial.Transport(ctx, cfg.DialTimeout, cfg.Dial, cfg.TLS, ep)
		if err == nil {
			if ds.hk != nil {
				ds.hk.dialStart = t0
			}
			return nc, ep.Addr, nil
		}
		ds.errs = append(ds.errs, err)
		if ds.hk != nil {
			ds.hk.failed = append(ds.hk.failed, attempt{ep.Addr, err, time.Since(t0)})
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", amqpdial.JoinErrors(ds.errs)
}

// redialAfter decides, when the handshake on one address failed with err,
// whether to try the next address: not when none is left, the loop is
// stopping, or the broker refused the login (another node would too).
func (c *Conn) redialAfter(err error) bool {
	c.ds.errs = append(c.ds.errs, err)
	if len(c.ds.eps) == 0 || c.l.base.Err() != nil || errors.Is(err, pika.ErrAuthentication) ||
		errors.Is(err, pika.ErrVhostRefused) || errors.Is(err, engine.ErrNoMechanism) {
		return false
	}
	c.redial = true
	return true
}

// restartDial resets a connection whose handshake failed and dials the
// next address.
func (c *Conn) restartDial() {
	c.redial = false
	c.eng, c.t, c.tick, c.closeTimer = nil, nil, nil, nil
	c.closed, c.err, c.armed = false, nil, time.Time{}
	c.l.conns[c] = struct{}{}
	c.startDial()
}

// attach runs on the loop when the dial goroutine is done: it starts the
// engine over the new transport.
func (c *Conn) attach(nc netConn, remote string, err error) {
	c.failedAttempts()
	if c.closed {
		// The Conn ended while the dial ran (Close during a recovery, Run
		// stopping): what it dialed is dropped, and its end stays as it was.
		if nc != nil {
			nc.Close()
		}
		return
	}
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		c.finishDial(err)
		return
	}
	c.remote = remote
	fd, native, err := -1, false, error(nil)
	if c.cfg.TLS == nil && c.l.p.native() {
		fd, native, err = takeFD(nc)
		if err != nil {
			nc.Close()
			c.finishDial(fmt.Errorf("pika: %s: %w", remote, err))
			return
		}
	}
	if native {
		t, err := newFDConn(c.l, c, fd, remote)
		if err != nil {
			c.finishDial(err)
			return
		}
		c.t = t
	} else {
		c.t = newGoConn(c.l, c, nc)
	}
	c.eng = engine.New(c.engineConfigFor(c.ds.login))
	if c.log != nil {
		c.eng.SetTrace(func(f wire.Frame) { c.logFrame("recv", f) })
	}
	c.tick = &Timer{l: c.l, fn: c.onTick, index: -1}
	c.eng.Start(time.Now())
	c.l.markDirty(c)
}

// finishDial ends a connection that never opened.
func (c *Conn) finishDial(err error) {
	if c.Recovering() {
		c.closed = true
		c.attemptFailed(err)
		return
	}
	c.closed = true
	c.err = err
	delete(c.l.conns, c)
	if cb := c.dialCb; cb != nil {
		c.dialCb = nil
		cb(nil, err)
	}
}

func (c *Conn) logFrame(dir string, f wire.Frame) {
	c.log.Debug("amqp frame", amqpdial.FrameAttrs(dir, f)...)
}

// receive feeds bytes from the transport to the engine.
func (c *Conn) receive(b []byte) {
	if c.eng == nil || c.eng.IsClosed() {
		return
	}
	c.eng.Receive(b)
	if c.hk != nil {
		c.hk.read += int64(len(b))
	}
	c.l.markDirty(c)
}

// transportFailed tells the engine the transport broke.
func (c *Conn) transportFailed(err error) {
	if c.eng == nil || c.eng.IsClosed() {
		return
	}
	c.eng.Fail(err)
	c.l.markDirty(c)
}

// abort ends the connection at once with err (Run is stopping).
func (c *Conn) abort(err error) {
	if c.Recovering() {
		c.endRecovery(err)
		c.l.flush()
		if c.t != nil {
			c.t.closeNow()
		}
		return
	}
	if c.eng == nil {
		// The dial is still running: the dial goroutine's result is
		// dropped by attach.
		if !c.closed {
			c.finishDial(err)
		}
		return
	}
	if !c.eng.IsClosed() {
		c.eng.Fail(err)
	}
	c.process()
	if c.t != nil {
		c.t.closeNow()
	}
}

func (c *Conn) onTick() {
	c.armed = time.Time{}
	if c.eng != nil {
		c.eng.Tick(time.Now())
		c.l.markDirty(c)
	}
}

// process dispatches the engine's events, runs the channels' ready
// callbacks, writes the output and moves the deadline timer.
func (c *Conn) process() {
	if c.eng == nil {
		c.runDrains() // the callbacks of calls refused while a recovery attempt dials
		return
	}
	for {
		for {
			ev, ok := c.eng.NextEvent()
			if !ok {
				break
			}
			c.dispatch(ev)
		}
		c.runDrains()
		if c.eng.PendingEvents() == 0 {
			break
		}
	}
	if c.eng.OutgoingLen() > 0 {
		buf := c.eng.SwapOutgoing(c.spare)
		if c.log != nil {
			amqpdial.EachFrame(buf, func(f wire.Frame, header bool) {
				if header {
					c.log.Debug("amqp frame", "dir", "send", "type", "protocol-header")
					return
				}
				c.logFrame("send", f)
			})
		}
		if c.t != nil {
			c.t.write(buf)
		}
		if c.hk != nil {
			c.hk.written += int64(len(buf))
		}
		// Busy connections alternate two buffers; a small one is not kept,
		// so that an idle connection holds none.
		if cap(buf) < minSpare || cap(buf) > maxSpare {
			buf = nil
		}
		c.spare = buf[:0]
	}
	c.hk.bytesEvent()
	if c.closed {
		if c.redial {
			c.restartDial()
		}
		return
	}
	d := c.eng.Deadline()
	switch {
	case d.IsZero():
		if c.tick.index >= 0 {
			c.tick.Stop()
		}
		c.armed = time.Time{}
	case !d.Equal(c.armed):
		c.armed = d
		c.tick.schedule(d)
	}
}

// runDrains runs the channels' ready callbacks.
func (c *Conn) runDrains() {
	for len(c.drains) > 0 {
		ch := c.drains[0]
		c.drains[0] = nil
		c.drains = c.drains[1:]
		ch.inDrains = false
		ch.drain()
	}
	c.drains = nil
}

// minSpare and maxSpare bound the outgoing buffer a connection keeps
// between writes.
const (
	minSpare = 4 << 10
	maxSpare = 4 << 20
)

// addReq registers the completion of request id.
func (c *Conn) addReq(id engine.RequestID, fn func(engine.Event)) {
	if c.reqs == nil {
		c.reqs = make(map[engine.RequestID]func(engine.Event), 1)
	}
	c.reqs[id] = fn
}

// dispatch handles one engine event.
func (c *Conn) dispatch(ev engine.Event) {
	switch ev.Kind {
	case engine.EventOpen:
		c.open = true
		if c.rec == nil {
			c.cfg = nil // the Config is for dialing: idle connections do not keep it
		}
		c.hk.connectEvent(c.remote, nil)
		c.ds.login = nil
		c.startSecretRefresh()
		if cb := c.dialCb; cb != nil {
			c.dialCb = nil
			cb(c, nil)
		} else if c.Recovering() {
			c.restoreLink()
		}
	case engine.EventReply, engine.EventGetOk:
		if fn, ok := c.reqs[ev.Request]; ok {
			delete(c.reqs, ev.Request)
			if len(c.reqs) == 0 {
				c.reqs = nil // an idle connection keeps no map buckets
			}
			fn(ev)
		}
	case engine.EventDelivery, engine.EventOrphanDelivery, engine.EventReturn,
		engine.EventConfirm, engine.EventCancel, engine.EventFlow, engine.EventChannelClosed:
		if ch := c.chans[ev.Channel]; ch != nil {
			ch.dispatch(ev)
		}
	case engine.EventBlocked, engine.EventUnblocked:
		c.blocked = ev.Kind == engine.EventBlocked
		c.hk.blockedEvent(c.blocked, ev.Reason)
		for _, fn := range c.onBlocked.list() {
			fn(c.blocked, ev.Reason)
		}
	case engine.EventClosed:
		c.closedEvent(ev.Err)
	}
}

// closedEvent ends the connection: its channels end with the cause, the
// transport closes after the last bytes, and the callbacks run.
func (c *Conn) closedEvent(err error) {
	if c.lostLink(err) {
		return
	}
	if c.rec != nil && c.rec.appClosed {
		err = nil
	}
	c.closed = true
	c.err = err
	c.stopSecretRefresh()
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
	if c.tick != nil && c.tick.index >= 0 {
		c.tick.Stop()
	}
	chErr := err
	if chErr == nil {
		chErr = pika.ErrClosed
	}
	for id, ch := range c.chans {
		ch.gone(chErr)
		delete(c.chans, id)
	}
	for _, ch := range c.drains {
		ch.inDrains = false
		ch.drain()
	}
	c.drains = nil
	// Write what the engine still holds (a close-ok, say), then close.
	if c.t != nil && c.eng.OutgoingLen() > 0 {
		c.t.write(c.eng.AppendOutgoing(nil))
	}
	if c.t != nil {
		c.t.closeAfterFlush()
	}
	delete(c.l.conns, c)
	if cb := c.dialCb; cb != nil {
		if err == nil {
			err = pika.ErrClosed
		}
		c.hk.connectEvent(c.remote, err)
		if c.redialAfter(fmt.Errorf("pika: handshake with %s: %w", c.remote, err)) {
			return // process calls restartDial
		}
		c.dialCb = nil
		cb(nil, amqpdial.JoinErrors(c.ds.errs))
		return
	}
	if c.blocked {
		c.blocked = false
		c.hk.blockedEvent(false, "")
	}
	if c.hk != nil {
		if c.open { // (a link that recovery let go was reported then)
			derr := err
			if c.appClosed() {
				derr = nil
			}
			c.hk.disconnectEvent(c.remote, derr)
		}
		c.hk.bytesEvent()
	}
	for _, fn := range c.onClose.list() {
		fn(err)
	}
	cbs := c.closeCbs
	c.closeCbs = nil
	for _, cb := range cbs {
		cb(c.closeResult())
	}
}

// closeResult is what Close's callback gets: nil after a clean close.
func (c *Conn) closeResult() error {
	if c.timedOut {
		return ErrCloseTimeout
	}
	if c.err == nil {
		return nil
	}
	var pe *pika.Error
	if errors.As(c.err, &pe) && pe.Code == wire.ReplySuccess {
		return nil
	}
	return c.err
}

// Close closes the connection: connection.close, then the broker's
// close-ok (bounded by Config.CloseTimeout, after which the socket is
// dropped and cb gets ErrCloseTimeout). Pending requests fail with
// pika.ErrClosed, channels end, OnClose handlers run, and cb (which may be
// nil) runs last with nil after a clean close, or with the error that
// ended the connection when it was already closed or failed meanwhile.
func (c *Conn) Close(cb func(error)) {
	if c.Recovering() {
		c.closeRecovering(cb)
		return
	}
	if c.closed {
		if cb != nil {
			c.l.defer_(func() { cb(c.closeResult()) })
		}
		return
	}
	if cb != nil {
		c.closeCbs = append(c.closeCbs, cb)
	}
	c.closeLink()
}

// closeLink sends connection.close and bounds the wait for close-ok.
func (c *Conn) closeLink() {
	if c.closeTimer == nil {
		c.closeTimer = c.l.AfterFunc(c.closeTimeout, func() {
			c.timedOut = true
			c.transportFailed(ErrCloseTimeout)
		})
	}
	c.eng.Close("")
	c.l.markDirty(c)
}

// OnClose registers fn to run when the connection ends, with nil after a
// close the application asked for and the cause otherwise (a broker close
// as *pika.Error, a network error, pika.ErrHeartbeatTimeout, ErrStopped).
// It returns a function that unregisters fn.
func (c *Conn) OnClose(fn func(err error)) func() { return c.onClose.add(fn) }

// OnBlocked registers fn to run when the broker blocks the connection
// (resource alarm; blocked true, with the broker's reason) and when it
// lifts the block. Publishes made while blocked are queued; see Buffered.
// It returns a function that unregisters fn.
func (c *Conn) OnBlocked(fn func(blocked bool, reason string)) func() {
	return c.onBlocked.add(fn)
}

// Blocked reports whether the broker blocks the connection.
func (c *Conn) Blocked() bool { return c.blocked }

// IsClosed reports whether the connection has ended (a connection being
// recovered has not).
func (c *Conn) IsClosed() bool { return c.closed && !c.Recovering() }

// Err returns why the connection ended, or nil.
func (c *Conn) Err() error { return c.err }

// Loop returns the Loop that runs c.
func (c *Conn) Loop() *Loop { return c.l }

// Tuning returns the negotiated channel_max, frame_max and heartbeat (zero
// while a recovery attempt dials).
func (c *Conn) Tuning() engine.Tuning {
	if c.eng == nil {
		return engine.Tuning{} // during a recovery attempt's dial
	}
	return c.eng.Tuning()
}

// ServerProperties returns the broker's server properties (product,
// version, capabilities, ...), nil while a recovery attempt dials. The
// caller must not modify the table.
func (c *Conn) ServerProperties() pika.Table {
	if c.eng == nil {
		return nil // during a recovery attempt's dial
	}
	return c.eng.ServerProperties()
}

// Buffered returns the bytes accepted and not yet handed to the socket:
// those queued on channels behind a request in flight, those waiting in
// the engine and those the socket did not take yet. A Loop never waits
// for the socket: an application that publishes faster than the network
// or the broker takes messages paces itself with Buffered (for example,
// stop publishing above a bound and check again from an AfterFunc timer).
func (c *Conn) Buffered() int {
	if c.eng == nil {
		return 0
	}
	n := c.eng.OutgoingLen() + c.eng.QueuedLen()
	if c.t != nil {
		n += c.t.pending()
	}
	return n
}

// netConn is a transport as dialed.
type netConn = net.Conn

// handlers is a list of registered callbacks.
type handlers[F any] struct {
	fns []*F
}

func (h *handlers[F]) add(fn F) func() {
	p := &fn
	h.fns = append(h.fns, p)
	return func() {
		for i, q := range h.fns {
			if q == p {
				h.fns = append(h.fns[:i:i], h.fns[i+1:]...)
				return
			}
		}
	}
}

// list returns the registered callbacks (a copy: a callback may
// unregister itself).
func (h *handlers[F]) list() []F {
	if len(h.fns) == 0 {
		return nil
	}
	out := make([]F, len(h.fns))
	for i, p := range h.fns {
		out[i] = *p
	}
	return out
}
