package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// smallFrames is a tune proposal with the smallest frame_max, so that
// bodies split after 4088 bytes.
var smallFrames = wire.ConnectionTune{ChannelMax: 2047, FrameMax: 4096}

func TestPublishExactBytes(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	p := &wire.Properties{ContentType: "text/plain", DeliveryMode: 2}
	tag, err := h.c.Publish(ch, "ex", "rk", true, false, p, []byte("hi"))
	if err != nil || tag != 0 {
		t.Fatalf("Publish = %d, %v", tag, err)
	}
	h.pump()
	want := []byte{
		// basic.publish: ticket 0, exchange "ex", routing key "rk", mandatory
		1, 0, 1, 0, 0, 0, 13, 0, 60, 0, 40, 0, 0, 2, 'e', 'x', 2, 'r', 'k', 1, 0xCE,
		// content header: class 60, weight 0, size 2, flags content-type|delivery-mode
		2, 0, 1, 0, 0, 0, 26, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x90, 0x00,
		10, 't', 'e', 'x', 't', '/', 'p', 'l', 'a', 'i', 'n', 2, 0xCE,
		// body
		3, 0, 1, 0, 0, 0, 2, 'h', 'i', 0xCE,
	}
	h.peer.ExpectBytes(want)
	h.peer.ExpectEmpty()
}

func TestPublishSplitsByFrameMax(t *testing.T) {
	const chunk = 4096 - 8
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 17} {
		h := open(t, Config{}, smallFrames)
		ch := h.openChannel()
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * 7)
		}
		if _, err := h.c.Publish(ch, "", "q", false, false, nil, body); err != nil {
			t.Fatal(err)
		}
		h.pump()
		h.peer.ExpectMethod(ch, &wire.BasicPublish{RoutingKey: "q"})
		hd := h.peer.Next()
		if hd.Header == nil || hd.Header.BodySize != uint64(size) {
			t.Fatalf("size %d: want a content header announcing it, got %v", size, hd)
		}
		var got []byte
		frames := 0
		for {
			s, ok := h.peer.TryNext()
			if !ok {
				break
			}
			if s.Type != wire.FrameBody || s.Channel != ch || len(s.Raw) > 4096 {
				t.Fatalf("size %d: unexpected frame %v (%d bytes)", size, s, len(s.Raw))
			}
			if len(got)+len(s.Payload) < size && len(s.Payload) != chunk {
				t.Fatalf("size %d: non-final body frame of %d bytes, want %d", size, len(s.Payload), chunk)
			}
			got = append(got, s.Payload...)
			frames++
		}
		if wantFrames := (size + chunk - 1) / chunk; frames != wantFrames || !bytes.Equal(got, body) {
			t.Fatalf("size %d: %d body frames (want %d), body equal %v", size, frames, wantFrames, bytes.Equal(got, body))
		}
	}
}

func TestPublishBodyCopied(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	body := []byte("original")
	r := h.call(ch, &wire.QueueDeclare{Queue: "q"}) // make the publish wait in the queue
	if _, err := h.c.Publish(ch, "", "q", false, false, nil, body); err != nil {
		t.Fatal(err)
	}
	copy(body, "CHANGED!")
	h.peer.NextMethod(ch)
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "q"}))
	h.expectReply(ch, r)
	h.peer.ExpectMessage(ch, &wire.BasicPublish{RoutingKey: "q"}, nil, []byte("original"), 0)
}

func TestPublishErrors(t *testing.T) {
	h := open(t, Config{}, smallFrames)
	ch := h.openChannel()
	huge := &wire.Properties{Headers: wire.Table{"big": strings.Repeat("x", 5000)}}
	if _, err := h.c.Publish(ch, "", "q", false, false, huge, nil); !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("Publish with a header over frame_max: %v, want ErrFrameTooLarge", err)
	}
	bad := &wire.Properties{Headers: wire.Table{"bad": struct{}{}}}
	if _, err := h.c.Publish(ch, "", "q", false, false, bad, nil); !errors.Is(err, wire.ErrUnsupportedValue) {
		t.Fatalf("Publish with a bad header: %v", err)
	}
	// A timestamp before 1970 has no AMQP encoding: refused, not wrapped.
	old := &wire.Properties{Timestamp: time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC)}
	if _, err := h.c.Publish(ch, "", "q", false, false, old, nil); !errors.Is(err, wire.ErrUnsupportedValue) {
		t.Fatalf("Publish with a timestamp before 1970: %v, want ErrUnsupportedValue", err)
	}
	// The same while the publish would be queued.
	h.call(ch, &wire.QueueDeclare{Queue: "q"})
	h.call(ch, &wire.QueueDeclare{Queue: "q2"})
	if _, err := h.c.Publish(ch, "", "q", false, false, huge, nil); !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("queued Publish with a header over frame_max: %v", err)
	}
	h.pump()
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "q"})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "q"}))
	h.next()
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "q2"})
	h.peer.ExpectEmpty()
	if _, err := h.c.Publish(99, "", "q", false, false, nil, nil); !errors.Is(err, ErrBadChannel) {
		t.Fatalf("Publish on an unknown channel: %v", err)
	}
}

