package engine

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// t0 is the fake clock's start. The engine never reads the clock: the
// tests move time by passing later values to Tick.
var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// harness drives one engine against a scripted broker the way a driver
// would: after every call it takes the outgoing bytes (into peer, which
// asserts on them frame by frame) and the events (into events).
type harness struct {
	t      testing.TB
	c      *Conn
	now    time.Time
	peer   *scripted.Client
	events []Event
}

// newHarness returns a started engine whose protocol header has been read.
func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, c: New(cfg), now: t0, peer: scripted.NewClient(t)}
	h.c.Start(t0)
	h.pump()
	h.peer.ExpectProtocolHeader()
	return h
}

// pump takes the engine's outgoing bytes and events.
func (h *harness) pump() {
	h.peer.Write(h.c.AppendOutgoing(nil))
	for {
		e, ok := h.c.NextEvent()
		if !ok {
			break
		}
		h.events = append(h.events, e)
	}
}

// recv feeds the concatenated server frames to Receive in one call.
func (h *harness) recv(frames ...[]byte) error {
	h.t.Helper()
	err := h.c.Receive(scripted.Concat(frames...))
	h.pump()
	return err
}

// mustRecv is recv for frames that must not end the connection.
func (h *harness) mustRecv(frames ...[]byte) {
	h.t.Helper()
	if err := h.recv(frames...); err != nil {
		h.t.Fatalf("Receive: %v", err)
	}
}

// drainPeer discards the frames the client sent so far.
func (h *harness) drainPeer() {
	h.t.Helper()
	for {
		if _, ok := h.peer.TryNext(); !ok {
			break
		}
	}
	h.peer.ExpectEmpty()
}

// tick advances the fake clock by d and calls Tick.
func (h *harness) tick(d time.Duration) {
	h.now = h.now.Add(d)
	h.c.Tick(h.now)
	h.pump()
}

// next returns the oldest event not yet looked at; there must be one.
func (h *harness) next() Event {
	h.t.Helper()
	if len(h.events) == 0 {
		h.t.Fatalf("want an event, the engine queued none")
	}
	e := h.events[0]
	h.events = h.events[1:]
	return e
}

// expect returns the next event, which must be of kind k.
func (h *harness) expect(k EventKind) Event {
	h.t.Helper()
	e := h.next()
	if e.Kind != k {
		h.t.Fatalf("got event %s, want %s: %s", e.Kind, k, describe(e))
	}
	return e
}

// noEvents checks that no event is waiting.
func (h *harness) noEvents() {
	h.t.Helper()
	if len(h.events) > 0 {
		h.t.Fatalf("unexpected events: %s", describeAll(h.events))
	}
}

// expectReply returns the next event, an EventReply to req on channel ch
// without error, and its method.
func (h *harness) expectReply(ch uint16, req RequestID) wire.Method {
	h.t.Helper()
	e := h.expect(EventReply)
	if e.Channel != ch || e.Request != req || e.Err != nil || e.Method == nil {
		h.t.Fatalf("got %s, want a reply to request %d on channel %d", describe(e), req, ch)
	}
	return e.Method
}

// expectFailed checks that the next event fails request req on channel ch
// and returns its error.
func (h *harness) expectFailed(ch uint16, req RequestID) error {
	h.t.Helper()
	e := h.expect(EventReply)
	if e.Channel != ch || e.Request != req || e.Err == nil || e.Method != nil {
		h.t.Fatalf("got %s, want request %d on channel %d failed", describe(e), req, ch)
	}
	return e.Err
}

// expectClosed checks that EventClosed is the next and last event and
// returns its error.
func (h *harness) expectClosed() error {
	h.t.Helper()
	e := h.expect(EventClosed)
	h.noEvents()
	if !h.c.IsClosed() || h.c.IsOpen() {
		h.t.Fatalf("after EventClosed: IsClosed %v, IsOpen %v", h.c.IsClosed(), h.c.IsOpen())
	}
	if h.c.Err() != e.Err {
		h.t.Fatalf("Err() = %v, EventClosed had %v", h.c.Err(), e.Err)
	}
	return e.Err
}

// expectProtocolClose checks that the engine sent connection.close with
// code and closed with the same *Error (client-sent, connection-level).
func (h *harness) expectProtocolClose(code wire.ReplyCode) *Error {
	h.t.Helper()
	m := h.peer.NextMethod(0)
	cl, ok := m.(*wire.ConnectionClose)
	if !ok || cl.ReplyCode != uint16(code) {
		h.t.Fatalf("client sent %+v, want connection.close %d", m, code)
	}
	h.peer.ExpectEmpty()
	err := h.expectClosed()
	var e *Error
	if !errors.As(err, &e) || e.Code != code || !e.Conn || e.Server || e.Text != cl.ReplyText {
		h.t.Fatalf("EventClosed error %#v, want a client-sent *Error with code %d and text %q", err, code, cl.ReplyText)
	}
	return e
}

