package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

func TestChannelOpenClose(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	if ch != 1 {
		t.Fatalf("first channel id %d, want 1", ch)
	}
	req, err := h.c.CloseChannel(ch)
	if err != nil {
		t.Fatal(err)
	}
	h.pump()
	h.peer.ExpectMethod(ch, &wire.ChannelClose{ReplyCode: 200})
	if _, err := h.c.CloseChannel(ch); !errors.Is(err, ErrChannelClosed) {
		t.Errorf("second CloseChannel: %v, want ErrChannelClosed", err)
	}
	if _, err := h.c.Call(ch, &wire.QueueDeclare{}); !errors.Is(err, ErrChannelClosed) {
		t.Errorf("Call on a closing channel: %v, want ErrChannelClosed", err)
	}
	h.noEvents()
	h.mustRecv(scripted.Method(ch, &wire.ChannelCloseOk{}))
	if _, ok := h.expectReply(ch, req).(*wire.ChannelCloseOk); !ok {
		t.Fatal("close answered with something else")
	}
	e := h.expect(EventChannelClosed)
	if e.Channel != ch || e.Err != nil {
		t.Fatalf("EventChannelClosed %s", describe(e))
	}
	h.noEvents()
	h.peer.ExpectEmpty()
	if _, err := h.c.Call(ch, &wire.QueueDeclare{}); !errors.Is(err, ErrBadChannel) {
		t.Errorf("Call on a closed channel: %v, want ErrBadChannel", err)
	}
	// A frame on the closed channel is a connection error.
	h.recv(scripted.Method(ch, &wire.BasicQosOk{}))
	h.expectProtocolClose(wire.ReplyChannelError)
}