func TestReceiveAssemblesContent(t *testing.T) {
	h := open(t, Config{}, smallFrames)
	ch := h.openChannel()
	h.consume(ch, "q", "c")
	body := bytes.Repeat([]byte("0123456789"), 1000) // 10000 bytes: 3 body frames
	props := &wire.Properties{ContentType: "application/json", MessageID: "m1", Headers: wire.Table{"k": "v"}}

	// Delivery across three body frames, fed frame by frame.
	msg := scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, Exchange: "x", RoutingKey: "r"}, props, body, 4096)
	for len(msg) > 0 {
		_, n, _ := wire.ParseFrame(msg, 4096)
		h.mustRecv(msg[:n])
		if len(msg) > n {
			h.noEvents()
		}
		msg = msg[n:]
	}
	e := h.expect(EventDelivery)
	if !bytes.Equal(e.Message.Body, body) || e.Message.Properties.MessageID != "m1" || e.Message.Properties.Headers["k"] != "v" {
		t.Fatalf("delivery body %d bytes, props %+v", len(e.Message.Body), e.Message.Properties)
	}

	// Return with uneven body frames.
	h.mustRecv(scripted.Method(ch, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: "x", RoutingKey: "nowhere"}),
		scripted.Header(ch, 6, nil), scripted.Body(ch, []byte("ab")), scripted.Body(ch, []byte("c")), scripted.Body(ch, []byte("def")))
	e = h.expect(EventReturn)
	if m := e.Message; m.ReplyCode != wire.ReplyNoRoute || m.ReplyText != "NO_ROUTE" || m.Exchange != "x" ||
		m.RoutingKey != "nowhere" || string(m.Body) != "abcdef" {
		t.Fatalf("return %+v", m)
	}

	// Get-ok across two body frames.
	req := h.call(ch, &wire.BasicGet{Queue: "q"})
	h.peer.NextMethod(ch)
	h.mustRecv(scripted.Message(ch, &wire.BasicGetOk{DeliveryTag: 2, MessageCount: 7}, nil, body[:5000], 4096))
	e = h.expect(EventGetOk)
	if e.Request != req || !bytes.Equal(e.Message.Body, body[:5000]) || e.Message.MessageCount != 7 {
		t.Fatalf("get-ok %s %d bytes", describe(e), len(e.Message.Body))
	}

	// Zero-length body: no body frames, an empty non-nil body.
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 3}, nil, nil, 0))
	e = h.expect(EventDelivery)
	if e.Message.Body == nil || len(e.Message.Body) != 0 {
		t.Fatalf("zero-length body = %#v, want empty non-nil", e.Message.Body)
	}
	h.noEvents()
	h.peer.ExpectEmpty()
}

func TestReceivedBodyOwnedByReceiver(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.consume(ch, "q", "c")
	in := scripted.Concat(
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, nil, []byte("first"), 0),
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2}, nil, []byte("second"), 0))
	// Split inside the second message so the engine buffers part of it.
	cut := len(in) - 3
	h.mustRecv(in[:cut])
	first := h.expect(EventDelivery)
	for i := range in[:cut] {
		in[i] = 0xAA // the driver reuses its read buffer
	}
	h.mustRecv(in[cut:])
	second := h.expect(EventDelivery)
	if string(first.Message.Body) != "first" || string(second.Message.Body) != "second" {
		t.Fatalf("bodies %q %q", first.Message.Body, second.Message.Body)
	}
	first.Message.Body[0] = 'X'
	if string(second.Message.Body) != "second" {
		t.Fatal("bodies share memory")
	}
}

