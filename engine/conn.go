package engine

import (
	"time"

	"github.com/pika-go/pika/wire"
)

type connState uint8

const (
	stateNew     connState = iota // before Start
	stateStart                    // header sent, awaiting connection.start
	stateSecure                   // start-ok sent, awaiting secure or tune
	stateOpening                  // tune-ok and open sent, awaiting open-ok
	stateOpen                     // ready
	stateClosing                  // client sent connection.close, awaiting close-ok
	stateClosed                   // done; EventClosed emitted
)

// bodyPrealloc caps the body buffer allocated up front from a content
// header's announced size; larger bodies grow as their frames arrive, so a
// hostile header cannot make the engine allocate more than it receives.
const bodyPrealloc = 1 << 20

// Small message bodies are carved out of shared chunks instead of being
// allocated one by one: a body of at most ArenaMaxBody bytes takes its
// place in the current chunk of bodyChunk bytes, as a slice whose capacity
// ends where the body does (appending to it never writes into a
// neighbour). Consuming small messages thus costs a fraction of an
// allocation each. The price: a small body kept by the application keeps
// its whole chunk (bodyChunk bytes) reachable.
const (
	// ArenaMaxBody is the largest body carved from a shared chunk (see
	// Message.Body).
	ArenaMaxBody = 512
	bodyChunk    = 8 << 10
)

// bodyArena hands out the small bodies (see ArenaMaxBody).
type bodyArena struct{ buf []byte }

// alloc returns an empty slice with capacity n for a body of n bytes.
func (a *bodyArena) alloc(n int) []byte {
	if n > ArenaMaxBody {
		return make([]byte, 0, n)
	}
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, bodyChunk)
	}
	off := len(a.buf)
	a.buf = a.buf[:off+n]
	return a.buf[off : off : off+n]
}

// Conn is the client side of one AMQP 0-9-1 connection as a state machine.
// It performs no I/O: see the package documentation for how a driver moves
// bytes, events and time through it.
//
// A Conn is not safe for concurrent use: one goroutine at a time (or a lock
// held by the driver) must own it.
type Conn struct {
	s      settings
	state  connState
	tune   Tuning
	server wire.Table
	mech   Mechanism
	// authStep is the connection.start or connection.secure whose SASL
	// response the driver computes (Config.DeferAuth); nil otherwise.
	authStep wire.Method

	out    []byte  // bytes waiting for the driver
	queued int     // bytes encoded and waiting on channels behind requests (QueuedLen)
	in     []byte  // an incomplete inbound frame carried between Receive calls
	inMax  uint32  // the largest inbound frame accepted
	events []Event // queue of events for NextEvent
	evHead int

	chans   []*channel // indexed by channel id; chans[0] is the connection's own
	nextID  uint16     // where the search for a free channel id starts
	nextReq RequestID
	err     error // the cause reported with EventClosed

	// time, as supplied by Start and Tick
	now               time.Time
	lastRecv          time.Time
	lastSend          time.Time
	recvActivity      bool
	sendActivity      bool
	handshakeDeadline time.Time
	headerSeen        int // protocol-header bytes seen at the start of the stream
	trace             func(wire.Frame)

	// reused decoding targets for the delivery and confirm paths
	deliver wire.BasicDeliver
	inAck   wire.BasicAck
	inNack  wire.BasicNack
	header  wire.ContentHeader
	bodies  bodyArena // small message bodies (see ArenaMaxBody)
	// reused encoding sources for the publish and ack paths
	publish wire.BasicPublish
	ack     wire.BasicAck
	nack    wire.BasicNack
	reject  wire.BasicReject
}

// New returns an engine for one connection configured by cfg. Call Start to
// begin the handshake.
func New(cfg Config) *Conn {
	c := &Conn{s: newSettings(cfg)}
	c.inMax = c.s.FrameMax
	c.chans = []*channel{{id: 0, state: chOpen}}
	c.nextID = 1
	return c
}