// serverStart is a RabbitMQ-like connection.start.
func serverStart(mechanisms string) *wire.ConnectionStart {
	return &wire.ConnectionStart{
		VersionMajor: 0, VersionMinor: 9,
		ServerProperties: wire.Table{
			"product": "RabbitMQ",
			"version": "3.13.0",
			"capabilities": wire.Table{
				"publisher_confirms":         true,
				"exchange_exchange_bindings": true,
				"basic.nack":                 true,
				"consumer_cancel_notify":     true,
				"connection.blocked":         true,
				"per_consumer_qos":           false,
			},
		},
		Mechanisms: mechanisms,
		Locales:    "en_US",
	}
}

// open runs a complete handshake (PLAIN guest/guest unless cfg says
// otherwise) with the server proposing tune, and returns the harness with
// the client's handshake frames and EventOpen consumed.
func open(t testing.TB, cfg Config, tune wire.ConnectionTune) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	h.mustRecv(scripted.Method(0, serverStart("PLAIN AMQPLAIN")))
	if _, ok := h.peer.NextMethod(0).(*wire.ConnectionStartOk); !ok {
		t.Fatalf("want connection.start-ok")
	}
	h.mustRecv(scripted.Method(0, &tune))
	if _, ok := h.peer.NextMethod(0).(*wire.ConnectionTuneOk); !ok {
		t.Fatalf("want connection.tune-ok")
	}
	vhost := cfg.Vhost
	if vhost == "" {
		vhost = "/"
	}
	h.peer.ExpectMethod(0, &wire.ConnectionOpen{VirtualHost: vhost})
	h.mustRecv(scripted.Method(0, &wire.ConnectionOpenOk{}))
	h.expect(EventOpen)
	h.noEvents()
	h.peer.ExpectEmpty()
	if fm := h.c.Tuning().FrameMax; fm != 0 {
		h.peer.SetMaxFrameSize(fm)
	}
	return h
}

// rabbitTune is RabbitMQ's default proposal with heartbeats off, so that
// tests not about heartbeats need no clock.
var rabbitTune = wire.ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 0}

// openDefault is open with a zero Config and rabbitTune.
func openDefault(t testing.TB) *harness {
	t.Helper()
	return open(t, Config{}, rabbitTune)
}

// openChannel opens a channel and completes its open, returning its id.
func (h *harness) openChannel() uint16 {
	h.t.Helper()
	id, req, err := h.c.OpenChannel()
	if err != nil {
		h.t.Fatalf("OpenChannel: %v", err)
	}
	h.pump()
	h.peer.ExpectMethod(id, &wire.ChannelOpen{})
	h.mustRecv(scripted.Method(id, &wire.ChannelOpenOk{}))
	if _, ok := h.expectReply(id, req).(*wire.ChannelOpenOk); !ok {
		h.t.Fatalf("channel.open answered with something else")
	}
	return id
}

// call makes a Call and returns its request id.
func (h *harness) call(ch uint16, m wire.Method) RequestID {
	h.t.Helper()
	req, err := h.c.Call(ch, m)
	if err != nil {
		h.t.Fatalf("Call(%d, %s): %v", ch, m.ID(), err)
	}
	h.pump()
	return req
}

// rpc makes a Call, checks it went out, answers it with reply and checks
// the EventReply.
func (h *harness) rpc(ch uint16, m, reply wire.Method) {
	h.t.Helper()
	req := h.call(ch, m)
	h.peer.ExpectMethod(ch, m)
	h.mustRecv(scripted.Method(ch, reply))
	if got := h.expectReply(ch, req); got.ID() != reply.ID() {
		h.t.Fatalf("reply %s, want %s", got.ID(), reply.ID())
	}
}

// confirmChannel opens a channel and puts it in confirm mode.
func (h *harness) confirmChannel() uint16 {
	h.t.Helper()
	ch := h.openChannel()
	h.rpc(ch, &wire.ConfirmSelect{}, &wire.ConfirmSelectOk{})
	return ch
}

// consume starts consumer tag on channel ch.
func (h *harness) consume(ch uint16, queue, tag string) {
	h.t.Helper()
	h.rpc(ch, &wire.BasicConsume{Queue: queue, ConsumerTag: tag}, &wire.BasicConsumeOk{ConsumerTag: tag})
}

func describe(e Event) string {
	s := fmt.Sprintf("%s ch=%d", e.Kind, e.Channel)
	if e.Request != 0 {
		s += fmt.Sprintf(" req=%d", e.Request)
	}
	if e.Method != nil {
		s += fmt.Sprintf(" method=%s", e.Method.ID())
	}
	if e.Err != nil {
		s += fmt.Sprintf(" err=%v", e.Err)
	}
	return s
}

func describeAll(es []Event) string {
	s := ""
	for _, e := range es {
		s += "\n\t" + describe(e)
	}
	return s
}
