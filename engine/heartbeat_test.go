package engine

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

const hb = 10 * time.Second

var hbTune = wire.ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 10}

// tickToDeadline moves the fake clock to the engine's deadline and ticks.
func (h *harness) tickToDeadline() {
	h.t.Helper()
	d := h.c.Deadline()
	if d.IsZero() {
		h.t.Fatalf("no deadline")
	}
	if d.Before(h.now) {
		h.t.Fatalf("deadline %v is before the last tick %v", d, h.now)
	}
	h.tick(d.Sub(h.now))
}

func TestHeartbeatDeadlines(t *testing.T) {
	h := open(t, Config{}, hbTune)
	if got := h.c.Tuning().Heartbeat; got != hb {
		t.Fatalf("heartbeat %v", got)
	}
	// The handshake's traffic counts from the last time the engine learnt
	// (Start); the first deadline is a send check at H/2.
	if got, want := h.c.Deadline(), t0.Add(hb/2); !got.Equal(want) {
		t.Fatalf("Deadline after open = %v, want %v", got, want)
	}
	// Idle connection: tick at every deadline and record what happens.
	var heartbeats []time.Duration
	for !h.c.IsClosed() {
		h.tickToDeadline()
		if _, ok := h.peer.TryNext(); ok {
			heartbeats = append(heartbeats, h.now.Sub(t0))
		}
		if h.now.Sub(t0) > time.Hour {
			t.Fatal("never closed")
		}
	}
	// The handshake traffic is noticed at the first tick (t0+5s), the
	// inbound open-ok too. Heartbeats go out when a tick finds H/2 without
	// outbound traffic (the engine's own heartbeats do not count as
	// traffic, so an idle connection sends one every H/2); the peer is dead
	// 2H after the last inbound traffic was noticed.
	want := []time.Duration{10 * time.Second, 15 * time.Second, 20 * time.Second}
	if fmt.Sprint(heartbeats) != fmt.Sprint(want) {
		t.Errorf("heartbeats at %v, want %v", heartbeats, want)
	}
	if got := h.now.Sub(t0); got != 5*time.Second+2*hb {
		t.Errorf("declared dead at +%v, want +25s", got)
	}
	err := h.expectClosed()
	if !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("err = %v, want ErrHeartbeatTimeout", err)
	}
	if !h.c.Deadline().IsZero() {
		t.Error("deadline after close")
	}
	h.peer.ExpectEmpty() // a dead peer gets no connection.close
}

func TestHeartbeatExactFrame(t *testing.T) {
	h := open(t, Config{}, hbTune)
	h.tick(hb / 2) // notices the handshake traffic
	h.tick(hb / 2)
	h.peer.ExpectBytes([]byte{8, 0, 0, 0, 0, 0, 0, 0xCE})
	h.peer.ExpectEmpty()
}

func TestNoHeartbeatWhileSending(t *testing.T) {
	h := open(t, Config{}, hbTune)
	ch := h.openChannel()
	for i := 0; i < 40; i++ {
		if _, err := h.c.Publish(ch, "", "q", false, false, nil, []byte("x")); err != nil {
			t.Fatal(err)
		}
		h.pump()
		h.mustRecv(scripted.Heartbeat()) // the server's heartbeats keep it alive
		h.tick(hb / 2)
		h.peer.ExpectMessage(ch, &wire.BasicPublish{RoutingKey: "q"}, nil, []byte("x"), 0)
		h.peer.ExpectEmpty() // no heartbeat among the publishes
	}
	h.noEvents()
	// Bytes queued but not yet taken count as traffic too.
	if _, err := h.c.Publish(ch, "", "q", false, false, nil, nil); err != nil {
		t.Fatal(err)
	}
	h.mustRecv(scripted.Heartbeat())
	h.now = h.now.Add(hb)
	h.c.Tick(h.now)
	h.pump()
	h.peer.ExpectMessage(ch, &wire.BasicPublish{RoutingKey: "q"}, nil, nil, 0)
	h.peer.ExpectEmpty()
}

func TestPeerAliveWithInboundTraffic(t *testing.T) {
	h := open(t, Config{}, hbTune)
	for i := 0; i < 100; i++ {
		h.tickToDeadline()
		if i%3 == 0 {
			h.mustRecv(scripted.Heartbeat())
		}
	}
	h.noEvents()
	if !h.c.IsOpen() {
		t.Fatal("closed although the peer kept sending")
	}
	// Outbound heartbeats never leave a gap longer than H.
	prev := time.Duration(0)
	h.drainPeer()
	for i := 0; i < 20; i++ {
		h.tickToDeadline()
		h.mustRecv(scripted.Heartbeat())
		if _, ok := h.peer.TryNext(); ok {
			now := h.now.Sub(t0)
			if prev != 0 && now-prev > hb {
				t.Fatalf("outbound gap %v > H", now-prev)
			}
			prev = now
		}
	}
	if prev == 0 {
		t.Fatal("no heartbeat sent")
	}
}

func TestPeerDeadTiming(t *testing.T) {
	h := open(t, Config{}, hbTune)
	h.tick(hb / 2)
	h.mustRecv(scripted.Heartbeat()) // inbound at +5s, noticed at the next tick
	lastNoticed := h.now.Add(hb / 2)
	h.tick(hb / 2)
	for !h.c.IsClosed() {
		before := h.now
		h.tickToDeadline()
		if h.c.IsClosed() && h.now.Sub(lastNoticed) != 2*hb {
			t.Fatalf("closed at %v, %v after the last inbound tick (previous tick %v)", h.now, h.now.Sub(lastNoticed), before)
		}
		h.drainPeer()
	}
	for len(h.events) > 1 {
		h.next()
	}
	if err := h.expectClosed(); !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("err = %v", err)
	}
}

func TestHeartbeatOff(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		tune wire.ConnectionTune
	}{
		{"NoHeartbeat", Config{Heartbeat: NoHeartbeat}, hbTune},
		{"both zero", Config{}, wire.ConnectionTune{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := open(t, tc.cfg, tc.tune)
			if !h.c.Deadline().IsZero() {
				t.Fatalf("Deadline = %v without heartbeats", h.c.Deadline())
			}
			h.tick(24 * time.Hour)
			h.noEvents()
			h.peer.ExpectEmpty()
		})
	}
}

func TestHeartbeatDuringOpening(t *testing.T) {
	h := newHarness(t, Config{HandshakeTimeout: time.Minute})
	h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
	h.tick(time.Second)
	h.mustRecv(scripted.Method(0, &hbTune))
	// Heartbeat bookkeeping starts at tune: the send check comes before the
	// handshake deadline.
	if got, want := h.c.Deadline(), h.now.Add(hb/2); !got.Equal(want) {
		t.Fatalf("Deadline = %v, want %v", got, want)
	}
}

func TestHeartbeatOnChannel(t *testing.T) {
	h := openDefault(t)
	h.recv(scripted.RawFrame(wire.FrameHeartbeat, 1, nil))
	e := h.expectProtocolClose(wire.ReplyFrameError)
	if e.Text == "" {
		t.Error("empty reply text")
	}
}

func TestTickBeforeStartAndBackwards(t *testing.T) {
	c := New(Config{})
	c.Tick(t0)
	if c.OutgoingLen() != 0 || c.PendingEvents() != 0 {
		t.Fatal("Tick before Start did something")
	}
	h := open(t, Config{}, hbTune)
	h.tick(-time.Hour) // a clock going backwards does no harm
	h.tick(time.Second)
	h.noEvents()
	if !h.c.IsOpen() {
		t.Fatal("closed after the clock went backwards")
	}
	h.peer.ExpectEmpty()
}
