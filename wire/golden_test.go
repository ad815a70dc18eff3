package wire

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// The expected bytes in this file are written out by hand from the AMQP
// 0-9-1 specification (frame layout in section 4.2.3, data types in 4.2.5,
// content header in 4.2.6) and RabbitMQ's field-table type octets, not
// produced by any other implementation.

// cat joins byte slices and strings into one byte slice.
func cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case []byte:
			b = append(b, p...)
		case string:
			b = append(b, p...)
		case byte:
			b = append(b, p)
		case int:
			b = append(b, byte(p))
		case rune:
			b = append(b, byte(p))
		default:
			panic("cat: bad part")
		}
	}
	return b
}

// diffBytes describes where got and want first differ, with a little
// context, for messages about long byte strings.
func diffBytes(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-8)
	return fmt.Sprintf("lengths %d and %d, first difference at offset %d:\n got % x\nwant % x",
		len(got), len(want), i, got[lo:min(len(got), i+16)], want[lo:min(len(want), i+16)])
}

// checkMethodGolden checks that m encodes as a frame on channel to exactly
// want, and that want parses and decodes back to m.
func checkMethodGolden(t *testing.T, channel uint16, m Method, want []byte) {
	t.Helper()
	got, err := AppendMethodFrame(nil, channel, m)
	if err != nil {
		t.Fatalf("AppendMethodFrame: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoded %s: %s", m.ID(), diffBytes(got, want))
	}
	f, n, err := ParseFrame(want, 0)
	if err != nil || n != len(want) {
		t.Fatalf("ParseFrame = n %d, %v; want n %d", n, err, len(want))
	}
	if f.Type != FrameMethod || f.Channel != channel {
		t.Fatalf("frame type %v channel %d, want method on %d", f.Type, f.Channel, channel)
	}
	dec, err := DecodeMethod(f.Payload)
	if err != nil {
		t.Fatalf("DecodeMethod: %v", err)
	}
	if !reflect.DeepEqual(dec, m) {
		t.Fatalf("decoded\n got %#v\nwant %#v", dec, m)
	}
}

func TestGoldenConnectionStartOk(t *testing.T) {
	m := &ConnectionStartOk{
		ClientProperties: Table{
			"product":      "pika",
			"capabilities": Table{"publisher_confirms": true},
		},
		Mechanism: "PLAIN",
		Response:  "\x00guest\x00guest",
		Locale:    "en_US",
	}
	want := cat(
		1,    // frame type: method
		0, 0, // channel 0
		0, 0, 0, 92, // payload size: 4 + 60 + 6 + 16 + 6
		0, 10, 0, 11, // class 10 (connection), method 11 (start-ok)
		// client-properties: table of 56 bytes, keys in sorted order
		0, 0, 0, 56,
		12, "capabilities", 'F', // key, type: nested table
		0, 0, 0, 21, // nested table of 21 bytes
		18, "publisher_confirms", 't', 1, // boolean true
		7, "product", 'S', 0, 0, 0, 4, "pika", // long string
		5, "PLAIN", // mechanism: shortstr
		0, 0, 0, 12, "\x00guest\x00guest", // response: longstr
		5, "en_US", // locale: shortstr
		0xCE, // frame end
	)
	checkMethodGolden(t, 0, m, want)
}

