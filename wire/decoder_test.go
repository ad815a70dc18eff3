package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// methodPayload encodes m as a method frame payload (ids and arguments).
func methodPayload(t testing.TB, m Method) []byte {
	t.Helper()
	b := appendLong(nil, uint32(m.ID()))
	b, err := m.AppendTo(b)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sampleMethods has one value of a range of methods with every argument
// type: octet, short, long, longlong, bits, shortstr, longstr, table.
func sampleMethods() []Method {
	return []Method{
		&ConnectionStart{VersionMajor: 0, VersionMinor: 9, ServerProperties: Table{"product": "RabbitMQ", "capabilities": Table{"basic.nack": true}}, Mechanisms: "PLAIN AMQPLAIN", Locales: "en_US"},
		&ConnectionStartOk{ClientProperties: Table{"product": "pika"}, Mechanism: "PLAIN", Response: "\x00u\x00p", Locale: "en_US"},
		&ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60},
		&ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED", ClassID: 60, MethodID: 40},
		&ChannelOpenOk{},
		&QueueDeclare{Queue: "q", Durable: true, Arguments: Table{"x-queue-type": "quorum"}},
		&QueueDeclareOk{Queue: "q", MessageCount: 5, ConsumerCount: 1},
		&BasicPublish{Exchange: "e", RoutingKey: "k", Mandatory: true},
		&BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 1 << 40, Redelivered: true, Exchange: "e", RoutingKey: "k"},
		&BasicAck{DeliveryTag: 9, Multiple: true},
		&BasicNack{DeliveryTag: 9, Multiple: true, Requeue: true},
		&BasicConsume{Queue: "q", ConsumerTag: "c", NoAck: true, Arguments: Table{"x-priority": int32(5)}},
	}
}

func TestDecodeMethodRoundTrip(t *testing.T) {
	for _, m := range sampleMethods() {
		t.Run(m.ID().String(), func(t *testing.T) {
			p := methodPayload(t, m)
			got, err := DecodeMethod(p)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("got %#v\nwant %#v", got, m)
			}
			id, err := PeekMethodID(p)
			if err != nil || id != m.ID() {
				t.Fatalf("PeekMethodID = %v, %v", id, err)
			}
		})
	}
}

func TestDecodeMethodUnknown(t *testing.T) {
	for _, ids := range [][4]byte{
		{0, 60, 0, 99}, // basic, no method 99
		{0, 99, 0, 10}, // no class 99
		{0, 0, 0, 0},
		{0xff, 0xff, 0xff, 0xff},
	} {
		p := append(ids[:], 1, 2, 3)
		_, err := DecodeMethod(p)
		e := checkErr(t, err, ErrUnknownMethod, 0, 0, 0)
		class := int(ids[0])<<8 | int(ids[1])
		method := int(ids[2])<<8 | int(ids[3])
		for _, s := range []string{"class-id " + itoa(class), "method-id " + itoa(method)} {
			if !strings.Contains(e.Detail, s) {
				t.Errorf("detail %q does not name %q", e.Detail, s)
			}
		}
		var d MethodDecoder
		_, err = d.DecodeFrame(Frame{Type: FrameMethod, Channel: 4, Payload: p})
		checkErr(t, err, ErrUnknownMethod, FrameMethod, 4, 0)
		id, err := PeekMethodID(p)
		if !errors.Is(err, ErrUnknownMethod) || id != MethodID(class<<16|method) {
			t.Errorf("PeekMethodID = %v, %v", id, err)
		}
	}
}

