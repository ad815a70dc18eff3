package engine

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// busy opens two channels with requests pending on both (one in flight and
// one queued on the first, one in flight on the second) and an update-secret
// in flight, and returns the request ids.
func (h *harness) busy() []RequestID {
	h.t.Helper()
	a := h.openChannel()
	b := h.openChannel()
	r1 := h.call(a, &wire.QueueDeclare{Queue: "a1"})
	r2 := h.call(a, &wire.QueueDeclare{Queue: "a2"})
	r3 := h.call(b, &wire.QueueDeclare{Queue: "b1"})
	r4, err := h.c.UpdateSecret("s", "r")
	if err != nil {
		h.t.Fatal(err)
	}
	h.pump()
	h.drainPeer()
	return []RequestID{r1, r2, r3, r4}
}

// expectAllFailed checks that the next events fail exactly reqs (in any
// order) with errors satisfying check.
func (h *harness) expectAllFailed(reqs []RequestID, check func(error) bool) {
	h.t.Helper()
	want := map[RequestID]bool{}
	for _, r := range reqs {
		want[r] = true
	}
	for range reqs {
		e := h.expect(EventReply)
		if !want[e.Request] || e.Err == nil || !check(e.Err) {
			h.t.Fatalf("unexpected %s", describe(e))
		}
		delete(want, e.Request)
	}
}

