package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

func TestHandshakeExactBytes(t *testing.T) {
	c := New(Config{Heartbeat: NoHeartbeat})
	if got := c.AppendOutgoing(nil); len(got) != 0 {
		t.Fatalf("before Start the engine queued % x", got)
	}
	if !c.Deadline().IsZero() {
		t.Fatalf("Deadline before Start = %v", c.Deadline())
	}
	c.Start(t0)
	if got := c.AppendOutgoing(nil); !bytes.Equal(got, []byte("AMQP\x00\x00\x09\x01")) {
		t.Fatalf("Start queued % x, want the protocol header", got)
	}
	c.Start(t0) // a second Start does nothing
	if c.OutgoingLen() != 0 {
		t.Fatalf("second Start queued bytes")
	}
	if err := c.Receive(scripted.Method(0, serverStart("PLAIN"))); err != nil {
		t.Fatal(err)
	}
	c.AppendOutgoing(nil)
	if err := c.Receive(scripted.Method(0, &wire.ConnectionTune{ChannelMax: 100, FrameMax: 8192, Heartbeat: 60})); err != nil {
		t.Fatal(err)
	}
	got := c.AppendOutgoing(nil)
	want := []byte{
		// connection.tune-ok: channel-max 100, frame-max 8192, heartbeat 0
		1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 31, 0, 100, 0, 0, 0x20, 0, 0, 0, 0xCE,
		// connection.open "/": vhost, capabilities "", insist false
		1, 0, 0, 0, 0, 0, 8, 0, 10, 0, 40, 1, '/', 0, 0, 0xCE,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("tune answered with\n\t% x\nwant\n\t% x", got, want)
	}
	if err := c.Receive([]byte{1, 0, 0, 0, 0, 0, 5, 0, 10, 0, 41, 0, 0xCE}); err != nil {
		t.Fatal(err)
	}
	if e, ok := c.NextEvent(); !ok || e.Kind != EventOpen {
		t.Fatalf("NextEvent = %v, %v; want EventOpen", e, ok)
	}
	if !c.IsOpen() {
		t.Fatal("IsOpen false after open-ok")
	}
	if got, want := c.Tuning(), (Tuning{ChannelMax: 100, FrameMax: 8192}); got != want {
		t.Errorf("Tuning = %+v, want %+v", got, want)
	}
}

func TestHandshakeDefaults(t *testing.T) {
	h := newHarness(t, Config{ConnectionName: "orders-service"})
	if h.c.Tuning() != (Tuning{}) || h.c.ServerProperties() != nil {
		t.Fatalf("before tune: Tuning %+v, ServerProperties %v", h.c.Tuning(), h.c.ServerProperties())
	}
	if got := h.c.Deadline(); !got.Equal(t0.Add(DefaultHandshakeTimeout)) {
		t.Errorf("Deadline after Start = %v, want Start + 10s", got)
	}
	if _, _, err := h.c.OpenChannel(); !errors.Is(err, ErrNotOpen) {
		t.Errorf("OpenChannel during the handshake: %v, want ErrNotOpen", err)
	}
	h.mustRecv(scripted.Method(0, serverStart("AMQPLAIN PLAIN")))
	ok := h.peer.NextMethod(0).(*wire.ConnectionStartOk)
	if ok.Mechanism != "PLAIN" || ok.Response != "\x00guest\x00guest" || ok.Locale != "en_US" {
		t.Errorf("start-ok mechanism %q response %q locale %q", ok.Mechanism, ok.Response, ok.Locale)
	}
	props := ok.ClientProperties
	for k, want := range map[string]string{
		"product": "pika-go", "version": Version, "platform": "Go " + runtime.Version(),
		"connection_name": "orders-service",
	} {
		if got, _ := props[k].(string); got != want {
			t.Errorf("client property %s = %v, want %q", k, props[k], want)
		}
	}
	caps, _ := props["capabilities"].(wire.Table)
	for _, k := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
		"consumer_cancel_notify", "connection.blocked", "authentication_failure_close",
		"per_consumer_qos", "direct_reply_to"} {
		if v, _ := caps[k].(bool); !v {
			t.Errorf("capability %s = %v, want true", k, caps[k])
		}
	}
	if len(caps) != 8 {
		t.Errorf("capabilities = %v, want exactly 8", caps)
	}
	if got := h.c.ServerProperties()["product"]; got != "RabbitMQ" {
		t.Errorf("ServerProperties product = %v", got)
	}
	if !h.c.ServerCapability("publisher_confirms") || h.c.ServerCapability("per_consumer_qos") ||
		h.c.ServerCapability("no_such_thing") {
		t.Errorf("ServerCapability reports wrongly")
	}
	h.mustRecv(scripted.Method(0, &wire.ConnectionTune{ChannelMax: 0, FrameMax: 0, Heartbeat: 60}))
	h.peer.ExpectMethod(0, &wire.ConnectionTuneOk{ChannelMax: DefaultChannelMax, FrameMax: DefaultFrameMax, Heartbeat: 60})
	h.peer.ExpectMethod(0, &wire.ConnectionOpen{VirtualHost: "/"})
	if h.c.IsOpen() {
		t.Error("IsOpen before open-ok")
	}
	if _, err := h.c.UpdateSecret("x", "y"); !errors.Is(err, ErrNotOpen) {
		t.Errorf("UpdateSecret during the handshake: %v, want ErrNotOpen", err)
	}
	h.mustRecv(scripted.Method(0, &wire.ConnectionOpenOk{}))
	h.expect(EventOpen)
	h.noEvents()
	h.peer.ExpectEmpty()
	if !h.c.IsOpen() {
		t.Error("IsOpen false after open-ok")
	}
}