func TestServerClosesChannel(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.mustRecv(scripted.Method(ch, &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED - x", ClassID: 50, MethodID: 10}))
	h.peer.ExpectMethod(ch, &wire.ChannelCloseOk{})
	h.peer.ExpectEmpty()
	e := h.expect(EventChannelClosed)
	var ce *Error
	if e.Channel != ch || !errors.As(e.Err, &ce) || ce.Code != 406 || ce.Conn || !ce.Server ||
		ce.Channel != ch || ce.Method != wire.MethodQueueDeclare {
		t.Fatalf("EventChannelClosed %s (%#v)", describe(e), ce)
	}
	if !errors.Is(e.Err, ErrChannelClosed) || errors.Is(e.Err, ErrClosed) {
		t.Error("a channel error should match ErrChannelClosed and not ErrClosed")
	}
	h.noEvents()
	if !h.c.IsOpen() {
		t.Fatal("the connection closed with the channel")
	}
	// Allocation goes on after the last id handed out; with channel_max 1
	// the freed id comes back.
	if again := h.openChannel(); again != 2 {
		t.Fatalf("next id %d, want 2", again)
	}
	h2 := open(t, Config{}, wire.ConnectionTune{ChannelMax: 1})
	one := h2.openChannel()
	h2.mustRecv(scripted.Method(one, &wire.ChannelClose{ReplyCode: 406}))
	h2.peer.ExpectMethod(one, &wire.ChannelCloseOk{})
	h2.expect(EventChannelClosed)
	if again := h2.openChannel(); again != one {
		t.Fatalf("id after the server's close %d, want %d", again, one)
	}
}

func TestChannelIDAllocation(t *testing.T) {
	h := open(t, Config{}, wire.ConnectionTune{ChannelMax: 3})
	if got := h.c.Tuning().ChannelMax; got != 3 {
		t.Fatalf("ChannelMax = %d", got)
	}
	for want := uint16(1); want <= 3; want++ {
		if got := h.openChannel(); got != want {
			t.Fatalf("channel id %d, want %d", got, want)
		}
	}
	if _, _, err := h.c.OpenChannel(); !errors.Is(err, ErrNoFreeChannel) {
		t.Fatalf("fourth OpenChannel: %v, want ErrNoFreeChannel", err)
	}
	// Closing channel 2 frees its id only after close-ok.
	req, _ := h.c.CloseChannel(2)
	h.pump()
	h.peer.ExpectMethod(2, &wire.ChannelClose{ReplyCode: 200})
	if _, _, err := h.c.OpenChannel(); !errors.Is(err, ErrNoFreeChannel) {
		t.Fatalf("OpenChannel before close-ok: %v, want ErrNoFreeChannel", err)
	}
	h.mustRecv(scripted.Method(2, &wire.ChannelCloseOk{}))
	h.expectReply(2, req)
	h.expect(EventChannelClosed)
	if got := h.openChannel(); got != 2 {
		t.Fatalf("reused id %d, want 2", got)
	}
	if _, _, err := h.c.OpenChannel(); !errors.Is(err, ErrNoFreeChannel) {
		t.Fatalf("OpenChannel with all taken: %v", err)
	}
	// A server close frees an id too; allocation continues after the last
	// id handed out, wrapping around.
	h.mustRecv(scripted.Method(1, &wire.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND"}))
	h.peer.ExpectMethod(1, &wire.ChannelCloseOk{})
	h.expect(EventChannelClosed)
	if got := h.openChannel(); got != 1 {
		t.Fatalf("id after server close %d, want 1", got)
	}
}

func TestChannelIDsRoundRobin(t *testing.T) {
	h := openDefault(t)
	a := h.openChannel()
	b := h.openChannel()
	req, _ := h.c.CloseChannel(a)
	h.pump()
	h.peer.NextMethod(a)
	h.mustRecv(scripted.Method(a, &wire.ChannelCloseOk{}))
	h.expectReply(a, req)
	h.expect(EventChannelClosed)
	// The next id is after the last one handed out, not the freed one.
	if got := h.openChannel(); got != b+1 {
		t.Fatalf("id %d, want %d", got, b+1)
	}
}

func TestChannelUsableBeforeOpenOk(t *testing.T) {
	h := openDefault(t)
	id, openReq, err := h.c.OpenChannel()
	if err != nil {
		t.Fatal(err)
	}
	declReq := h.call(id, &wire.QueueDeclare{Queue: "q"})
	if _, err := h.c.Publish(id, "", "q", false, false, nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	h.pump()
	h.peer.ExpectMethod(id, &wire.ChannelOpen{})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(id, &wire.ChannelOpenOk{}))
	h.expectReply(id, openReq)
	h.peer.ExpectMethod(id, &wire.QueueDeclare{Queue: "q"})
	h.peer.ExpectEmpty() // the publish keeps its place behind the declare
	h.mustRecv(scripted.Method(id, &wire.QueueDeclareOk{Queue: "q"}))
	h.expectReply(id, declReq)
	h.peer.ExpectMessage(id, &wire.BasicPublish{RoutingKey: "q"}, nil, []byte("x"), 0)
	h.peer.ExpectEmpty()
}

func TestSynchronousOrdering(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	other := h.openChannel()

	decl := &wire.QueueDeclare{Queue: "q1"}
	bind := &wire.QueueBind{Queue: "q1", Exchange: "x", RoutingKey: "k"}
	get := &wire.BasicGet{Queue: "q1"}
	get2 := &wire.BasicGet{Queue: "q1"}
	r1 := h.call(ch, decl)
	if err := h.c.Ack(ch, 0, true); err != nil { // goes out at once: nothing queued
		t.Fatal(err)
	}
	r2 := h.call(ch, bind)
	if _, err := h.c.Publish(ch, "x", "k", false, false, nil, []byte("p1")); err != nil {
		t.Fatal(err)
	}
	r3 := h.call(ch, get)
	if err := h.c.Send(ch, &wire.BasicQos{}); !errors.Is(err, ErrNotSynchronous) {
		t.Fatalf("Send(basic.qos): %v, want ErrNotSynchronous", err)
	}
	if _, err := h.c.Publish(ch, "x", "k", false, false, nil, []byte("p2")); err != nil {
		t.Fatal(err)
	}
	r4 := h.call(ch, get2)
	if !(r1 < r2 && r2 < r3 && r3 < r4) {
		t.Fatalf("request ids not increasing: %d %d %d %d", r1, r2, r3, r4)
	}
	h.pump()
	// Only the first request (and the ack, sent before anything queued)
	// is on the wire.
	h.peer.ExpectMethod(ch, decl)
	h.peer.ExpectMethod(ch, &wire.BasicAck{Multiple: true})
	h.peer.ExpectEmpty()

	// Another channel is not held up.
	h.rpc(other, &wire.BasicQos{PrefetchCount: 10}, &wire.BasicQosOk{})

	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "q1", MessageCount: 3}))
	if m := h.expectReply(ch, r1).(*wire.QueueDeclareOk); m.MessageCount != 3 {
		t.Errorf("declare-ok %+v", m)
	}
	h.peer.ExpectMethod(ch, bind)
	h.peer.ExpectEmpty()

	h.mustRecv(scripted.Method(ch, &wire.QueueBindOk{}))
	h.expectReply(ch, r2)
	h.peer.ExpectMessage(ch, &wire.BasicPublish{Exchange: "x", RoutingKey: "k"}, nil, []byte("p1"), 0)
	h.peer.ExpectMethod(ch, get)
	h.peer.ExpectEmpty()

	// get-ok: the next request goes out as soon as the method arrives; the
	// reply event waits for the body.
	h.mustRecv(scripted.Method(ch, &wire.BasicGetOk{DeliveryTag: 1, Exchange: "x", RoutingKey: "k", MessageCount: 5}))
	h.noEvents()
	h.peer.ExpectMessage(ch, &wire.BasicPublish{Exchange: "x", RoutingKey: "k"}, nil, []byte("p2"), 0)
	h.peer.ExpectMethod(ch, get2)
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Header(ch, 5, &wire.Properties{ContentType: "text/plain"}), scripted.Body(ch, []byte("hello")))
	e := h.expect(EventGetOk)
	if e.Request != r3 || e.Channel != ch || e.Message.DeliveryTag != 1 || e.Message.MessageCount != 5 ||
		e.Message.RoutingKey != "k" || string(e.Message.Body) != "hello" || e.Message.Properties.ContentType != "text/plain" {
		t.Fatalf("get-ok event %s %+v", describe(e), e.Message)
	}

	h.mustRecv(scripted.Method(ch, &wire.BasicGetEmpty{}))
	if _, ok := h.expectReply(ch, r4).(*wire.BasicGetEmpty); !ok {
		t.Fatal("get-empty not reported as *wire.BasicGetEmpty")
	}
	h.noEvents()
	h.peer.ExpectEmpty()
}

