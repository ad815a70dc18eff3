package pikatest

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// rawConn is a client speaking raw frames to a broker through Dial.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	fr *wire.FrameReader
}

func rawDial(t testing.TB, b *Broker) *rawConn {
	t.Helper()
	nc, err := b.Dial(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	return &rawConn{t: t, nc: nc, fr: wire.NewFrameReader(nc, 0)}
}

func (r *rawConn) send(ch uint16, m wire.Method) {
	r.t.Helper()
	b, err := wire.AppendMethodFrame(nil, ch, m)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) next() wire.Method {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("read: %v", err)
		}
		if f.Type != wire.FrameMethod {
			continue
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			r.t.Fatal(err)
		}
		return m
	}
}

// open runs the handshake and opens channel 1.
func (r *rawConn) open() {
	r.t.Helper()
	r.nc.Write([]byte(wire.ProtocolHeader))
	r.next() // start
	r.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	r.next() // tune
	r.send(0, &wire.ConnectionTuneOk{ChannelMax: 10, FrameMax: 131072})
	r.send(0, &wire.ConnectionOpen{VirtualHost: "/"})
	if _, ok := r.next().(*wire.ConnectionOpenOk); !ok {
		r.t.Fatal("no open-ok")
	}
	r.send(1, &wire.ChannelOpen{})
	if _, ok := r.next().(*wire.ChannelOpenOk); !ok {
		r.t.Fatal("no channel.open-ok")
	}
}

// closeCode reads until connection.close and returns its code, or 0 at
// the end of the stream.
func (r *rawConn) closeCode() uint16 {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return 0
		}
		if f.Type != wire.FrameMethod || f.Channel != 0 {
			continue
		}
		if m, err := wire.DecodeMethod(f.Payload); err == nil {
			if cl, ok := m.(*wire.ConnectionClose); ok {
				return cl.ReplyCode
			}
		}
	}
}

func frame(typ wire.FrameType, ch uint16, payload []byte, end byte) []byte {
	b := []byte{byte(typ), byte(ch >> 8), byte(ch)}
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return append(b, end)
}

func TestHostileFrames(t *testing.T) {
	publish, _ := wire.AppendMethodFrame(nil, 1, &wire.BasicPublish{RoutingKey: "q"})
	cases := []struct {
		name  string
		input []byte
		code  uint16 // 0: the socket just closes
	}{
		{"bad frame end", frame(wire.FrameMethod, 1, []byte{0, 60, 0, 10, 0, 0, 0, 0, 0, 0, 0}, 0), 501},
		{"unknown frame type", frame(9, 0, []byte{1, 2, 3}, 0xCE), 501},
		{"oversized frame", frame(wire.FrameBody, 1, make([]byte, 200000), 0xCE), 501},
		{"truncated method", frame(wire.FrameMethod, 1, []byte{0, 50, 0, 10, 0}, 0xCE), 501},
		{"unknown method", frame(wire.FrameMethod, 1, []byte{0, 50, 0, 99}, 0xCE), 0},
		{"short method", frame(wire.FrameMethod, 1, []byte{0, 50}, 0xCE), 0},
		{"body without publish", frame(wire.FrameBody, 1, []byte("x"), 0xCE), 505},
		{"heartbeat on a channel", frame(wire.FrameHeartbeat, 1, nil, 0xCE), 505},
		{"header with a bad class", append(publish, frame(wire.FrameHeader, 1, []byte{0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, 0xCE)...), 501},
		{"header with unknown flags", append(publish, frame(wire.FrameHeader, 1, []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}, 0xCE)...), 501},
		{"method on an unopened channel", frame(wire.FrameMethod, 7, []byte{0, 60, 0, 10, 0, 0, 0, 0, 0, 0, 0}, 0xCE), 504},
		{"protocol header mid-stream", []byte(wire.ProtocolHeader), 501},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newTestBroker(t)
			r := rawDial(t, b)
			r.open()
			go r.nc.Write(c.input)
			if got := r.closeCode(); got != c.code {
				t.Fatalf("close code %d, want %d", got, c.code)
			}
			checkAlive(t, b)
		})
	}
}