func TestClientPropertiesMerge(t *testing.T) {
	h := newHarness(t, Config{ClientProperties: wire.Table{
		"product":      "my-app",
		"team":         "payments",
		"capabilities": wire.Table{"publisher_confirms": false},
	}})
	h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
	props := h.peer.NextMethod(0).(*wire.ConnectionStartOk).ClientProperties
	if props["product"] != "my-app" || props["team"] != "payments" || props["version"] != Version {
		t.Errorf("merged properties = %v", props)
	}
	if _, ok := props["connection_name"]; ok {
		t.Errorf("connection_name sent without ConnectionName: %v", props)
	}
	caps := props["capabilities"].(wire.Table)
	if caps["publisher_confirms"] != true {
		t.Errorf("ClientProperties overrode capabilities: %v", caps)
	}
}

func TestMechanismChoice(t *testing.T) {
	amqplainResp := func(user, pass string) string {
		b, _ := wire.AppendTable(nil, wire.Table{"LOGIN": user, "PASSWORD": pass})
		return string(b[4:])
	}
	tests := []struct {
		name     string
		cfg      Config
		server   string
		wantMech string
		wantResp string
	}{
		{"default PLAIN", Config{}, "AMQPLAIN PLAIN", "PLAIN", "\x00guest\x00guest"},
		{"credentials", Config{Username: "u", Password: "p"}, "PLAIN", "PLAIN", "\x00u\x00p"},
		{"client order wins", Config{Mechanisms: []Mechanism{
			AMQPlainAuth{Username: "u", Password: "p"}, PlainAuth{Username: "u", Password: "p"},
		}}, "PLAIN AMQPLAIN", "AMQPLAIN", amqplainResp("u", "p")},
		{"first offered of prefs", Config{Mechanisms: []Mechanism{
			PlainAuth{Username: "u"}, AMQPlainAuth{Username: "u"}, ExternalAuth{},
		}}, "EXTERNAL AMQPLAIN", "AMQPLAIN", amqplainResp("u", "")},
		{"EXTERNAL", Config{Mechanisms: []Mechanism{ExternalAuth{}}}, "PLAIN EXTERNAL", "EXTERNAL", ""},
		{"EXTERNAL identity", Config{Mechanisms: []Mechanism{ExternalAuth{Identity: "cn=me"}}}, "EXTERNAL", "EXTERNAL", "cn=me"},
		{"extra spaces", Config{}, "  AMQPLAIN   PLAIN ", "PLAIN", "\x00guest\x00guest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			h.mustRecv(scripted.Method(0, serverStart(tc.server)))
			ok := h.peer.NextMethod(0).(*wire.ConnectionStartOk)
			if ok.Mechanism != tc.wantMech || ok.Response != tc.wantResp {
				t.Errorf("start-ok %q %q, want %q %q", ok.Mechanism, ok.Response, tc.wantMech, tc.wantResp)
			}
			h.noEvents()
		})
	}
}

