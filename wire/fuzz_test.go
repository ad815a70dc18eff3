package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// The fuzz targets check that no input panics or hangs, that every error is
// an *Error wrapping one of the package's sentinels, and that whatever
// decodes re-encodes consistently.
//
// Re-encoding is not always byte-identical to the input, for three
// documented reasons: tables are encoded with their keys sorted, a boolean
// table value other than 0 or 1 decodes as true and encodes as 1, and
// method bit octets may carry bits the spec leaves undefined, which decoding
// ignores. So the targets check the canonical form instead: for input x
// that decodes to v, encode(v) must decode to a value that encodes to the
// same bytes again. That catches any value that does not survive a round
// trip (duplicate keys are rejected when decoding, so no entry can be
// silently dropped).

var sentinels = []error{
	ErrTruncated, ErrTrailingBytes, ErrFrameTooLarge, ErrBadFrameEnd, ErrUnknownFrameType,
	ErrUnknownMethod, ErrBadProtocolHeader, ErrTableTooDeep, ErrTooManyEntries, ErrUnknownFieldType,
	ErrDuplicateKey, ErrUnsupportedValue, ErrStringTooLong, ErrBodyTooLarge, ErrBadPropertyFlags,
	ErrBadContentHeader,
}

// checkWireError fails unless err is an *Error wrapping a sentinel.
func checkWireError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			_ = e.Error() // must not panic
			return
		}
	}
	t.Fatalf("error %v wraps no sentinel", err)
}

func FuzzParseFrame(f *testing.F) {
	// Small seeds keep the fuzzer's minimisation of new inputs quick.
	stream := deliveryStream(f, 3)
	stream = append(stream, frameBytes(3, 1, []byte("more body"))...)
	stream = AppendHeartbeatFrame(stream)
	f.Add(stream, uint32(0), uint8(1))
	f.Add(AppendHeartbeatFrame(nil), uint32(4096), uint8(3))
	f.Add(deliveryStream(f, 7), uint32(200), uint8(50))
	f.Add([]byte(ProtocolHeader), uint32(0), uint8(8))
	f.Add(frameBytes(9, 1, []byte{1}), uint32(0), uint8(2))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 1, 0, 0}, uint32(0), uint8(1))
	f.Fuzz(checkParseFrame)
}

// checkParseFrame is the body of FuzzParseFrame.
func checkParseFrame(t *testing.T, data []byte, maxSize uint32, chunk uint8) {
	{
		// Parse the whole input with ParseFrame.
		var want []Frame
		var wantErr error
		src := data
		for len(src) > 0 {
			fr, n, err := ParseFrame(src, maxSize)
			if err != nil {
				checkWireError(t, err)
				wantErr = err
				break
			}
			if n == 0 {
				wantErr = io.ErrUnexpectedEOF
				break
			}
			limit := maxSize
			if limit == 0 {
				limit = DefaultMaxFrameSize
			}
			if n > int(limit) || n != len(fr.Payload)+8 {
				t.Fatalf("frame of %d bytes (payload %d) under limit %d", n, len(fr.Payload), limit)
			}
			// The frame re-encodes to exactly the bytes it came from.
			if re := frameBytes(byte(fr.Type), fr.Channel, fr.Payload); !bytes.Equal(re, src[:n]) {
				t.Fatalf("frame re-encodes as % x, input % x", re, src[:n])
			}
			want = append(want, fr)
			src = src[n:]
		}
		if wantErr == nil {
			wantErr = io.EOF
		}

		// A FrameReader fed in small chunks finds the same frames and
		// the same error.
		r := &chunkReader{data: data, chunk: int(chunk%64) + 1}
		frd := NewFrameReader(r, maxSize)
		for i := 0; ; i++ {
			fr, err := frd.ReadFrame()
			if err != nil {
				if i != len(want) {
					t.Fatalf("FrameReader stopped after %d frames with %v, ParseFrame found %d", i, err, len(want))
				}
				if err != wantErr && !sameSentinel(err, wantErr) {
					t.Fatalf("FrameReader error %v, ParseFrame %v", err, wantErr)
				}
				break
			}
			if i >= len(want) || fr.Type != want[i].Type || fr.Channel != want[i].Channel || !bytes.Equal(fr.Payload, want[i].Payload) {
				t.Fatalf("FrameReader frame %d differs from ParseFrame's", i)
			}
			if limit := max(maxSize, FrameMinSize); maxSize != 0 && len(frd.buf) > int(limit) {
				t.Fatalf("buffer of %d bytes over limit %d", len(frd.buf), limit)
			}
		}
	}
}

// sameSentinel reports whether two *Errors wrap the same sentinel.
func sameSentinel(a, b error) bool {
	for _, s := range sentinels {
		if errors.Is(a, s) && errors.Is(b, s) {
			return true
		}
	}
	return false
}

