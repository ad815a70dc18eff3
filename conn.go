package pika

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// readBufferSize is the size of the reader goroutine's buffer.
const readBufferSize = 128 << 10

// Conn is a connection to a RabbitMQ broker. It is safe for concurrent use by
// many goroutines.
//
// Three goroutines serve a Conn: a reader that feeds the socket's bytes to
// the protocol engine and hands results to waiting callers, a writer that
// sends everything queued since its last write in one write call, and a
// timer for heartbeats. None of them runs application code, and none ever
// waits for the application: notifications are delivered through buffers
// and goroutines of their own, so a caller that never reads them cannot
// stall the connection.
type Conn struct {
	cfg Config
	nc  net.Conn
	log *slog.Logger

	mu      sync.Mutex
	eng     *engine.Conn
	waiters map[engine.RequestID]*waiter
	chans   map[uint16]*Channel

	writerIdle bool          // the writer waits for wake
	wake       chan struct{} // cap 1: output is ready
	space      chan struct{} // closed when the write buffer drains; nil when nobody waits
	rearm      chan struct{} // cap 1: the engine's deadline moved earlier
	armed      time.Time     // the deadline the timer goroutine sleeps towards

	blocked       bool
	blockedReason string
	unblocked     chan struct{} // closed when the broker unblocks; nil when not blocked
	blockedTimer  *time.Timer

	readPaused bool          // a consumer's buffer is full: the reader waits
	resume     chan struct{} // closed to let the reader go on

	opened chan struct{} // closed on EventOpen
	done   chan struct{} // closed on EventClosed
	err    error         // the close cause, set before done closes
	wg     sync.WaitGroup

	notify notifier
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

// DialConfig connects with cfg and completes the AMQP handshake. ctx bounds
// the whole of it, as do cfg.DialTimeout (transport) and
// cfg.HandshakeTimeout (AMQP handshake). Errors wrap ErrAuthentication,
// ErrVhostRefused, ErrHandshakeClosed or ErrHandshakeTimeout when the broker
// refused the connection, and the dial error otherwise.
func DialConfig(ctx context.Context, cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	nc, err := dialTransport(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	c := newConn(cfg, nc)
	c.start()
	select {
	case <-c.opened:
		return c, nil
	case <-c.done:
		c.wg.Wait()
		return nil, c.err
	case <-ctx.Done():
		c.abort(ctx.Err())
		c.wg.Wait()
		return nil, fmt.Errorf("pika: handshake with %s: %w", cfg.Addr, ctx.Err())
	}
}

// dialTransport opens the TCP (or custom) connection and runs TLS over it.
func dialTransport(ctx context.Context, cfg *Config) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	if cfg.Dial != nil {
		nc, err = cfg.Dial(dctx, "tcp", cfg.Addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(dctx, "tcp", cfg.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("pika: dial %s: %w", cfg.Addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if cfg.TLS != nil {
		tcfg := cfg.TLS.Clone()
		if tcfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(cfg.Addr)
			tcfg.ServerName = host
		}
		tlsConn := tls.Client(nc, tcfg)
		if err := tlsConn.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("pika: TLS handshake with %s: %w", cfg.Addr, err)
		}
		nc = tlsConn
	}
	return nc, nil
}

func newConn(cfg Config, nc net.Conn) *Conn {
	c := &Conn{
		cfg:     cfg,
		nc:      nc,
		log:     cfg.Logger,
		eng:     engine.New(cfg.engineConfig()),
		waiters: make(map[engine.RequestID]*waiter),
		chans:   make(map[uint16]*Channel),
		wake:    make(chan struct{}, 1),
		rearm:   make(chan struct{}, 1),
		opened:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	if c.log != nil && c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.eng.SetTrace(func(f wire.Frame) { c.log.Debug("amqp frame", frameAttrs("recv", f)...) })
	}
	return c
}

// start starts the engine and the three goroutines.
func (c *Conn) start() {
	c.mu.Lock()
	c.eng.Start(time.Now())
	c.afterLocked()
	c.mu.Unlock()
	c.wg.Add(3)
	go c.readLoop()
	go c.writeLoop()
	go c.timerLoop()
}

// afterLocked runs after every call into the engine, with c.mu held: it
// dispatches the engine's events, wakes the writer when there is output and
// moves the timer when the deadline moved earlier.
func (c *Conn) afterLocked() {
	for {
		ev, ok := c.eng.NextEvent()
		if !ok {
			break
		}
		c.dispatchLocked(ev)
	}
	if c.writerIdle && c.eng.OutgoingLen() > 0 {
		c.writerIdle = false
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	if d := c.eng.Deadline(); !d.IsZero() && (c.armed.IsZero() || d.Before(c.armed)) {
		c.armed = d
		select {
		case c.rearm <- struct{}{}:
		default:
		}
	}
}

// readLoop reads from the socket and feeds the engine until the socket
// fails or closes.
func (c *Conn) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, readBufferSize)
	for {
		n, err := c.nc.Read(buf)
		c.mu.Lock()
		if n > 0 {
			c.eng.Receive(buf[:n])
		}
		if err != nil {
			c.eng.Fail(fmt.Errorf("pika: read from %s: %w", c.cfg.Addr, err))
		}
		c.afterLocked()
		for c.readPaused && !c.eng.IsClosed() {
			resume := c.resume
			c.mu.Unlock()
			select {
			case <-resume:
			case <-c.done:
			}
			c.mu.Lock()
		}
		closed := c.eng.IsClosed()
		c.mu.Unlock()
		if closed {
			return
		}
	}
}

// writeLoop writes what the engine queued, all of it in one write call
// per turn, so that publishes from many goroutines share syscalls.
func (c *Conn) writeLoop() {
	defer c.wg.Done()
	var spare []byte
	for {
		c.mu.Lock()
		for c.eng.OutgoingLen() == 0 {
			if c.eng.IsClosed() {
				c.mu.Unlock()
				c.nc.Close()
				return
			}
			c.writerIdle = true
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		buf := c.eng.SwapOutgoing(spare)
		closed := c.eng.IsClosed()
		c.mu.Unlock()

		if c.log != nil {
			c.logFrames("send", buf)
		}
		_, err := c.nc.Write(buf)

		c.mu.Lock()
		if c.space != nil && c.eng.OutgoingLen() < c.cfg.WriteBufferLimit {
			close(c.space)
			c.space = nil
		}
		if err != nil && !c.eng.IsClosed() {
			c.eng.Fail(fmt.Errorf("pika: write to %s: %w", c.cfg.Addr, err))
			c.afterLocked()
		}
		c.mu.Unlock()
		if err != nil || closed {
			if closed && err == nil {
				// The last bytes (a close-ok, say) went out; anything
				// queued since is for a dead connection.
				c.mu.Lock()
				c.eng.SwapOutgoing(nil)
				c.mu.Unlock()
			}
			c.nc.Close()
			return
		}
		if cap(buf) > 4*c.cfg.WriteBufferLimit {
			buf = nil // do not keep a burst's buffer forever
		}
		spare = buf[:0]
	}
}

// timerLoop calls the engine's Tick when its deadline comes.
func (c *Conn) timerLoop() {
	defer c.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		c.mu.Lock()
		d := c.eng.Deadline()
		c.armed = d
		c.mu.Unlock()
		var fire <-chan time.Time
		if !d.IsZero() {
			t.Reset(time.Until(d))
			fire = t.C
		}
		select {
		case <-fire:
			c.mu.Lock()
			c.eng.Tick(time.Now())
			c.afterLocked()
			c.mu.Unlock()
		case <-c.rearm:
			t.Stop()
		case <-c.done:
			t.Stop()
			return
		}
	}
}

// dispatchLocked acts on one engine event. It runs with c.mu held and never
// blocks and never calls application code.
func (c *Conn) dispatchLocked(ev engine.Event) {
	switch ev.Kind {
	case engine.EventOpen:
		close(c.opened)
	case engine.EventReply, engine.EventGetOk:
		if w := c.waiters[ev.Request]; w != nil {
			delete(c.waiters, ev.Request)
			w.resolveLocked(c, ev)
		}
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
		c.blocked = true
		c.blockedReason = ev.Reason
		if c.unblocked == nil {
			c.unblocked = make(chan struct{})
		}
		if c.cfg.BlockedTimeout > 0 && c.blockedTimer == nil {
			c.blockedTimer = time.AfterFunc(c.cfg.BlockedTimeout, c.blockedTooLong)
		}
		c.notify.blocked(true, ev.Reason)
	case engine.EventUnblocked:
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
		c.notify.blocked(false, "")
	case engine.EventClosed:
		c.closedLocked(ev.Err)
	}
}

// closedLocked ends the connection's client-side state after EventClosed.
func (c *Conn) closedLocked(err error) {
	c.err = err
	for id, ch := range c.chans {
		delete(c.chans, id)
		cerr := err
		if cerr == nil {
			cerr = ErrClosed
		}
		ch.closedLocked(cerr)
	}
	if c.unblocked != nil {
		close(c.unblocked)
		c.unblocked = nil
	}
	if c.blockedTimer != nil {
		c.blockedTimer.Stop()
		c.blockedTimer = nil
	}
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	if c.resume != nil {
		close(c.resume)
		c.resume = nil
	}
	close(c.done)
	// Bound the final flush: a writer stuck in a stalled socket gives up
	// after a second, and the reader stops at once.
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.nc.SetReadDeadline(time.Now())
	if c.writerIdle {
		c.writerIdle = false
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.notify.closed(err)
}

// blockedTooLong closes a connection blocked for longer than
// Config.BlockedTimeout.
func (c *Conn) blockedTooLong() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blockedTimer = nil
	if !c.blocked || c.eng.IsClosed() {
		return
	}
	c.eng.Fail(fmt.Errorf("%w (%s): %s", ErrBlockedTimeout, c.cfg.BlockedTimeout, c.blockedReason))
	c.afterLocked()
}

// abort ends the connection at once, without the close handshake.
func (c *Conn) abort(err error) {
	c.mu.Lock()
	c.eng.Fail(err)
	c.afterLocked()
	c.mu.Unlock()
}

// Close closes the connection gracefully: it sends connection.close and
// waits for the broker's close-ok, bounded by ctx (or Config.CloseTimeout
// when ctx has no deadline), then closes the socket. Every call still
// waiting on the connection returns ErrClosed, outstanding confirmations
// resolve with ErrOutcomeUnknown, and consumers end. Close works while the
// broker has the connection blocked. When Close returns, none of the
// connection's goroutines is left running (consumer handlers still running
// application code finish on their own). Calling Close again returns nil.
func (c *Conn) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.eng.IsClosed() {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.eng.Close("")
	c.afterLocked()
	c.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CloseTimeout)
		defer cancel()
	}
	var err error
	select {
	case <-c.done:
	case <-ctx.Done():
		err = ctx.Err()
		c.abort(ErrClosed)
	}
	c.wg.Wait()
	c.notify.wait()
	if err == nil && c.err != nil && !errors.Is(c.err, ErrClosed) {
		err = c.err
	}
	return err
}