// TestSmallBodiesShareChunks: bodies up to ArenaMaxBody come from a
// shared chunk, each with a capacity that ends with it, so that appending
// to one never overwrites the next; larger ones have their own memory.
// Receiving small deliveries costs a small fraction of an allocation each.
func TestSmallBodiesShareChunks(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.consume(ch, "q", "c")
	sizes := []int{1, 100, ArenaMaxBody, ArenaMaxBody + 1, 7, bodyChunk}
	var got [][]byte
	for i, n := range sizes {
		h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: uint64(i + 1)}, nil, bytes.Repeat([]byte{byte(i + 1)}, n), 0))
		b := h.expect(EventDelivery).Message.Body
		if len(b) != n || cap(b) != n {
			t.Fatalf("body %d: len %d cap %d, want both %d", i, len(b), cap(b), n)
		}
		got = append(got, b)
	}
	for i := range got {
		got[i] = append(got[i], 0xEE) // spills into memory of its own
	}
	for i, b := range got {
		if !bytes.Equal(b[:sizes[i]], bytes.Repeat([]byte{byte(i + 1)}, sizes[i])) {
			t.Fatalf("body %d changed when another one was appended to", i)
		}
	}

	msg := scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1000}, nil, make([]byte, 100), 0)
	tag := uint64(1000)
	allocs := testing.AllocsPerRun(1000, func() {
		tag++
		binary.BigEndian.PutUint64(msg[7+4+1+len("c")+0:], tag) // delivery-tag field of basic.deliver
		if err := h.c.Receive(msg); err != nil {
			t.Fatal(err)
		}
		for {
			if _, ok := h.c.NextEvent(); !ok {
				break
			}
		}
	})
	if allocs > 0.05 {
		t.Fatalf("%.3f allocations per small delivery, want <= 0.05", allocs)
	}
}

func TestContentErrors(t *testing.T) {
	deliver := func(ch uint16) []byte {
		return scripted.Method(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1})
	}
	tests := []struct {
		name   string
		cfg    Config
		frames func(ch uint16) []byte
		code   wire.ReplyCode
	}{
		{"body larger than announced", Config{}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Header(ch, 3, nil), scripted.Body(ch, []byte("abcd")))
		}, wire.ReplyFrameError},
		{"second body frame overflows", Config{}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Header(ch, 3, nil), scripted.Body(ch, []byte("ab")), scripted.Body(ch, []byte("cd")))
		}, wire.ReplyFrameError},
		{"body after zero-length content", Config{}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Header(ch, 0, nil), scripted.Body(ch, []byte("x")))
		}, wire.ReplyUnexpectedFrame},
		{"header without method", Config{}, func(ch uint16) []byte {
			return scripted.Header(ch, 1, nil)
		}, wire.ReplyUnexpectedFrame},
		{"body without header", Config{}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Body(ch, []byte("x")))
		}, wire.ReplyUnexpectedFrame},
		{"body without method", Config{}, func(ch uint16) []byte {
			return scripted.Body(ch, []byte("x"))
		}, wire.ReplyUnexpectedFrame},
		{"two headers", Config{}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Header(ch, 2, nil), scripted.Header(ch, 2, nil))
		}, wire.ReplyUnexpectedFrame},
		{"method instead of header", Config{}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Method(ch, &wire.BasicQosOk{}))
		}, wire.ReplyUnexpectedFrame},
		{"method in the middle of the body", Config{}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Header(ch, 2, nil), scripted.Body(ch, []byte("a")), deliver(ch))
		}, wire.ReplyUnexpectedFrame},
		{"header over MaxBodySize", Config{MaxBodySize: 1000}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Header(ch, 1001, nil))
		}, wire.ReplyFrameError},
		{"header over default MaxBodySize", Config{}, func(ch uint16) []byte {
			return scripted.Concat(deliver(ch), scripted.Header(ch, DefaultMaxBodySize+1, nil))
		}, wire.ReplyFrameError},
		{"header on channel 0", Config{}, func(ch uint16) []byte {
			return scripted.Header(0, 1, nil)
		}, wire.ReplyUnexpectedFrame},
		{"body on channel 0", Config{}, func(ch uint16) []byte {
			return scripted.Body(0, []byte("x"))
		}, wire.ReplyUnexpectedFrame},
		{"header on a channel not open", Config{}, func(ch uint16) []byte {
			return scripted.Header(ch+1, 1, nil)
		}, wire.ReplyChannelError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := open(t, tc.cfg, rabbitTune)
			ch := h.openChannel()
			h.consume(ch, "q", "c")
			err := h.recv(tc.frames(ch))
			if tc.name == "body after zero-length content" {
				h.expect(EventDelivery) // complete before the stray body
			}
			e := h.expectProtocolClose(tc.code)
			if err != e {
				t.Errorf("Receive returned %v, want the close error", err)
			}
		})
	}
}

