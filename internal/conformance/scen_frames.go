package conformance

import (
	"bytes"
	"strings"

	"github.com/pika-go/pika/wire"
)

// Scenarios sent as raw frames: protocol violations and the scoping of the
// errors they cause.

func frameBadEnd(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	payload := r.Frame(1, &wire.BasicQos{PrefetchCount: 1})
	payload = payload[7 : len(payload)-1]
	r.Write(frameBytes(wire.FrameMethod, 1, payload, 0x00))
	r.ExpectConnClose(wire.ReplyFrameError, "FRAME_ERROR - type 1, all octets = <<*>>: {invalid_frame_end_marker,0}")
}

func frameUnknownType(e *Env) {
	r := e.RawDial(0)
	r.Write(frameBytes(9, 0, []byte{1, 2, 3}, 0xCE))
	r.ExpectConnClose(wire.ReplyFrameError, "FRAME_ERROR - type 9, all octets = <<1,2,3>>: unknown_frame")
}

func frameTooLarge(e *Env) {
	r := e.RawDial(4096)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Write(r.Frame(1, &wire.BasicPublish{RoutingKey: q}))
	r.Write(r.Header(1, 5000))
	r.Write(frameBytes(wire.FrameBody, 1, bytes.Repeat([]byte("x"), 5000), 0xCE))
	r.ExpectConnClose(wire.ReplyFrameError, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,5000,4088}")
}

func frameMethodOnUnopenedChannel(e *Env) {
	r := e.RawDial(0)
	r.Send(3, &wire.BasicQos{PrefetchCount: 1})
	r.ExpectConnClose(wire.ReplyChannelError, "CHANNEL_ERROR - expected 'channel.open'")
}

func frameSecondChannelOpen(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.ChannelOpen{})
	r.ExpectConnClose(wire.ReplyChannelError, "CHANNEL_ERROR - second 'channel.open' seen")
}

func frameMethodOnClosedChannel(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.ChannelClose{ReplyCode: 200})
	r.Expect(1, &wire.ChannelCloseOk{})
	r.Send(1, &wire.BasicQos{PrefetchCount: 1})
	r.ExpectConnClose(wire.ReplyChannelError, "CHANNEL_ERROR - expected 'channel.open'")
}

func frameHeaderWithoutMethod(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Write(r.Header(1, 3))
	r.ExpectConnClose(wire.ReplyUnexpectedFrame, "UNEXPECTED_FRAME - expected method frame, got non method frame instead")
}

func frameBodyWithoutHeader(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Write(frameBytes(wire.FrameBody, 1, []byte("abc"), 0xCE))
	r.ExpectConnClose(wire.ReplyUnexpectedFrame, "UNEXPECTED_FRAME - expected method frame, got non method frame instead")
}

func frameMethodInsteadOfHeader(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.BasicPublish{RoutingKey: "k"})
	r.Send(1, &wire.BasicQos{PrefetchCount: 1})
	r.ExpectConnClose(wire.ReplyUnexpectedFrame, "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead")
}

func frameMethodInsteadOfBody(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.BasicPublish{RoutingKey: "k"})
	r.Write(r.Header(1, 3))
	r.Send(1, &wire.BasicQos{PrefetchCount: 1})
	r.ExpectConnClose(wire.ReplyUnexpectedFrame, "UNEXPECTED_FRAME - expected content body, got non content body frame instead")
}

func frameBodyLongerThanHeader(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name("q")
	r.Declare(1, q, nil)
	r.Send(1, &wire.BasicPublish{RoutingKey: q})
	r.Write(r.Header(1, 3))
	r.Write(frameBytes(wire.FrameBody, 1, []byte("abcdef"), 0xCE))
	r.Send(1, &wire.BasicQos{})
	r.ExpectConnClose(wire.ReplyUnexpectedFrame, "UNEXPECTED_FRAME - expected content body, got non content body frame instead")
}

func frameContentOnChannelZero(e *Env) {
	r := e.RawDial(0)
	r.Write(r.Header(0, 3))
	r.ExpectConnClose(wire.ReplyUnexpectedFrame, "UNEXPECTED_FRAME - type 2, all octets = <<0,60,0,0,0,0,0,0,0,0,0,3,0,0>>")
}

func frameHeartbeatOnChannel(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Write(frameBytes(wire.FrameHeartbeat, 1, nil, 0xCE))
	r.ExpectConnClose(wire.ReplyUnexpectedFrame, "UNEXPECTED_FRAME - type 8, all octets = <<>>")
}

func frameUnknownMethod(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Write(frameBytes(wire.FrameMethod, 1, []byte{0, 50, 0, 99}, 0xCE))
	r.ExpectEOF()
}

func frameUnknownClass(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Write(frameBytes(wire.FrameMethod, 1, []byte{0x0F, 0xFF, 0, 10}, 0xCE))
	r.ExpectEOF()
}

func frameTruncatedArgs(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	// queue.declare with its arguments cut after the reserved short.
	r.Write(frameBytes(wire.FrameMethod, 1, []byte{0, 50, 0, 10, 0, 0}, 0xCE))
	r.ExpectConnClose(wire.ReplyFrameError, "FRAME_ERROR - cannot decode <<0,0>>")
}

func frameServerMethodFromClient(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.QueueDeclareOk{Queue: "x"})
	cl := r.ExpectConnClose(wire.ReplyCommandInvalid, "COMMAND_INVALID - unimplemented method")
	Equal(e, "failing method", methodOf(cl.ClassID, cl.MethodID), wire.MethodQueueDeclareOk)
}

