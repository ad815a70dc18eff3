package pikatest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pika-go/pika/wire"
)

// This file is the connection: the protocol header and handshake, the
// frame loop that decodes frames and hands methods to the channels, the
// writer goroutine that batches outgoing frames, heartbeats, and closing.

// handshakeTimeout bounds the connection handshake, as RabbitMQ's
// handshake_timeout (10 s).
const handshakeTimeout = 10 * time.Second

// closeOkTimeout bounds the wait for connection.close-ok after the broker
// closed a connection.
const closeOkTimeout = 2 * time.Second

// highWater is the amount of unwritten output above which the broker stops
// delivering to a connection's consumers until the socket drains.
const highWater = 1 << 20

// readPauseWater is the amount of unwritten output above which the
// connection's reader stops taking the client's frames until the writer
// has handed the output to the socket: a client that sends without reading
// (mandatory publishes that all come back as returns, say) is then held
// back by the transport, as it would be by RabbitMQ's TCP window, instead
// of growing the broker's buffer without bound.
const readPauseWater = 4 * highWater

type conn struct {
	b  *Broker
	nc net.Conn
	id uint64

	// Set during the handshake by the reader; read under b.mu after.
	name, user, mechanism string
	vh                    *vhost
	props                 wire.Table
	capBlocked, capCancel bool
	frameMax              uint32
	channelMax            uint16
	heartbeat             time.Duration
	opened                time.Time

	// Guarded by b.mu.
	channels     map[uint16]*channel
	open         bool // handshake done, not closing
	closing      bool // sent connection.close, awaiting close-ok
	gone         bool
	blockedSent  bool
	confirmDirty []*channel

	wmu        sync.Mutex
	out, spare []byte
	outLen     atomic.Int64
	throttled  atomic.Bool
	wake       chan struct{}
	drained    chan struct{} // signalled by the writer each time it takes the output
	quit       chan struct{}
	writerDone chan struct{}

	dead     chan struct{} // closed when the socket is cut or the connection ends
	deadOnce sync.Once

	stallMu sync.Mutex
	stall   chan struct{} // non-nil while stalled; closed to resume

	lastRead, lastWrite atomic.Int64
	dec                 wire.MethodDecoder
	hdr                 wire.ContentHeader
}

func newConn(b *Broker, nc net.Conn, id uint64) *conn {
	c := &conn{b: b, nc: nc, id: id, channels: map[uint16]*channel{},
		wake: make(chan struct{}, 1), drained: make(chan struct{}, 1), dead: make(chan struct{}), quit: make(chan struct{}), writerDone: make(chan struct{}),
		frameMax: b.cfg.FrameMax, channelMax: b.cfg.ChannelMax, opened: time.Now()}
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	c.lastWrite.Store(now)
	return c
}

// run serves the connection until it ends.
func (c *conn) run() {
	defer c.b.connWG.Done()
	go c.writer()
	fr := wire.NewFrameReader(readCounter{c}, c.b.cfg.FrameMax)
	if c.handshake(fr) {
		c.loop(fr)
	}
	c.finish()
}

// finish releases everything the connection holds and stops the writer,
// which flushes what is queued and closes the socket.
func (c *conn) finish() {
	b := c.b
	b.mu.Lock()
	c.release()
	delete(b.conns, c)
	b.unlock()
	c.deadOnce.Do(func() { close(c.dead) })
	close(c.quit)
	select {
	case <-c.writerDone:
	case <-time.After(closeOkTimeout):
		c.nc.Close()
		<-c.writerDone
	}
	c.nc.Close()
}

// release cancels the connection's consumers, requeues its unacked
// messages and deletes its exclusive queues. Called with b.mu held.
func (c *conn) release() {
	if c.gone {
		return
	}
	c.gone = true
	c.open = false
	for _, ch := range c.channels {
		ch.release()
	}
	if c.vh != nil {
		var owned []*queue
		for _, q := range c.vh.queues {
			if q.exclusive && q.owner == c {
				owned = append(owned, q)
			}
		}
		// In name order: the same order in every run.
		slices.SortFunc(owned, func(a, b *queue) int { return strings.Compare(a.name, b.name) })
		for _, q := range owned {
			c.vh.deleteQueue(q)
		}
	}
}

// readCounter records when bytes arrive, for heartbeat timeouts, and holds
// reads while the connection is stalled.
type readCounter struct{ c *conn }

func (r readCounter) Read(p []byte) (int, error) {
	n, err := r.c.nc.Read(p)
	if n > 0 {
		r.c.lastRead.Store(time.Now().UnixNano())
	}
	r.c.waitStall()
	return n, err
}

