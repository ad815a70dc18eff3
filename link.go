package pika

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/amqpdial"
	"github.com/pika-go/pika/wire"
)

// The reader reads into a small buffer of the link's own until a read
// fills it, and from then on into a large one from readBuffers, which it
// gives back when a read brings a lone heartbeat frame: the broker had
// nothing else to send for a whole heartbeat interval, the connection is
// idle. So an idle connection holds a few hundred bytes instead of
// 128 KiB, and a busy one reads up to readBufferSize bytes per call.
// (Giving the large buffer back after a run of small reads instead cost
// publish-confirm about 15 % more CPU: bursts of acknowledgements then
// often needed two reads.)
const (
	readBufferSize  = 128 << 10
	smallReadBuffer = 512
)

// readBuffers pools the large read buffers of busy links.
var readBuffers = sync.Pool{New: func() any { return new([readBufferSize]byte) }}

// link is one transport connection and the protocol engine driving it. A
// Conn has one link at a time; recovery replaces a lost link with a new one
// while the Conn, its Channels and Consumers stay the same values.
//
// Two goroutines serve a link: a reader feeding the socket's bytes to the
// engine, and a writer sending everything queued since its last write in
// one write call; a timer (time.AfterFunc, no goroutine while it waits)
// calls the engine's Tick. They lock the Conn's mutex only around engine
// calls and never while doing I/O, so a writer stuck in a stalled socket
// cannot keep the timer from declaring the peer dead and closing the
// socket.
type link struct {
	c    *Conn
	nc   net.Conn
	eng  *engine.Conn
	addr string // the host:port dialled
	// when its dial started (for ConnectHook)
	dialStart time.Time
	debug     bool // frames are logged (Config.Logger at Debug level)

	// guarded by c.mu
	waiters    map[engine.RequestID]*waiter
	quiet      int         // waiters with quiet set
	writerIdle bool        // the writer waits for wake
	armed      time.Time   // the deadline timer is set for; zero when it is not set
	timer      *time.Timer // calls onTimer at armed
	err        error       // why the link closed
	// The broker's connection.blocked state on this link, kept while the
	// link is not yet the Conn's (see Conn.installLinkLocked).
	blocked       bool
	blockedReason string

	lingerer *fdConn // the socket, when the reader lingers (Config.ReadLinger)

	wake   chan struct{} // cap 1: output is ready
	opened chan struct{} // closed on EventOpen
	done   chan struct{} // closed on EventClosed
	wg     sync.WaitGroup
}