func TestServerConnectionCloseWhenOpen(t *testing.T) {
	h := openDefault(t)
	reqs := h.busy()
	err := h.recv(scripted.Method(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"}))
	h.peer.ExpectMethod(0, &wire.ConnectionCloseOk{})
	h.peer.ExpectEmpty()
	isServerErr := func(err error) bool {
		var e *Error
		return errors.As(err, &e) && e.Code == 320 && e.Conn && e.Server
	}
	h.expectAllFailed(reqs, isServerErr)
	got := h.expectClosed()
	if !isServerErr(got) || err != got {
		t.Fatalf("EventClosed %v, Receive %v", got, err)
	}
	var e *Error
	errors.As(got, &e)
	if !e.Retryable() || !errors.Is(got, ErrClosed) || errors.Is(got, ErrChannelClosed) ||
		!errors.Is(got, ReplyCodeError(320)) {
		t.Errorf("error predicates wrong for %v", got)
	}
}

func TestServerConnectionCloseWhileClientCloses(t *testing.T) {
	h := openDefault(t)
	reqs := h.busy()
	h.c.Close("bye")
	h.pump()
	h.peer.ExpectMethod(0, &wire.ConnectionClose{ReplyCode: 200, ReplyText: "bye"})
	h.expectAllFailed(reqs, func(err error) bool { return err == ErrClosed })
	h.noEvents()
	h.recv(scripted.Method(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED"}))
	h.peer.ExpectMethod(0, &wire.ConnectionCloseOk{})
	h.peer.ExpectEmpty()
	err := h.expectClosed()
	var e *Error
	if !errors.As(err, &e) || e.Code != 320 || !e.Conn || !e.Server {
		t.Fatalf("EventClosed %v, want the server's *Error", err)
	}
}

func TestClientClose(t *testing.T) {
	h := openDefault(t)
	reqs := h.busy()
	h.c.Close("goodbye")
	if h.c.IsOpen() || h.c.IsClosed() {
		t.Fatal("closing: IsOpen or IsClosed")
	}
	h.pump()
	h.peer.ExpectBytes([]byte{1, 0, 0, 0, 0, 0, 18, 0, 10, 0, 50, 0, 200, 7, 'g', 'o', 'o', 'd', 'b', 'y', 'e', 0, 0, 0, 0, 0xCE})
	h.expectAllFailed(reqs, func(err error) bool { return err == ErrClosed })
	// Calls made while closing fail.
	if _, _, err := h.c.OpenChannel(); err != ErrClosed {
		t.Errorf("OpenChannel while closing: %v", err)
	}
	if _, err := h.c.UpdateSecret("a", "b"); err != ErrClosed {
		t.Errorf("UpdateSecret while closing: %v", err)
	}
	if _, err := h.c.Publish(1, "", "q", false, false, nil, nil); err != ErrClosed {
		t.Errorf("Publish while closing: %v", err)
	}
	h.c.Close("again") // no second connection.close
	h.pump()
	h.peer.ExpectEmpty()
	// Whatever the server sent before it saw the close is discarded.
	h.mustRecv(scripted.Method(1, &wire.QueueDeclareOk{Queue: "a1"}),
		scripted.Method(1, &wire.ChannelFlow{Active: false}),
		scripted.Method(0, &wire.ConnectionBlocked{Reason: "x"}),
		scripted.Heartbeat())
	h.noEvents()
	h.peer.ExpectEmpty()
	if err := h.recv(scripted.Method(0, &wire.ConnectionCloseOk{})); err != nil {
		t.Fatalf("Receive of close-ok: %v", err)
	}
	if err := h.expectClosed(); err != nil {
		t.Fatalf("EventClosed %v, want nil", err)
	}
	if err := h.c.Receive([]byte{1}); err != ErrClosed {
		t.Errorf("Receive after close: %v, want ErrClosed", err)
	}
}

func TestClientCloseDiscardsContent(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.consume(ch, "q", "c")
	// A delivery whose header arrived before Close, body after.
	h.mustRecv(scripted.Method(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}), scripted.Header(ch, 4, nil))
	h.c.Close("")
	h.pump()
	h.peer.ExpectMethod(0, &wire.ConnectionClose{ReplyCode: 200})
	h.mustRecv(scripted.Body(ch, []byte("body")),
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2}, nil, []byte("more"), 0),
		scripted.Message(ch, &wire.BasicReturn{ReplyCode: 312}, nil, []byte("ret"), 0),
		scripted.Method(0, &wire.ConnectionCloseOk{}))
	h.peer.ExpectEmpty()
	if err := h.expectClosed(); err != nil {
		t.Fatalf("EventClosed %v, want nil", err)
	}
}

func TestFail(t *testing.T) {
	t.Run("open", func(t *testing.T) {
		h := openDefault(t)
		reqs := h.busy()
		cause := errors.New("read tcp: connection reset by peer")
		h.c.Fail(cause)
		h.pump()
		h.peer.ExpectEmpty()
		h.expectAllFailed(reqs, func(err error) bool { return err == cause })
		if err := h.expectClosed(); err != cause {
			t.Fatalf("EventClosed %v", err)
		}
		if err := h.c.Receive(scripted.Heartbeat()); err != cause {
			t.Errorf("Receive after Fail: %v", err)
		}
	})
	t.Run("nil error", func(t *testing.T) {
		h := openDefault(t)
		h.c.Fail(nil)
		h.pump()
		if err := h.expectClosed(); err != ErrClosed {
			t.Fatalf("EventClosed %v, want ErrClosed", err)
		}
	})
	t.Run("while closing", func(t *testing.T) {
		h := openDefault(t)
		h.c.Close("")
		h.c.Fail(io.EOF)
		h.pump()
		h.peer.NextMethod(0)
		if err := h.expectClosed(); err != nil {
			t.Fatalf("EventClosed %v: the client asked for the close", err)
		}
	})
}

func TestCallsAfterClose(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.recv(scripted.Method(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED"}))
	h.drainPeer()
	cause := h.expectClosed()
	isCause := func(err error) bool { return err == cause }
	checks := []struct {
		name string
		err  error
	}{
		{"OpenChannel", func() error { _, _, err := h.c.OpenChannel(); return err }()},
		{"Call", callErr(h.c.Call(ch, &wire.QueueDeclare{}))},
		{"Send", h.c.Send(ch, &wire.BasicRecoverAsync{})},
		{"Publish", func() error { _, err := h.c.Publish(ch, "", "", false, false, nil, nil); return err }()},
		{"Ack", h.c.Ack(ch, 0, true)},
		{"Nack", h.c.Nack(ch, 0, true, true)},
		{"Reject", h.c.Reject(ch, 0, true)},
		{"CloseChannel", callErr(h.c.CloseChannel(ch))},
		{"UpdateSecret", callErr(h.c.UpdateSecret("a", "b"))},
		{"Receive", h.c.Receive(scripted.Heartbeat())},
	}
	for _, c := range checks {
		if !isCause(c.err) || !errors.Is(c.err, ErrClosed) {
			t.Errorf("%s after close: %v, want the close cause", c.name, c.err)
		}
	}
	h.c.Close("x")
	h.c.Fail(io.EOF)
	h.c.Tick(h.now.Add(1e12))
	h.pump()
	h.noEvents()
	h.peer.ExpectEmpty()
	if !h.c.Deadline().IsZero() {
		t.Error("deadline after close")
	}
	if _, ok := h.c.NextEvent(); ok || h.c.PendingEvents() != 0 {
		t.Error("events after EventClosed")
	}
}

func TestReceiveEmpty(t *testing.T) {
	h := openDefault(t)
	if err := h.c.Receive(nil); err != nil {
		t.Fatal(err)
	}
	h.pump()
	h.noEvents()
	h.peer.ExpectEmpty()
}

func TestSwapOutgoing(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	if _, err := h.c.Publish(ch, "", "q", false, false, nil, []byte("a")); err != nil {
		t.Fatal(err)
	}
	spare := make([]byte, 0, 64)
	got := h.c.SwapOutgoing(spare)
	if h.c.OutgoingLen() != 0 || len(got) == 0 {
		t.Fatalf("SwapOutgoing returned %d bytes, %d left", len(got), h.c.OutgoingLen())
	}
	h.peer.Write(got)
	h.peer.ExpectMessage(ch, &wire.BasicPublish{RoutingKey: "q"}, nil, []byte("a"), 0)
	// The spare buffer is used for what comes next.
	h.c.Publish(ch, "", "q", false, false, nil, []byte("b"))
	next := h.c.SwapOutgoing(nil)
	if &next[:1][0] != &spare[:1][0] {
		t.Error("SwapOutgoing did not reuse the spare buffer")
	}
	if empty := h.c.SwapOutgoing(nil); len(empty) != 0 {
		t.Errorf("second swap returned %d bytes", len(empty))
	}
	h.peer.Write(next)
	h.peer.ExpectMessage(ch, &wire.BasicPublish{RoutingKey: "q"}, nil, []byte("b"), 0)
}

func TestErrorStrings(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Code: 404, Text: "NOT_FOUND - no queue 'q'", Server: true, Channel: 3, Method: wire.MethodQueueDeclare},
			"pika: channel 3 closed by server: 404 NOT_FOUND - no queue 'q' (in queue.declare)"},
		{&Error{Code: 320, Text: "shutdown", Server: true, Conn: true},
			"pika: connection closed by server: 320 CONNECTION_FORCED - shutdown"},
		{&Error{Code: 505, Conn: true},
			"pika: connection closed by client: 505 UNEXPECTED_FRAME"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	if !(&Error{Code: 404}).Retryable() || (&Error{Code: 406}).Retryable() {
		t.Error("Retryable") // every code: TestErrorRetryableEveryReplyCode
	}
	if got := ReplyCodeError(404).Error(); got != "pika: 404 NOT_FOUND" {
		t.Errorf("ReplyCodeError.Error() = %q", got)
	}
	if errors.Is(&Error{Code: 404}, io.EOF) {
		t.Error("Is matched an unrelated error")
	}
	for k := EventOpen; k <= EventAuth; k++ {
		if s := k.String(); s == "" || strings.HasPrefix(s, "event(") {
			t.Errorf("EventKind(%d).String() = %q", k, s)
		}
	}
	if s := EventKind(200).String(); s != "event(200)" {
		t.Errorf("unknown kind String() = %q", s)
	}
	if itoa(-42) != "-42" || itoa(0) != "0" {
		t.Error("itoa")
	}
	if got := quoteBytes([]byte("a\"\\\x01")); got != `"a\x22\x5c\x01"` {
		t.Errorf("quoteBytes = %s", got)
	}
}

func TestProtocolErrorUnwraps(t *testing.T) {
	h := openDefault(t)
	h.recv([]byte{8, 0, 0, 0, 0, 0, 0, 0}) // a heartbeat with a bad frame end
	e := h.expectProtocolClose(wire.ReplyFrameError)
	if !errors.Is(e, wire.ErrBadFrameEnd) {
		t.Fatalf("%v does not unwrap to wire.ErrBadFrameEnd", e)
	}
}