func TestAsyncOrderBehindQueuedRequests(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.consume(ch, "q", "c1")
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1}, nil, []byte("a"), 0),
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 2}, nil, []byte("b"), 0),
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 3}, nil, []byte("c"), 0))
	for i := 0; i < 3; i++ {
		h.expect(EventDelivery)
	}
	r1 := h.call(ch, &wire.QueueDeclare{Queue: "a"})
	r2 := h.call(ch, &wire.QueueDeclare{Queue: "b"})
	must(t, h.c.Ack(ch, 1, false))
	must(t, h.c.Nack(ch, 2, false, true))
	must(t, h.c.Reject(ch, 3, false))
	must(t, h.c.Send(ch, &wire.BasicRecoverAsync{Requeue: true}))
	h.pump()
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "a"})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "a"}))
	h.expectReply(ch, r1)
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "b"})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "b"}))
	h.expectReply(ch, r2)
	h.peer.ExpectMethod(ch, &wire.BasicAck{DeliveryTag: 1})
	h.peer.ExpectMethod(ch, &wire.BasicNack{DeliveryTag: 2, Requeue: true})
	h.peer.ExpectMethod(ch, &wire.BasicReject{DeliveryTag: 3})
	h.peer.ExpectMethod(ch, &wire.BasicRecoverAsync{Requeue: true})
	h.peer.ExpectEmpty()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestMismatchedReply(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness, ch uint16)
		reply wire.Method
	}{
		{"wrong reply", func(h *harness, ch uint16) {
			h.call(ch, &wire.QueueDeclare{Queue: "q"})
			h.peer.NextMethod(ch)
		}, &wire.ExchangeDeclareOk{}},
		{"nothing pending", func(h *harness, ch uint16) {}, &wire.QueueDeclareOk{}},
		{"close-ok without close", func(h *harness, ch uint16) {}, &wire.ChannelCloseOk{}},
		{"open-ok twice", func(h *harness, ch uint16) {}, &wire.ChannelOpenOk{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := openDefault(t)
			ch := h.openChannel()
			other := h.openChannel()
			otherReq := h.call(other, &wire.QueueDeclare{Queue: "other"})
			h.peer.NextMethod(other)
			tc.setup(h, ch)
			h.recv(scripted.Method(ch, tc.reply))
			cl := h.peer.NextMethod(0).(*wire.ConnectionClose)
			if cl.ReplyCode != uint16(wire.ReplyCommandInvalid) || !strings.Contains(cl.ReplyText, tc.reply.ID().String()) {
				t.Fatalf("connection.close %d %q, want 503 naming %s", cl.ReplyCode, cl.ReplyText, tc.reply.ID())
			}
			// Every pending request fails before EventClosed.
			for len(h.events) > 1 {
				e := h.expect(EventReply)
				if e.Err == nil {
					t.Fatalf("pending request not failed: %s", describe(e))
				}
				if e.Request == otherReq && !errors.Is(e.Err, ErrClosed) {
					t.Errorf("other channel's request failed with %v", e.Err)
				}
			}
			err := h.expectClosed()
			var e *Error
			if !errors.As(err, &e) || e.Code != wire.ReplyCommandInvalid || e.Server || !e.Conn {
				t.Fatalf("err = %#v", err)
			}
		})
	}
}

