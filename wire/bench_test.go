package wire

import (
	"testing"
	"time"
)

func BenchmarkEncodePublish(b *testing.B) {
	pub := &BasicPublish{Exchange: "amq.topic", RoutingKey: "orders.created"}
	props := &Properties{ContentType: "application/json", DeliveryMode: 2, Timestamp: time.Unix(1700000000, 0)}
	body := make([]byte, 100)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var err error
		buf, err = AppendMessage(buf[:0], 1, pub, props, body, 0)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeDeliver(b *testing.B) {
	stream := deliveryStream(b, 1)
	var d MethodDecoder
	var h ContentHeader
	b.ReportAllocs()
	b.SetBytes(100)
	for b.Loop() {
		if _, _, err := consumeFrames(stream, &d, &h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFrameReader(b *testing.B) {
	stream := deliveryStream(b, 1)
	fr := NewFrameReader(&loopReader{data: stream}, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeTable(b *testing.B) {
	t := allTypesTable()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendTable(buf[:0], t); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeTable(b *testing.B) {
	src, err := AppendTable(nil, allTypesTable())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeTable(src); err != nil {
			b.Fatal(err)
		}
	}
}
