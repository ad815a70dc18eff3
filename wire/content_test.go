package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fullProperties sets every basic property.
func fullProperties() Properties {
	return Properties{
		ContentType:     "application/json",
		ContentEncoding: "gzip",
		Headers:         Table{"h": int32(1), "n": Table{"x": "y"}},
		DeliveryMode:    2,
		Priority:        9,
		CorrelationID:   "corr",
		ReplyTo:         "amq.rabbitmq.reply-to",
		Expiration:      "60000",
		MessageID:       "m-1",
		Timestamp:       time.Unix(1700000000, 0).UTC(),
		Type:            "t",
		UserID:          "guest",
		AppID:           "app",
		ClusterID:       "c",
	}
}

func TestContentHeaderRoundTrip(t *testing.T) {
	tests := map[string]ContentHeader{
		"no properties": {ClassID: ClassBasic, BodySize: 0},
		"all":           {ClassID: ClassBasic, BodySize: 1 << 40, Properties: fullProperties()},
		"present but empty": {ClassID: ClassBasic, BodySize: 3, Properties: Properties{
			Flags: FlagContentType | FlagHeaders | FlagDeliveryMode,
		}},
	}
	for name, h := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := h.AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			var got ContentHeader
			if err := got.Decode(b, 0); err != nil {
				t.Fatal(err)
			}
			want := h
			want.Properties.Flags = h.Properties.presentFlags()
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
			b2, err := got.AppendTo(nil)
			if err != nil || !bytes.Equal(b, b2) {
				t.Fatalf("re-encoded differently: %v\n% x\n% x", err, b2, b)
			}
		})
	}
}

func TestContentHeaderGoldenFlags(t *testing.T) {
	// All 14 properties: flag word 0xFFFC.
	h := ContentHeader{ClassID: ClassBasic, Properties: fullProperties()}
	b, err := h.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	if b[12] != 0xff || b[13] != 0xfc {
		t.Fatalf("flags % x, want ff fc", b[12:14])
	}
}

func TestContentHeaderDecodeErrors(t *testing.T) {
	header := func(class, weight uint16, size uint64, rest ...byte) []byte {
		b := appendShort(nil, class)
		b = appendShort(b, weight)
		b = appendLongLong(b, size)
		return append(b, rest...)
	}
	tests := []struct {
		name    string
		payload []byte
		maxBody uint64
		err     error
		offset  int
		text    string
	}{
		{"wrong class", header(50, 0, 1, 0, 0), 0, ErrBadContentHeader, 0, "class-id 50"},
		{"weight", header(60, 1, 1, 0, 0), 0, ErrBadContentHeader, 2, "weight 1"},
		{"body too large", header(60, 0, 1001, 0, 0), 1000, ErrBodyTooLarge, 4, "1001"},
		{"continuation bit", header(60, 0, 1, 0x80, 0x01), 0, ErrBadPropertyFlags, 14, "0x1"},
		{"undefined bit", header(60, 0, 1, 0x00, 0x02), 0, ErrBadPropertyFlags, 14, "0x2"},
		{"shortstr beyond payload", header(60, 0, 1, 0x80, 0x00, 5, 'a'), 0, ErrTruncated, 15, "content-type"},
		{"headers table beyond payload", header(60, 0, 1, 0x20, 0x00, 0, 0, 1, 0), 0, ErrTruncated, 14, "headers"},
		{"headers bad value", header(60, 0, 1, 0x20, 0x00, 0, 0, 0, 3, 1, 'k', '?'), 0, ErrUnknownFieldType, 20, `headers: key "k"`},
		{"trailing", header(60, 0, 1, 0, 0, 0), 0, ErrTrailingBytes, 14, ""},
		{"short", []byte{0, 60, 0}, 0, ErrTruncated, 2, "weight"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h ContentHeader
			err := h.Decode(tt.payload, tt.maxBody)
			e := checkErr(t, err, tt.err, 0, 0, tt.offset)
			if !strings.Contains(e.Error(), tt.text) {
				t.Fatalf("error %q does not mention %q", e, tt.text)
			}
			// DecodeFrame adds the frame.
			err = h.DecodeFrame(Frame{Type: FrameHeader, Channel: 5, Payload: tt.payload}, tt.maxBody)
			checkErr(t, err, tt.err, FrameHeader, 5, tt.offset)
		})
	}
	if err := new(ContentHeader).Decode(header(60, 0, 1000, 0, 0), 1000); err != nil {
		t.Fatalf("body size at the limit: %v", err)
	}
}

func TestContentHeaderTruncatedEverywhere(t *testing.T) {
	h := ContentHeader{ClassID: ClassBasic, BodySize: 7, Properties: fullProperties()}
	b, err := h.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(b) {
		var got ContentHeader
		if err := got.Decode(b[:n], 0); !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d: %v, want ErrTruncated", n, err)
		}
	}
}

func TestContentHeaderReusesStrings(t *testing.T) {
	h := ContentHeader{ClassID: ClassBasic, BodySize: 3, Properties: Properties{
		ContentType: "text/plain", MessageID: "id", DeliveryMode: 2,
	}}
	b, err := h.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got ContentHeader
	if err := got.Decode(b, 0); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := got.Decode(b, 0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("decoding a repeated header allocated %v times", allocs)
	}
	// Absent properties are reset.
	b2, _ := (&ContentHeader{ClassID: ClassBasic}).AppendTo(nil)
	if err := got.Decode(b2, 0); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Properties, Properties{}) {
		t.Fatalf("properties not reset: %+v", got.Properties)
	}
}
