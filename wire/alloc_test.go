package wire

import (
	"testing"
	"time"
)

// The hot paths must not allocate once their buffers and values are warm.
// These tests count allocations; they assert nothing about time.

func TestAllocsEncodePublish(t *testing.T) {
	pub := &BasicPublish{Exchange: "amq.topic", RoutingKey: "orders.created", Mandatory: true}
	props := &Properties{
		ContentType:  "application/json",
		DeliveryMode: 2,
		MessageID:    "0b0a3f9e",
		Timestamp:    time.Unix(1700000000, 0),
	}
	body := make([]byte, 10000) // three body frames at frame-max 4096
	buf := make([]byte, 0, 16384)
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		buf, err = AppendMessage(buf[:0], 1, pub, props, body, 4096)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Fatalf("AppendMessage into a reused buffer allocated %v times per message", allocs)
	}
	// The same through the separate writers.
	allocs = testing.AllocsPerRun(200, func() {
		buf, err = AppendMethodFrame(buf[:0], 1, pub)
		if err == nil {
			buf, err = AppendHeaderFrame(buf, 1, uint64(len(body)), props)
		}
		buf = AppendBodyFrames(buf, 1, body, 4096)
		buf = AppendHeartbeatFrame(buf)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Fatalf("frame writers allocated %v times per message", allocs)
	}
}

// TestAllocsBodyFramesGrowOnce: a large body split into many frames grows
// an empty buffer once, to the exact size, not once per doubling.
func TestAllocsBodyFramesGrowOnce(t *testing.T) {
	body := make([]byte, 1<<20) // 9 frames at the default frame-max
	var out []byte
	allocs := testing.AllocsPerRun(20, func() {
		out = AppendBodyFrames(nil, 1, body, 0)
	})
	if allocs != 1 {
		t.Errorf("AppendBodyFrames of 1 MiB into nil allocated %v times, want 1", allocs)
	}
	frames := (len(body) + DefaultMaxFrameSize - 9) / (DefaultMaxFrameSize - 8)
	if want := len(body) + frames*8; len(out) != want {
		t.Errorf("appended %d bytes, want %d", len(out), want)
	}
}

// deliveryStream is basic.deliver + content header + one body frame.
func deliveryStream(t testing.TB, tag uint64) []byte {
	t.Helper()
	b, err := AppendMessage(nil, 1,
		&BasicDeliver{ConsumerTag: "amq.ctag-Xy7_abc", DeliveryTag: tag, Exchange: "amq.topic", RoutingKey: "orders.created"},
		&Properties{ContentType: "application/json", DeliveryMode: 2, MessageID: "m", Timestamp: time.Unix(1700000000, 0)},
		make([]byte, 100), 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// consumeFrames parses and decodes the frames of one delivery, as a
// consumer's read loop does.
func consumeFrames(src []byte, d *MethodDecoder, h *ContentHeader) (tag uint64, bodyLen int, err error) {
	for len(src) > 0 {
		f, n, err := ParseFrame(src, 0)
		if err != nil {
			return 0, 0, err
		}
		src = src[n:]
		switch f.Type {
		case FrameMethod:
			m, err := d.DecodeFrame(f)
			if err != nil {
				return 0, 0, err
			}
			if bd, ok := m.(*BasicDeliver); ok {
				tag = bd.DeliveryTag
			}
		case FrameHeader:
			if err := h.DecodeFrame(f, 1<<20); err != nil {
				return 0, 0, err
			}
		case FrameBody:
			bodyLen += len(f.Payload)
		}
	}
	return tag, bodyLen, nil
}

func TestAllocsDecodeDeliver(t *testing.T) {
	streams := [][]byte{deliveryStream(t, 1), deliveryStream(t, 2)}
	var d MethodDecoder
	var h ContentHeader
	if _, _, err := consumeFrames(streams[0], &d, &h); err != nil { // warm up
		t.Fatal(err)
	}
	i := 0
	var err error
	var tag uint64
	var n int
	allocs := testing.AllocsPerRun(200, func() {
		i++
		tag, n, err = consumeFrames(streams[i%2], &d, &h)
	})
	if err != nil || n != 100 || tag == 0 {
		t.Fatalf("tag %d, body %d, %v", tag, n, err)
	}
	if allocs != 0 {
		t.Fatalf("decoding a delivery allocated %v times", allocs)
	}
}

func TestAllocsFrameReader(t *testing.T) {
	stream := deliveryStream(t, 1)
	r := &loopReader{data: stream}
	fr := NewFrameReader(r, 0)
	for range 3 { // warm up: the buffer grows once
		if _, err := fr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(300, func() {
		if _, err := fr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ReadFrame allocated %v times per frame", allocs)
	}
}

// loopReader repeats data forever, in reads of up to 1000 bytes.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p[:min(len(p), 1000)], r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}
