// Package scripted lets a test play the broker's side of an AMQP 0-9-1
// conversation with exact frames. The functions Method, Message, Header,
// Body, Heartbeat and RawFrame build the bytes a server sends; a Client
// takes the bytes a client wrote and hands them back as decoded frames,
// with assertions that compare them to what the script expects.
//
// The package does no I/O: a test writes the client's output into a Client
// (it is an io.Writer) from wherever that output comes from, an engine's
// AppendOutgoing or a net.Conn.
//
// The builders panic when a value cannot be encoded: scripts are written by
// tests, so such a value is a bug in the test, not input to handle.
package scripted

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/pika-go/pika/wire"
)

// Method returns a method frame carrying m on channel ch.
func Method(ch uint16, m wire.Method) []byte {
	b, err := wire.AppendMethodFrame(nil, ch, m)
	if err != nil {
		panic("scripted: cannot encode " + m.ID().String() + ": " + err.Error())
	}
	return b
}

// Message returns a content-bearing method m (basic.deliver, basic.return,
// basic.get-ok, basic.publish) on channel ch followed by its content header
// with properties p (nil means none) and body split into body frames of at
// most frameMax bytes (0 means wire.DefaultMaxFrameSize).
func Message(ch uint16, m wire.Method, p *wire.Properties, body []byte, frameMax uint32) []byte {
	b, err := wire.AppendMessage(nil, ch, m, p, body, frameMax)
	if err != nil {
		panic("scripted: cannot encode " + m.ID().String() + " with content: " + err.Error())
	}
	return b
}

// Header returns a content header frame on channel ch announcing a body of
// size bytes, with properties p (nil means none).
func Header(ch uint16, size uint64, p *wire.Properties) []byte {
	b, err := wire.AppendHeaderFrame(nil, ch, size, p)
	if err != nil {
		panic("scripted: cannot encode content header: " + err.Error())
	}
	return b
}

// Body returns one body frame on channel ch with payload b, however large.
func Body(ch uint16, b []byte) []byte {
	return RawFrame(wire.FrameBody, ch, b)
}

// Heartbeat returns a heartbeat frame (channel 0, no payload).
func Heartbeat() []byte { return wire.AppendHeartbeatFrame(nil) }

// RawFrame returns a frame of any type octet on channel ch with payload,
// sized correctly and ended with the frame-end octet. It is the tool for
// frames a correct peer would never send.
func RawFrame(typ wire.FrameType, ch uint16, payload []byte) []byte {
	b := make([]byte, 0, 8+len(payload))
	b = append(b, byte(typ))
	b = binary.BigEndian.AppendUint16(b, ch)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return append(b, wire.FrameEnd)
}

// MethodPayload returns the payload of a method frame for m: class and
// method ids, then the arguments. Tests truncate or extend it to build
// malformed methods.
func MethodPayload(m wire.Method) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(m.ID()))
	b, err := m.AppendTo(b)
	if err != nil {
		panic("scripted: cannot encode " + m.ID().String() + ": " + err.Error())
	}
	return b
}

// Concat returns the parts joined into one new slice.
func Concat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// Sent is one frame a client sent, decoded.
type Sent struct {
	Type    wire.FrameType
	Channel uint16
	// Method is the decoded method of a method frame, nil otherwise.
	Method wire.Method
	// Header is the decoded content header of a header frame, nil
	// otherwise.
	Header *wire.ContentHeader
	// Payload is the frame's payload (a copy).
	Payload []byte
	// Raw is the whole frame as sent (a copy), header and frame-end
	// included.
	Raw []byte
}

func (s Sent) String() string {
	switch {
	case s.Method != nil:
		return fmt.Sprintf("method %s on channel %d: %+v", s.Method.ID(), s.Channel, s.Method)
	case s.Header != nil:
		return fmt.Sprintf("content header on channel %d: size %d, %+v", s.Channel, s.Header.BodySize, s.Header.Properties)
	}
	return fmt.Sprintf("%s frame on channel %d, %d payload bytes", s.Type, s.Channel, len(s.Payload))
}

// Client collects the bytes a client wrote and hands them back frame by
// frame. Every assertion method fails the test (with tb.Fatalf) when the
// next frame is missing, malformed or not the one expected.
//
// A Client is not safe for concurrent use.
type Client struct {
	tb       testing.TB
	buf      []byte
	maxFrame uint32
}

// NewClient returns a Client that reports failures to tb and accepts
// frames of up to wire.DefaultMaxFrameSize bytes.
func NewClient(tb testing.TB) *Client {
	return &Client{tb: tb, maxFrame: wire.DefaultMaxFrameSize}
}

// SetMaxFrameSize changes the largest frame the client may send, as after
// connection.tune; 0 means wire.DefaultMaxFrameSize.
func (c *Client) SetMaxFrameSize(n uint32) { c.maxFrame = n }

// Write appends p to the bytes waiting to be read back. It never fails.
func (c *Client) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// Pending returns the bytes written and not yet read back. The slice is
// valid until the next call on c.
func (c *Client) Pending() []byte { return c.buf }

