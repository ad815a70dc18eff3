package conformance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/pika-go/pika/wire"
)

// Raw is a connection to the broker driven frame by frame, for behaviour the
// client would hide: frames it never sends, and closes it answers on its own.
// Every read is bounded by the scenario's deadline. A Raw is not safe for
// concurrent use.
type Raw struct {
	e        *Env
	nc       net.Conn
	fr       *wire.FrameReader
	out      []byte
	FrameMax uint32 // negotiated by Handshake
	// Props are the client properties StartOk sends: by default the
	// capabilities of a modern client (consumer_cancel_notify,
	// connection.blocked, publisher_confirms, basic.nack), without
	// authentication_failure_close.
	Props wire.Table
	Start *wire.ConnectionStart
	Tune  *wire.ConnectionTune
}

// RawFrame is a frame read from the broker, with its method decoded when it
// is a method frame.
type RawFrame struct {
	Type    wire.FrameType
	Channel uint16
	Method  wire.Method // method frames only
	Header  *wire.ContentHeader
	Body    []byte
}

func (f RawFrame) String() string {
	switch {
	case f.Method != nil:
		return fmt.Sprintf("%v on channel %d: %+v", f.Method.ID(), f.Channel, f.Method)
	case f.Header != nil:
		return fmt.Sprintf("content header on channel %d (body %d bytes)", f.Channel, f.Header.BodySize)
	default:
		return fmt.Sprintf("frame type %d on channel %d (%d bytes)", f.Type, f.Channel, len(f.Body))
	}
}

// RawConnect opens a connection to the broker of the URL (over TCP, or
// through the Target's Dial) and sends the AMQP 0-9-1 protocol header;
// nothing more. The connection is closed when the scenario ends.
func (e *Env) RawConnect() *Raw {
	e.T.Helper()
	return e.RawConnectHeader(wire.ProtocolHeader)
}

// RawConnectHeader opens a connection to the broker of the URL and sends
// header in place of the protocol header.
func (e *Env) RawConnectHeader(header string) *Raw {
	e.T.Helper()
	cfg := e.Config()
	dial := e.netDial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(e.Ctx, "tcp", cfg.Addr)
	e.Must(err, "raw dial")
	e.T.Cleanup(func() { nc.Close() })
	if dl, ok := e.Ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	r := &Raw{e: e, nc: nc, fr: wire.NewFrameReader(nc, 1<<20), Props: wire.Table{
		"product": "pika conformance",
		"capabilities": wire.Table{
			"consumer_cancel_notify": true, "connection.blocked": true,
			"publisher_confirms": true, "basic.nack": true,
		},
	}}
	r.Write([]byte(header))
	return r
}

// ReadFull reads exactly len(b) bytes from the socket, bypassing the frame
// reader (for what a broker sends instead of frames).
func (r *Raw) ReadFull(b []byte) {
	r.e.T.Helper()
	if _, err := io.ReadFull(r.nc, b); err != nil {
		r.e.T.Fatalf("raw read: %v", err)
	}
}

// RawDial connects and completes the handshake with PLAIN and the URL's
// credentials, asking for frameMax (0: the broker's proposal) and no
// heartbeats.
func (e *Env) RawDial(frameMax uint32) *Raw {
	e.T.Helper()
	return e.RawDialProps(frameMax, nil)
}

// RawDialProps is RawDial sending props (when not nil) as the client
// properties.
func (e *Env) RawDialProps(frameMax uint32, props wire.Table) *Raw {
	e.T.Helper()
	r := e.RawConnect()
	if props != nil {
		r.Props = props
	}
	cfg := e.Config()
	r.Handshake("PLAIN", "\x00"+cfg.Username+"\x00"+cfg.Password, frameMax, e.Vhost())
	return r
}

// Handshake answers connection.start with mechanism and response, tunes
// with frameMax (0: the broker's proposal) and opens vhost, expecting each
// step to succeed.
func (r *Raw) Handshake(mechanism, response string, frameMax uint32, vhost string) {
	r.e.T.Helper()
	r.StartOk(mechanism, response)
	tune := r.Expect(0, &wire.ConnectionTune{}).(*wire.ConnectionTune)
	r.Tune = tune
	if frameMax == 0 || (tune.FrameMax != 0 && frameMax > tune.FrameMax) {
		frameMax = tune.FrameMax
	}
	r.FrameMax = frameMax
	r.Send(0, &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: frameMax})
	r.Send(0, &wire.ConnectionOpen{VirtualHost: vhost})
	r.Expect(0, &wire.ConnectionOpenOk{})
}

// StartOk reads connection.start and answers it with mechanism and response.
func (r *Raw) StartOk(mechanism, response string) {
	r.e.T.Helper()
	r.Start = r.Expect(0, &wire.ConnectionStart{}).(*wire.ConnectionStart)
	r.Send(0, &wire.ConnectionStartOk{
		ClientProperties: r.Props,
		Mechanism:        mechanism,
		Response:         response,
		Locale:           "en_US",
	})
}

