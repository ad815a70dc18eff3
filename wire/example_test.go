package wire_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/pika-go/pika/wire"
)

// Publishing a message appends its method, header and body frames to one
// buffer that the caller writes and reuses.
func ExampleAppendMessage() {
	var buf []byte
	buf, err := wire.AppendMessage(buf[:0], 1,
		&wire.BasicPublish{Exchange: "", RoutingKey: "hello"},
		&wire.Properties{ContentType: "text/plain", DeliveryMode: 2},
		[]byte("Hello, world"), 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	for len(buf) > 0 {
		f, n, err := wire.ParseFrame(buf, 0)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s frame on channel %d, %d payload bytes\n", f.Type, f.Channel, len(f.Payload))
		buf = buf[n:]
	}
	// Output:
	// method frame on channel 1, 14 payload bytes
	// header frame on channel 1, 26 payload bytes
	// body frame on channel 1, 12 payload bytes
}

// A consumer's read loop: frames from a FrameReader, methods from a
// MethodDecoder, headers into a reused ContentHeader.
func ExampleFrameReader() {
	var stream []byte
	for tag := uint64(1); tag <= 2; tag++ {
		stream, _ = wire.AppendMessage(stream, 1,
			&wire.BasicDeliver{ConsumerTag: "ctag", DeliveryTag: tag, RoutingKey: "hello"},
			nil, []byte("hi"), 0)
	}

	fr := wire.NewFrameReader(bytes.NewReader(stream), 0)
	var methods wire.MethodDecoder
	var header wire.ContentHeader
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		switch f.Type {
		case wire.FrameMethod:
			m, err := methods.DecodeFrame(f)
			if err != nil {
				fmt.Println(err)
				return
			}
			if d, ok := m.(*wire.BasicDeliver); ok {
				fmt.Println("deliver", d.DeliveryTag, d.RoutingKey)
			}
		case wire.FrameHeader:
			if err := header.DecodeFrame(f, 1<<20); err != nil {
				fmt.Println(err)
				return
			}
			fmt.Println("body size", header.BodySize)
		case wire.FrameBody:
			fmt.Printf("body %q\n", f.Payload)
		}
	}
	// Output:
	// deliver 1 hello
	// body size 2
	// body "hi"
	// deliver 2 hello
	// body size 2
	// body "hi"
}

// Values without an AMQP field type are reported with the path to them.
func ExampleTable_Validate() {
	args := wire.Table{
		"x-max-length": 1000,
		"x-args":       wire.Table{"inner": []any{1, "two", []string{"three"}}},
	}
	fmt.Println(args.Validate())
	// Output:
	// wire: unsupported field value: table: key "x-args"."inner"[2]: []string: no AMQP field type
}

func ExampleDecodeTable() {
	src := []byte{
		0, 0, 0, 11, // table of 11 bytes
		5, 'c', 'o', 'u', 'n', 't', // key "count"
		'I', 0, 0, 0, 3, // int32 3
	}
	t, err := wire.DecodeTable(src)
	fmt.Printf("%#v %v\n", t["count"], err)
	// Output:
	// 3 <nil>
}