func TestDecodeMethodTruncatedEverywhere(t *testing.T) {
	for _, m := range sampleMethods() {
		p := methodPayload(t, m)
		for n := range len(p) {
			_, err := DecodeMethod(p[:n])
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("%v cut at %d of %d: %v, want ErrTruncated", m.ID(), n, len(p), err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Offset < 0 || e.Offset > n {
				t.Fatalf("%v cut at %d: error %#v has a bad offset", m.ID(), n, err)
			}
			if n >= 4 && e.Method != m.ID() {
				t.Fatalf("%v cut at %d: error names method %v", m.ID(), n, e.Method)
			}
		}
		// One byte too many.
		_, err := DecodeMethod(append(p, 0))
		e := checkErr(t, err, ErrTrailingBytes, 0, 0, len(p))
		if e.Method != m.ID() {
			t.Fatalf("trailing: method %v", e.Method)
		}
	}
}

func TestDecodeMethodBadLengths(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		err     error
		method  MethodID
		offset  int
		text    string
	}{
		{
			"shortstr beyond payload",
			cat(0, 60, 0, 60, 200, "ctag"), // basic.deliver, consumer-tag of 200 bytes
			ErrTruncated, MethodBasicDeliver, 5, "consumer-tag",
		},
		{
			"longstr beyond payload",
			cat(0, 10, 0, 20, 0x7f, 0xff, 0xff, 0xff, "x"), // connection.secure, challenge of 2 GiB
			ErrTruncated, MethodConnectionSecure, 8, "challenge",
		},
		{
			"table beyond payload",
			cat(0, 50, 0, 10, 0, 0, 1, "q", 0, 0xff, 0xff, 0xff, 0xff), // queue.declare arguments of 4 GiB
			ErrTruncated, MethodQueueDeclare, 9, "arguments",
		},
		{
			"nested too deep",
			cat(0, 50, 0, 10, 0, 0, 1, "q", 0, nestedWire(MaxTableDepth+1)),
			ErrTableTooDeep, MethodQueueDeclare, -2, `arguments: key "n"."n"`,
		},
		{
			"unknown field type",
			cat(0, 50, 0, 10, 0, 0, 1, "q", 0, 0, 0, 0, 3, 1, "k", 'Z'),
			ErrUnknownFieldType, MethodQueueDeclare, 15, `arguments: key "k"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d MethodDecoder
			_, err := d.DecodeFrame(Frame{Type: FrameMethod, Channel: 3, Payload: tt.payload})
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T is not *Error", err)
			}
			if e.Method != tt.method || e.FrameType != FrameMethod || e.Channel != 3 || (tt.offset != -2 && e.Offset != tt.offset) {
				t.Fatalf("error %q: method %v frame %v/%d offset %d", err, e.Method, e.FrameType, e.Channel, e.Offset)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("error %q does not mention %q", err, tt.text)
			}
		})
	}
}

func TestDecodeMethodTooManyEntries(t *testing.T) {
	// queue.declare whose arguments hold an array of MaxTableEntries+1
	// voids.
	arr := append([]byte{'A'}, appendLong(nil, uint32(MaxTableEntries+1))...)
	arr = append(arr, bytes.Repeat([]byte{'V'}, MaxTableEntries+1)...)
	tbl := appendLong(nil, uint32(2+len(arr)))
	tbl = append(append(tbl, 1, 'a'), arr...)
	p := cat(0, 50, 0, 10, 0, 0, 1, "q", 0, tbl)
	_, err := DecodeMethod(p)
	if !errors.Is(err, ErrTooManyEntries) {
		t.Fatalf("err = %v, want ErrTooManyEntries", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Method != MethodQueueDeclare {
		t.Fatalf("err %#v", err)
	}
}

func TestMethodDecoderReuse(t *testing.T) {
	var d MethodDecoder
	p1 := methodPayload(t, &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 1, Exchange: "e", RoutingKey: "k"})
	p2 := methodPayload(t, &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 2, Exchange: "e", RoutingKey: "k2"})
	pAck := methodPayload(t, &BasicAck{DeliveryTag: 3})

	m1, err := d.Decode(p1)
	if err != nil {
		t.Fatal(err)
	}
	tag := m1.(*BasicDeliver).ConsumerTag
	ack, err := d.Decode(pAck)
	if err != nil || ack.(*BasicAck).DeliveryTag != 3 {
		t.Fatalf("ack: %#v, %v", ack, err)
	}
	m2, err := d.Decode(p2)
	if err != nil {
		t.Fatal(err)
	}
	if m1 != m2 {
		t.Fatal("MethodDecoder returned a new value for the same method id")
	}
	bd := m2.(*BasicDeliver)
	if bd.DeliveryTag != 2 || bd.RoutingKey != "k2" {
		t.Fatalf("second decode: %+v", bd)
	}
	if unsafe.StringData(tag) != unsafe.StringData(bd.ConsumerTag) {
		t.Fatal("an unchanged consumer tag was allocated again")
	}
	// The decoded value does not alias the payload.
	for i := range p2 {
		p2[i] = 0
	}
	if bd.RoutingKey != "k2" || bd.Exchange != "e" {
		t.Fatalf("decoded strings changed with the payload: %+v", bd)
	}
}