// Write sends b as is.
func (r *Raw) Write(b []byte) {
	r.e.T.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.e.T.Fatalf("raw write: %v", err)
	}
}

// Send sends method m on channel ch.
func (r *Raw) Send(ch uint16, m wire.Method) {
	r.e.T.Helper()
	out, err := wire.AppendMethodFrame(r.out[:0], ch, m)
	r.e.Must(err, "encode frame")
	r.out = out
	r.Write(out)
}

// Frame returns the bytes of the method frame m on channel ch.
func (r *Raw) Frame(ch uint16, m wire.Method) []byte {
	r.e.T.Helper()
	out, err := wire.AppendMethodFrame(nil, ch, m)
	r.e.Must(err, "encode frame")
	return out
}

// OpenChannel opens channel ch.
func (r *Raw) OpenChannel(ch uint16) {
	r.e.T.Helper()
	r.Send(ch, &wire.ChannelOpen{})
	r.Expect(ch, &wire.ChannelOpenOk{})
}

// Read reads the next frame other than a heartbeat.
func (r *Raw) Read() (RawFrame, error) {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return RawFrame{}, err
		}
		out := RawFrame{Type: f.Type, Channel: f.Channel}
		switch f.Type {
		case wire.FrameHeartbeat:
			continue
		case wire.FrameMethod:
			m, err := wire.DecodeMethod(f.Payload)
			if err != nil {
				return out, err
			}
			out.Method = m
		case wire.FrameHeader:
			h := new(wire.ContentHeader)
			if err := h.Decode(f.Payload, 0); err != nil {
				return out, err
			}
			out.Header = h
		default:
			out.Body = append([]byte(nil), f.Payload...)
		}
		return out, nil
	}
}

// Next reads the next frame or ends the scenario.
func (r *Raw) Next() RawFrame {
	r.e.T.Helper()
	f, err := r.Read()
	if err != nil {
		r.e.T.Fatalf("raw read: %v", err)
	}
	return f
}

// Expect reads the next frame and checks that it is a method of want's
// type on channel ch; it returns the method decoded.
func (r *Raw) Expect(ch uint16, want wire.Method) wire.Method {
	r.e.T.Helper()
	f := r.Next()
	if f.Method == nil || f.Method.ID() != want.ID() || f.Channel != ch {
		r.e.T.Fatalf("got %v, want %v on channel %d", f, want.ID(), ch)
	}
	return f.Method
}

// ExpectConnClose reads until connection.close, checks its code (and text,
// see Env.Fail), answers close-ok and checks that the broker then closes
// the socket. It returns the close.
//
// RabbitMQ closes the socket once it has the close-ok of a close it sent;
// after a close-ok it sent itself, it waits for the client to close.
func (r *Raw) ExpectConnClose(code wire.ReplyCode, text string) *wire.ConnectionClose {
	r.e.T.Helper()
	for {
		f, err := r.Read()
		if err != nil {
			r.e.T.Fatalf("raw read: %v; want connection.close %d", err, code)
		}
		if f.Channel != 0 || f.Method == nil {
			continue // frames the broker sent before the error
		}
		cl, ok := f.Method.(*wire.ConnectionClose)
		if !ok {
			continue
		}
		if wire.ReplyCode(cl.ReplyCode) != code || (text != "" && !textMatches(cl.ReplyText, text)) {
			r.e.T.Fatalf("connection.close %d %q, want %d %q", cl.ReplyCode, cl.ReplyText, code, text)
		}
		r.e.T.Logf("connection.close %d %q (method %d/%d)", cl.ReplyCode, cl.ReplyText, cl.ClassID, cl.MethodID)
		r.Send(0, &wire.ConnectionCloseOk{})
		r.ExpectEOF()
		return cl
	}
}

// ExpectChannelClose reads until channel.close on ch, checks its code (and
// text, see Env.Fail) and answers close-ok. It returns the close.
func (r *Raw) ExpectChannelClose(ch uint16, code wire.ReplyCode, text string) *wire.ChannelClose {
	r.e.T.Helper()
	for {
		f := r.Next()
		if f.Channel == 0 {
			if cl, ok := f.Method.(*wire.ConnectionClose); ok {
				r.e.T.Fatalf("connection.close %d %q, want channel.close %d on channel %d", cl.ReplyCode, cl.ReplyText, code, ch)
			}
			continue
		}
		cl, ok := f.Method.(*wire.ChannelClose)
		if !ok || f.Channel != ch {
			continue
		}
		r.e.T.Logf("channel.close %d %q (method %d/%d)", cl.ReplyCode, cl.ReplyText, cl.ClassID, cl.MethodID)
		if wire.ReplyCode(cl.ReplyCode) != code || (text != "" && !textMatches(cl.ReplyText, text)) {
			r.e.T.Fatalf("channel.close %d %q, want %d %q", cl.ReplyCode, cl.ReplyText, code, text)
		}
		r.Send(ch, &wire.ChannelCloseOk{})
		return cl
	}
}

