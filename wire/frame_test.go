package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// frameBytes builds a frame by hand.
func frameBytes(typ byte, channel uint16, payload []byte) []byte {
	n := len(payload)
	b := []byte{typ, byte(channel >> 8), byte(channel), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	b = append(b, payload...)
	return append(b, 0xCE)
}

// checkErr checks that err wraps sentinel and is an *Error with the given
// frame type, channel and offset.
func checkErr(t *testing.T, err, sentinel error, ft FrameType, ch uint16, offset int) *Error {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err %T is not *Error", err)
	}
	if e.FrameType != ft || e.Channel != ch || e.Offset != offset {
		t.Fatalf("err %q: frame type %v channel %d offset %d; want %v, %d, %d",
			err, e.FrameType, e.Channel, e.Offset, ft, ch, offset)
	}
	return e
}

func TestParseFrameIncomplete(t *testing.T) {
	full := frameBytes(1, 9, []byte{0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	for n := range len(full) {
		f, used, err := ParseFrame(full[:n], 0)
		if err != nil || used != 0 || f.Payload != nil {
			t.Fatalf("prefix of %d bytes: %+v, %d, %v; want need-more", n, f, used, err)
		}
	}
	// Two frames back to back: the first is parsed, the rest left.
	two := append(append([]byte{}, full...), AppendHeartbeatFrame(nil)...)
	f, n, err := ParseFrame(two, 0)
	if err != nil || n != len(full) || f.Channel != 9 || f.Type != FrameMethod || len(f.Payload) != 13 {
		t.Fatalf("got %+v, %d, %v", f, n, err)
	}
	if cap(f.Payload) != len(f.Payload) {
		t.Errorf("payload capacity %d reaches past the frame", cap(f.Payload))
	}
}

func TestParseFrameErrors(t *testing.T) {
	t.Run("too large", func(t *testing.T) {
		// Only the header is present: the size is rejected without
		// waiting for the payload.
		hdr := []byte{3, 0, 4, 0, 0, 0x10, 0x00} // body frame of 4096 payload bytes
		_, n, err := ParseFrame(hdr, 4096)
		e := checkErr(t, err, ErrFrameTooLarge, FrameBody, 4, 3)
		if n != 0 || !strings.Contains(e.Detail, "4104") {
			t.Fatalf("n %d, detail %q", n, e.Detail)
		}
		// Exactly at the limit is fine.
		ok := frameBytes(3, 4, make([]byte, 4088))
		if _, n, err := ParseFrame(ok, 4096); err != nil || n != 4096 {
			t.Fatalf("frame at the limit: %d, %v", n, err)
		}
		// Default limit.
		_, _, err = ParseFrame([]byte{3, 0, 1, 0, 2, 0, 0}, 0)
		checkErr(t, err, ErrFrameTooLarge, FrameBody, 1, 3)
		// A 4 GiB claim is an error, not an allocation or overflow.
		_, _, err = ParseFrame([]byte{1, 0, 1, 0xff, 0xff, 0xff, 0xff}, math32)
		checkErr(t, err, ErrFrameTooLarge, FrameMethod, 1, 3)
	})
	t.Run("bad frame end", func(t *testing.T) {
		b := frameBytes(2, 0x102, []byte{1, 2, 3})
		b[len(b)-1] = 0
		_, n, err := ParseFrame(b, 0)
		checkErr(t, err, ErrBadFrameEnd, FrameHeader, 0x102, 10)
		if n != 0 {
			t.Fatalf("n = %d", n)
		}
	})
	t.Run("unknown frame type", func(t *testing.T) {
		for _, typ := range []byte{0, 4, 7, 9, 0xCE, 0xff} {
			_, _, err := ParseFrame([]byte{typ, 0, 2, 0, 0, 0, 0, 0xCE}, 0)
			checkErr(t, err, ErrUnknownFrameType, FrameType(typ), 2, 0)
		}
	})
	t.Run("protocol header reply", func(t *testing.T) {
		// A server that rejects our version answers with its own header.
		for n := 1; n < 8; n++ {
			if _, used, err := ParseFrame([]byte("AMQP\x00\x00\x09\x01")[:n], 0); used != 0 || err != nil {
				t.Fatalf("prefix %d: %d, %v", n, used, err)
			}
		}
		_, _, err := ParseFrame([]byte("AMQP\x01\x01\x00\x0a"), 0)
		e := checkErr(t, err, ErrBadProtocolHeader, 0, 0, 4)
		if !strings.Contains(e.Detail, "1-1-0-10") {
			t.Fatalf("detail %q does not name the version", e.Detail)
		}
		_, _, err = ParseFrame([]byte(ProtocolHeader), 0)
		checkErr(t, err, ErrBadProtocolHeader, 0, 0, 0)
		// 'A' that is not followed by "MQP" is just an unknown frame type.
		_, _, err = ParseFrame([]byte("ABCDEFGH"), 0)
		checkErr(t, err, ErrUnknownFrameType, 'A', 0, 0)
	})
}

const math32 = 1<<32 - 1

func TestCheckProtocolHeader(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		err  error
		text string
	}{
		{"", 0, nil, ""},
		{"AMQ", 0, nil, ""},
		{ProtocolHeader, 8, nil, ""},
		{ProtocolHeader + "rest", 8, nil, ""},
		{"AMQP\x00\x00\x08\x00", 8, ErrBadProtocolHeader, "0-0-8-0"},
		{"AMQP\x01\x01\x00\x09", 8, ErrBadProtocolHeader, "1-1-0-9"},
		{"GET / HTTP/1.1", 0, ErrBadProtocolHeader, "AMQP"},
		{"AMQX", 0, ErrBadProtocolHeader, "AMQP"},
	}
	for _, tt := range tests {
		n, err := CheckProtocolHeader([]byte(tt.in))
		if n != tt.n || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("%q: %d, %v; want %d, %v", tt.in, n, err, tt.n, tt.err)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%q: error %q does not mention %q", tt.in, err, tt.text)
		}
	}
}