func TestGoldenQueueDeclareAllFieldTypes(t *testing.T) {
	ts := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC) // 1577934245 = 0x5E0D5DA5
	m := &QueueDeclare{
		Queue:   "q1",
		Durable: true,
		NoWait:  true,
		Arguments: Table{
			// Each key is its value's type octet, so the sorted order is
			// the ASCII order of the octets.
			"A": []any{int8(1), "a"},
			"B": uint8(0xfe),
			"D": Decimal{Scale: 2, Value: 314},
			"F": Table{"k": nil},
			"I": int32(-1),
			"S": "str",
			"T": ts,
			"V": nil,
			"b": int8(-128),
			"d": 1.0,
			"f": float32(-2),
			"i": uint32(0x01020304),
			"l": int64(-256),
			"s": int16(-32768),
			"t": false,
			"u": uint16(65535),
			"x": []byte{0xde, 0xad},
		},
	}
	args := cat(
		1, "A", 'A', 0, 0, 0, 8, // array of 8 bytes
		/**/ 'b', 1, // int8 1
		/**/ 'S', 0, 0, 0, 1, "a", // longstr "a"
		1, "B", 'B', 0xfe, // uint8
		1, "D", 'D', 2, 0, 0, 0x01, 0x3a, // decimal: scale 2, value 314
		1, "F", 'F', 0, 0, 0, 3, 1, "k", 'V', // nested table {"k": void}
		1, "I", 'I', 0xff, 0xff, 0xff, 0xff, // int32 -1
		1, "S", 'S', 0, 0, 0, 3, "str", // longstr
		1, "T", 'T', 0, 0, 0, 0, 0x5e, 0x0d, 0x5d, 0xa5, // timestamp seconds
		1, "V", 'V', // void
		1, "b", 'b', 0x80, // int8 -128
		1, "d", 'd', 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, // float64 1.0
		1, "f", 'f', 0xc0, 0, 0, 0, // float32 -2.0
		1, "i", 'i', 1, 2, 3, 4, // uint32
		1, "l", 'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, // int64 -256
		1, "s", 's', 0x80, 0x00, // int16 -32768
		1, "t", 't', 0, // boolean false
		1, "u", 'u', 0xff, 0xff, // uint16 65535
		1, "x", 'x', 0, 0, 0, 2, 0xde, 0xad, // byte array
	)
	if len(args) != 131 {
		t.Fatalf("hand-written arguments are %d bytes; fix the length fields below", len(args))
	}
	want := cat(
		1, 0, 5, // method frame on channel 5
		0, 0, 0, 145, // payload: 4 ids + 2 + 3 + 1 + 4 + 131
		0, 50, 0, 10, // class 50 (queue), method 10 (declare)
		0, 0, // ticket (reserved)
		2, "q1", // queue
		0b00010010,   // bits: passive 0, durable 1, exclusive 0, auto-delete 0, no-wait 1
		0, 0, 0, 131, // arguments table length
		args,
		0xCE,
	)
	checkMethodGolden(t, 5, m, want)
}