func TestNoCommonMechanism(t *testing.T) {
	h := newHarness(t, Config{Mechanisms: []Mechanism{ExternalAuth{}, AMQPlainAuth{}}})
	err := h.recv(scripted.Method(0, serverStart("PLAIN")))
	h.peer.ExpectEmpty()
	got := h.expectClosed()
	if !errors.Is(got, ErrNoMechanism) || !errors.Is(err, ErrNoMechanism) {
		t.Fatalf("EventClosed %v, Receive %v: want ErrNoMechanism", got, err)
	}
	for _, s := range []string{"EXTERNAL AMQPLAIN", "[PLAIN]"} {
		if !strings.Contains(got.Error(), s) {
			t.Errorf("error %q does not name %q", got, s)
		}
	}
}

// challengeMech is a custom mechanism with a challenge/response round
// trip: it answers each challenge c with "resp:" + c, and fails on
// "fail".
type challengeMech struct{ challenges []string }

func (*challengeMech) Name() string           { return "X-ROUNDTRIP" }
func (*challengeMech) Start() ([]byte, error) { return []byte("hello"), nil }
func (m *challengeMech) Challenge(c []byte) ([]byte, error) {
	m.challenges = append(m.challenges, string(c))
	if string(c) == "fail" {
		return nil, errors.New("cannot answer")
	}
	return append([]byte("resp:"), c...), nil
}

func TestCustomMechanismChallenge(t *testing.T) {
	mech := &challengeMech{}
	h := newHarness(t, Config{Mechanisms: []Mechanism{mech}})
	h.mustRecv(scripted.Method(0, serverStart("PLAIN X-ROUNDTRIP")))
	ok := h.peer.NextMethod(0).(*wire.ConnectionStartOk)
	if ok.Mechanism != "X-ROUNDTRIP" || ok.Response != "hello" {
		t.Fatalf("start-ok %q %q", ok.Mechanism, ok.Response)
	}
	h.mustRecv(scripted.Method(0, &wire.ConnectionSecure{Challenge: "c1"}))
	h.peer.ExpectMethod(0, &wire.ConnectionSecureOk{Response: "resp:c1"})
	h.mustRecv(scripted.Method(0, &wire.ConnectionSecure{Challenge: "\x00c2"}))
	h.peer.ExpectMethod(0, &wire.ConnectionSecureOk{Response: "resp:\x00c2"})
	h.mustRecv(scripted.Method(0, &rabbitTune))
	h.peer.NextMethod(0)
	h.peer.NextMethod(0)
	h.mustRecv(scripted.Method(0, &wire.ConnectionOpenOk{}))
	h.expect(EventOpen)
	if len(mech.challenges) != 2 {
		t.Errorf("challenges seen: %q", mech.challenges)
	}
}