// waitStall blocks while the connection is stalled.
func (c *conn) waitStall() {
	c.stallMu.Lock()
	s := c.stall
	c.stallMu.Unlock()
	if s != nil {
		select {
		case <-s:
		case <-c.dead:
		}
	}
}

func (c *conn) stalled() bool {
	c.stallMu.Lock()
	defer c.stallMu.Unlock()
	return c.stall != nil
}

// cut closes the socket without any AMQP goodbye.
func (c *conn) cut() {
	c.deadOnce.Do(func() { close(c.dead) })
	c.nc.Close()
}

// writer sends queued output in batches until the connection ends.
func (c *conn) writer() {
	defer close(c.writerDone)
	for {
		quit := false
		select {
		case <-c.wake:
		case <-c.quit:
			quit = true
		}
		c.waitStall()
		c.wmu.Lock()
		buf := c.out
		c.out = c.spare[:0]
		c.spare = nil
		c.outLen.Store(0)
		c.wmu.Unlock()
		select {
		case c.drained <- struct{}{}:
		default:
		}
		if len(buf) > 0 {
			_, err := c.nc.Write(buf)
			c.lastWrite.Store(time.Now().UnixNano())
			if err != nil {
				c.nc.Close()
				if !quit {
					<-c.quit
				}
				return
			}
		}
		c.wmu.Lock()
		if c.spare == nil && cap(buf) <= 4*highWater {
			c.spare = buf[:0]
		}
		c.wmu.Unlock()
		if quit {
			c.nc.Close()
			return
		}
		if c.throttled.Swap(false) {
			c.b.mu.Lock()
			c.redispatch()
			c.b.unlock()
		}
	}
}

// redispatch lets every queue this connection consumes from deliver again.
func (c *conn) redispatch() {
	now := time.Now().UnixNano()
	for _, ch := range c.channels {
		for _, cs := range ch.consumers {
			if cs.q != nil {
				cs.q.dispatch(now)
			}
		}
	}
}

// writable reports whether more deliveries may be queued for the socket.
func (c *conn) writable() bool {
	if c.outLen.Load() < highWater {
		return true
	}
	c.throttled.Store(true)
	return false
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// send queues a method frame.
func (c *conn) send(channel uint16, m wire.Method) {
	c.wmu.Lock()
	out, err := wire.AppendMethodFrame(c.out, channel, m)
	if err == nil {
		c.out = out
	}
	c.outLen.Store(int64(len(c.out)))
	c.wmu.Unlock()
	c.signal()
}

// sendRaw queues a method with content (deliver, get-ok, return): the
// method frame, a header frame with the encoded header payload, and the
// body split at the negotiated frame size.
func (c *conn) sendRaw(channel uint16, m wire.Method, header, body []byte) {
	c.wmu.Lock()
	out, err := wire.AppendMethodFrame(c.out, channel, m)
	if err == nil {
		out = append(out, byte(wire.FrameHeader), byte(channel>>8), byte(channel))
		out = binary.BigEndian.AppendUint32(out, uint32(len(header)))
		out = append(out, header...)
		out = append(out, wire.FrameEnd)
		out = wire.AppendBodyFrames(out, channel, body, c.frameMax)
		c.out = out
	}
	c.outLen.Store(int64(len(c.out)))
	c.wmu.Unlock()
	c.signal()
}

// sendBytes queues bytes already encoded.
func (c *conn) sendBytes(b []byte) {
	c.wmu.Lock()
	c.out = append(c.out, b...)
	c.outLen.Store(int64(len(c.out)))
	c.wmu.Unlock()
	c.signal()
}

// sendHeartbeat queues a heartbeat frame.
func (c *conn) sendHeartbeat() {
	c.wmu.Lock()
	c.out = wire.AppendHeartbeatFrame(c.out)
	c.wmu.Unlock()
	c.signal()
}

// heartbeats sends heartbeats when the connection is idle and cuts it when
// the client has been silent for two intervals, as RabbitMQ does.
func (c *conn) heartbeats() {
	iv := c.heartbeat
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			return
		case now := <-t.C:
			if c.stalled() {
				continue
			}
			n := now.UnixNano()
			if time.Duration(n-c.lastWrite.Load()) >= iv/2 {
				c.sendHeartbeat()
			}
			if time.Duration(n-c.lastRead.Load()) > 2*iv {
				c.cut()
				return
			}
		}
	}
}