// Start begins the handshake: it queues the protocol header for sending and
// starts the handshake timer at now. Call it once, before anything else.
func (c *Conn) Start(now time.Time) {
	if c.state != stateNew {
		return
	}
	c.state = stateStart
	c.now, c.lastRecv, c.lastSend = now, now, now
	if c.s.HandshakeTimeout > 0 {
		c.handshakeDeadline = now.Add(c.s.HandshakeTimeout)
	}
	c.out = append(c.out, wire.ProtocolHeader...)
}

// SetTrace makes the engine call fn with every inbound frame before it
// handles it (for logging). The frame's payload is valid only during the
// call. fn runs inside Receive and must not call the engine.
func (c *Conn) SetTrace(fn func(f wire.Frame)) { c.trace = fn }

// IsOpen reports whether the handshake has completed and the connection has
// not started closing.
func (c *Conn) IsOpen() bool { return c.state == stateOpen }

// IsClosed reports whether EventClosed has been queued.
func (c *Conn) IsClosed() bool { return c.state == stateClosed }

// Err returns the cause the connection closed with (see EventClosed), or nil.
func (c *Conn) Err() error { return c.err }

// Tuning returns the negotiated channel_max, frame_max and heartbeat. It is
// zero until the server's connection.tune arrives.
func (c *Conn) Tuning() Tuning { return c.tune }

// ServerProperties returns the server-properties table of connection.start
// (product, version, capabilities, ...), or nil before it arrives. The caller
// must not modify it.
func (c *Conn) ServerProperties() wire.Table { return c.server }

// ShareServerProperties makes c keep t as its server-properties table in
// place of its own when the two hold the same entries, and reports whether
// it did. A driver of many connections to one broker passes each new
// connection the table of an earlier one, so that they share one copy (on
// an idle connection, the table is the largest thing the engine keeps)
// instead of holding one each. Neither table may be modified afterwards
// (see ServerProperties).
func (c *Conn) ShareServerProperties(t wire.Table) bool {
	if t == nil || c.server == nil {
		return false
	}
	mine, err1 := wire.AppendTable(nil, c.server)
	other, err2 := wire.AppendTable(make([]byte, 0, len(mine)), t)
	if err1 != nil || err2 != nil || string(mine) != string(other) {
		return false
	}
	c.server = t
	return true
}

// ServerCapability reports whether the server announced capability name
// (e.g. "publisher_confirms") as true in its capabilities table.
func (c *Conn) ServerCapability(name string) bool {
	caps, _ := c.server["capabilities"].(wire.Table)
	v, _ := caps[name].(bool)
	return v
}

// NextEvent returns the next queued event, or false when there is none.
// Drivers call it until it returns false after every call that can queue
// events: Receive, Tick, Fail, Close, CloseChannel and the request calls
// (which can fail synchronously only by returning an error, but a closed
// connection may still hold events).
func (c *Conn) NextEvent() (Event, bool) {
	if c.evHead == len(c.events) {
		return Event{}, false
	}
	e := c.events[c.evHead]
	c.events[c.evHead] = Event{}
	c.evHead++
	if c.evHead == len(c.events) {
		c.events = c.events[:0]
		c.evHead = 0
	}
	return e, true
}

// PendingEvents returns the number of queued events.
func (c *Conn) PendingEvents() int { return len(c.events) - c.evHead }

func (c *Conn) emit(e Event) { c.events = append(c.events, e) }

// OutgoingLen returns the number of bytes waiting to be sent.
func (c *Conn) OutgoingLen() int { return len(c.out) }

// QueuedLen returns the number of bytes encoded and waiting on channels
// behind a synchronous request in flight (publishes, acknowledgements and
// requests queued to keep each channel's order). They move to the outgoing
// buffer as the requests ahead of them are answered, and are dropped when
// their channel or the connection closes. A driver that bounds its write
// buffer counts them with OutgoingLen.
func (c *Conn) QueuedLen() int { return c.queued }