// Done returns a channel that is closed when the connection has closed, for
// whatever reason. Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open or after a Close it asked
// for, and the reason it closed otherwise (*Error, ErrHeartbeatTimeout, a
// read or write error, ErrBlockedTimeout).
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// IsClosed reports whether the connection has closed.
func (c *Conn) IsClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ServerProperties returns the broker's server properties (product,
// version, cluster_name, capabilities, ...). Do not modify the table.
func (c *Conn) ServerProperties() Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.ServerProperties()
}

// Tuning returns the negotiated channel_max, frame_max and heartbeat.
func (c *Conn) Tuning() engine.Tuning {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.Tuning()
}

// LocalAddr returns the local network address of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the broker's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// IsBlocked reports whether the broker currently blocks publishing on this
// connection (a resource alarm), and the reason it gave.
func (c *Conn) IsBlocked() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blocked, c.blockedReason
}

// UpdateSecret replaces the connection's secret (for example an expiring
// OAuth 2 token) with connection.update-secret, and waits for the broker's
// answer. If ctx ends first, UpdateSecret returns ctx.Err() and the update
// may still take effect.
func (c *Conn) UpdateSecret(ctx context.Context, secret, reason string) error {
	w := newWaiter()
	c.mu.Lock()
	id, err := c.eng.UpdateSecret(secret, reason)
	if err != nil {
		c.mu.Unlock()
		return c.callErr(err, nil)
	}
	c.waiters[id] = w
	c.afterLocked()
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
	if errors.Is(err, engine.ErrClosed) && c.err != nil {
		return c.err
	}
	return err
}

// waiter is a caller waiting for a reply.
type waiter struct {
	done      chan struct{}
	ev        engine.Event
	abandoned bool                  // the caller's ctx ended first
	late      func(ev engine.Event) // run (under c.mu) when an abandoned request's reply arrives
}

func newWaiter() *waiter { return &waiter{done: make(chan struct{})} }

func (w *waiter) resolveLocked(c *Conn, ev engine.Event) {
	w.ev = ev
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

// logFrames logs every frame of an outgoing buffer (whole frames, possibly
// after the protocol header) at Debug level. Inbound frames are logged by
// the engine's trace hook.
func (c *Conn) logFrames(dir string, b []byte) {
	if !c.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for len(b) > 0 {
		if len(b) >= 8 && string(b[:4]) == "AMQP" {
			c.log.Debug("amqp frame", "dir", dir, "type", "protocol-header")
			b = b[8:]
			continue
		}
		f, n, err := wire.ParseFrame(b, 0)
		if err != nil || n == 0 {
			return
		}
		b = b[n:]
		c.log.Debug("amqp frame", frameAttrs(dir, f)...)
	}
}