func TestMechanismFailures(t *testing.T) {
	t.Run("challenge refused", func(t *testing.T) {
		h := newHarness(t, Config{Mechanisms: []Mechanism{&challengeMech{}}})
		h.mustRecv(scripted.Method(0, serverStart("X-ROUNDTRIP")))
		h.peer.NextMethod(0)
		h.recv(scripted.Method(0, &wire.ConnectionSecure{Challenge: "fail"}))
		cl := h.peer.NextMethod(0).(*wire.ConnectionClose)
		if cl.ReplyCode != uint16(wire.ReplyAccessRefused) {
			t.Errorf("connection.close code %d, want 403", cl.ReplyCode)
		}
		err := h.expectClosed()
		if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "cannot answer") {
			t.Errorf("err = %v, want ErrAuthentication naming the cause", err)
		}
	})
	t.Run("PLAIN challenged", func(t *testing.T) {
		h := newHarness(t, Config{})
		h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
		h.peer.NextMethod(0)
		h.recv(scripted.Method(0, &wire.ConnectionSecure{Challenge: "?"}))
		h.peer.NextMethod(0)
		if err := h.expectClosed(); !errors.Is(err, ErrAuthentication) {
			t.Errorf("err = %v, want ErrAuthentication", err)
		}
	})
	t.Run("start fails", func(t *testing.T) {
		h := newHarness(t, Config{Mechanisms: []Mechanism{failingStart{}}})
		h.recv(scripted.Method(0, serverStart("BROKEN")))
		h.peer.ExpectEmpty()
		if err := h.expectClosed(); !errors.Is(err, ErrAuthentication) {
			t.Errorf("err = %v, want ErrAuthentication", err)
		}
	})
	t.Run("built-in mechanisms refuse challenges", func(t *testing.T) {
		for _, m := range []Mechanism{PlainAuth{}, AMQPlainAuth{}, ExternalAuth{}} {
			if _, err := m.Challenge([]byte("x")); err == nil {
				t.Errorf("%s answered a challenge", m.Name())
			}
		}
	})
	t.Run("unencodable start-ok", func(t *testing.T) {
		h := newHarness(t, Config{ClientProperties: wire.Table{"bad": struct{}{}}})
		h.recv(scripted.Method(0, serverStart("PLAIN")))
		h.peer.ExpectEmpty()
		if err := h.expectClosed(); !errors.Is(err, ErrHandshakeClosed) || !errors.Is(err, wire.ErrUnsupportedValue) {
			t.Errorf("err = %v, want ErrHandshakeClosed wrapping the encoding error", err)
		}
	})
}

type failingStart struct{}

func (failingStart) Name() string                     { return "BROKEN" }
func (failingStart) Start() ([]byte, error)           { return nil, errors.New("no key") }
func (failingStart) Challenge([]byte) ([]byte, error) { return nil, nil }

func TestTuneNegotiation(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		server wire.ConnectionTune
		want   Tuning
	}{
		{"server lower", Config{}, wire.ConnectionTune{ChannelMax: 100, FrameMax: 8192, Heartbeat: 30},
			Tuning{100, 8192, 30 * time.Second}},
		{"server zero means no limit", Config{}, wire.ConnectionTune{},
			Tuning{DefaultChannelMax, DefaultFrameMax, 0}},
		{"client lower", Config{ChannelMax: 10, FrameMax: 16384, Heartbeat: 5 * time.Second},
			wire.ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60},
			Tuning{10, 16384, 5 * time.Second}},
		{"client heartbeat, server zero", Config{Heartbeat: 15 * time.Second},
			wire.ConnectionTune{Heartbeat: 0}, Tuning{DefaultChannelMax, DefaultFrameMax, 15 * time.Second}},
		{"client heartbeat higher", Config{Heartbeat: 120 * time.Second},
			wire.ConnectionTune{Heartbeat: 60}, Tuning{DefaultChannelMax, DefaultFrameMax, 60 * time.Second}},
		{"client heartbeat zero takes server's", Config{},
			wire.ConnectionTune{Heartbeat: 60}, Tuning{DefaultChannelMax, DefaultFrameMax, 60 * time.Second}},
		{"NoHeartbeat", Config{Heartbeat: NoHeartbeat},
			wire.ConnectionTune{Heartbeat: 60}, Tuning{DefaultChannelMax, DefaultFrameMax, 0}},
		{"heartbeat rounded up", Config{Heartbeat: 1500 * time.Millisecond},
			wire.ConnectionTune{Heartbeat: 60}, Tuning{DefaultChannelMax, DefaultFrameMax, 2 * time.Second}},
		{"huge heartbeat capped", Config{Heartbeat: 100000 * time.Second},
			wire.ConnectionTune{Heartbeat: 0}, Tuning{DefaultChannelMax, DefaultFrameMax, 65535 * time.Second}},
		{"client frame max below minimum raised", Config{FrameMax: 100},
			wire.ConnectionTune{FrameMax: 0}, Tuning{DefaultChannelMax, 4096, 0}},
		{"server frame max exactly minimum", Config{},
			wire.ConnectionTune{FrameMax: 4096}, Tuning{DefaultChannelMax, 4096, 0}},
		{"server channel max zero", Config{ChannelMax: 65535},
			wire.ConnectionTune{ChannelMax: 0}, Tuning{65535, DefaultFrameMax, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
			h.peer.NextMethod(0)
			h.mustRecv(scripted.Method(0, &tc.server))
			if got := h.c.Tuning(); got != tc.want {
				t.Errorf("Tuning = %+v, want %+v", got, tc.want)
			}
			h.peer.ExpectMethod(0, &wire.ConnectionTuneOk{
				ChannelMax: tc.want.ChannelMax, FrameMax: tc.want.FrameMax, Heartbeat: uint16(tc.want.Heartbeat / time.Second),
			})
			h.peer.ExpectMethod(0, &wire.ConnectionOpen{VirtualHost: "/"})
		})
	}
}