func TestChannelErrorFailsPending(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	other := h.openChannel()
	r1 := h.call(ch, &wire.QueueDeclare{Queue: "q", Passive: true})
	r2 := h.call(ch, &wire.QueueBind{Queue: "q"})
	_, err := h.c.Publish(ch, "", "q", false, false, nil, []byte("dropped"))
	must(t, err)
	r3 := h.call(ch, &wire.BasicGet{Queue: "q"})
	otherReq := h.call(other, &wire.QueueDeclare{Queue: "fine"})
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "q", Passive: true})
	h.peer.ExpectMethod(other, &wire.QueueDeclare{Queue: "fine"})
	h.peer.ExpectEmpty()

	h.mustRecv(scripted.Method(ch, &wire.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no queue 'q'", ClassID: 50, MethodID: 10}))
	h.peer.ExpectMethod(ch, &wire.ChannelCloseOk{})
	h.peer.ExpectEmpty() // the queued bind, publish and get are dropped
	for _, req := range []RequestID{r1, r2, r3} {
		err := h.expectFailed(ch, req)
		var e *Error
		if !errors.As(err, &e) || e.Conn || !e.Server || e.Code != 404 || e.Channel != ch {
			t.Fatalf("request %d failed with %#v", req, err)
		}
		if !errors.Is(err, ReplyCodeError(404)) || errors.Is(err, ReplyCodeError(406)) {
			t.Errorf("errors.Is by reply code does not work")
		}
	}
	e := h.expect(EventChannelClosed)
	if e.Channel != ch || e.Err == nil {
		t.Fatalf("%s", describe(e))
	}
	h.noEvents()
	// The other channel goes on.
	h.mustRecv(scripted.Method(other, &wire.QueueDeclareOk{Queue: "fine"}))
	h.expectReply(other, otherReq)
	if _, err := h.c.Publish(ch, "", "q", false, false, nil, nil); !errors.Is(err, ErrBadChannel) {
		t.Errorf("Publish on the closed channel: %v", err)
	}
}

func TestCloseChannelQueuedBehindRequests(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	r1 := h.call(ch, &wire.QueueDeclare{Queue: "q"})
	closeReq, err := h.c.CloseChannel(ch)
	must(t, err)
	h.pump()
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "q"})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "q"}))
	h.expectReply(ch, r1)
	h.peer.ExpectMethod(ch, &wire.ChannelClose{ReplyCode: 200})
	// A delivery that crossed the close is discarded with its content.
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 9}, nil, []byte("late"), 0),
		scripted.Method(ch, &wire.ChannelCloseOk{}))
	h.expectReply(ch, closeReq)
	h.expect(EventChannelClosed)
	h.noEvents()
}