// AppendOutgoing appends the bytes waiting to be sent to dst and forgets
// them. Drivers call it after every call into the engine (any call may queue
// bytes: replies, heartbeats, close-ok) and write the result to the
// transport in order.
func (c *Conn) AppendOutgoing(dst []byte) []byte {
	if len(c.out) == 0 {
		return dst
	}
	dst = append(dst, c.out...)
	c.noteSent(c.out)
	c.out = c.out[:0]
	return dst
}

// SwapOutgoing returns the buffer of bytes waiting to be sent and keeps
// spare[:0] as the new one: the zero-copy form of AppendOutgoing for drivers
// that alternate two buffers. The engine does not touch the returned slice
// again.
func (c *Conn) SwapOutgoing(spare []byte) []byte {
	b := c.out
	c.out = spare[:0]
	c.noteSent(b)
	return b
}

// noteSent records outbound traffic for the heartbeat timer. A buffer that
// is exactly one heartbeat frame is the engine's own heartbeat and does not
// count, so that an idle connection sends one every H/2.
func (c *Conn) noteSent(b []byte) {
	if len(b) > 0 && !(len(b) == 8 && wire.FrameType(b[0]) == wire.FrameHeartbeat) {
		c.sendActivity = true
	}
}

// Receive feeds bytes read from the transport to the engine. It processes
// every complete frame in data (keeping an incomplete tail for the next
// call), queues the resulting events and any bytes to send (replies such as
// flow-ok or close-ok). data is not retained.
//
// Receive returns nil while the connection lives. A protocol violation by
// the server makes the engine queue a connection.close with the matching
// reply code and EventClosed with an *Error; Receive then returns that
// error. After EventClosed it returns the close cause (or ErrClosed) and
// ignores data.
func (c *Conn) Receive(data []byte) error {
	if c.state == stateClosed {
		return c.closedErr()
	}
	if len(data) == 0 {
		return nil
	}
	c.recvActivity = true
	if c.state == stateStart && c.headerSeen >= 0 {
		data = c.checkProtocolHeader(data)
		if c.state == stateClosed {
			return c.err
		}
	}
	buf := data
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		buf = c.in
	}
	off := 0
	for c.state != stateClosed && off < len(buf) {
		f, n, err := wire.ParseFrame(buf[off:], c.inMax)
		if err != nil {
			c.protocolFail(replyCodeFor(err), "malformed frame", err)
			break
		}
		if n == 0 {
			break
		}
		off += n
		if c.trace != nil {
			c.trace(f)
		}
		c.handleFrame(f)
	}
	if c.state == stateClosed {
		c.in = c.in[:0]
		if c.err != nil {
			return c.err
		}
		return nil
	}
	rest := buf[off:]
	if len(c.in) > 0 {
		c.in = c.in[:copy(c.in, rest)]
	} else if len(rest) > 0 {
		c.in = append(c.in[:0], rest...)
	}
	return nil
}

// checkProtocolHeader watches the first bytes of the stream: a server that
// does not accept AMQP 0-9-1 answers the client's header with its own
// protocol header and closes, and a server of another protocol answers
// with anything else (an HTTP error, say). It returns data unchanged when
// the stream starts with a frame (connection.start, normally).
func (c *Conn) checkProtocolHeader(data []byte) []byte {
	if c.headerSeen == 0 && data[0] != 'A' {
		switch wire.FrameType(data[0]) {
		case wire.FrameMethod, wire.FrameHeader, wire.FrameBody, wire.FrameHeartbeat:
			// An AMQP frame, if not the expected connection.start:
			// the frame checks report what is wrong with it.
		default:
			c.closeNow(&NotAMQPError{Answer: append([]byte(nil), data[:min(len(data), maxAnswer+1)]...)})
			return nil
		}
		c.headerSeen = -1 // a frame: no header to watch for any more
		return data
	}
	for len(data) > 0 && c.headerSeen < len(wire.ProtocolHeader) {
		c.in = append(c.in, data[0])
		data = data[1:]
		c.headerSeen++
	}
	if c.headerSeen == len(wire.ProtocolHeader) {
		got := c.in
		c.in = c.in[:0]
		if string(got[:4]) != "AMQP" {
			c.closeNow(&NotAMQPError{Answer: append(append([]byte(nil), got...), data[:min(len(data), maxAnswer+1-len(got))]...)})
			return nil
		}
		detail := "server sent protocol header " + quoteBytes(got)
		c.closeNow(&handshakeError{err: ErrProtocolVersion, detail: detail})
	}
	return data
}