// testStream is three frames of different sizes.
func testStream(t testing.TB) ([]byte, []Frame) {
	t.Helper()
	var b []byte
	b, err := AppendMethodFrame(b, 1, &BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, Exchange: "e", RoutingKey: "r"})
	if err != nil {
		t.Fatal(err)
	}
	b, err = AppendHeaderFrame(b, 1, 5000, &Properties{ContentType: "x"})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789"), 500)
	b = AppendBodyFrames(b, 1, body, 0)
	b = AppendHeartbeatFrame(b)
	var frames []Frame
	for src := b; len(src) > 0; {
		f, n, err := ParseFrame(src, 0)
		if err != nil || n == 0 {
			t.Fatalf("ParseFrame: %d, %v", n, err)
		}
		frames = append(frames, f)
		src = src[n:]
	}
	return b, frames
}

func readAll(t *testing.T, fr *FrameReader) ([]Frame, error) {
	t.Helper()
	var out []Frame
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return out, err
		}
		// The payload is only valid until the next ReadFrame: copy it.
		f.Payload = append([]byte{}, f.Payload...)
		out = append(out, f)
	}
}

func sameFrames(t *testing.T, got, want []Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Type != want[i].Type || got[i].Channel != want[i].Channel || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("frame %d: %v/%d/%d bytes, want %v/%d/%d bytes", i,
				got[i].Type, got[i].Channel, len(got[i].Payload), want[i].Type, want[i].Channel, len(want[i].Payload))
		}
	}
}

func TestFrameReader(t *testing.T) {
	stream, want := testStream(t)
	readers := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(stream) },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data+EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			fr := NewFrameReader(mk(), 0)
			got, err := readAll(t, fr)
			if err != io.EOF {
				t.Fatalf("final error %v, want io.EOF", err)
			}
			sameFrames(t, got, want)
			if len(fr.buf) > DefaultMaxFrameSize {
				t.Errorf("buffer grew to %d", len(fr.buf))
			}
		})
	}
}

func TestFrameReaderBufferBound(t *testing.T) {
	// Frames up to 5000 bytes with a 5000-byte limit: the buffer never
	// exceeds the limit, even when reads deliver many frames at once.
	var stream []byte
	body := make([]byte, 4992*3)
	stream = AppendBodyFrames(stream, 2, body, 5000)
	stream = AppendHeartbeatFrame(stream)
	fr := NewFrameReader(bytes.NewReader(stream), 5000)
	n := 0
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(fr.buf) > 5000 {
			t.Fatalf("buffer %d bytes, limit 5000", len(fr.buf))
		}
		_ = f
		n++
	}
	if n != 4 {
		t.Fatalf("%d frames, want 4", n)
	}
}

