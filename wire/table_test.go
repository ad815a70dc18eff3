package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// encodeValue encodes a one-entry table {"k": v}.
func encodeValue(t *testing.T, v any) []byte {
	t.Helper()
	b, err := AppendTable(nil, Table{"k": v})
	if err != nil {
		t.Fatalf("AppendTable(%T): %v", v, err)
	}
	return b
}

// oneEntry builds the wire form of {"k": <typ><value bytes>} by hand.
func oneEntry(typ byte, value ...byte) []byte {
	entry := append([]byte{1, 'k', typ}, value...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(entry))), entry...)
}

func TestTableValueTypes(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name string
		in   any
		wire []byte
		out  any // decoded value when it differs from in
	}{
		{"bool true", true, oneEntry('t', 1), nil},
		{"bool false", false, oneEntry('t', 0), nil},
		{"int8", int8(-2), oneEntry('b', 0xfe), nil},
		{"uint8", uint8(200), oneEntry('B', 200), nil},
		{"int16", int16(-2), oneEntry('s', 0xff, 0xfe), nil},
		{"uint16", uint16(0xbeef), oneEntry('u', 0xbe, 0xef), nil},
		{"int32", int32(-2), oneEntry('I', 0xff, 0xff, 0xff, 0xfe), nil},
		{"uint32", uint32(0xdeadbeef), oneEntry('i', 0xde, 0xad, 0xbe, 0xef), nil},
		{"int64", int64(-2), oneEntry('l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe), nil},
		{"int", -3, oneEntry('l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd), int64(-3)},
		{"uint", uint(7), oneEntry('l', 0, 0, 0, 0, 0, 0, 0, 7), int64(7)},
		{"uint64", uint64(math.MaxInt64), oneEntry('l', 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), int64(math.MaxInt64)},
		{"float32", float32(1.5), oneEntry('f', 0x3f, 0xc0, 0, 0), nil},
		{"float64", float64(-2.5), oneEntry('d', 0xc0, 0x04, 0, 0, 0, 0, 0, 0), nil},
		{"decimal", Decimal{Scale: 2, Value: -12345}, oneEntry('D', 2, 0xff, 0xff, 0xcf, 0xc7), nil},
		{"string", "héllo", oneEntry('S', 0, 0, 0, 6, 'h', 0xc3, 0xa9, 'l', 'l', 'o'), nil},
		{"empty string", "", oneEntry('S', 0, 0, 0, 0), nil},
		{"bytes", []byte{0, 1, 0xff}, oneEntry('x', 0, 0, 0, 3, 0, 1, 0xff), nil},
		{"empty bytes", []byte{}, oneEntry('x', 0, 0, 0, 0), nil},
		{"array", []any{int32(1), "a", nil}, oneEntry('A', 0, 0, 0, 12, 'I', 0, 0, 0, 1, 'S', 0, 0, 0, 1, 'a', 'V'), nil},
		{"empty array", []any{}, oneEntry('A', 0, 0, 0, 0), nil},
		{"timestamp", ts, oneEntry('T', 0, 0, 0, 0, 0x66, 0x38, 0x81, 0xd9), nil},
		{"epoch", time.Unix(0, 0).UTC(), oneEntry('T', 0, 0, 0, 0, 0, 0, 0, 0), nil},
		{"timestamp other zone", time.Date(2024, 5, 6, 9, 8, 9, 0, time.FixedZone("x", 7200)), oneEntry('T', 0, 0, 0, 0, 0x66, 0x38, 0x81, 0xd9), ts},
		{"table", Table{"a": true}, oneEntry('F', 0, 0, 0, 4, 1, 'a', 't', 1), nil},
		{"map", map[string]any{"a": true}, oneEntry('F', 0, 0, 0, 4, 1, 'a', 't', 1), Table{"a": true}},
		{"empty table", Table{}, oneEntry('F', 0, 0, 0, 0), Table(nil)},
		{"void", nil, oneEntry('V'), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encodeValue(t, tt.in)
			if !bytes.Equal(b, tt.wire) {
				t.Fatalf("encoded\n got % x\nwant % x", b, tt.wire)
			}
			got, err := DecodeTable(b)
			if err != nil {
				t.Fatalf("DecodeTable: %v", err)
			}
			want := tt.out
			if want == nil {
				want = tt.in
			}
			v, ok := got["k"]
			if !ok {
				t.Fatalf("decoded table %v has no key k", got)
			}
			if !reflect.DeepEqual(v, want) {
				t.Fatalf("decoded %#v (%T), want %#v (%T)", v, v, want, want)
			}
			if tm, ok := v.(time.Time); ok && tm.Location() != time.UTC {
				t.Fatalf("decoded time in %v, want UTC", tm.Location())
			}
			// The decoded value re-encodes to the same bytes.
			b2 := encodeValue(t, v)
			if !bytes.Equal(b2, b) {
				t.Fatalf("re-encoded\n got % x\nwant % x", b2, b)
			}
		})
	}
}

func TestTableFloatSpecials(t *testing.T) {
	for _, v := range []any{float32(math.Inf(-1)), float32(math.NaN()), math.Inf(1), math.NaN(), math.Copysign(0, -1)} {
		b := encodeValue(t, v)
		got, err := DecodeTable(b)
		if err != nil {
			t.Fatal(err)
		}
		if b2 := encodeValue(t, got["k"]); !bytes.Equal(b, b2) {
			t.Errorf("%v: re-encoded % x, want % x", v, b2, b)
		}
	}
}

func TestTableSortedKeys(t *testing.T) {
	tab := Table{}
	for _, k := range []string{"zeta", "alpha", "mid", "b", "", "a"} {
		tab[k] = nil
	}
	want := []byte{0, 0, 0, 22,
		0, 'V',
		1, 'a', 'V',
		5, 'a', 'l', 'p', 'h', 'a', 'V',
		1, 'b', 'V',
		3, 'm', 'i', 'd', 'V',
		4, 'z', 'e', 't', 'a', 'V',
	}
	want[3] = byte(len(want) - 4)
	for range 20 { // map order is random; the encoding must not be
		b, err := AppendTable(nil, tab)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("got % x\nwant % x", b, want)
		}
	}
	// Larger than the stack key array.
	big := Table{}
	for i := range 40 {
		big[string(rune('A'+i))] = int8(i)
	}
	b, err := AppendTable(nil, big)
	if err != nil {
		t.Fatal(err)
	}
	r := reader{b: b[4:]}
	prev := ""
	for r.off < len(r.b) {
		k := r.shortstr("", "key")
		r.octet("type")
		r.octet("value")
		if k <= prev {
			t.Fatalf("key %q after %q", k, prev)
		}
		prev = k
	}
}

func TestTableEmpty(t *testing.T) {
	for _, tab := range []Table{nil, {}} {
		b, err := AppendTable([]byte{9}, tab)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, []byte{9, 0, 0, 0, 0}) {
			t.Fatalf("got % x", b)
		}
	}
	src := []byte{0, 0, 0, 0}
	var got Table
	var err error
	allocs := testing.AllocsPerRun(100, func() {
		got, err = DecodeTable(src)
	})
	if err != nil || got != nil {
		t.Fatalf("DecodeTable(empty) = %v, %v; want nil, nil", got, err)
	}
	if allocs != 0 {
		t.Fatalf("decoding an empty table allocated %v times", allocs)
	}
}