// closedErr is what calls return after the connection closed.
func (c *Conn) closedErr() error {
	if c.err != nil {
		return c.err
	}
	return ErrClosed
}

// handleFrame dispatches one complete inbound frame.
func (c *Conn) handleFrame(f wire.Frame) {
	switch f.Type {
	case wire.FrameHeartbeat:
		if f.Channel != 0 {
			c.protocolFail(wire.ReplyFrameError, "heartbeat frame on channel "+itoa(int(f.Channel)), nil)
		}
		return
	case wire.FrameMethod:
		c.handleMethodFrame(f)
	case wire.FrameHeader, wire.FrameBody:
		if c.state == stateClosing {
			return // discarded after connection.close, like channel methods
		}
		ch := c.channelFor(f.Channel)
		if ch == nil {
			return
		}
		if f.Type == wire.FrameHeader {
			c.handleHeader(ch, f)
		} else {
			c.handleBody(ch, f)
		}
	}
}

// channelFor returns the open channel for an inbound frame, failing the
// connection with CHANNEL_ERROR when there is none.
func (c *Conn) channelFor(id uint16) *channel {
	if int(id) < len(c.chans) && c.chans[id] != nil && c.chans[id].state != chClosed {
		return c.chans[id]
	}
	c.protocolFail(wire.ReplyChannelError, "frame on channel "+itoa(int(id))+" which is not open", nil)
	return nil
}

func (c *Conn) handleMethodFrame(f wire.Frame) {
	id, err := wire.PeekMethodID(f.Payload)
	if err != nil {
		c.protocolFail(replyCodeFor(err), "bad method frame", err)
		return
	}
	if !id.Known() {
		c.protocolFail(wire.ReplyCommandInvalid, "unknown method "+id.String(), nil)
		return
	}
	if id.SentBy()&wire.SentByServer == 0 {
		c.protocolFail(wire.ReplyCommandInvalid, id.String()+" may not be sent by a server", nil)
		return
	}
	if (id.Class() == wire.ClassConnection) != (f.Channel == 0) {
		c.protocolFail(wire.ReplyCommandInvalid, id.String()+" on channel "+itoa(int(f.Channel)), nil)
		return
	}
	if f.Channel == 0 {
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			c.protocolFail(replyCodeFor(err), "bad "+id.String(), err)
			return
		}
		c.handleConnectionMethod(m)
		return
	}
	if c.state != stateOpen && c.state != stateClosing {
		c.protocolFail(wire.ReplyChannelError, id.String()+" on channel "+itoa(int(f.Channel))+" before the connection is open", nil)
		return
	}
	if c.state == stateClosing {
		return // after connection.close only close and close-ok count
	}
	ch := c.channelFor(f.Channel)
	if ch == nil {
		return
	}
	if ch.content != nil && ch.content.active {
		c.protocolFail(wire.ReplyUnexpectedFrame, id.String()+" on channel "+itoa(int(f.Channel))+" while a content header or body was expected", nil)
		return
	}
	var m wire.Method
	switch id {
	// Hot paths: decode into reused values (repeated strings are kept).
	// None of them is retained past handleChannelMethod.
	case wire.MethodBasicDeliver:
		err = c.deliver.Decode(f.Payload[4:])
		m = &c.deliver
	case wire.MethodBasicAck:
		err = c.inAck.Decode(f.Payload[4:])
		m = &c.inAck
	case wire.MethodBasicNack:
		err = c.inNack.Decode(f.Payload[4:])
		m = &c.inNack
	default:
		m, err = wire.DecodeMethod(f.Payload)
	}
	if err != nil {
		c.protocolFail(replyCodeFor(err), "bad "+id.String(), err)
		return
	}
	c.handleChannelMethod(ch, m)
}