func TestFrameReaderGrowsWithData(t *testing.T) {
	// A header announcing a 100000-byte frame, then only 10 bytes: the
	// buffer is sized by what arrived, not by what was announced.
	stream := append([]byte{3, 0, 1, 0, 1, 0x86, 0xa0}, make([]byte, 10)...)
	fr := NewFrameReader(bytes.NewReader(stream), 0)
	if _, err := fr.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if len(fr.buf) > FrameMinSize {
		t.Fatalf("buffer grew to %d bytes for 17 bytes of input", len(fr.buf))
	}
	// The whole frame is read once it arrives.
	full := frameBytes(3, 1, make([]byte, 100000))
	fr = NewFrameReader(iotest.HalfReader(bytes.NewReader(full)), 0)
	f, err := fr.ReadFrame()
	if err != nil || len(f.Payload) != 100000 {
		t.Fatalf("%d payload bytes, %v", len(f.Payload), err)
	}
}

func TestFrameReaderErrors(t *testing.T) {
	t.Run("unexpected EOF", func(t *testing.T) {
		stream, _ := testStream(t)
		for _, cut := range []int{1, 7, 20, len(stream) - 1} {
			fr := NewFrameReader(bytes.NewReader(stream[:cut]), 0)
			_, err := readAll(t, fr)
			if err != io.ErrUnexpectedEOF {
				t.Fatalf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
			}
		}
	})
	t.Run("too large is sticky", func(t *testing.T) {
		stream := frameBytes(3, 1, make([]byte, 200))
		fr := NewFrameReader(iotest.OneByteReader(bytes.NewReader(stream)), 100)
		_, err := fr.ReadFrame()
		checkErr(t, err, ErrFrameTooLarge, FrameBody, 1, 3)
		if len(fr.buf) > 100 {
			t.Fatalf("buffer grew to %d for a rejected frame", len(fr.buf))
		}
		if _, err2 := fr.ReadFrame(); err2 != err {
			t.Fatalf("second ReadFrame: %v, want the same error", err2)
		}
	})
	t.Run("bad frame end", func(t *testing.T) {
		stream := AppendHeartbeatFrame(nil)
		stream = append(stream, frameBytes(1, 3, []byte{0, 60, 0, 80})...)
		stream[len(stream)-1] = 'x'
		fr := NewFrameReader(bytes.NewReader(stream), 0)
		if f, err := fr.ReadFrame(); err != nil || f.Type != FrameHeartbeat {
			t.Fatalf("first frame: %+v, %v", f, err)
		}
		_, err := fr.ReadFrame()
		checkErr(t, err, ErrBadFrameEnd, FrameMethod, 3, 11)
	})
	t.Run("protocol header", func(t *testing.T) {
		fr := NewFrameReader(strings.NewReader("AMQP\x00\x00\x09\x01"), 0)
		_, err := fr.ReadFrame()
		checkErr(t, err, ErrBadProtocolHeader, 0, 0, 0)
	})
	t.Run("temporary read error", func(t *testing.T) {
		stream, want := testStream(t)
		errTemp := errors.New("temporary")
		r := &flakyReader{data: stream, failEvery: 3, err: errTemp}
		fr := NewFrameReader(r, 0)
		var got []Frame
		for {
			f, err := fr.ReadFrame()
			if err == errTemp {
				continue
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			f.Payload = append([]byte{}, f.Payload...)
			got = append(got, f)
		}
		sameFrames(t, got, want)
	})
	t.Run("no progress", func(t *testing.T) {
		fr := NewFrameReader(emptyReader{}, 0)
		if _, err := fr.ReadFrame(); err != io.ErrNoProgress {
			t.Fatalf("err = %v, want io.ErrNoProgress", err)
		}
	})
}

// flakyReader returns err on every failEvery'th call and otherwise up to 7
// bytes of data.
type flakyReader struct {
	data      []byte
	calls     int
	failEvery int
	err       error
}

func (r *flakyReader) Read(p []byte) (int, error) {
	r.calls++
	if r.calls%r.failEvery == 0 {
		return 0, r.err
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 7)], r.data)
	r.data = r.data[n:]
	return n, nil
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestFrameReaderSetMaxFrameSize(t *testing.T) {
	stream := frameBytes(3, 1, make([]byte, 5000))
	stream = append(stream, frameBytes(3, 1, make([]byte, 5000))...)
	fr := NewFrameReader(bytes.NewReader(stream), 0)
	if _, err := fr.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	fr.SetMaxFrameSize(4096)
	_, err := fr.ReadFrame()
	checkErr(t, err, ErrFrameTooLarge, FrameBody, 1, 3)
}