func TestChannelCloseCrossing(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	req, _ := h.c.CloseChannel(ch)
	h.pump()
	h.peer.ExpectMethod(ch, &wire.ChannelClose{ReplyCode: 200})
	// The server closed the channel at the same time.
	h.mustRecv(scripted.Method(ch, &wire.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED"}))
	h.peer.ExpectMethod(ch, &wire.ChannelCloseOk{})
	h.noEvents()
	h.mustRecv(scripted.Method(ch, &wire.ChannelCloseOk{}))
	h.expectReply(ch, req)
	e := h.expect(EventChannelClosed)
	var ce *Error
	if !errors.As(e.Err, &ce) || ce.Code != 406 {
		t.Fatalf("EventChannelClosed %s, want the server's 406", describe(e))
	}
}

func TestGetOkAnsweredWhenCloseQueued(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	getReq := h.call(ch, &wire.BasicGet{Queue: "q", NoAck: true})
	closeReq, err := h.c.CloseChannel(ch)
	must(t, err)
	h.pump()
	h.peer.ExpectMethod(ch, &wire.BasicGet{Queue: "q", NoAck: true})
	h.peer.ExpectEmpty()
	// get-ok sends the queued close out; the message still answers the get.
	h.mustRecv(scripted.Method(ch, &wire.BasicGetOk{DeliveryTag: 1}))
	h.peer.ExpectMethod(ch, &wire.ChannelClose{ReplyCode: 200})
	h.mustRecv(scripted.Header(ch, 3, nil), scripted.Body(ch, []byte("msg")))
	e := h.expect(EventGetOk)
	if e.Request != getReq || string(e.Message.Body) != "msg" {
		t.Fatalf("%s body %q", describe(e), e.Message.Body)
	}
	h.mustRecv(scripted.Method(ch, &wire.ChannelCloseOk{}))
	h.expectReply(ch, closeReq)
	h.expect(EventChannelClosed)
	h.noEvents()
}

func TestCallAndSendValidation(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	tests := []struct {
		name string
		err  error
		got  error
	}{
		{"Call async", ErrNotSynchronous, callErr(h.c.Call(ch, &wire.BasicAck{}))},
		{"Call no-wait", ErrNotSynchronous, callErr(h.c.Call(ch, &wire.QueueDeclare{NoWait: true}))},
		{"Call server method", ErrNotClientMethod, callErr(h.c.Call(ch, &wire.BasicDeliver{}))},
		{"Call connection method", ErrNotClientMethod, callErr(h.c.Call(ch, &wire.ConnectionUpdateSecret{}))},
		{"Call channel.open", ErrNotClientMethod, callErr(h.c.Call(ch, &wire.ChannelOpen{}))},
		{"Call channel.close", ErrNotClientMethod, callErr(h.c.Call(ch, &wire.ChannelClose{}))},
		{"Call channel 0", ErrBadChannel, callErr(h.c.Call(0, &wire.QueueDeclare{}))},
		{"Call unknown channel", ErrBadChannel, callErr(h.c.Call(99, &wire.QueueDeclare{}))},
		{"Send sync", ErrNotSynchronous, h.c.Send(ch, &wire.QueueDeclare{})},
		{"Send publish", ErrNotClientMethod, h.c.Send(ch, &wire.BasicPublish{})},
		{"Send server method", ErrNotClientMethod, h.c.Send(ch, &wire.BasicReturn{})},
		{"Send channel.close", ErrNotClientMethod, h.c.Send(ch, &wire.ChannelClose{})},
		{"Send consume no-wait without tag", ErrNotSynchronous, h.c.Send(ch, &wire.BasicConsume{NoWait: true})},
		{"Send unknown channel", ErrBadChannel, h.c.Send(7, &wire.BasicRecoverAsync{})},
		{"Ack unknown channel", ErrBadChannel, h.c.Ack(7, 1, false)},
		{"CloseChannel 0", ErrBadChannel, callErr(h.c.CloseChannel(0))},
	}
	for _, tc := range tests {
		if !errors.Is(tc.got, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.err)
		}
	}
	h.pump()
	h.peer.ExpectEmpty()
	h.noEvents()

	// A table that cannot be encoded fails the call, queued or not.
	bad := wire.Table{"x": struct{}{}}
	if _, err := h.c.Call(ch, &wire.QueueDeclare{Arguments: bad}); !errors.Is(err, wire.ErrUnsupportedValue) {
		t.Errorf("Call with a bad table: %v", err)
	}
	if err := h.c.Send(ch, &wire.QueueDeclare{NoWait: true, Arguments: bad}); !errors.Is(err, wire.ErrUnsupportedValue) {
		t.Errorf("Send with a bad table: %v", err)
	}
	h.call(ch, &wire.QueueDeclare{Queue: "ok"})
	h.call(ch, &wire.QueueDeclare{Queue: "ok2"})
	if _, err := h.c.Call(ch, &wire.QueueDeclare{Arguments: bad}); !errors.Is(err, wire.ErrUnsupportedValue) {
		t.Errorf("queued Call with a bad table: %v", err)
	}
	if err := h.c.Send(ch, &wire.QueueDeclare{NoWait: true, Arguments: bad}); !errors.Is(err, wire.ErrUnsupportedValue) {
		t.Errorf("queued Send with a bad table: %v", err)
	}
	h.pump()
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "ok"})
	h.peer.ExpectEmpty()
	if err := h.c.Send(ch, &wire.ExchangeDeclare{Exchange: "e", NoWait: true}); err != nil {
		t.Fatal(err)
	}
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "ok"}))
	h.next()
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "ok2"})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "ok2"}))
	h.next()
	h.peer.ExpectMethod(ch, &wire.ExchangeDeclare{Exchange: "e", NoWait: true})
}