func TestTuneFrameMaxTooSmall(t *testing.T) {
	h := newHarness(t, Config{})
	h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
	h.peer.NextMethod(0)
	err := h.recv(scripted.Method(0, &wire.ConnectionTune{FrameMax: 4095}))
	e := h.expectProtocolClose(wire.ReplySyntaxError)
	if err != e || !strings.Contains(e.Text, "4095") {
		t.Errorf("Receive returned %v; error text %q should name the value", err, e.Text)
	}
}

func TestOpenVhost(t *testing.T) {
	h := open(t, Config{Vhost: "prod/eu"}, rabbitTune)
	if !h.c.IsOpen() {
		t.Fatal("not open")
	}
}

func TestBadCredentials(t *testing.T) {
	h := newHarness(t, Config{Username: "u", Password: "wrong"})
	h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
	h.peer.NextMethod(0)
	text := "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN."
	err := h.recv(scripted.Method(0, &wire.ConnectionClose{ReplyCode: 403, ReplyText: text}))
	h.peer.ExpectMethod(0, &wire.ConnectionCloseOk{})
	h.peer.ExpectEmpty()
	got := h.expectClosed()
	if err != got {
		t.Errorf("Receive returned %v, EventClosed has %v", err, got)
	}
	if !errors.Is(got, ErrAuthentication) {
		t.Fatalf("err = %v, want ErrAuthentication", got)
	}
	var e *Error
	if !errors.As(got, &e) || e.Code != 403 || e.Text != text || !e.Conn || !e.Server {
		t.Fatalf("errors.As found %#v", e)
	}
	if errors.Is(got, ErrHandshakeClosed) {
		t.Error("authentication failure also matches ErrHandshakeClosed")
	}
}