func TestTableNested(t *testing.T) {
	tab := Table{
		"x-death": []any{
			Table{"count": int64(3), "queue": "q", "time": time.Unix(1700000000, 0).UTC(), "routing-keys": []any{"a", "b"}},
		},
		"deep": Table{"a": Table{"b": []any{[]any{Table{}}}}},
	}
	b, err := AppendTable(nil, tab)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeTable(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Table{
		"x-death": []any{
			Table{"count": int64(3), "queue": "q", "time": time.Unix(1700000000, 0).UTC(), "routing-keys": []any{"a", "b"}},
		},
		"deep": Table{"a": Table{"b": []any{[]any{Table(nil)}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
}

func TestTableDecodedBytesDoNotAlias(t *testing.T) {
	b := encodeValue(t, []byte("abc"))
	got, err := DecodeTable(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if string(got["k"].([]byte)) != "abc" {
		t.Fatalf("decoded byte array changed with its input: %q", got["k"])
	}
}

func deepTable(levels int) Table {
	t := Table{"leaf": true}
	for range levels - 1 {
		t = Table{"n": t}
	}
	return t
}

func TestTableEncodeErrors(t *testing.T) {
	cyclic := Table{}
	cyclic["self"] = cyclic
	tests := []struct {
		name   string
		tab    Table
		err    error
		detail []string // substrings of the error text
	}{
		{"chan", Table{"c": make(chan int)}, ErrUnsupportedValue, []string{`key "c"`, "chan int"}},
		{"struct", Table{"s": struct{}{}}, ErrUnsupportedValue, []string{`key "s"`, "struct {}"}},
		{"string slice", Table{"x-args": Table{"inner": []any{1, 2, []string{"a"}}}}, ErrUnsupportedValue, []string{`key "x-args"."inner"[2]`, "[]string"}},
		{"uint64 too big", Table{"u": uint64(math.MaxInt64) + 1}, ErrUnsupportedValue, []string{`key "u"`, "uint64", "9223372036854775808"}},
		{"uint too big", Table{"u": uint(math.MaxUint64)}, ErrUnsupportedValue, []string{`key "u"`, "uint"}},
		{"pointer", Table{"p": new(int)}, ErrUnsupportedValue, []string{"*int"}},
		{"time before 1970", Table{"t": time.Unix(-1, 0)}, ErrUnsupportedValue, []string{"before 1970"}},
		{"zero time", Table{"t": time.Time{}}, ErrUnsupportedValue, []string{"before 1970"}},
		{"long key", Table{strings.Repeat("k", 256): 1}, ErrStringTooLong, []string{"256 bytes"}},
		{"too deep", deepTable(MaxTableDepth + 1), ErrTableTooDeep, []string{`"n"`}},
		{"cyclic", cyclic, ErrTableTooDeep, []string{`key "self"."self"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte{1, 2, 3}
			out, err := appendTable(dst, tt.tab, "arguments")
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Offset != -1 {
				t.Fatalf("err = %#v, want *Error with Offset -1", err)
			}
			msg := err.Error()
			for _, s := range append(tt.detail, "arguments: ") {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
			if len(out) != 3 {
				t.Errorf("dst length %d after error, want 3", len(out))
			}
			if verr := tt.tab.Validate(); !errors.Is(verr, tt.err) {
				t.Errorf("Validate = %v, want %v", verr, tt.err)
			}
		})
	}
	if err := deepTable(MaxTableDepth).Validate(); err != nil {
		t.Errorf("table of depth MaxTableDepth: %v", err)
	}
}

func TestTableTooManyEntriesEncode(t *testing.T) {
	big := make([]any, MaxTableEntries+1)
	_, err := AppendTable(nil, Table{"a": big})
	if !errors.Is(err, ErrTooManyEntries) {
		t.Fatalf("err = %v, want ErrTooManyEntries", err)
	}
	if _, err := AppendTable(nil, Table{"a": big[:MaxTableEntries]}); err != nil {
		t.Fatalf("array of MaxTableEntries values: %v", err)
	}
}

// nestedWire builds the wire form of `levels` tables nested through key "n".
func nestedWire(levels int) []byte {
	b := []byte{0, 0, 0, 0}
	for range levels - 1 {
		inner := b
		entry := append([]byte{1, 'n', 'F'}, inner...)
		b = append(binary.BigEndian.AppendUint32(nil, uint32(len(entry))), entry...)
	}
	return b
}

func TestTableDecodeErrors(t *testing.T) {
	manyVoids := func(n int) []byte {
		body := bytes.Repeat([]byte{'V'}, n)
		arr := append([]byte{'A'}, binary.BigEndian.AppendUint32(nil, uint32(n))...)
		entry := append(append([]byte{1, 'a'}, arr...), body...)
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(entry))), entry...)
	}
	tests := []struct {
		name   string
		wire   []byte
		err    error
		offset int
		detail []string
	}{
		{"length beyond input", []byte{0, 0, 0, 5, 1, 'k', 'V'}, ErrTruncated, 0, []string{"table length 5"}},
		{"length field short", []byte{0, 0, 0}, ErrTruncated, 0, nil},
		{"key beyond table", []byte{0, 0, 0, 2, 5, 'k'}, ErrTruncated, 5, []string{"key"}},
		{"missing value type", []byte{0, 0, 0, 2, 1, 'k'}, ErrTruncated, 6, []string{`key "k"`, "field value type"}},
		{"unknown type", []byte{0, 0, 0, 3, 1, 'k', 'Z'}, ErrUnknownFieldType, 6, []string{`key "k"`, "'Z' (0x5a)"}},
		{"unknown type unprintable", []byte{0, 0, 0, 3, 1, 'k', 0}, ErrUnknownFieldType, 6, []string{"0x0"}},
		{"PDF-only type", oneEntry('U', 0, 0), ErrUnknownFieldType, 6, []string{"'U'"}},
		{"longstr beyond table", append(oneEntry('S', 0, 0, 0, 9, 'a'), 0, 0, 0, 0, 0, 0, 0, 0), ErrTruncated, 11, []string{`key "k"`, "string value"}},
		{"bytes beyond table", oneEntry('x', 0xff, 0xff, 0xff, 0xff), ErrTruncated, 11, []string{"byte array"}},
		{"int64 cut", oneEntry('l', 1, 2, 3), ErrTruncated, 7, []string{"int64 value"}},
		{"nested array beyond", oneEntry('A', 0, 0, 0, 1), ErrTruncated, 7, []string{"array length 1"}},
		{"nested error path", []byte{0, 0, 0, 12, 1, 'a', 'A', 0, 0, 0, 5, 'F', 0, 0, 0, 1, 'V'}, ErrTruncated, 12, []string{`key "a"[0]`, "table length 1"}},
		{"duplicate key", []byte{0, 0, 0, 6, 1, 'k', 'V', 1, 'k', 'V'}, ErrDuplicateKey, 7, []string{`"k" appears twice`}},
		{"timestamp out of range", oneEntry('T', 0x80, 0, 0, 0, 0, 0, 0, 0), ErrUnsupportedValue, 7, []string{"timestamp"}},
		{"too deep", nestedWire(MaxTableDepth + 1), ErrTableTooDeep, -2, []string{`"n"."n"`}},
		{"too many entries", manyVoids(MaxTableEntries + 1), ErrTooManyEntries, -2, []string{`key "a"`}},
		{"trailing", []byte{0, 0, 0, 0, 0}, ErrTrailingBytes, 4, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTable(tt.wire)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if got != nil {
				t.Errorf("table %v returned with error", got)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err %T is not *Error", err)
			}
			if tt.offset != -2 && e.Offset != tt.offset {
				t.Errorf("offset %d, want %d (%v)", e.Offset, tt.offset, err)
			}
			for _, s := range tt.detail {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	if _, err := DecodeTable(nestedWire(MaxTableDepth)); err != nil {
		t.Errorf("depth MaxTableDepth: %v", err)
	}
	if _, err := DecodeTable(manyVoids(MaxTableEntries)); err != nil {
		t.Errorf("MaxTableEntries values: %v", err)
	}
}

func TestTableTruncatedEverywhere(t *testing.T) {
	full := allTypesTable()
	b, err := AppendTable(nil, full)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(b) {
		// Cut the input, keeping the declared length: the table claims more
		// bytes than there are.
		if _, err := DecodeTable(b[:n]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d: err = %v, want ErrTruncated", n, err)
		}
	}
	// Shrink the declared length instead: inner values run past the table.
	for n := 0; n < len(b)-4; n++ {
		c := append([]byte(nil), b[:4+n]...)
		binary.BigEndian.PutUint32(c, uint32(n))
		_, err := DecodeTable(c)
		if err == nil {
			// Only possible at an entry boundary.
			continue
		}
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("length %d: err = %v, want ErrTruncated", n, err)
		}
	}
}

// allTypesTable holds one value of every field type, nested ones included.
func allTypesTable() Table {
	return Table{
		"bool":    true,
		"int8":    int8(-8),
		"uint8":   uint8(8),
		"int16":   int16(-16),
		"uint16":  uint16(16),
		"int32":   int32(-32),
		"uint32":  uint32(32),
		"int64":   int64(-64),
		"float32": float32(3.25),
		"float64": 6.5,
		"decimal": Decimal{Scale: 3, Value: 1234},
		"string":  "str",
		"bytes":   []byte{1, 2},
		"array":   []any{int8(1), "two", []any{}, Table{"x": nil}},
		"time":    time.Unix(1700000000, 0).UTC(),
		"table":   Table{"inner": int16(1)},
		"void":    nil,
	}
}

func TestTableAllTypesRoundTrip(t *testing.T) {
	in := allTypesTable()
	b, err := AppendTable(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeTable(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Fatalf("got %#v\nwant %#v", got, in)
	}
}

// TestTimestampOneRule checks that a time.Time in a Table and
// Properties.Timestamp follow one rule: whole seconds since the epoch, a
// sub-second part truncated toward the past, a time before 1970 refused
// with ErrUnsupportedValue naming the field.
func TestTimestampOneRule(t *testing.T) {
	whole := time.Unix(1700000000, 0).UTC()
	for _, in := range []time.Time{whole, whole.Add(time.Nanosecond), whole.Add(999999999 * time.Nanosecond), whole.In(time.FixedZone("X", 3600)).Add(time.Millisecond)} {
		enc, err := AppendTable(nil, Table{"t": in})
		if err != nil {
			t.Fatalf("table with %v: %v", in, err)
		}
		tab, err := DecodeTable(enc)
		if err != nil {
			t.Fatal(err)
		}
		if got := tab["t"]; got != whole {
			t.Errorf("table time %v decoded as %v, want %v", in, got, whole)
		}
		h := ContentHeader{ClassID: ClassBasic, Properties: Properties{Timestamp: in}}
		frame, err := h.AppendTo(nil)
		if err != nil {
			t.Fatalf("properties with %v: %v", in, err)
		}
		var back ContentHeader
		if err := back.Decode(frame, 1<<20); err != nil {
			t.Fatal(err)
		}
		if back.Properties.Timestamp != whole {
			t.Errorf("Properties.Timestamp %v decoded as %v, want %v", in, back.Properties.Timestamp, whole)
		}
	}
	for _, in := range []time.Time{time.Unix(-1, 0), time.Unix(-1, 999999999), time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC)} {
		if _, err := AppendTable(nil, Table{"t": in}); !errors.Is(err, ErrUnsupportedValue) || !strings.Contains(err.Error(), "before 1970") {
			t.Errorf("table with %v: %v, want ErrUnsupportedValue (before 1970)", in, err)
		}
		h := ContentHeader{ClassID: ClassBasic, Properties: Properties{Timestamp: in}}
		if _, err := h.AppendTo(nil); !errors.Is(err, ErrUnsupportedValue) || !strings.Contains(err.Error(), "timestamp") || !strings.Contains(err.Error(), "before 1970") {
			t.Errorf("Properties.Timestamp %v: %v, want ErrUnsupportedValue naming the timestamp (before 1970)", in, err)
		}
	}
}
