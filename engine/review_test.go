package engine

import (
	"testing"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// TestReviewDeliveryTagJumpBounded: a broker that skips far ahead in
// delivery tags (RabbitMQ numbers a channel's deliveries 1, 2, 3, ...)
// must not make the engine allocate a window proportional to the jump:
// the tag is refused with a protocol close naming it.
func TestReviewDeliveryTagJumpBounded(t *testing.T) {
	for _, get := range []bool{false, true} {
		h := openDefault(t)
		ch := h.openChannel()
		h.consume(ch, "q", "c")
		h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, nil, nil, 0))
		h.expect(EventDelivery)
		const far = 1 << 30 // a 16 MiB bitmap if the window followed it
		var frame []byte
		if get {
			h.call(ch, &wire.BasicGet{Queue: "q"})
			h.peer.NextMethod(ch)
			frame = scripted.Message(ch, &wire.BasicGetOk{DeliveryTag: far}, nil, nil, 0)
		} else {
			frame = scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: far}, nil, nil, 0)
		}
		h.recv(frame)
		if !h.c.IsClosed() {
			t.Fatalf("get=%v: delivery tag %d after 1 accepted; the unacked window is %d words",
				get, uint64(far), len(h.c.chans[ch].unacked.words))
		}
		if get {
			h.expect(EventReply) // the basic.get fails with the connection
		}
		h.expectProtocolClose(wire.ReplyCommandInvalid)
	}
}