// fail reports a connection-level error: connection.close is sent and the
// connection waits for close-ok, ignoring everything else. Called with b.mu
// held.
func (c *conn) fail(e *amqpError) {
	if c.closing || c.gone {
		return
	}
	c.closing = true
	c.open = false
	c.send(0, &wire.ConnectionClose{ReplyCode: uint16(e.code), ReplyText: replyText(e.text),
		ClassID: uint16(e.method.Class()), MethodID: e.method.Index()})
	for _, ch := range c.channels {
		ch.release()
	}
	time.AfterFunc(closeOkTimeout, c.cut)
}

// frameError maps a wire decoding error to the connection error RabbitMQ
// sends for a malformed frame.
func frameError(err error) *amqpError {
	e := connErr(wire.ReplyFrameError, "%v", err)
	var we *wire.Error
	if errors.As(err, &we) {
		e.method = we.Method
	}
	return e
}

// frameReadError is RabbitMQ's FRAME_ERROR for a frame that cannot be
// split off the stream; buf holds the unread bytes, starting with the bad
// frame.
func frameReadError(err error, buf []byte, frameMax uint32) *amqpError {
	if len(buf) < 7 {
		return frameError(err)
	}
	typ := buf[0]
	size := int(binary.BigEndian.Uint32(buf[3:7]))
	payload := buf[7:]
	if len(payload) > size {
		payload = payload[:size]
	}
	switch {
	case errors.Is(err, wire.ErrFrameTooLarge):
		return connErr(wire.ReplyFrameError, "type %d, all octets = <<>>: {frame_too_large,%d,%d}", typ, size, frameMax-8)
	case errors.Is(err, wire.ErrUnknownFrameType):
		return connErr(wire.ReplyFrameError, "type %d, all octets = %s: unknown_frame", typ, erlangBinary(payload))
	case errors.Is(err, wire.ErrBadFrameEnd) && len(buf) > 7+size:
		return connErr(wire.ReplyFrameError, "type %d, all octets = %s: {invalid_frame_end_marker,%d}", typ, erlangBinary(payload), buf[7+size])
	}
	return frameError(err)
}

// loop reads frames until the connection ends.
func (c *conn) loop(fr *wire.FrameReader) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			var we *wire.Error
			if errors.As(err, &we) {
				c.b.mu.Lock()
				c.fail(frameReadError(err, fr.Buffered(), c.frameMax))
				c.b.unlock()
				c.drain(fr.Buffered())
			}
			return
		}
		if done := c.safeFrame(f); done {
			return
		}
		if len(fr.Buffered()) == 0 || !completeFrame(fr.Buffered()) {
			c.flushConfirms()
		}
		if c.outLen.Load() >= readPauseWater && !c.waitDrained() {
			return
		}
	}
}

// waitDrained waits until the writer has taken the queued output (the
// unwritten output is below highWater again), or the connection ends
// (false).
func (c *conn) waitDrained() bool {
	for c.outLen.Load() >= highWater {
		select {
		case <-c.drained:
		case <-c.dead:
			return false
		case <-c.writerDone:
			return false
		}
	}
	return true
}

// closeOkFrame is connection.close-ok as every client sends it.
var closeOkFrame = []byte{1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, wire.FrameEnd}

// drain discards input after a frame error, when the stream can no longer
// be split into frames, until the client's connection.close-ok shows up in
// it or the socket closes (fail's timer closes it in the end).
func (c *conn) drain(pending []byte) {
	buf := make([]byte, 0, 8192)
	buf = append(buf, pending[min(len(pending), 1):]...)
	for {
		if bytes.Contains(buf, closeOkFrame) {
			return
		}
		if len(buf) > 4096 {
			buf = append(buf[:0], buf[len(buf)-len(closeOkFrame):]...)
		}
		n, err := c.nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			return
		}
	}
}

func completeFrame(b []byte) bool {
	_, n, err := wire.ParseFrame(b, 0)
	return n > 0 || err != nil
}

// safeFrame is frame, but a bug of the broker that panics closes only
// this connection, with 541 INTERNAL_ERROR, instead of the test binary.
func (c *conn) safeFrame(f wire.Frame) (done bool) {
	defer func() {
		if r := recover(); r != nil {
			c.b.mu.Lock()
			c.fail(connErr(wire.ReplyInternalError, "pikatest: internal error: %v", r))
			c.b.unlock()
			done = false
		}
	}()
	if frameHook != nil {
		frameHook(f)
	}
	return c.frame(f)
}

// frameHook, when set by a test, sees every frame before it is handled.
var frameHook func(wire.Frame)