// protocolFail closes the connection because the server broke the protocol:
// it queues connection.close with code and text for the server and
// EventClosed with the same *Error for the driver.
func (c *Conn) protocolFail(code wire.ReplyCode, text string, cause error) {
	if c.state == stateClosed {
		return
	}
	if cause != nil {
		text = text + ": " + cause.Error()
	}
	if len(text) > 255 {
		text = text[:255]
	}
	e := protocolError(code, text, cause)
	c.sendMethod(0, &wire.ConnectionClose{ReplyCode: uint16(code), ReplyText: text})
	c.closeNow(e)
}

// Fail tells the engine that the transport failed (read error, EOF, write
// error): the connection is gone without a close handshake. It queues
// EventClosed with err (mapped to a handshake error when the handshake was
// running). Calling Fail after EventClosed does nothing.
func (c *Conn) Fail(err error) {
	if c.state == stateClosed {
		return
	}
	if err == nil {
		err = ErrClosed
	}
	switch c.state {
	case stateClosing:
		// The client was closing anyway; the transport ending is the end.
		c.closeNow(c.err)
		return
	case stateNew, stateStart:
		detail := "before connection.start"
		if c.authStep != nil {
			detail = "while the SASL mechanism computed its initial response"
		}
		err = &handshakeError{err: ErrHandshakeClosed, detail: detail, cause: err}
	case stateSecure:
		err = &handshakeError{err: ErrHandshakeClosed, detail: "after start-ok (possibly refused credentials: a server without authentication_failure_close just closes)", cause: err}
	case stateOpening:
		err = &handshakeError{err: ErrHandshakeClosed, detail: "after connection.open", cause: err}
	}
	c.closeNow(err)
}

// Close starts a graceful close: it queues connection.close with reply code
// 200 and text for the server. EventClosed with a nil Err follows when the
// server answers close-ok (the driver should bound that wait). Requests made
// after Close fail with ErrClosed. Before the handshake completes, Close ends
// the connection at once.
func (c *Conn) Close(text string) {
	switch c.state {
	case stateClosed, stateClosing:
		return
	case stateOpen:
		if len(text) > 255 {
			text = text[:255]
		}
		c.sendMethod(0, &wire.ConnectionClose{ReplyCode: uint16(wire.ReplySuccess), ReplyText: text})
		c.state = stateClosing
		c.failAllRequests(ErrClosed)
	default:
		c.closeNow(nil)
	}
}

// closeNow moves to stateClosed: every pending request fails, every channel
// closes, EventClosed is queued last.
func (c *Conn) closeNow(err error) {
	if c.state == stateClosed {
		return
	}
	c.state = stateClosed
	c.err = err
	reqErr := err
	if reqErr == nil {
		reqErr = ErrClosed
	}
	c.failAllRequests(reqErr)
	for i := 1; i < len(c.chans); i++ {
		if c.chans[i] != nil {
			c.chans[i].state = chClosed
			c.chans[i] = nil
		}
	}
	c.emit(Event{Kind: EventClosed, Err: err})
}

// failAllRequests fails every pending request on every channel with err.
func (c *Conn) failAllRequests(err error) {
	for _, ch := range c.chans {
		if ch != nil {
			c.failRequests(ch, err)
		}
	}
}

// sendMethod appends a method frame to the outgoing buffer. Methods built by
// the engine always encode; an error here is a bug in a caller's table and is
// returned.
func (c *Conn) sendMethod(ch uint16, m wire.Method) error {
	out, err := wire.AppendMethodFrame(c.out, ch, m)
	if err != nil {
		return err
	}
	c.out = out
	return nil
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

func quoteBytes(b []byte) string {
	const hex = "0123456789abcdef"
	s := make([]byte, 0, len(b)*4+2)
	s = append(s, '"')
	for _, x := range b {
		if x >= 0x20 && x < 0x7f && x != '"' && x != '\\' {
			s = append(s, x)
		} else {
			s = append(s, '\\', 'x', hex[x>>4], hex[x&15])
		}
	}
	return string(append(s, '"'))
}