func TestAppendBodyFrames(t *testing.T) {
	if got := AppendBodyFrames([]byte{1}, 1, nil, 0); !bytes.Equal(got, []byte{1}) {
		t.Fatalf("empty body appended % x", got)
	}
	tests := []struct {
		size     int
		frameMax uint32
		chunks   []int
	}{
		{1, 0, []int{1}},
		{DefaultMaxFrameSize - 8, 0, []int{DefaultMaxFrameSize - 8}},
		{DefaultMaxFrameSize - 7, 0, []int{DefaultMaxFrameSize - 8, 1}},
		{10000, 4096, []int{4088, 4088, 1824}},
		{10000, 100, []int{4088, 4088, 1824}}, // below FrameMinSize: raised
		{8176, 4096, []int{4088, 4088}},
	}
	for _, tt := range tests {
		body := make([]byte, tt.size)
		b := AppendBodyFrames(nil, 7, body, tt.frameMax)
		var chunks []int
		for len(b) > 0 {
			f, n, err := ParseFrame(b, 0)
			if err != nil || n == 0 || f.Type != FrameBody || f.Channel != 7 {
				t.Fatalf("size %d: frame %+v, %d, %v", tt.size, f.Type, n, err)
			}
			chunks = append(chunks, len(f.Payload))
			b = b[n:]
		}
		if len(chunks) != len(tt.chunks) {
			t.Fatalf("size %d frameMax %d: chunks %v, want %v", tt.size, tt.frameMax, chunks, tt.chunks)
		}
		for i := range chunks {
			if chunks[i] != tt.chunks[i] {
				t.Fatalf("size %d frameMax %d: chunks %v, want %v", tt.size, tt.frameMax, chunks, tt.chunks)
			}
		}
	}
}

func TestAppendMethodFrameError(t *testing.T) {
	dst := []byte("keep")
	m := &QueueDeclare{Queue: strings.Repeat("q", 256)}
	out, err := AppendMethodFrame(dst, 9, m)
	e := checkErr(t, err, ErrStringTooLong, FrameMethod, 9, -1)
	if e.Method != MethodQueueDeclare || !strings.Contains(err.Error(), "queue") {
		t.Fatalf("error %q: method %v", err, e.Method)
	}
	if string(out) != "keep" {
		t.Fatalf("dst changed to %q", out)
	}

	m = &QueueDeclare{Queue: "q", Arguments: Table{"x-bad": make(chan int)}}
	out, err = AppendMethodFrame(dst, 9, m)
	checkErr(t, err, ErrUnsupportedValue, FrameMethod, 9, -1)
	if !strings.Contains(err.Error(), `arguments: key "x-bad"`) || string(out) != "keep" {
		t.Fatalf("error %q, dst %q", err, out)
	}
}

func TestAppendHeaderFrame(t *testing.T) {
	b, err := AppendHeaderFrame(nil, 2, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{2, 0, 2, 0, 0, 0, 14, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0xCE}
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x\nwant % x", b, want)
	}
	_, err = AppendHeaderFrame([]byte("x"), 2, 10, &Properties{Headers: Table{"k": struct{}{}}})
	checkErr(t, err, ErrUnsupportedValue, FrameHeader, 2, -1)
	_, err = AppendHeaderFrame(nil, 2, 10, &Properties{ContentType: strings.Repeat("c", 300)})
	checkErr(t, err, ErrStringTooLong, FrameHeader, 2, -1)
}

func TestAppendMessage(t *testing.T) {
	pub := &BasicPublish{RoutingKey: "rk"}
	t.Run("empty body", func(t *testing.T) {
		b, err := AppendMessage(nil, 1, pub, nil, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for len(b) > 0 {
			f, used, err := ParseFrame(b, 0)
			if err != nil || used == 0 {
				t.Fatal(err)
			}
			if f.Type == FrameBody {
				t.Fatal("body frame for an empty body")
			}
			b = b[used:]
			n++
		}
		if n != 2 {
			t.Fatalf("%d frames, want method and header", n)
		}
	})
	t.Run("header over frame max", func(t *testing.T) {
		headers := Table{"big": strings.Repeat("h", 5000)}
		out, err := AppendMessage([]byte("x"), 1, pub, &Properties{Headers: headers}, []byte("b"), 4096)
		checkErr(t, err, ErrFrameTooLarge, FrameHeader, 1, -1)
		if string(out) != "x" {
			t.Fatalf("dst changed to %q", out)
		}
	})
	t.Run("method error", func(t *testing.T) {
		out, err := AppendMessage([]byte("x"), 1, &BasicPublish{Exchange: strings.Repeat("e", 256)}, nil, []byte("b"), 0)
		checkErr(t, err, ErrStringTooLong, FrameMethod, 1, -1)
		if string(out) != "x" {
			t.Fatalf("dst changed to %q", out)
		}
	})
}