func TestGoldenPublishSplitBody(t *testing.T) {
	// frame-max 4096 leaves 4088 payload bytes per body frame, so an
	// 8200-byte body takes 4088 + 4088 + 24 bytes.
	body := make([]byte, 8200)
	for i := range body {
		body[i] = byte(i % 251)
	}
	pub := &BasicPublish{Exchange: "amq.direct", RoutingKey: "key", Mandatory: true}
	props := &Properties{
		ContentType:   "text/plain",
		DeliveryMode:  2,
		CorrelationID: "c1",
		Timestamp:     time.Unix(0x5E0D5DA5, 0),
	}
	want := cat(
		// basic.publish
		1, 0, 3, // method frame, channel 3
		0, 0, 0, 22, // payload: 4 + 2 + 11 + 4 + 1
		0, 60, 0, 40, // class 60 (basic), method 40 (publish)
		0, 0, // ticket
		10, "amq.direct", // exchange
		3, "key", // routing key
		0b01, // mandatory 1, immediate 0
		0xCE,
		// content header
		2, 0, 3, // header frame, channel 3
		0, 0, 0, 37, // payload: 12 + 2 + 11 + 1 + 3 + 8
		0, 60, // class basic
		0, 0, // weight
		0, 0, 0, 0, 0, 0, 0x20, 0x08, // body size 8200
		0x94, 0x40, // flags: content-type(15) delivery-mode(12) correlation-id(10) timestamp(6)
		10, "text/plain", // content-type
		2,       // delivery-mode
		2, "c1", // correlation-id
		0, 0, 0, 0, 0x5e, 0x0d, 0x5d, 0xa5, // timestamp
		0xCE,
		// body frames
		3, 0, 3, 0, 0, 0x0f, 0xf8, body[:4088], 0xCE, // 4088 bytes
		3, 0, 3, 0, 0, 0x0f, 0xf8, body[4088:8176], 0xCE, // 4088 bytes
		3, 0, 3, 0, 0, 0, 24, body[8176:], 0xCE, // 24 bytes
	)
	got, err := AppendMessage([]byte("prefix"), 3, pub, props, body, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[6:], want) || string(got[:6]) != "prefix" {
		t.Fatalf("AppendMessage: %s", diffBytes(got, want))
	}

	// Parse it back frame by frame.
	src := want
	var frames []Frame
	for len(src) > 0 {
		f, n, err := ParseFrame(src, 4096)
		if err != nil || n == 0 {
			t.Fatalf("ParseFrame after %d frames: n %d, %v", len(frames), n, err)
		}
		frames = append(frames, f)
		src = src[n:]
	}
	if len(frames) != 5 {
		t.Fatalf("%d frames, want 5", len(frames))
	}
	m, err := DecodeMethod(frames[0].Payload)
	if err != nil || !reflect.DeepEqual(m, pub) {
		t.Fatalf("method %#v, %v", m, err)
	}
	var h ContentHeader
	if err := h.Decode(frames[1].Payload, 0); err != nil {
		t.Fatal(err)
	}
	wantProps := *props
	wantProps.Timestamp = wantProps.Timestamp.UTC()
	wantProps.Flags = FlagContentType | FlagDeliveryMode | FlagCorrelationID | FlagTimestamp
	if h.ClassID != ClassBasic || h.BodySize != 8200 || !reflect.DeepEqual(h.Properties, wantProps) {
		t.Fatalf("header %+v", h)
	}
	var gotBody []byte
	for _, f := range frames[2:] {
		if f.Type != FrameBody || f.Channel != 3 {
			t.Fatalf("frame %v on %d, want body on 3", f.Type, f.Channel)
		}
		gotBody = append(gotBody, f.Payload...)
	}
	if !bytes.Equal(gotBody, body) {
		t.Fatal("body differs")
	}
}

func TestGoldenBasicDeliver(t *testing.T) {
	m := &BasicDeliver{
		ConsumerTag: "ctag-1",
		DeliveryTag: 42,
		Redelivered: true,
		Exchange:    "ex",
		RoutingKey:  "rk",
	}
	want := cat(
		1, 0, 1, // method frame, channel 1
		0, 0, 0, 26, // payload: 4 + 7 + 8 + 1 + 3 + 3
		0, 60, 0, 60, // class 60 (basic), method 60 (deliver)
		6, "ctag-1", // consumer tag
		0, 0, 0, 0, 0, 0, 0, 42, // delivery tag
		1,       // redelivered
		2, "ex", // exchange
		2, "rk", // routing key
		0xCE,
	)
	checkMethodGolden(t, 1, m, want)
}

func TestGoldenBasicAckMultiple(t *testing.T) {
	want := cat(
		1, 0, 7, // method frame, channel 7
		0, 0, 0, 13, // payload: 4 + 8 + 1
		0, 60, 0, 80, // class 60 (basic), method 80 (ack)
		0, 0, 0, 0, 0, 0, 1, 0, // delivery tag 256
		1, // multiple
		0xCE,
	)
	checkMethodGolden(t, 7, &BasicAck{DeliveryTag: 256, Multiple: true}, want)
}

func TestGoldenHeartbeat(t *testing.T) {
	want := []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}
	if got := AppendHeartbeatFrame(nil); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	f, n, err := ParseFrame(want, 0)
	if err != nil || n != 8 || f.Type != FrameHeartbeat || len(f.Payload) != 0 {
		t.Fatalf("ParseFrame = %+v, %d, %v", f, n, err)
	}
}
