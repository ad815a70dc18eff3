package faultproxy

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/pika-go/pika/wire"
)

// maxRecordedFrame is the largest frame the recorder parses (header and
// frame-end included); a larger declared size ends that stream's recording
// with an error. It is far above any frame_max a test negotiates.
const maxRecordedFrame = 16 << 20

// Direction says which way a recorded frame went.
type Direction uint8

// The two directions of a proxied connection.
const (
	ClientToServer Direction = iota + 1 // from the client to the target
	ServerToClient                      // from the target to the client
)

// String returns "client->server" or "server->client".
func (d Direction) String() string {
	switch d {
	case ClientToServer:
		return "client->server"
	case ServerToClient:
		return "server->client"
	}
	return "Direction(" + strconv.Itoa(int(d)) + ")"
}

// Recorded is one frame the proxy forwarded, or the end of a direction's
// recording when its byte stream stopped parsing as AMQP frames.
type Recorded struct {
	// Conn is the connection's number: 1 for the first connection the
	// proxy accepted, 2 for the second, ...
	Conn int
	// Dir is the direction the frame went.
	Dir Direction
	// Time is when the proxy read the frame's last byte.
	Time time.Time
	// Frame is the parsed frame. Its Payload is a copy owned by the
	// Recorded.
	Frame wire.Frame
	// Err, when not nil, says why the stream in Dir could not be parsed
	// further (Frame is then the zero value); nothing more is recorded in
	// that direction of that connection.
	Err error
}

// Method decodes the frame's method. It fails for frames that are not
// method frames.
func (r Recorded) Method() (wire.Method, error) {
	if r.Err != nil {
		return nil, r.Err
	}
	if r.Frame.Type != wire.FrameMethod {
		return nil, fmt.Errorf("faultproxy: %s frame is not a method frame", r.Frame.Type)
	}
	return wire.DecodeMethod(r.Frame.Payload)
}

// IsMethod reports whether r is a method frame carrying the method id.
func (r Recorded) IsMethod(id wire.MethodID) bool {
	if r.Err != nil || r.Frame.Type != wire.FrameMethod {
		return false
	}
	got, err := wire.PeekMethodID(r.Frame.Payload)
	return err == nil && got == id
}

// String describes r in one line, e.g.
// "conn 1 client->server channel 0 method connection.tune-ok".
func (r Recorded) String() string {
	head := "conn " + strconv.Itoa(r.Conn) + " " + r.Dir.String()
	if r.Err != nil {
		return head + " error: " + r.Err.Error()
	}
	s := head + " channel " + strconv.Itoa(int(r.Frame.Channel)) + " " + r.Frame.Type.String()
	switch r.Frame.Type {
	case wire.FrameMethod:
		if id, err := wire.PeekMethodID(r.Frame.Payload); err == nil {
			return s + " " + id.Name()
		}
	case wire.FrameBody:
		return s + " " + strconv.Itoa(len(r.Frame.Payload)) + " bytes"
	}
	return s
}

// recording holds the recorded frames of a proxy.
type recording struct {
	mu      sync.Mutex
	off     bool
	frames  []Recorded
	resets  int           // how many times ResetFrames ran
	changed chan struct{} // closed and replaced when a frame is recorded
}

func (rec *recording) init() { rec.changed = make(chan struct{}) }

// stream is the parse state of one direction of one connection. Only its
// pump goroutine uses it.
type stream struct {
	conn   int
	dir    Direction
	buf    []byte
	off    int  // parsed up to here
	header bool // a client's protocol header may still come
	failed bool
}

func (rec *recording) stream(conn int, dir Direction) *stream {
	return &stream{conn: conn, dir: dir, header: dir == ClientToServer}
}

// add parses data, the next bytes of st, and records the frames it
// completes.
func (rec *recording) add(st *stream, data []byte, now time.Time) {
	if st.failed || len(data) == 0 {
		return
	}
	rec.mu.Lock()
	off := rec.off
	rec.mu.Unlock()
	st.buf = append(st.buf, data...)
	var got []Recorded
	for {
		b := st.buf[st.off:]
		if st.header {
			if len(b) < len(wire.ProtocolHeader) && string(b) == wire.ProtocolHeader[:len(b)] {
				break // may still become the protocol header
			}
			st.header = false
			if len(b) >= len(wire.ProtocolHeader) && string(b[:4]) == "AMQP" {
				st.off += len(wire.ProtocolHeader)
				continue
			}
		}
		f, n, err := wire.ParseFrame(b, maxRecordedFrame)
		if err != nil {
			st.failed = true
			st.buf = nil
			got = append(got, Recorded{Conn: st.conn, Dir: st.dir, Time: now, Err: err})
			break
		}
		if n == 0 {
			break
		}
		st.off += n
		if !off {
			f.Payload = append([]byte(nil), f.Payload...)
			got = append(got, Recorded{Conn: st.conn, Dir: st.dir, Time: now, Frame: f})
		}
	}
	if !st.failed && st.off > 0 && st.off >= len(st.buf)/2 {
		n := copy(st.buf, st.buf[st.off:])
		st.buf = st.buf[:n]
		st.off = 0
	}
	if len(got) == 0 {
		return
	}
	rec.mu.Lock()
	rec.frames = append(rec.frames, got...)
	close(rec.changed)
	rec.changed = make(chan struct{})
	rec.mu.Unlock()
}

// Frames returns the frames recorded so far, in the order the proxy read
// them (each direction of each connection in stream order).
func (p *Proxy) Frames() []Recorded {
	p.rec.mu.Lock()
	defer p.rec.mu.Unlock()
	return append([]Recorded(nil), p.rec.frames...)
}

// ResetFrames forgets the frames recorded so far.
func (p *Proxy) ResetFrames() {
	p.rec.mu.Lock()
	defer p.rec.mu.Unlock()
	clear(p.rec.frames)
	p.rec.frames = p.rec.frames[:0]
	p.rec.resets++
}

// Record turns frame recording on (the default) or off. Streams are still
// parsed while it is off, so recording can resume at the next frame
// boundary; turn it off in tests that move much data and look at no
// frames.
func (p *Proxy) Record(on bool) {
	p.rec.mu.Lock()
	defer p.rec.mu.Unlock()
	p.rec.off = !on
}

// ErrNoFrame is what WaitFrame returns when no matching frame was recorded
// in time.
var ErrNoFrame = errors.New("faultproxy: no matching frame recorded in time")

// WaitFrame waits up to timeout for a recorded frame for which match
// returns true (frames recorded before the call count too) and returns the
// first one, or ErrNoFrame.
func (p *Proxy) WaitFrame(timeout time.Duration, match func(Recorded) bool) (Recorded, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	seen, resets := 0, -1
	for {
		p.rec.mu.Lock()
		if resets != p.rec.resets {
			seen, resets = 0, p.rec.resets
		}
		fresh := append([]Recorded(nil), p.rec.frames[seen:]...)
		seen = len(p.rec.frames)
		changed := p.rec.changed
		p.rec.mu.Unlock()
		for _, r := range fresh {
			if match(r) {
				return r, nil
			}
		}
		select {
		case <-changed:
		case <-timer.C:
			return Recorded{}, ErrNoFrame
		}
	}
}