func TestVhostRefused(t *testing.T) {
	for _, code := range []wire.ReplyCode{wire.ReplyNotAllowed, wire.ReplyAccessRefused, wire.ReplyInvalidPath} {
		t.Run(code.String(), func(t *testing.T) {
			h := newHarness(t, Config{Vhost: "nope"})
			h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
			h.peer.NextMethod(0)
			h.mustRecv(scripted.Method(0, &rabbitTune))
			h.peer.NextMethod(0)
			h.peer.ExpectMethod(0, &wire.ConnectionOpen{VirtualHost: "nope"})
			h.recv(scripted.Method(0, &wire.ConnectionClose{ReplyCode: uint16(code), ReplyText: "NOT_ALLOWED - vhost nope not found", ClassID: 10, MethodID: 40}))
			h.peer.ExpectMethod(0, &wire.ConnectionCloseOk{})
			err := h.expectClosed()
			if !errors.Is(err, ErrVhostRefused) || !strings.Contains(err.Error(), `"nope"`) {
				t.Fatalf("err = %v, want ErrVhostRefused naming the vhost", err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != code || e.Method != wire.MethodConnectionOpen {
				t.Fatalf("errors.As found %#v", e)
			}
		})
	}
	t.Run("other code while opening", func(t *testing.T) {
		h := newHarness(t, Config{})
		h.mustRecv(scripted.Method(0, serverStart("PLAIN")), scripted.Method(0, &rabbitTune))
		h.recv(scripted.Method(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED"}))
		if err := h.expectClosed(); !errors.Is(err, ErrHandshakeClosed) || errors.Is(err, ErrVhostRefused) {
			t.Fatalf("err = %v, want ErrHandshakeClosed", err)
		}
	})
}

// handshakeStates drives a fresh engine into each handshake state.
var handshakeStates = []struct {
	name  string
	setup func(h *harness)
}{
	{"awaiting start", func(h *harness) {}},
	{"awaiting secure or tune", func(h *harness) {
		h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
	}},
	{"awaiting open-ok", func(h *harness) {
		h.mustRecv(scripted.Method(0, serverStart("PLAIN")), scripted.Method(0, &rabbitTune))
	}},
}

func TestServerClosesMidHandshake(t *testing.T) {
	for _, st := range handshakeStates {
		t.Run(st.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			st.setup(h)
			h.c.Fail(io.EOF)
			h.pump()
			err := h.expectClosed()
			if !errors.Is(err, ErrHandshakeClosed) || !errors.Is(err, io.EOF) {
				t.Fatalf("err = %v, want ErrHandshakeClosed wrapping io.EOF", err)
			}
			if errors.Is(err, ErrAuthentication) {
				t.Errorf("err also matches ErrAuthentication")
			}
			h.c.Fail(io.ErrUnexpectedEOF) // ignored after close
			h.pump()
			h.noEvents()
			if h.c.Err() != err {
				t.Errorf("a second Fail changed Err to %v", h.c.Err())
			}
		})
	}
	t.Run("before Start", func(t *testing.T) {
		c := New(Config{})
		c.Fail(nil)
		e, _ := c.NextEvent()
		if e.Kind != EventClosed || !errors.Is(e.Err, ErrHandshakeClosed) || !errors.Is(e.Err, ErrClosed) {
			t.Fatalf("event %s %v", e.Kind, e.Err)
		}
	})
}

func TestServerConnectionCloseMidHandshake(t *testing.T) {
	for _, st := range handshakeStates {
		t.Run(st.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			st.setup(h)
			h.drainPeer() // whatever the handshake sent
			h.recv(scripted.Method(0, &wire.ConnectionClose{ReplyCode: 541, ReplyText: "INTERNAL_ERROR"}))
			h.peer.ExpectMethod(0, &wire.ConnectionCloseOk{})
			err := h.expectClosed()
			var e *Error
			if !errors.Is(err, ErrHandshakeClosed) || !errors.As(err, &e) || e.Code != 541 || !e.Conn || !e.Server {
				t.Fatalf("err = %v, want ErrHandshakeClosed with the server's *Error", err)
			}
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	for _, st := range handshakeStates {
		t.Run(st.name, func(t *testing.T) {
			h := newHarness(t, Config{HandshakeTimeout: 5 * time.Second})
			st.setup(h)
			if got := h.c.Deadline(); !got.Equal(t0.Add(5 * time.Second)) {
				t.Fatalf("Deadline = %v, want Start + 5s", got)
			}
			h.tick(4 * time.Second)
			h.noEvents()
			h.tick(time.Second)
			err := h.expectClosed()
			if !errors.Is(err, ErrHandshakeTimeout) {
				t.Fatalf("err = %v, want ErrHandshakeTimeout", err)
			}
			if !h.c.Deadline().IsZero() {
				t.Errorf("Deadline after close = %v", h.c.Deadline())
			}
		})
	}
	t.Run("disabled", func(t *testing.T) {
		h := newHarness(t, Config{HandshakeTimeout: -1})
		if !h.c.Deadline().IsZero() {
			t.Fatalf("Deadline = %v with no handshake timeout", h.c.Deadline())
		}
		h.tick(time.Hour)
		h.noEvents()
	})
	t.Run("cleared on open", func(t *testing.T) {
		h := open(t, Config{HandshakeTimeout: 5 * time.Second, Heartbeat: NoHeartbeat}, rabbitTune)
		if !h.c.Deadline().IsZero() {
			t.Fatalf("Deadline after open without heartbeats = %v", h.c.Deadline())
		}
		h.tick(time.Minute)
		h.noEvents()
	})
}

func TestProtocolVersionRejected(t *testing.T) {
	header := []byte("AMQP\x00\x00\x09\x00")
	splits := [][]int{{8}, {1, 7}, {3, 5}, {4, 4}, {1, 1, 1, 1, 1, 1, 1, 1}}
	for _, sp := range splits {
		h := newHarness(t, Config{})
		rest := header
		var err error
		for _, n := range sp {
			err = h.c.Receive(rest[:n])
			rest = rest[n:]
		}
		h.pump()
		h.peer.ExpectEmpty()
		got := h.expectClosed()
		if !errors.Is(got, ErrProtocolVersion) || err != got {
			t.Fatalf("split %v: EventClosed %v, Receive %v: want ErrProtocolVersion", sp, got, err)
		}
		if !strings.Contains(got.Error(), `"AMQP\x00\x00\x09\x00"`) {
			t.Errorf("error %q does not show the server's header", got)
		}
	}
	t.Run("header after more bytes", func(t *testing.T) {
		h := newHarness(t, Config{})
		h.recv([]byte("AMQP\x01\x01\x00\x0aextra"))
		if err := h.expectClosed(); !errors.Is(err, ErrProtocolVersion) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("start with another version", func(t *testing.T) {
		h := newHarness(t, Config{})
		st := serverStart("PLAIN")
		st.VersionMajor, st.VersionMinor = 8, 0
		h.recv(scripted.Method(0, st))
		h.peer.ExpectEmpty()
		err := h.expectClosed()
		if !errors.Is(err, ErrProtocolVersion) || !strings.Contains(err.Error(), "8-0") {
			t.Fatalf("err = %v, want ErrProtocolVersion naming 8-0", err)
		}
	})
}

// TestNotAMQPServer: a server of another protocol answers the protocol
// header with its own words; the error says so and shows them, instead of
// an unknown frame type.
func TestNotAMQPServer(t *testing.T) {
	long := "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n400 Bad Request"
	tests := []struct {
		name   string
		chunks []string
		want   string
	}{
		{"http", []string{"HTTP/1.1 400 Bad Request\r\n\r\n"}, `(it answered "HTTP/1.1 400 Bad Request\x0d\x0a\x0d\x0a")`},
		{"long answer clipped", []string{long}, `(it answered "` + strings.ReplaceAll(long[:64], "\r\n", `\x0d\x0a`) + `"...)`},
		{"tls alert", []string{"\x15\x03\x03\x00\x02\x02\x46"}, `(it answered "\x15\x03\x03\x00\x02\x02F")`},
		{"starts like AMQP but is not", []string{"A", "BCDEFGH and more"}, `(it answered "ABCDEFGH and more")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			var err error
			for _, c := range tt.chunks {
				err = h.c.Receive([]byte(c))
			}
			h.pump()
			h.peer.ExpectEmpty() // nothing sent back: it is not an AMQP peer
			got := h.expectClosed()
			var na *NotAMQPError
			if !errors.Is(got, ErrNotAMQP) || !errors.As(got, &na) || err != got {
				t.Fatalf("EventClosed %v, Receive %v: want a *NotAMQPError", got, err)
			}
			if want := "pika: server does not speak AMQP 0-9-1 " + tt.want; got.Error() != want {
				t.Errorf("error\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestHandshakeTimeoutSilentServer: a server that accepts the connection
// and never sends a byte fails at the handshake timeout, saying that it
// sent nothing.
func TestHandshakeTimeoutSilentServer(t *testing.T) {
	h := newHarness(t, Config{HandshakeTimeout: 5 * time.Second})
	h.tick(5 * time.Second)
	err := h.expectClosed()
	want := "pika: handshake timed out: the server sent nothing in 5s (an AMQP 0-9-1 server answers the protocol header at once)"
	if !errors.Is(err, ErrHandshakeTimeout) || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestHandshakeOutOfOrder(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(h *harness)
		frames []byte
	}{
		{"tune before start", func(h *harness) {}, scripted.Method(0, &rabbitTune)},
		{"secure before start", func(h *harness) {}, scripted.Method(0, &wire.ConnectionSecure{})},
		{"open-ok before tune", func(h *harness) {
			h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
		}, scripted.Method(0, &wire.ConnectionOpenOk{})},
		{"second start", func(h *harness) {
			h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
		}, scripted.Method(0, serverStart("PLAIN"))},
		{"second tune", func(h *harness) {
			h.mustRecv(scripted.Method(0, serverStart("PLAIN")), scripted.Method(0, &rabbitTune))
		}, scripted.Method(0, &rabbitTune)},
		{"secure after tune", func(h *harness) {
			h.mustRecv(scripted.Method(0, serverStart("PLAIN")), scripted.Method(0, &rabbitTune))
		}, scripted.Method(0, &wire.ConnectionSecure{})},
		{"close-ok without close", func(h *harness) {}, scripted.Method(0, &wire.ConnectionCloseOk{})},
		{"channel method during handshake", func(h *harness) {
			h.mustRecv(scripted.Method(0, serverStart("PLAIN")), scripted.Method(0, &rabbitTune))
		}, scripted.Method(1, &wire.ChannelOpenOk{})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			tc.setup(h)
			h.drainPeer()
			h.recv(tc.frames)
			want := wire.ReplyCommandInvalid
			if tc.name == "channel method during handshake" {
				want = wire.ReplyChannelError
			}
			h.expectProtocolClose(want)
		})
	}
}

func TestBlockedIgnoredDuringHandshake(t *testing.T) {
	h := newHarness(t, Config{})
	h.mustRecv(scripted.Method(0, serverStart("PLAIN")),
		scripted.Method(0, &wire.ConnectionBlocked{Reason: "x"}),
		scripted.Method(0, &wire.ConnectionUnblocked{}),
		scripted.Heartbeat())
	h.noEvents()
}

func TestCloseDuringHandshake(t *testing.T) {
	h := newHarness(t, Config{})
	h.mustRecv(scripted.Method(0, serverStart("PLAIN")))
	h.peer.NextMethod(0)
	h.c.Close("bye")
	h.pump()
	h.peer.ExpectEmpty()
	if err := h.expectClosed(); err != nil {
		t.Fatalf("err = %v, want nil", err)
	}
}

// ShareServerProperties takes another connection's table only when it
// holds the same entries; the connection answers as before either way.
func TestShareServerProperties(t *testing.T) {
	same := func(a, b wire.Table) bool { return fmt.Sprintf("%p", a) == fmt.Sprintf("%p", b) }
	first := openDefault(t)
	shared := first.c.ServerProperties()
	h := openDefault(t)
	own := h.c.ServerProperties()
	if same(own, shared) {
		t.Fatalf("two connections decoded one table")
	}
	other := serverStart("PLAIN").ServerProperties
	other["version"] = "3.13.1"
	for _, tc := range []struct {
		name string
		t    wire.Table
		want bool
	}{
		{"nil", nil, false},
		{"empty", wire.Table{}, false},
		{"other version", other, false},
		{"same entries", shared, true},
	} {
		if got := h.c.ShareServerProperties(tc.t); got != tc.want {
			t.Errorf("%s: shared %v, want %v", tc.name, got, tc.want)
		}
		now := h.c.ServerProperties()
		if want := tc.t; !tc.want && !same(now, own) || tc.want && !same(now, want) {
			t.Errorf("%s: the connection keeps the wrong table", tc.name)
		}
		if !h.c.ServerCapability("publisher_confirms") || h.c.ServerCapability("per_consumer_qos") {
			t.Errorf("%s: capabilities changed", tc.name)
		}
		own = now
	}
}
