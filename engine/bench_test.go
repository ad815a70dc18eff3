package engine

import (
	"testing"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// BenchmarkReceiveDeliveries measures the consume path of the engine
// alone: one Receive of 100 deliveries of 100 bytes (a no-ack consumer),
// then their events taken.
func BenchmarkReceiveDeliveries(b *testing.B) {
	h := openDefault(b)
	ch := h.openChannel()
	h.rpc(ch, &wire.BasicConsume{Queue: "q", ConsumerTag: "c1", NoAck: true}, &wire.BasicConsumeOk{ConsumerTag: "c1"})
	var buf []byte
	for range 100 {
		buf = append(buf, scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1, RoutingKey: "q"}, nil, make([]byte, 100), 0)...)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.c.Receive(buf)
		for {
			if _, ok := h.c.NextEvent(); !ok {
				break
			}
		}
	}
}