// dialLink opens a transport to one of the configured addresses and runs
// the AMQP handshake on it. The returned link is open; its goroutines run.
func (c *Conn) dialLink(ctx context.Context) (*link, error) {
	ecfg, err := c.loginConfig(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, addr := range c.endpoints(ctx) {
		start := time.Now()
		nc, err := dialTransport(ctx, &c.cfg, addr)
		if err != nil {
			c.connectEvent(addr.addr, err, time.Since(start))
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		l := c.newLink(nc, ecfg)
		l.addr, l.dialStart = addr.addr, start
		l.start()
		select {
		case <-l.opened:
			return l, nil
		case <-l.done:
			l.wg.Wait()
			err = atAddr(addr.addr, l.err)
		case <-ctx.Done():
			c.mu.Lock()
			l.eng.Fail(ctx.Err())
			c.afterLocked(l)
			c.mu.Unlock()
			l.wg.Wait()
			err = fmt.Errorf("pika: handshake with %s: %w", addr.addr, ctx.Err())
		}
		c.connectEvent(addr.addr, err, time.Since(start))
		errs = append(errs, err)
		if ctx.Err() != nil || isTerminal(err) {
			break
		}
	}
	return nil, joinDialErrors(errs)
}

func (c *Conn) newLink(nc net.Conn, ecfg engine.Config) *link {
	l := &link{
		c:       c,
		nc:      nc,
		eng:     engine.New(ecfg),
		waiters: make(map[engine.RequestID]*waiter),
		wake:    make(chan struct{}, 1),
		opened:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	if c.cfg.BlockingRead {
		if fc := newFdConn(nc); fc != nil {
			l.nc = fc
			if c.cfg.ReadLinger > 0 && fc.enableLinger() {
				l.lingerer = fc
			}
		}
	}
	// Enabled is the handler's code: it runs here, outside the lock. The
	// trace runs inside Receive, under the lock: it only queues the record
	// for the log queue's goroutine.
	if c.log != nil && c.log.Enabled(context.Background(), slog.LevelDebug) {
		l.debug = true
		l.eng.SetTrace(func(f wire.Frame) { c.logFrame("recv", f) })
	}
	return l
}

// authLocked runs the SASL step the engine asks for with ev: the
// mechanism, which may be the application's, runs on a goroutine of its own
// without the lock, and its response goes back to the engine. The link's
// timer runs meanwhile: a step still running when the handshake times out
// is not waited for, and its late response is ignored.
func (l *link) authLocked(ev engine.Event) {
	mech := l.eng.Mechanism()
	go func() {
		c := l.c
		// A step abandoned by an earlier attempt's timeout may still run:
		// mechanisms need not be safe for concurrent use.
		c.authMu.Lock()
		var resp []byte
		var err error
		if s, ok := ev.Method.(*wire.ConnectionSecure); ok {
			resp, err = mech.Challenge([]byte(s.Challenge))
		} else {
			resp, err = mech.Start()
		}
		c.authMu.Unlock()
		c.mu.Lock()
		l.eng.AuthResponse(resp, err)
		c.afterLocked(l)
		c.mu.Unlock()
	}()
}

// start starts the engine, the link's two goroutines and its timer.
func (l *link) start() {
	c := l.c
	l.timer = time.AfterFunc(time.Hour, l.onTimer)
	l.timer.Stop()
	c.mu.Lock()
	l.eng.Start(time.Now())
	c.afterLocked(l)
	c.mu.Unlock()
	l.wg.Add(2)
	go l.readLoop()
	go l.writeLoop()
}

// afterLocked runs after every call into a link's engine, with c.mu held:
// it dispatches the engine's events, wakes the writer when there is output
// and moves the timer when the deadline moved earlier.
func (c *Conn) afterLocked(l *link) {
	for {
		ev, ok := l.eng.NextEvent()
		if !ok {
			break
		}
		c.dispatchLocked(l, ev)
	}
	// Bytes queued behind a request are dropped when their channel
	// closes, without a write.
	c.releaseSpaceLocked(l)
	if c.readPaused {
		// A request, a publish or a close may now await the broker: the
		// paused reader checks again.
		c.unpauseReaderLocked()
	}
	if c.lingerOn.Load() != nil && c.lingerBlockedLocked() {
		// Something is now awaited: no more lingering.
		c.unlingerLocked()
	}
	if l.writerIdle && l.eng.OutgoingLen() > 0 {
		l.writerIdle = false
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	// The timer moves only when the deadline comes earlier: a later one
	// (traffic pushed the heartbeat back) is found when it fires. So most
	// calls reset no timer.
	if d := l.eng.Deadline(); !d.IsZero() && (l.armed.IsZero() || d.Before(l.armed)) && !l.eng.IsClosed() {
		l.armed = d
		l.timer.Reset(time.Until(d))
	}
}

// releaseSpaceLocked wakes the publishers waiting for the write buffer
// (Config.WriteBufferLimit) once the bytes waiting for l's socket, those
// queued on channels behind requests included, are below the limit.
func (c *Conn) releaseSpaceLocked(l *link) {
	if c.space != nil && c.l == l && l.eng.OutgoingLen()+l.eng.QueuedLen() < c.cfg.WriteBufferLimit {
		close(c.space)
		c.space = nil
	}
}

// lingerMinRead is the least a read must bring for the reader to linger
// after it (Config.ReadLinger): several deliveries, a sign that the broker
// sends fast enough for a wait to gather more.
const lingerMinRead = 1024

// lingerBlockedLocked reports whether the reader must not linger
// (Config.ReadLinger), or must stop: something waits for the broker now —
// a reply to a request (a consumer suspension's quiet ones included: the
// restart waits for them), a close, a goroutine waiting for the newest
// publisher confirmation of a channel (Confirmation.Wait or Done,
// WaitConfirms) or for room to publish (MaxUnconfirmed, or
// WriteBufferLimit: the broker may not read while its own writes wait for
// the client to read), messages to republish, the reply of an
// RPCClient.Call, the end of a connection.blocked or of a channel.flow
// that stopped a channel (publishers wait for it).
// Confirmations merely outstanding do not count: nobody waits for them
// yet, and whoever starts to ends the linger.
func (c *Conn) lingerBlockedLocked() bool {
	if c.closing || c.state != connOpen || len(c.l.waiters) > 0 || c.confirmWaits.Load() > 0 || c.rpcCalls > 0 || c.blocked || c.space != nil {
		return true
	}
	for _, ch := range c.chans {
		if ch.closing || len(ch.flushes) > 0 || ch.room != nil || len(ch.republish) > 0 || ch.paused != nil {
			return true
		}
	}
	return false
}

// unlingerLocked ends the reader's linger in progress, if any.
func (c *Conn) unlingerLocked() {
	if fc := c.lingerOn.Swap(nil); fc != nil {
		fc.unlinger()
	}
}

// confirmWaitStart notes a goroutine about to wait for a publisher
// confirmation, without the connection's lock, and ends the reader's
// linger. The counter is raised before lingerOn is read, and the reader
// sets lingerOn before it reads the counter: one of the two sees the
// other, so no linger outlasts the start of a wait.
func (c *Conn) confirmWaitStart() {
	c.confirmWaits.Add(1)
	if fc := c.lingerOn.Swap(nil); fc != nil {
		fc.unlinger()
	}
}

func (c *Conn) confirmWaitEnd() { c.confirmWaits.Add(-1) }

// readLoop reads from the socket and feeds the engine until the link ends.
func (l *link) readLoop() {
	defer l.wg.Done()
	c := l.c
	var small [smallReadBuffer]byte
	var large *[readBufferSize]byte // from readBuffers while the broker sends much
	var wakes []*Consumer           // consumers to signal once the lock is released
	defer func() {
		if large != nil {
			readBuffers.Put(large)
		}
	}()
	for {
		buf := small[:]
		if large != nil {
			buf = large[:]
		}
		n, err := l.nc.Read(buf)
		if n > 0 && len(c.hk.bytes) > 0 {
			c.addBytes(n, 0)
		}
		c.mu.Lock()
		confirms0, settles0 := c.confirmsRead, c.settlesSent
		if n > 0 {
			c.reads++
			l.eng.Receive(buf[:n])
		}
		if err != nil {
			l.eng.Fail(fmt.Errorf("pika: read from %s: %w", l.nc.RemoteAddr(), err))
		}
		c.afterLocked(l)
		if len(c.inlineReady) > 0 {
			// Inline handlers, without the lock (see inline.go).
			c.runInlineLocked()
		}
		// A consumer's full buffer stops the reader only while nothing is
		// awaited from the broker; whatever may change that wakes it.
		paused := false
		for c.pauseLocked(l) {
			paused = true
			c.readPaused = true
			if c.resume == nil {
				c.resume = make(chan struct{})
			}
			resume := c.resume
			wakes = c.takeWakesLocked(wakes)
			c.mu.Unlock()
			wakeConsumers(wakes)
			select {
			case <-resume:
			case <-l.done:
			}
			c.mu.Lock()
		}
		if c.l == l {
			c.readPaused = false
		}
		if l.lingerer != nil && !paused && (n >= lingerMinRead || c.confirmsRead != confirms0) && n < len(buf) && c.settlesSent == settles0 && c.l == l && !l.eng.IsClosed() {
			// The broker sends fast, or confirms what was published
			// (Config.ReadLinger): let its next writes pile up in the
			// socket, to read them in one call. Not when an ack went out
			// since the read (an inline handler's, say): the broker may
			// have been waiting for it to send more. Nor after a pause:
			// the broker's writes piled up meanwhile, and the application,
			// which emptied a buffer to end it, waits. lingerOn is set
			// before the check, for the waiters that do not take the lock
			// (see Conn.confirmWaitStart).
			c.lingerOn.Store(l.lingerer)
			if c.lingerBlockedLocked() {
				c.lingerOn.Store(nil)
			} else {
				c.lingers++
				wakes = c.takeWakesLocked(wakes)
				c.mu.Unlock()
				wakeConsumers(wakes)
				l.lingerer.linger(c.cfg.ReadLinger)
				c.mu.Lock()
				c.lingerOn.Store(nil)
			}
		}
		closed := l.eng.IsClosed()
		wakes = c.takeWakesLocked(wakes)
		c.mu.Unlock()
		wakeConsumers(wakes)
		if closed {
			return
		}
		// The engine keeps nothing of buf: the next read may use the
		// other buffer.
		switch {
		case large == nil && n == len(small):
			// More may be waiting: read it in one call next time.
			large = readBuffers.Get().(*[readBufferSize]byte)
		case large != nil && n == 8 && wire.FrameType(buf[0]) == wire.FrameHeartbeat:
			readBuffers.Put(large)
			large = nil
		}
	}
}

// takeWakesLocked moves the consumers that pushLocked noted for a
// wake-up into dst (emptied first). Deliveries reach consumers only from
// the reader's Receive, whose events are dispatched before the reader
// releases the lock, so the reader alone needs to call it, before each
// release.
func (c *Conn) takeWakesLocked(dst []*Consumer) []*Consumer {
	dst = append(dst[:0], c.wakes...)
	for _, cons := range c.wakes {
		cons.wakeQueued = false
	}
	clear(c.wakes)
	c.wakes = c.wakes[:0]
	return dst
}

// wakeConsumers signals the waiting Next calls of consumers, without the
// connection's lock: the woken call takes it first.
func wakeConsumers(consumers []*Consumer) {
	for i, cons := range consumers {
		select {
		case cons.signal <- struct{}{}:
		default:
		}
		consumers[i] = nil
	}
}

// writeLoop writes what the engine queued, all of it in one write call per
// turn, so that publishes from many goroutines share syscalls.
func (l *link) writeLoop() {
	defer l.wg.Done()
	defer l.nc.Close()
	c := l.c
	var spare []byte
	for {
		c.mu.Lock()
		for l.eng.OutgoingLen() == 0 {
			if l.eng.IsClosed() {
				c.mu.Unlock()
				return
			}
			l.writerIdle = true
			c.mu.Unlock()
			<-l.wake
			c.mu.Lock()
		}
		buf := l.eng.SwapOutgoing(spare)
		closed := l.eng.IsClosed()
		c.mu.Unlock()

		if l.debug {
			c.logFrames("send", buf)
		}
		n, err := l.nc.Write(buf)
		if n > 0 && len(c.hk.bytes) > 0 {
			c.addBytes(0, n)
		}

		c.mu.Lock()
		c.releaseSpaceLocked(l)
		if err != nil && !l.eng.IsClosed() {
			l.eng.Fail(fmt.Errorf("pika: write to %s: %w", l.nc.RemoteAddr(), err))
			c.afterLocked(l)
		}
		if closed {
			// The last bytes (a close-ok, say) went out; anything queued
			// since is for a dead connection.
			l.eng.SwapOutgoing(nil)
		}
		c.mu.Unlock()
		if err != nil || closed {
			return
		}
		if cap(buf) > 4*c.cfg.WriteBufferLimit {
			buf = nil // do not keep a burst's buffer forever
		}
		spare = buf[:0]
	}
}

// onTimer calls the engine's Tick when its deadline comes (l.timer's
// function, on a goroutine of the runtime's); afterLocked sets the timer
// again for the next deadline.
func (l *link) onTimer() {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-l.done:
		return
	default:
	}
	l.armed = time.Time{}
	if (c.readPaused || c.readerBusy) && c.l == l {
		// The reader paused for a slow consumer, or runs an inline
		// handler: the broker's bytes wait in the socket, so it is not
		// silent.
		l.eng.NoteReceive()
	}
	l.eng.Tick(time.Now())
	c.afterLocked(l)
}

// isOpen reports whether the link completed its handshake.
func (l *link) isOpen() bool {
	select {
	case <-l.opened:
		return true
	default:
		return false
	}
}

// closedLocked ends the link after its EventClosed: it makes the socket's
// goroutines stop soon (the final flush is bounded by a second) and wakes
// the writer for that flush.
func (l *link) closedLocked(err error) {
	l.err = err
	close(l.done)
	l.timer.Stop()
	l.nc.SetWriteDeadline(time.Now().Add(time.Second))
	l.nc.SetReadDeadline(time.Now())
	if l.writerIdle {
		l.writerIdle = false
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// logFrames logs every frame of an outgoing buffer (whole frames, possibly
// after the protocol header) at Debug level, through the log queue.
// Inbound frames are logged by the engine's trace hook.
func (c *Conn) logFrames(dir string, b []byte) {
	amqpdial.EachFrame(b, func(f wire.Frame, header bool) {
		if header {
			c.logAt(slog.LevelDebug, "amqp frame", "dir", dir, "type", "protocol-header")
			return
		}
		c.logFrame(dir, f)
	})
}
