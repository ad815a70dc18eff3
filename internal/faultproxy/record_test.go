package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// conversation is a client's bytes: the protocol header and frames of
// every type, one body split over two frames.
func conversation(t *testing.T) (stream []byte, want []wire.Frame) {
	t.Helper()
	b := []byte(wire.ProtocolHeader)
	var err error
	b, err = wire.AppendMethodFrame(b, 0, &wire.ConnectionTuneOk{ChannelMax: 2047, FrameMax: 4096, Heartbeat: 2})
	if err != nil {
		t.Fatal(err)
	}
	b = wire.AppendHeartbeatFrame(b)
	b, err = wire.AppendMessage(b, 1, &wire.BasicPublish{RoutingKey: "q"}, &wire.Properties{}, bytes.Repeat([]byte("b"), 5000), 4096)
	if err != nil {
		t.Fatal(err)
	}
	rest := b[len(wire.ProtocolHeader):]
	for len(rest) > 0 {
		f, n, err := wire.ParseFrame(rest, 0)
		if err != nil || n == 0 {
			t.Fatalf("building the conversation: %v", err)
		}
		want = append(want, wire.Frame{Type: f.Type, Channel: f.Channel, Payload: append([]byte(nil), f.Payload...)})
		rest = rest[n:]
	}
	return b, want
}

func sameFrames(got []Recorded, want []wire.Frame) bool {
	if len(got) != len(want) {
		return false
	}
	for i, r := range got {
		if r.Err != nil || r.Frame.Type != want[i].Type || r.Frame.Channel != want[i].Channel || !bytes.Equal(r.Frame.Payload, want[i].Payload) {
			return false
		}
	}
	return true
}

// TestRecorderSplitAnywhere feeds a stream in two and three pieces split at
// every pair of points: the frames recorded never depend on how the bytes
// arrived.
func TestRecorderSplitAnywhere(t *testing.T) {
	stream, want := conversation(t)
	if len(want) != 6 {
		t.Fatalf("conversation has %d frames, want 6 (tune-ok, heartbeat, publish, header, 2 bodies)", len(want))
	}
	now := time.Now()
	for i := 0; i <= len(stream); i += 11 {
		for j := i; j <= len(stream); j += 211 {
			var rec recording
			rec.init()
			st := rec.stream(1, ClientToServer)
			rec.add(st, stream[:i], now)
			rec.add(st, stream[i:j], now)
			rec.add(st, stream[j:], now)
			if !sameFrames(rec.frames, want) {
				t.Fatalf("split at %d and %d: recorded %v", i, j, rec.frames)
			}
		}
	}
}

func TestRecorderErrors(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		dir  Direction
		data []byte
		want error
	}{
		{"unknown frame type", ClientToServer, []byte{9, 0, 0, 0, 0, 0, 0, wire.FrameEnd}, wire.ErrUnknownFrameType},
		{"bad frame end", ServerToClient, []byte{8, 0, 0, 0, 0, 0, 0, 0}, wire.ErrBadFrameEnd},
		{"huge frame", ServerToClient, []byte{3, 0, 1, 0xff, 0xff, 0xff, 0xff}, wire.ErrFrameTooLarge},
		{"protocol header from the server", ServerToClient, []byte("AMQP\x00\x00\x09\x00"), wire.ErrBadProtocolHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rec recording
			rec.init()
			st := rec.stream(3, tc.dir)
			rec.add(st, append([]byte{}, wire.AppendHeartbeatFrame(nil)...), now)
			rec.add(st, tc.data, now)
			rec.add(st, wire.AppendHeartbeatFrame(nil), now) // ignored after the error
			if len(rec.frames) != 2 || rec.frames[0].Frame.Type != wire.FrameHeartbeat {
				t.Fatalf("recorded %v; want a heartbeat, then the error", rec.frames)
			}
			r := rec.frames[1]
			if !errors.Is(r.Err, tc.want) || r.Conn != 3 || r.Dir != tc.dir {
				t.Fatalf("recorded %v; want an error wrapping %v", r, tc.want)
			}
			if _, err := r.Method(); !errors.Is(err, tc.want) {
				t.Fatalf("Method of an error record: %v", err)
			}
			if !strings.Contains(r.String(), "error") {
				t.Fatalf("String %q", r.String())
			}
		})
	}
}

