package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// Config.DeferAuth: the engine hands each SASL step to the driver
// (EventAuth) and never calls the mechanism itself.

// countingMech is challengeMech counting its Start calls.
type countingMech struct {
	challengeMech
	starts int
}

func (m *countingMech) Start() ([]byte, error) {
	m.starts++
	return m.challengeMech.Start()
}

// expectAuth checks that the next event is EventAuth for a step of method
// want, and that nothing was sent meanwhile.
func (h *harness) expectAuth(want wire.MethodID) wire.Method {
	h.t.Helper()
	e := h.expect(EventAuth)
	if e.Method == nil || e.Method.ID() != want {
		h.t.Fatalf("EventAuth for %v, want %s", e.Method, want)
	}
	h.noEvents()
	h.peer.ExpectEmpty()
	return e.Method
}

func TestDeferAuthRoundTrip(t *testing.T) {
	mech := &countingMech{}
	h := newHarness(t, Config{Mechanisms: []Mechanism{mech}, DeferAuth: true})
	if h.c.Mechanism() != nil {
		t.Fatal("a mechanism before connection.start")
	}
	h.mustRecv(scripted.Method(0, serverStart("PLAIN X-ROUNDTRIP")))
	h.expectAuth(wire.MethodConnectionStart)
	if h.c.Mechanism() != Mechanism(mech) || mech.starts != 0 {
		t.Fatalf("Mechanism() = %v, Start called %d times by the engine", h.c.Mechanism(), mech.starts)
	}
	h.c.AuthResponse(h.c.Mechanism().Start())
	h.pump()
	ok := h.peer.NextMethod(0).(*wire.ConnectionStartOk)
	if ok.Mechanism != "X-ROUNDTRIP" || ok.Response != "hello" {
		t.Fatalf("start-ok %q %q", ok.Mechanism, ok.Response)
	}
	for _, c := range []string{"c1", "\x00c2"} {
		h.mustRecv(scripted.Method(0, &wire.ConnectionSecure{Challenge: c}))
		step := h.expectAuth(wire.MethodConnectionSecure).(*wire.ConnectionSecure)
		if len(mech.challenges) != 0 {
			t.Fatalf("the engine called Challenge itself: %q", mech.challenges)
		}
		h.c.AuthResponse(mech.Challenge([]byte(step.Challenge)))
		mech.challenges = nil
		h.pump()
		h.peer.ExpectMethod(0, &wire.ConnectionSecureOk{Response: "resp:" + c})
	}
	// A response nobody asked for does nothing.
	h.c.AuthResponse([]byte("stray"), nil)
	h.pump()
	h.peer.ExpectEmpty()
	h.noEvents()
	h.mustRecv(scripted.Method(0, &rabbitTune))
	h.peer.NextMethod(0)
	h.peer.NextMethod(0)
	h.mustRecv(scripted.Method(0, &wire.ConnectionOpenOk{}))
	h.expect(EventOpen)
}

func TestDeferAuthFailures(t *testing.T) {
	cfg := func() Config {
		return Config{Mechanisms: []Mechanism{&challengeMech{}}, DeferAuth: true}
	}
	t.Run("start fails", func(t *testing.T) {
		h := newHarness(t, cfg())
		h.mustRecv(scripted.Method(0, serverStart("X-ROUNDTRIP")))
		h.expectAuth(wire.MethodConnectionStart)
		h.c.AuthResponse(nil, errors.New("no key"))
		h.pump()
		h.peer.ExpectEmpty()
		if err := h.expectClosed(); !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "no key") {
			t.Errorf("err = %v, want ErrAuthentication naming the cause", err)
		}
	})
	t.Run("challenge refused", func(t *testing.T) {
		h := newHarness(t, cfg())
		h.mustRecv(scripted.Method(0, serverStart("X-ROUNDTRIP")))
		h.expectAuth(wire.MethodConnectionStart)
		h.c.AuthResponse([]byte("hello"), nil)
		h.pump()
		h.peer.NextMethod(0)
		h.mustRecv(scripted.Method(0, &wire.ConnectionSecure{Challenge: "fail"}))
		h.expectAuth(wire.MethodConnectionSecure)
		h.c.AuthResponse(nil, errors.New("cannot answer"))
		h.pump()
		if cl := h.peer.NextMethod(0).(*wire.ConnectionClose); cl.ReplyCode != uint16(wire.ReplyAccessRefused) {
			t.Errorf("connection.close code %d, want 403", cl.ReplyCode)
		}
		if err := h.expectClosed(); !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "cannot answer") {
			t.Errorf("err = %v, want ErrAuthentication naming the cause", err)
		}
	})
	t.Run("handshake timeout while the mechanism runs", func(t *testing.T) {
		h := newHarness(t, cfg())
		h.mustRecv(scripted.Method(0, serverStart("X-ROUNDTRIP")))
		h.expectAuth(wire.MethodConnectionStart)
		h.tick(DefaultHandshakeTimeout)
		if err := h.expectClosed(); !errors.Is(err, ErrHandshakeTimeout) {
			t.Errorf("err = %v, want ErrHandshakeTimeout", err)
		}
		// The late response is ignored.
		h.c.AuthResponse([]byte("hello"), nil)
		h.pump()
		h.peer.ExpectEmpty()
		h.noEvents()
	})
	t.Run("transport fails while the mechanism runs", func(t *testing.T) {
		h := newHarness(t, cfg())
		h.mustRecv(scripted.Method(0, serverStart("X-ROUNDTRIP")))
		h.expectAuth(wire.MethodConnectionStart)
		h.c.Fail(errors.New("reset"))
		h.pump()
		if err := h.expectClosed(); !errors.Is(err, ErrHandshakeClosed) || !strings.Contains(err.Error(), "SASL") {
			t.Errorf("err = %v, want ErrHandshakeClosed saying the mechanism was running", err)
		}
	})
	// The server may not move on while a response is owed.
	for _, tc := range []struct {
		name   string
		secure bool // the pending step is a challenge
		frame  wire.Method
	}{
		{"second connection.start", false, serverStart("X-ROUNDTRIP")},
		{"connection.secure before start-ok", false, &wire.ConnectionSecure{Challenge: "x"}},
		{"connection.tune before start-ok", false, &rabbitTune},
		{"connection.secure before secure-ok", true, &wire.ConnectionSecure{Challenge: "x"}},
		{"connection.tune before secure-ok", true, &rabbitTune},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, cfg())
			h.mustRecv(scripted.Method(0, serverStart("X-ROUNDTRIP")))
			h.expectAuth(wire.MethodConnectionStart)
			if tc.secure {
				h.c.AuthResponse([]byte("hello"), nil)
				h.pump()
				h.peer.NextMethod(0)
				h.mustRecv(scripted.Method(0, &wire.ConnectionSecure{Challenge: "c"}))
				h.expectAuth(wire.MethodConnectionSecure)
			}
			h.recv(scripted.Method(0, tc.frame))
			h.expectProtocolClose(wire.ReplyCommandInvalid)
		})
	}
}

// TestDeferAuthOffCallsMechanism checks the default: the engine calls the
// mechanism inside Receive and queues no EventAuth.
func TestDeferAuthOffCallsMechanism(t *testing.T) {
	mech := &countingMech{}
	h := newHarness(t, Config{Mechanisms: []Mechanism{mech}})
	h.mustRecv(scripted.Method(0, serverStart("X-ROUNDTRIP")))
	h.noEvents()
	if mech.starts != 1 {
		t.Fatalf("Start called %d times", mech.starts)
	}
	h.peer.NextMethod(0)
}