type chunkReader struct {
	data  []byte
	chunk int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.chunk)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func FuzzDecodeMethod(f *testing.F) {
	for _, m := range sampleMethods() {
		f.Add(methodPayload(f, m))
	}
	// Every method's zero value.
	for class := range MethodID(100) {
		for index := range MethodID(200) {
			if m := (class<<16 | index).New(); m != nil {
				f.Add(methodPayload(f, m))
			}
		}
	}
	samples := map[MethodID][]byte{}
	for _, m := range sampleMethods() {
		samples[m.ID()] = methodPayload(f, m)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := DecodeMethod(payload)
		if err != nil {
			checkWireError(t, err)
			return
		}
		b1 := methodPayload(t, m)
		m2, err := DecodeMethod(b1)
		if err != nil {
			t.Fatalf("re-encoded %v does not decode: %v", m.ID(), err)
		}
		if b2 := methodPayload(t, m2); !bytes.Equal(b1, b2) {
			t.Fatalf("%v: canonical form not stable:\n% x\n% x", m.ID(), b1, b2)
		}
		// A reused value decodes to the same thing as a new one.
		var d MethodDecoder
		if s, ok := samples[m.ID()]; ok {
			if _, err := d.Decode(s); err != nil {
				t.Fatal(err)
			}
		}
		m3, err := d.Decode(payload)
		if err != nil {
			t.Fatalf("MethodDecoder: %v", err)
		}
		if b3 := methodPayload(t, m3); !bytes.Equal(b1, b3) {
			t.Fatalf("%v: reused value decodes differently:\n% x\n% x", m.ID(), b1, b3)
		}
	})
}

func FuzzContentHeader(f *testing.F) {
	for _, p := range []Properties{{}, fullProperties(), {ContentType: "x", Flags: FlagMessageID | FlagHeaders}} {
		h := ContentHeader{ClassID: ClassBasic, BodySize: 42, Properties: p}
		b, err := h.AppendTo(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint64(0))
		f.Add(b, uint64(41))
	}
	warm, err := (&ContentHeader{ClassID: ClassBasic, Properties: fullProperties()}).AppendTo(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload []byte, maxBody uint64) {
		var h ContentHeader
		if err := h.Decode(payload, maxBody); err != nil {
			checkWireError(t, err)
			return
		}
		if maxBody != 0 && h.BodySize > maxBody {
			t.Fatalf("body size %d over max %d accepted", h.BodySize, maxBody)
		}
		b1, err := h.AppendTo(nil)
		if err != nil {
			t.Fatalf("decoded header does not encode: %v", err)
		}
		// Only the headers table can be non-canonical.
		if h.Properties.Headers == nil && !bytes.Equal(b1, payload) {
			t.Fatalf("re-encoded\n% x\ninput\n% x", b1, payload)
		}
		var h2 ContentHeader
		if err := h2.Decode(b1, 0); err != nil {
			t.Fatalf("re-encoded header does not decode: %v", err)
		}
		if b2, _ := h2.AppendTo(nil); !bytes.Equal(b1, b2) {
			t.Fatalf("canonical form not stable:\n% x\n% x", b1, b2)
		}
		// Decoding into a used header resets what is absent.
		var h3 ContentHeader
		if err := h3.Decode(warm, 0); err != nil {
			t.Fatal(err)
		}
		if err := h3.Decode(payload, maxBody); err != nil {
			t.Fatalf("reused header: %v", err)
		}
		if b3, _ := h3.AppendTo(nil); !bytes.Equal(b1, b3) {
			t.Fatalf("reused header decodes differently:\n% x\n% x", b1, b3)
		}
	})
}

func FuzzTable(f *testing.F) {
	for _, tab := range []Table{nil, allTypesTable(), deepTable(MaxTableDepth), {"x-death": []any{Table{"count": int64(1), "time": time.Unix(1, 0).UTC()}}}} {
		b, err := AppendTable(nil, tab)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(nestedWire(MaxTableDepth + 1))
	f.Add([]byte{0, 0, 0, 6, 1, 'k', 'V', 1, 'k', 'V'})
	f.Add([]byte{0, 0, 0, 4, 1, 'k', 't', 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := DecodeTable(data)
		if err != nil {
			checkWireError(t, err)
			return
		}
		b1, err := AppendTable(nil, tab)
		if err != nil {
			t.Fatalf("decoded table does not encode: %v", err)
		}
		if err := tab.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		tab2, err := DecodeTable(b1)
		if err != nil {
			t.Fatalf("re-encoded table does not decode: %v", err)
		}
		if len(tab2) != len(tab) {
			t.Fatalf("%d entries after a round trip, %d before", len(tab2), len(tab))
		}
		b2, err := AppendTable(nil, tab2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("canonical form not stable (%v):\n% x\n% x", err, b1, b2)
		}
		if len(b1) > len(data) {
			t.Fatalf("canonical form (%d bytes) longer than the input (%d)", len(b1), len(data))
		}
	})
}
