package engine

import (
	"testing"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// TestQueuedLenCountsBytesBehindRequests checks that the bytes waiting on a
// channel behind a request in flight count in QueuedLen (so that a driver
// bounding its write buffer sees them), move to the outgoing buffer when
// the request is answered, and are forgotten when the channel closes.
func TestQueuedLenCountsBytesBehindRequests(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	if n := h.c.QueuedLen(); n != 0 {
		t.Fatalf("QueuedLen of an idle connection = %d", n)
	}
	r1 := h.call(ch, &wire.QueueDeclare{Queue: "a"})
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "a"})
	r2 := h.call(ch, &wire.QueueDeclare{Queue: "b"})
	want := len(scripted.Method(ch, &wire.QueueDeclare{Queue: "b"}))
	if n, out := h.c.QueuedLen(), h.c.OutgoingLen(); n != want || out != 0 {
		t.Fatalf("a request queued behind one in flight: QueuedLen %d OutgoingLen %d, want %d and 0", n, out, want)
	}
	body := make([]byte, 1000)
	msg := scripted.Message(ch, &wire.BasicPublish{RoutingKey: "k"}, nil, body, 0)
	for i := 0; i < 5; i++ {
		if _, err := h.c.Publish(ch, "", "k", false, false, nil, body); err != nil {
			t.Fatal(err)
		}
		want += len(msg)
	}
	if err := h.c.Ack(ch, 0, true); err != nil {
		t.Fatal(err)
	}
	want += len(scripted.Method(ch, &wire.BasicAck{Multiple: true}))
	h.pump()
	if n, out := h.c.QueuedLen(), h.c.OutgoingLen(); n != want || out != 0 {
		t.Fatalf("publishes and an ack behind a queued request: QueuedLen %d OutgoingLen %d, want %d and 0", n, out, want)
	}

	// The first reply sends the second request; the rest waits behind it.
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "a"}))
	h.expectReply(ch, r1)
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "b"})
	want -= len(scripted.Method(ch, &wire.QueueDeclare{Queue: "b"}))
	if n := h.c.QueuedLen(); n != want {
		t.Fatalf("after the first reply QueuedLen = %d, want %d", n, want)
	}
	// The second reply releases everything.
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "b"}))
	h.expectReply(ch, r2)
	if n := h.c.QueuedLen(); n != 0 {
		t.Fatalf("after the last reply QueuedLen = %d, want 0", n)
	}
	h.drainPeer()

	// Bytes queued on a channel the server closes are dropped.
	r3 := h.call(ch, &wire.QueueDeclare{Queue: "c"})
	r4 := h.call(ch, &wire.QueueDeclare{Queue: "d"})
	h.c.Publish(ch, "", "k", false, false, nil, body)
	if h.c.QueuedLen() == 0 {
		t.Fatal("nothing queued behind a request in flight")
	}
	h.mustRecv(scripted.Method(ch, &wire.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND"}))
	h.expectFailed(ch, r3)
	h.expectFailed(ch, r4)
	h.expect(EventChannelClosed)
	if n := h.c.QueuedLen(); n != 0 {
		t.Fatalf("after the channel closed QueuedLen = %d, want 0", n)
	}

	// And so are those of a connection that closes.
	h.drainPeer()
	ch2 := h.openChannel()
	h.call(ch2, &wire.QueueDeclare{Queue: "e"})
	h.call(ch2, &wire.QueueDeclare{Queue: "f"})
	if h.c.QueuedLen() == 0 {
		t.Fatal("nothing queued behind a request in flight")
	}
	h.c.Fail(nil)
	if n := h.c.QueuedLen(); n != 0 {
		t.Fatalf("after the connection closed QueuedLen = %d, want 0", n)
	}
}