func callErr(_ RequestID, err error) error { return err }

func TestNoWaitVariantsAreAsync(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	methods := []wire.Method{
		&wire.ExchangeDeclare{Exchange: "x", NoWait: true},
		&wire.ExchangeDelete{Exchange: "x", NoWait: true},
		&wire.ExchangeBind{Destination: "a", Source: "b", NoWait: true},
		&wire.ExchangeUnbind{Destination: "a", Source: "b", NoWait: true},
		&wire.QueueDeclare{Queue: "q", NoWait: true},
		&wire.QueueBind{Queue: "q", NoWait: true},
		&wire.QueuePurge{Queue: "q", NoWait: true},
		&wire.QueueDelete{Queue: "q", NoWait: true},
		&wire.BasicConsume{Queue: "q", ConsumerTag: "t", NoWait: true},
		&wire.BasicCancel{ConsumerTag: "t", NoWait: true},
		&wire.ConfirmSelect{NoWait: true},
	}
	for _, m := range methods {
		if _, err := h.c.Call(ch, m); !errors.Is(err, ErrNotSynchronous) {
			t.Errorf("Call(%s no-wait): %v, want ErrNotSynchronous", m.ID(), err)
		}
		if err := h.c.Send(ch, m); err != nil {
			t.Errorf("Send(%s no-wait): %v", m.ID(), err)
		}
	}
	h.pump()
	for _, m := range methods {
		h.peer.ExpectMethod(ch, m)
	}
	h.peer.ExpectEmpty()
	h.noEvents()
	// confirm.select no-wait turned on tag counting.
	tag, err := h.c.Publish(ch, "", "q", false, false, nil, nil)
	if err != nil || tag != 1 {
		t.Fatalf("Publish after select no-wait: tag %d, %v", tag, err)
	}
}