func TestRecordOffKeepsAlignment(t *testing.T) {
	stream, want := conversation(t)
	now := time.Now()
	p := &Proxy{}
	p.rec.init()
	st := p.rec.stream(1, ClientToServer)
	hb := wire.AppendHeartbeatFrame(nil)
	p.Record(false)
	p.rec.add(st, stream[:len(stream)-3], now) // the last frame is incomplete
	p.Record(true)
	p.rec.add(st, stream[len(stream)-3:], now)
	p.rec.add(st, hb, now)
	got := p.Frames()
	if len(got) != 2 || !sameFrames(got[:1], want[len(want)-1:]) || got[1].Frame.Type != wire.FrameHeartbeat {
		t.Fatalf("recorded %v; want the frame completed after Record(true), then a heartbeat", got)
	}
	p.ResetFrames()
	if len(p.Frames()) != 0 {
		t.Fatal("ResetFrames kept frames")
	}
}

// TestRecordThroughProxy records a conversation through a real proxy: the
// backend answers the client's frames with the same frames (after dropping
// the protocol header).
func TestRecordThroughProxy(t *testing.T) {
	stream, want := conversation(t)
	b := newBackend(t, func(c net.Conn) {
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		io.Copy(c, c)
	})
	p := New(t, b.addr())
	c := dial(t, p.Addr())
	// In small pieces, so that frames span reads.
	for i := 0; i < len(stream); i += 1000 {
		if _, err := c.Write(stream[i:min(i+1000, len(stream))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(c, make([]byte, len(stream)-8)); err != nil {
		t.Fatal(err)
	}
	last, err := p.WaitFrame(wait, func(r Recorded) bool {
		return r.Dir == ServerToClient && r.Frame.Type == wire.FrameBody && len(r.Frame.Payload) < 4000
	})
	if err != nil {
		t.Fatalf("the echoed last body frame: %v; recorded %v", err, p.Frames())
	}
	if last.Conn != 1 || last.Time.IsZero() {
		t.Fatalf("last frame %v at %v", last, last.Time)
	}
	var c2s, s2c []Recorded
	for _, r := range p.Frames() {
		switch r.Dir {
		case ClientToServer:
			c2s = append(c2s, r)
		case ServerToClient:
			s2c = append(s2c, r)
		}
	}
	if !sameFrames(c2s, want) || !sameFrames(s2c, want) {
		t.Fatalf("recorded\n client->server %v\n server->client %v", c2s, s2c)
	}
	for i := 1; i < len(c2s); i++ {
		if c2s[i].Time.Before(c2s[i-1].Time) {
			t.Fatalf("frame times go backwards: %v then %v", c2s[i-1].Time, c2s[i].Time)
		}
	}
	m, err := c2s[0].Method()
	if tune, ok := m.(*wire.ConnectionTuneOk); err != nil || !ok || tune.Heartbeat != 2 {
		t.Fatalf("first frame's method: %#v, %v", m, err)
	}
	if !c2s[0].IsMethod(wire.MethodConnectionTuneOk) || c2s[1].IsMethod(wire.MethodConnectionTuneOk) {
		t.Fatal("IsMethod")
	}
	if _, err := c2s[1].Method(); err == nil {
		t.Fatal("Method of a heartbeat frame did not fail")
	}
	if s := c2s[0].String(); !strings.HasPrefix(s, "conn 1 client->server channel 0 ") || !strings.HasSuffix(s, " connection.tune-ok") {
		t.Fatalf("String = %q", s)
	}
	if s := c2s[4].String(); !strings.HasSuffix(s, "bytes") {
		t.Fatalf("String of a body frame = %q", s)
	}
	// WaitFrame times out when nothing matches.
	if _, err := p.WaitFrame(50*time.Millisecond, func(Recorded) bool { return false }); !errors.Is(err, ErrNoFrame) {
		t.Fatalf("WaitFrame with no match: %v", err)
	}
}

func TestDirectionString(t *testing.T) {
	for d, want := range map[Direction]string{ClientToServer: "client->server", ServerToClient: "server->client", 7: "Direction(7)"} {
		if d.String() != want {
			t.Errorf("%d.String() = %q, want %q", d, d.String(), want)
		}
	}
}