func newTestBroker(t testing.TB) *Broker {
	var cfg Config
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// checkAlive makes sure the broker still serves new connections.
func checkAlive(t testing.TB, b *Broker) {
	t.Helper()
	r := rawDial(t, b)
	r.open()
	r.send(1, &wire.QueueDeclare{Queue: "alive"})
	if _, ok := r.next().(*wire.QueueDeclareOk); !ok {
		t.Fatal("broker no longer answers")
	}
}

func TestBadProtocolHeader(t *testing.T) {
	b := newTestBroker(t)
	for _, hdr := range []string{"AMQP\x00\x00\x08\x00", "GET / HTTP/1.1\r\n"} {
		r := rawDial(t, b)
		r.nc.Write([]byte(hdr)) // buffered: the broker reads only 8 bytes
		got, _ := io.ReadAll(r.nc)
		if string(got) != wire.ProtocolHeader {
			t.Fatalf("answer to %q: %q, want the broker's protocol header", hdr, got)
		}
	}
}

func FuzzBrokerInput(f *testing.F) {
	pub, _ := wire.AppendMessage(nil, 1, &wire.BasicPublish{RoutingKey: "q"}, &wire.Properties{Headers: wire.Table{"a": int32(1)}}, []byte("body"), 0)
	decl, _ := wire.AppendMethodFrame(nil, 1, &wire.QueueDeclare{Queue: "q", Arguments: wire.Table{"x-max-length": int32(1)}})
	f.Add(append(decl, pub...))
	f.Add(frame(wire.FrameMethod, 1, []byte{0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1, 1}, 0xCE))
	f.Add([]byte{1, 0, 1, 0, 0, 0, 4})
	b := newTestBroker(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := rawDial(t, b)
		r.open()
		go func() {
			r.nc.Write(data)
			r.nc.Write(frame(wire.FrameMethod, 0, []byte{0, 10, 0, 50, 0, 200, 0, 0, 0, 0, 0}, 0xCE))
		}()
		// Whatever the broker answers, it must not panic or stop serving
		// others; a stream cut in the middle of a frame just ends.
		r.nc.SetDeadline(time.Now().Add(50 * time.Millisecond))
		io.Copy(io.Discard, r.nc)
		r.nc.Close()
		checkAlive(t, b)
	})
}

func TestPublishBodyAcrossFrames(t *testing.T) {
	b := newTestBroker(t)
	r := rawDial(t, b)
	r.open()
	r.send(1, &wire.QueueDeclare{Queue: "big"})
	r.next()
	body := bytes.Repeat([]byte("0123456789"), 50000)
	msg, err := wire.AppendMessage(nil, 1, &wire.BasicPublish{RoutingKey: "big"}, nil, body, 4096)
	if err != nil {
		t.Fatal(err)
	}
	go r.nc.Write(msg)
	info, err := b.WaitQueue(context.Background(), "big", func(q QueueInfo) bool { return q.Messages == 1 })
	if err != nil || info.Bytes != int64(len(body)) {
		t.Fatalf("queue %+v %v", info, err)
	}
	if got := b.Messages("big")[0].Body; !bytes.Equal(got, body) {
		t.Fatal("body changed on the way")
	}
}

func TestPanicClosesOnlyThatConnection(t *testing.T) {
	b := newTestBroker(t)
	frameHook = func(f wire.Frame) {
		if f.Type == wire.FrameMethod && f.Channel == 5 {
			panic("injected")
		}
	}
	t.Cleanup(func() { frameHook = nil })
	r := rawDial(t, b)
	r.open()
	r.send(5, &wire.ChannelOpen{})
	if got := r.closeCode(); got != uint16(wire.ReplyInternalError) {
		t.Fatalf("close code %d, want 541", got)
	}
	checkAlive(t, b)
}

// TestClientThatDoesNotReadIsHeldBack: a client that publishes mandatory
// messages that all come back, and never reads, must not make the broker
// buffer the returns without bound: past readPauseWater of unwritten
// output the connection stops reading the client's frames.
func TestClientThatDoesNotReadIsHeldBack(t *testing.T) {
	b := newTestBroker(t)
	r := rawDial(t, b)
	r.open()
	body := bytes.Repeat([]byte("x"), 64<<10)
	var msgs []byte
	for range 4 * readPauseWater / len(body) {
		var err error
		msgs, err = wire.AppendMessage(msgs, 1, &wire.BasicPublish{RoutingKey: "nowhere", Mandatory: true}, nil, body, 131072)
		if err != nil {
			t.Fatal(err)
		}
	}
	go r.nc.Write(msgs) // blocks once the broker stops reading; the deadline ends it
	// The broker's side of the connection: the only one.
	var c *conn
	for deadline := time.Now().Add(5 * time.Second); c == nil; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		for bc := range b.conns {
			c = bc
		}
		b.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no connection on the broker")
		}
	}
	// Wait until the output stops growing, then look at it.
	var last int
	for stable, deadline := 0, time.Now().Add(4*time.Second); stable < 20 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c.wmu.Lock()
		n := len(c.out)
		c.wmu.Unlock()
		if n == last {
			stable++
		} else {
			stable, last = 0, n
		}
	}
	if max := readPauseWater + 2*len(body); last > max {
		t.Fatalf("%d bytes of returns queued for a client that does not read; want at most %d", last, max)
	}
	if last == 0 {
		t.Fatal("no return queued at all: the publishes did not reach the broker")
	}
}