// ExpectEOF checks that the broker closes the socket without sending
// another frame.
func (r *Raw) ExpectEOF() {
	r.e.T.Helper()
	f, err := r.Read()
	if err == nil {
		r.e.T.Fatalf("got %v, want the broker to close the socket", f)
	}
	if !errors.Is(err, io.EOF) && !isReset(err) {
		r.e.T.Fatalf("read: %v, want the broker to close the socket", err)
	}
}

// ExpectSilence checks that the broker sends no frame for a short while:
// closing the socket, or keeping it open, are both accepted.
func (r *Raw) ExpectSilence() {
	r.e.T.Helper()
	r.SetReadTimeout(200 * time.Millisecond)
	f, err := r.Read()
	if err == nil {
		r.e.T.Fatalf("got %v, want nothing more from the broker", f)
	}
}

// ExpectSilenceFor checks that the broker sends no frame at all, heartbeats
// included, for d, and keeps the socket open; the connection stays usable.
func (r *Raw) ExpectSilenceFor(d time.Duration) {
	r.e.T.Helper()
	r.SetReadTimeout(d)
	f, err := r.fr.ReadFrame()
	if err == nil {
		r.e.T.Fatalf("got a frame of type %d within %v, want silence", f.Type, d)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		r.e.T.Fatalf("read: %v, want silence on an open socket", err)
	}
	if dl, ok := r.e.Ctx.Deadline(); ok {
		r.nc.SetReadDeadline(dl)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// Sync sends a basic.qos on ch and waits for its qos-ok, to know that the
// broker processed every frame sent before on ch.
func (r *Raw) Sync(ch uint16) {
	r.e.T.Helper()
	r.Send(ch, &wire.BasicQos{PrefetchCount: 0})
	r.Expect(ch, &wire.BasicQosOk{})
}

// WaitDepth polls queue q with passive declares on ch until it holds n ready
// messages. RabbitMQ routes a publish to a queue asynchronously from the
// channel's other methods, so a publish without confirms is only known to
// have arrived when the queue counts it.
func (r *Raw) WaitDepth(ch uint16, q string, n uint32) {
	r.e.T.Helper()
	r.e.Eventually(fmt.Sprintf("%d messages in %s", n, q), func() bool {
		r.Send(ch, &wire.QueueDeclare{Queue: q, Passive: true})
		return r.Expect(ch, &wire.QueueDeclareOk{}).(*wire.QueueDeclareOk).MessageCount == n
	})
}

// Close closes the socket.
func (r *Raw) Close() { r.nc.Close() }

// SetReadTimeout bounds the next reads to d from now.
func (r *Raw) SetReadTimeout(d time.Duration) { r.nc.SetReadDeadline(time.Now().Add(d)) }

// frameBytes builds a frame by hand: type, channel, payload and the given
// frame-end octet (0xCE is the valid one).
func frameBytes(typ wire.FrameType, ch uint16, payload []byte, end byte) []byte {
	b := []byte{byte(typ), byte(ch >> 8), byte(ch)}
	n := len(payload)
	b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	b = append(b, payload...)
	return append(b, end)
}

// Publish sends basic.publish with its content header and body frames,
// split under the negotiated frame_max.
func (r *Raw) Publish(ch uint16, pub *wire.BasicPublish, p *wire.Properties, body []byte) {
	r.e.T.Helper()
	out, err := wire.AppendMessage(nil, ch, pub, p, body, r.FrameMax)
	r.e.Must(err, "encode message")
	r.Write(out)
}

// Header returns the bytes of a content header frame announcing size bytes.
func (r *Raw) Header(ch uint16, size uint64) []byte {
	r.e.T.Helper()
	out, err := wire.AppendHeaderFrame(nil, ch, size, nil)
	r.e.Must(err, "encode content header")
	return out
}

// Declare declares queue q (non-exclusive, auto-delete off) on ch and
// tracks it for deletion.
func (r *Raw) Declare(ch uint16, q string, args wire.Table) {
	r.e.T.Helper()
	r.e.TrackQueue(q)
	r.Send(ch, &wire.QueueDeclare{Queue: q, Arguments: args})
	r.Expect(ch, &wire.QueueDeclareOk{})
}

// Deliver reads the next delivery (basic.deliver or basic.get-ok with its
// content) on ch and returns the method and the body.
func (r *Raw) Deliver(ch uint16) (wire.Method, *wire.ContentHeader, []byte) {
	r.e.T.Helper()
	f := r.Next()
	switch f.Method.(type) {
	case *wire.BasicDeliver, *wire.BasicGetOk, *wire.BasicReturn:
	default:
		r.e.T.Fatalf("got %v, want a delivery on channel %d", f, ch)
	}
	h := r.Next()
	if h.Header == nil || h.Channel != ch {
		r.e.T.Fatalf("got %v, want a content header on channel %d", h, ch)
	}
	var body []byte
	for uint64(len(body)) < h.Header.BodySize {
		b := r.Next()
		if b.Type != wire.FrameBody || b.Channel != ch {
			r.e.T.Fatalf("got %v, want a body frame on channel %d", b, ch)
		}
		body = append(body, b.Body...)
	}
	return f.Method, h.Header, body
}