// frame handles one frame; true ends the connection.
func (c *conn) frame(f wire.Frame) bool {
	b := c.b
	switch f.Type {
	case wire.FrameMethod:
	default:
		if f.Type == wire.FrameHeartbeat && f.Channel == 0 {
			return false
		}
		b.mu.Lock()
		defer b.unlock()
		if c.closing {
			return false
		}
		if f.Channel == 0 || f.Type == wire.FrameHeartbeat {
			c.fail(connErr(wire.ReplyUnexpectedFrame, "type %d, all octets = %s", f.Type, erlangBinary(f.Payload)))
			return false
		}
		ch := c.channels[f.Channel]
		if ch == nil {
			c.fail(connErr(wire.ReplyChannelError, "expected 'channel.open'"))
			return false
		}
		ch.contentFrame(f)
		return false
	}
	m, err := c.dec.Decode(f.Payload)
	if err != nil {
		if errors.Is(err, wire.ErrUnknownMethod) || len(f.Payload) < 4 {
			// RabbitMQ's reader gives up on such a connection without
			// a word.
			return true
		}
		b.mu.Lock()
		defer b.unlock()
		e := connErr(wire.ReplyFrameError, "cannot decode %s", erlangBinary(f.Payload[4:]))
		id, _ := wire.PeekMethodID(f.Payload)
		e.method = id
		c.fail(e)
		return false
	}
	if id := m.ID(); id.SentBy()&wire.SentByClient == 0 {
		b.mu.Lock()
		defer b.unlock()
		if c.closing || c.gone {
			return false
		}
		e := connErr(wire.ReplyCommandInvalid, "unimplemented method")
		e.method = id
		c.fail(e)
		return false
	}
	id := m.ID()
	if f.Channel == 0 {
		return c.connectionMethod(m)
	}
	if id == wire.MethodBasicPublish {
		c.waitAlarm()
	}
	b.mu.Lock()
	defer b.unlock()
	if c.closing || c.gone {
		return false
	}
	if id.Class() == wire.ClassConnection {
		e := connErr(wire.ReplyCommandInvalid, "unimplemented method")
		e.method = id
		c.fail(e)
		return false
	}
	ch := c.channels[f.Channel]
	if ch == nil {
		if id != wire.MethodChannelOpen {
			e := connErr(wire.ReplyChannelError, "expected 'channel.open'")
			e.method = id
			c.fail(e)
			return false
		}
		if len(c.channels) >= int(c.channelMax) {
			c.fail(connErr(wire.ReplyNotAllowed, "number of channels opened (%d) has reached the negotiated channel_max (%d)", len(c.channels), c.channelMax))
			return false
		}
		ch = newChannel(c, f.Channel)
		c.channels[f.Channel] = ch
		c.send(f.Channel, &wire.ChannelOpenOk{})
		return false
	}
	ch.method(m)
	return false
}

// connectionMethod handles a method on channel 0.
func (c *conn) connectionMethod(m wire.Method) bool {
	b := c.b
	b.mu.Lock()
	defer b.unlock()
	switch m := m.(type) {
	case *wire.ConnectionClose:
		c.send(0, &wire.ConnectionCloseOk{})
		c.release()
		return true
	case *wire.ConnectionCloseOk:
		if c.closing {
			return true
		}
		c.fail(connErr(wire.ReplyCommandInvalid, "unexpected connection.close-ok"))
	case *wire.ConnectionUpdateSecret:
		if !c.closing {
			c.send(0, &wire.ConnectionUpdateSecretOk{})
		}
	case *wire.ConnectionBlocked, *wire.ConnectionUnblocked:
		// RabbitMQ ignores these from clients.
	default:
		if c.closing {
			return false
		}
		e := connErr(wire.ReplyChannelError, "unexpected method in connection state running")
		e.method = m.ID()
		c.fail(e)
	}
	return false
}

// waitAlarm holds a publishing connection while the memory alarm is on,
// as RabbitMQ stops reading from a connection once it publishes; a client
// that announced the capability is told with connection.blocked.
func (c *conn) waitAlarm() {
	b := c.b
	for {
		b.mu.Lock()
		if !b.alarm {
			b.mu.Unlock()
			return
		}
		if c.capBlocked && !c.blockedSent && !c.closing {
			c.blockedSent = true
			c.send(0, &wire.ConnectionBlocked{Reason: "low on memory"})
		}
		w := make(chan struct{}, 1)
		b.waiters[w] = struct{}{}
		b.mu.Unlock()
		select {
		case <-w:
		case <-c.dead:
		}
		b.mu.Lock()
		delete(b.waiters, w)
		gone := c.gone
		b.mu.Unlock()
		if gone || isClosed(c.dead) {
			return
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