func TestConsumers(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	// Server-generated tag bound by consume-ok.
	req := h.call(ch, &wire.BasicConsume{Queue: "q"})
	h.peer.ExpectMethod(ch, &wire.BasicConsume{Queue: "q"})
	// A delivery before consume-ok would be for an unknown tag.
	h.mustRecv(scripted.Method(ch, &wire.BasicConsumeOk{ConsumerTag: "amq.ctag-1"}))
	h.expectReply(ch, req)
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "amq.ctag-1", DeliveryTag: 1, Redelivered: true, Exchange: "x", RoutingKey: "rk"},
		&wire.Properties{DeliveryMode: 2, Headers: wire.Table{"h": int32(1)}}, []byte("payload"), 0))
	e := h.expect(EventDelivery)
	m := e.Message
	if e.Channel != ch || m.ConsumerTag != "amq.ctag-1" || m.DeliveryTag != 1 || !m.Redelivered || m.Exchange != "x" ||
		m.RoutingKey != "rk" || string(m.Body) != "payload" || m.Properties.DeliveryMode != 2 || m.Properties.Headers["h"] != int32(1) {
		t.Fatalf("delivery %+v", m)
	}

	// Orphan delivery.
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "ghost", DeliveryTag: 2}, nil, []byte("?"), 0))
	if e := h.expect(EventOrphanDelivery); e.Message.ConsumerTag != "ghost" || e.Message.DeliveryTag != 2 {
		t.Fatalf("orphan %+v", e.Message)
	}

	// Server cancel without no-wait: cancel-ok goes back.
	h.mustRecv(scripted.Method(ch, &wire.BasicCancel{ConsumerTag: "amq.ctag-1"}))
	h.peer.ExpectMethod(ch, &wire.BasicCancelOk{ConsumerTag: "amq.ctag-1"})
	if e := h.expect(EventCancel); e.ConsumerTag != "amq.ctag-1" || e.Channel != ch {
		t.Fatalf("cancel %s %q", describe(e), e.ConsumerTag)
	}
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "amq.ctag-1", DeliveryTag: 3}, nil, []byte("late"), 0))
	h.expect(EventOrphanDelivery)

	// Server cancel with no-wait: nothing goes back.
	h.consume(ch, "q", "mine")
	h.mustRecv(scripted.Method(ch, &wire.BasicCancel{ConsumerTag: "mine", NoWait: true}))
	h.peer.ExpectEmpty()
	h.expect(EventCancel)

	// Client cancel: cancel-ok ends the consumer.
	h.consume(ch, "q", "c2")
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c2", DeliveryTag: 4}, nil, nil, 0))
	h.expect(EventDelivery)
	req = h.call(ch, &wire.BasicCancel{ConsumerTag: "c2"})
	h.peer.ExpectMethod(ch, &wire.BasicCancel{ConsumerTag: "c2"})
	// Deliveries in flight before cancel-ok still belong to the consumer.
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c2", DeliveryTag: 5}, nil, nil, 0))
	h.expect(EventDelivery)
	h.mustRecv(scripted.Method(ch, &wire.BasicCancelOk{ConsumerTag: "c2"}))
	h.expectReply(ch, req)
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c2", DeliveryTag: 6}, nil, nil, 0))
	h.expect(EventOrphanDelivery)

	// Send no-wait consume and cancel register and forget at once.
	must(t, h.c.Send(ch, &wire.BasicConsume{Queue: "q", ConsumerTag: "nw", NoWait: true}))
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "nw", DeliveryTag: 7}, nil, nil, 0))
	h.expect(EventDelivery)
	must(t, h.c.Send(ch, &wire.BasicCancel{ConsumerTag: "nw", NoWait: true}))
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "nw", DeliveryTag: 8}, nil, nil, 0))
	h.expect(EventOrphanDelivery)
	h.noEvents()
}

func TestAckUnknownTag(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	if err := h.c.Ack(ch, 1, false); !errors.Is(err, ErrUnknownTag) {
		t.Fatalf("Ack before any delivery: %v, want ErrUnknownTag", err)
	}
	h.consume(ch, "q", "c")
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, nil, nil, 0),
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2}, nil, nil, 0))
	h.expect(EventDelivery)
	h.expect(EventDelivery)
	for _, err := range []error{h.c.Ack(ch, 3, false), h.c.Nack(ch, 3, true, false), h.c.Reject(ch, 99, true)} {
		if !errors.Is(err, ErrUnknownTag) {
			t.Errorf("settling tag beyond the last delivered: %v, want ErrUnknownTag", err)
		}
	}
	h.pump()
	h.peer.ExpectEmpty()
	must(t, h.c.Ack(ch, 2, true))
	h.pump()
	h.peer.ExpectMethod(ch, &wire.BasicAck{DeliveryTag: 2, Multiple: true})
	// get-ok tags count as delivered too.
	h.call(ch, &wire.BasicGet{Queue: "q"})
	h.peer.NextMethod(ch)
	h.mustRecv(scripted.Message(ch, &wire.BasicGetOk{DeliveryTag: 3}, nil, []byte("g"), 0))
	h.expect(EventGetOk)
	must(t, h.c.Reject(ch, 3, false))
}