// ExpectProtocolHeader reads the AMQP 0-9-1 protocol header.
func (c *Client) ExpectProtocolHeader() {
	c.tb.Helper()
	c.ExpectBytes([]byte(wire.ProtocolHeader))
}

// ExpectBytes reads len(want) bytes and checks that they are want.
func (c *Client) ExpectBytes(want []byte) {
	c.tb.Helper()
	if len(c.buf) < len(want) {
		c.tb.Fatalf("scripted: want %d bytes %q, client sent only %d: %q", len(want), want, len(c.buf), c.buf)
	}
	if got := c.buf[:len(want)]; !bytes.Equal(got, want) {
		c.tb.Fatalf("scripted: client sent\n\t% x\nwant\n\t% x", got, want)
	}
	c.buf = c.buf[len(want):]
}

// ExpectEmpty checks that the client sent nothing more.
func (c *Client) ExpectEmpty() {
	c.tb.Helper()
	if len(c.buf) == 0 {
		return
	}
	if f, ok := c.TryNext(); ok {
		c.tb.Fatalf("scripted: client sent more than expected: %v (%d bytes in all)", f, len(c.buf))
	}
	c.tb.Fatalf("scripted: client sent %d unexpected bytes: % x", len(c.buf), c.buf)
}

// TryNext reads the next frame, or returns false when no complete frame
// is waiting. A malformed frame fails the test.
func (c *Client) TryNext() (Sent, bool) {
	c.tb.Helper()
	f, n, err := wire.ParseFrame(c.buf, c.maxFrame)
	if err != nil {
		c.tb.Fatalf("scripted: client sent a malformed frame: %v", err)
	}
	if n == 0 {
		return Sent{}, false
	}
	s := Sent{
		Type:    f.Type,
		Channel: f.Channel,
		Payload: bytes.Clone(f.Payload),
		Raw:     bytes.Clone(c.buf[:n]),
	}
	c.buf = c.buf[n:]
	switch f.Type {
	case wire.FrameMethod:
		m, err := wire.DecodeMethod(s.Payload)
		if err != nil {
			c.tb.Fatalf("scripted: client sent a bad method frame on channel %d: %v", f.Channel, err)
		}
		s.Method = m
	case wire.FrameHeader:
		var h wire.ContentHeader
		if err := h.Decode(s.Payload, 0); err != nil {
			c.tb.Fatalf("scripted: client sent a bad content header on channel %d: %v", f.Channel, err)
		}
		s.Header = &h
	}
	return s, true
}

// Next reads the next frame; there must be one.
func (c *Client) Next() Sent {
	c.tb.Helper()
	s, ok := c.TryNext()
	if !ok {
		c.tb.Fatalf("scripted: want a frame, client sent none (%d bytes pending)", len(c.buf))
	}
	return s
}

// NextMethod reads the next frame, which must be a method frame on channel
// ch, and returns its method.
func (c *Client) NextMethod(ch uint16) wire.Method {
	c.tb.Helper()
	s := c.Next()
	if s.Method == nil || s.Channel != ch {
		c.tb.Fatalf("scripted: want a method on channel %d, client sent %v", ch, s)
	}
	return s.Method
}

// ExpectMethod reads the next frame and checks that it is want on channel
// ch, compared by encoding: the frame must be byte for byte what encoding
// want gives. It returns the decoded method.
func (c *Client) ExpectMethod(ch uint16, want wire.Method) wire.Method {
	c.tb.Helper()
	s := c.Next()
	wantRaw := Method(ch, want)
	if !bytes.Equal(s.Raw, wantRaw) {
		c.tb.Fatalf("scripted: client sent\n\t%v\nwant\n\tmethod %s on channel %d: %+v", s, want.ID(), ch, want)
	}
	return s.Method
}

// ExpectHeartbeat reads the next frame and checks that it is a heartbeat.
func (c *Client) ExpectHeartbeat() {
	c.tb.Helper()
	s := c.Next()
	if !bytes.Equal(s.Raw, Heartbeat()) {
		c.tb.Fatalf("scripted: want a heartbeat, client sent %v", s)
	}
}

// ExpectMessage reads a content-bearing method m on channel ch with its
// content header and body frames, checking each against what Message(ch,
// m, p, body, frameMax) gives, frame by frame.
func (c *Client) ExpectMessage(ch uint16, m wire.Method, p *wire.Properties, body []byte, frameMax uint32) {
	c.tb.Helper()
	want := Message(ch, m, p, body, frameMax)
	for len(want) > 0 {
		wf, n, err := wire.ParseFrame(want, 0xFFFFFFFF)
		if err != nil || n == 0 {
			c.tb.Fatalf("scripted: cannot parse own message frames: %v", err)
		}
		s := c.Next()
		if !bytes.Equal(s.Raw, want[:n]) {
			c.tb.Fatalf("scripted: client sent\n\t%v\nwant the message's %s frame\n\t% x", s, wf.Type, want[:n])
		}
		want = want[n:]
	}
}