func TestContentAtMaxBodySize(t *testing.T) {
	h := open(t, Config{MaxBodySize: 10}, rabbitTune)
	ch := h.openChannel()
	h.consume(ch, "q", "c")
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, nil, []byte("0123456789"), 0))
	if e := h.expect(EventDelivery); len(e.Message.Body) != 10 {
		t.Fatalf("body %q", e.Message.Body)
	}
}

// A header announcing a huge body makes the engine allocate no more than
// it receives (plus a bounded preallocation).
func TestHugeAnnouncedBodyDoesNotAllocate(t *testing.T) {
	h := open(t, Config{MaxBodySize: 1 << 40}, rabbitTune)
	ch := h.openChannel()
	h.consume(ch, "q", "c")
	frames := scripted.Concat(scripted.Method(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}),
		scripted.Header(ch, 1<<39, nil), scripted.Body(ch, []byte("tiny")))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h.mustRecv(frames)
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Fatalf("receiving a 500 GiB header and 4 bytes allocated %d bytes", grew)
	}
	h.noEvents()
}

func TestContentPropertiesDecoded(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.consume(ch, "q", "c")
	p := &wire.Properties{
		ContentType: "a", ContentEncoding: "b", DeliveryMode: 1, Priority: 9, CorrelationID: "c",
		ReplyTo: "d", Expiration: "60000", MessageID: "e", Type: "f", UserID: "g", AppID: "h",
	}
	h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, p, []byte("x"), 0))
	got := h.expect(EventDelivery).Message.Properties
	if got.ContentType != "a" || got.ContentEncoding != "b" || got.DeliveryMode != 1 || got.Priority != 9 ||
		got.CorrelationID != "c" || got.ReplyTo != "d" || got.Expiration != "60000" || got.MessageID != "e" ||
		got.Type != "f" || got.UserID != "g" || got.AppID != "h" {
		t.Fatalf("properties %+v", got)
	}
	// Flags records what the wire said.
	raw := scripted.Header(ch, 1, p)
	if want := wire.PropertyFlags(binary.BigEndian.Uint16(raw[7+12:])); got.Flags != want {
		t.Fatalf("Flags = %v, want %v", got.Flags, want)
	}
}

// TestContentStateOnFirstUse checks that a channel carries the state of a
// message being assembled only from its first content method on, and then
// keeps it: channel 0 and a channel that has received nothing hold none
// (an idle connection's memory), and every later message reuses it.
func TestContentStateOnFirstUse(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	if h.c.chans[0].content != nil || h.c.chans[ch].content != nil {
		t.Fatalf("content state before any content: channel 0 %p, channel %d %p", h.c.chans[0].content, ch, h.c.chans[ch].content)
	}
	h.consume(ch, "q", "c1")
	var kept *assembling
	for i, body := range []string{"one", "", "three"} {
		h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: uint64(i + 1), RoutingKey: "q"}, nil, []byte(body), 0))
		e := h.expect(EventDelivery)
		if string(e.Message.Body) != body || e.Message.DeliveryTag != uint64(i+1) {
			t.Fatalf("delivery %d: tag %d body %q, want %d %q", i, e.Message.DeliveryTag, e.Message.Body, i+1, body)
		}
		a := h.c.chans[ch].content
		switch {
		case a == nil:
			t.Fatalf("delivery %d: no content state kept", i)
		case a.active:
			t.Fatalf("delivery %d: content state still active after the message", i)
		case kept != nil && a != kept:
			t.Fatalf("delivery %d: content state made again", i)
		}
		kept = a
	}
	// A header or body without a deliver before it is refused, on a
	// channel that has had content and on one that has not.
	for _, f := range [][]byte{scripted.Header(ch, 1, nil), scripted.Body(ch, []byte("x"))} {
		for _, hadContent := range []bool{false, true} {
			h := openDefault(t)
			if h.openChannel() != ch {
				t.Fatalf("want channel %d", ch)
			}
			if hadContent {
				h.consume(ch, "q", "c1")
				h.mustRecv(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1, RoutingKey: "q"}, nil, nil, 0))
				h.expect(EventDelivery)
			}
			h.recv(f) // the error is the close checked next
			h.expectProtocolClose(wire.ReplyUnexpectedFrame)
		}
	}
}