func TestFlowAndBlocked(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.mustRecv(scripted.Method(ch, &wire.ChannelFlow{Active: false}))
	h.peer.ExpectMethod(ch, &wire.ChannelFlowOk{Active: false})
	if e := h.expect(EventFlow); e.Active || e.Channel != ch {
		t.Fatalf("%s active=%v", describe(e), e.Active)
	}
	h.mustRecv(scripted.Method(ch, &wire.ChannelFlow{Active: true}))
	h.peer.ExpectMethod(ch, &wire.ChannelFlowOk{Active: true})
	if e := h.expect(EventFlow); !e.Active {
		t.Fatal("flow active=false, want true")
	}
	h.mustRecv(scripted.Method(0, &wire.ConnectionBlocked{Reason: "low on memory"}))
	if e := h.expect(EventBlocked); e.Reason != "low on memory" || e.Channel != 0 {
		t.Fatalf("%s reason %q", describe(e), e.Reason)
	}
	h.mustRecv(scripted.Method(0, &wire.ConnectionUnblocked{}))
	h.expect(EventUnblocked)
	h.noEvents()
	h.peer.ExpectEmpty()
}

func TestUpdateSecret(t *testing.T) {
	h := openDefault(t)
	r1, err := h.c.UpdateSecret("token-2", "refresh")
	must(t, err)
	r2, err := h.c.UpdateSecret("token-3", "refresh again")
	must(t, err)
	h.pump()
	h.peer.ExpectMethod(0, &wire.ConnectionUpdateSecret{NewSecret: "token-2", Reason: "refresh"})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(0, &wire.ConnectionUpdateSecretOk{}))
	if _, ok := h.expectReply(0, r1).(*wire.ConnectionUpdateSecretOk); !ok {
		t.Fatal("wrong reply")
	}
	h.peer.ExpectMethod(0, &wire.ConnectionUpdateSecret{NewSecret: "token-3", Reason: "refresh again"})
	h.mustRecv(scripted.Method(0, &wire.ConnectionUpdateSecretOk{}))
	h.expectReply(0, r2)
	// An update-secret-ok nobody asked for is a protocol error.
	h.recv(scripted.Method(0, &wire.ConnectionUpdateSecretOk{}))
	h.expectProtocolClose(wire.ReplyCommandInvalid)
}

func TestUnconfirmedUnknownChannel(t *testing.T) {
	h := openDefault(t)
	if n := h.c.Unconfirmed(5); n != 0 {
		t.Fatalf("Unconfirmed(5) = %d", n)
	}
}

func TestOpenChannelID(t *testing.T) {
	h := open(t, Config{}, wire.ConnectionTune{ChannelMax: 10})
	req, err := h.c.OpenChannelID(7)
	if err != nil {
		t.Fatal(err)
	}
	h.pump()
	h.peer.ExpectMethod(7, &wire.ChannelOpen{})
	h.mustRecv(scripted.Method(7, &wire.ChannelOpenOk{}))
	h.expectReply(7, req)
	for _, id := range []uint16{0, 7, 11} {
		if _, err := h.c.OpenChannelID(id); !errors.Is(err, ErrBadChannel) {
			t.Errorf("OpenChannelID(%d): %v, want ErrBadChannel", id, err)
		}
	}
	// Automatic allocation continues after the chosen id.
	if got := h.openChannel(); got != 8 {
		t.Errorf("OpenChannel after OpenChannelID(7) = %d, want 8", got)
	}
	h.c.Close("")
	if _, err := h.c.OpenChannelID(3); !errors.Is(err, ErrClosed) {
		t.Errorf("OpenChannelID while closing: %v", err)
	}
}

func TestSetTrace(t *testing.T) {
	h := openDefault(t)
	var seen []string
	h.c.SetTrace(func(f wire.Frame) {
		seen = append(seen, f.Type.String())
	})
	ch := h.openChannel()
	h.consume(ch, "q", "c")
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, nil, []byte("x"), 0), scripted.Heartbeat())
	h.expect(EventDelivery)
	want := "method method method header body heartbeat"
	if got := strings.Join(seen, " "); got != want {
		t.Errorf("traced %q, want %q", got, want)
	}
}