func frameChannelMethodOnZero(e *Env) {
	r := e.RawDial(0)
	r.Send(0, &wire.QueueDeclare{Queue: e.Name("q")})
	r.ExpectConnClose(wire.ReplyChannelError, "CHANNEL_ERROR - unexpected method in connection state running")
}

func frameConnectionMethodOnChannel(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.ConnectionTuneOk{ChannelMax: 1, FrameMax: 4096})
	cl := r.ExpectConnClose(wire.ReplyCommandInvalid, "COMMAND_INVALID - unimplemented method")
	Equal(e, "failing method", methodOf(cl.ClassID, cl.MethodID), wire.MethodConnectionTuneOk)
}

func frameImmediate(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Publish(1, &wire.BasicPublish{RoutingKey: e.Name("q"), Immediate: true}, nil, []byte("m"))
	r.ExpectConnClose(wire.ReplyNotImplemented, "NOT_IMPLEMENTED - immediate=true")
}

func frameQosPrefetchSize(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.BasicQos{PrefetchSize: 1000})
	r.ExpectConnClose(wire.ReplyNotImplemented, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)")
}

func frameFlowPause(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.ChannelFlow{Active: false})
	r.ExpectConnClose(wire.ReplyNotImplemented, "NOT_IMPLEMENTED - active=false")
}

func frameFlowActive(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.ChannelFlow{Active: true})
	ok := r.Expect(1, &wire.ChannelFlowOk{}).(*wire.ChannelFlowOk)
	Equal(e, "flow-ok active", ok.Active, true)
}

func frameAccessRequest(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.AccessRequest{Realm: "/data", Active: true, Read: true})
	r.Expect(1, &wire.AccessRequestOk{})
}

func frameDiscardAfterChannelClose(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	missing := e.Name("missing")
	r.Send(1, &wire.QueueDeclare{Queue: missing, Passive: true})
	// Sent before the client has seen the channel.close: discarded.
	r.Send(1, &wire.BasicQos{PrefetchCount: 1})
	r.Publish(1, &wire.BasicPublish{RoutingKey: missing}, nil, []byte("dropped"))
	cl := r.ExpectChannelClose(1, wire.ReplyNotFound, e.NotFoundQueue(missing))
	Equal(e, "failing method", methodOf(cl.ClassID, cl.MethodID), wire.MethodQueueDeclare)
	r.OpenChannel(1)
	r.Sync(1)
}

func frameChannelCloseFromServerNoReply(e *Env) {
	// A channel.close from the client crossing the broker's is answered
	// with close-ok, and the broker still wants the client's close-ok
	// before the id can be opened again.
	r := e.RawDial(0)
	r.OpenChannel(1)
	missing := e.Name("missing")
	r.Send(1, &wire.QueueDeclare{Queue: missing, Passive: true})
	f := r.Next()
	if _, ok := f.Method.(*wire.ChannelClose); !ok {
		r.e.T.Fatalf("got %v, want channel.close", f)
	}
	r.Send(1, &wire.ChannelClose{ReplyCode: 200})
	r.Expect(1, &wire.ChannelCloseOk{})
	r.Send(1, &wire.ChannelCloseOk{})
	r.OpenChannel(1)
	r.Sync(1)
}

func frameCloseOkUnsolicited(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.ChannelCloseOk{})
	r.ExpectConnClose(wire.ReplyCommandInvalid, "COMMAND_INVALID - unimplemented method")
}

func frameFailingMethodIDs(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	x := e.Name("missing")
	r.Send(1, &wire.QueueBind{Queue: e.Name("q"), Exchange: x})
	// Neither exists: the exchange is looked up first.
	cl := r.ExpectChannelClose(1, wire.ReplyNotFound, e.NotFoundExchange(x))
	Equal(e, "failing method", methodOf(cl.ClassID, cl.MethodID), wire.MethodQueueBind)
}

func frameReplyTextTruncated(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	q := e.Name(strings.Repeat("q", 190))
	r.Send(1, &wire.QueueDeclare{Queue: q, Passive: true})
	cl := r.ExpectChannelClose(1, wire.ReplyNotFound, "NOT_FOUND - no queue '*")
	if len(cl.ReplyText) != 255 || !strings.HasSuffix(cl.ReplyText, "...") {
		e.T.Fatalf("reply text of %d bytes %q, want 255 bytes ending in ...", len(cl.ReplyText), cl.ReplyText)
	}
}

func frameNameTooLong(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	// A short string is at most 255 bytes; build queue.declare by hand
	// with a length octet that claims more than the frame holds.
	payload := []byte{0, 50, 0, 10, 0, 0, 200, 'a', 'b'}
	r.Write(frameBytes(wire.FrameMethod, 1, payload, 0xCE))
	r.ExpectConnClose(wire.ReplyFrameError, "FRAME_ERROR - cannot decode <<0,0,200,97,98>>")
}

func framePassiveEmptyName(e *Env) {
	r := e.RawDial(0)
	r.OpenChannel(1)
	r.Send(1, &wire.QueueDeclare{Queue: "", Passive: true})
	r.ExpectChannelClose(1, wire.ReplyNotFound, e.NotFoundQueue(""))
}

// methodOf returns the method id of a close's class and method fields.
func methodOf(class, method uint16) wire.MethodID {
	return wire.MethodID(uint32(class)<<16 | uint32(method))
}
