package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Table is an AMQP field table: named values of the field types listed in
// the package documentation. Tables carry queue and exchange arguments,
// consumer arguments, message headers and the peer properties exchanged at
// connection start.
//
// Go values map to AMQP field value types like this (the type octets are
// RabbitMQ's, which differ from the table in the 0-9-1 PDF):
//
//	octet  AMQP type                  Go type
//	't'    boolean                    bool
//	'b'    signed 8-bit               int8
//	'B'    unsigned 8-bit             uint8
//	's'    signed 16-bit              int16
//	'u'    unsigned 16-bit            uint16
//	'I'    signed 32-bit              int32
//	'i'    unsigned 32-bit            uint32
//	'l'    signed 64-bit              int64
//	'f'    32-bit float               float32
//	'd'    64-bit float               float64
//	'D'    decimal                    Decimal
//	'S'    long string                string
//	'x'    byte array                 []byte
//	'A'    field array                []any
//	'T'    timestamp (seconds)        time.Time
//	'F'    nested field table         Table
//	'V'    void                       nil
//
// Decoding produces exactly the Go types in the right-hand column, so a
// decoded value encodes back to the same type octet. Encoding also accepts
// int and uint (as 'l'), uint64 (as 'l' when it is at most math.MaxInt64)
// and map[string]any (as 'F'); anything else is an [ErrUnsupportedValue].
// A time.Time is encoded as whole seconds since the Unix epoch: a
// sub-second part is truncated (toward the past), the same rule as
// Properties.Timestamp, so a time does not round-trip unless it is whole
// seconds; a time before 1970 is rejected. Decoded times are in UTC.
//
// Keys are encoded in sorted order, so a Table always encodes to the same
// bytes. A table on the wire that repeats a key is rejected with
// [ErrDuplicateKey]: peers that keep the first and peers that keep the last
// occurrence would otherwise disagree about its value.
//
// A decoded Table never aliases the bytes it was decoded from. A Table is a
// map: it is not safe for concurrent use when one goroutine modifies it.
type Table map[string]any

// Decimal is the AMQP decimal field value ('D'): Value × 10^-Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// Limits applied when decoding field tables and arrays, so that hostile
// input cannot exhaust the stack or memory. Encoding applies the same
// limits, so everything this package encodes it can also decode.
const (
	// MaxTableDepth is how deeply tables and arrays may nest; the
	// outermost table is at depth 1.
	MaxTableDepth = 32
	// MaxTableEntries is the maximum number of entries in one table or
	// values in one array.
	MaxTableEntries = 65536
)

// AppendTable appends t in its wire form (a 32-bit byte length followed by
// the entries, keys sorted) to dst. A nil or empty table encodes as four
// zero bytes. On error dst is returned unchanged and the error, an [*Error]
// wrapping [ErrUnsupportedValue], [ErrStringTooLong], [ErrTableTooDeep] or
// [ErrTooManyEntries], names the key path of the offending value.
func AppendTable(dst []byte, t Table) ([]byte, error) {
	return appendTable(dst, t, "table")
}

// DecodeTable decodes a field table from src, which must hold exactly one
// table including its 32-bit length prefix. An empty table decodes as nil.
// The result does not alias src.
func DecodeTable(src []byte) (Table, error) {
	r := reader{b: src}
	t := r.table("table")
	if err := r.done("table"); err != nil {
		return nil, err
	}
	return t, nil
}

// Validate reports whether t can be encoded, returning the error
// [AppendTable] would return.
func (t Table) Validate() error {
	var e encoder
	if ee := e.table(t, 1); ee != nil {
		return ee.toError("table")
	}
	return nil
}

// appendTable is AppendTable for generated code: what names the argument
// being encoded (for example "arguments") in errors.
func appendTable(dst []byte, t Table, what string) ([]byte, error) {
	start := len(dst)
	e := encoder{buf: dst, emit: true}
	if ee := e.table(t, 1); ee != nil {
		return dst[:start], ee.toError(what)
	}
	return e.buf, nil
}

// pathSeg is one step of a key path: a table key or an array index.
type pathSeg struct {
	key   string
	index int
	isIdx bool
}

// formatPath renders a path stored innermost-first as
// `key "a"."b"[2]`, or "" for an empty path.
func formatPath(path []pathSeg) string {
	if len(path) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("key ")
	first := true
	for i := len(path) - 1; i >= 0; i-- {
		s := path[i]
		if s.isIdx {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
		} else {
			if !first {
				b.WriteByte('.')
			}
			b.WriteString(strconv.Quote(s.key))
		}
		first = false
	}
	return b.String()
}

// encodeError is an encoding failure on its way up the value tree,
// collecting the key path as it unwinds.
type encodeError struct {
	err  error
	msg  string
	path []pathSeg // innermost first
}

func (ee *encodeError) toError(what string) *Error {
	d := what + ": "
	if p := formatPath(ee.path); p != "" {
		d += p + ": "
	}
	return &Error{Err: ee.err, Offset: -1, Detail: d + ee.msg}
}

// encoder appends tables and arrays to buf. With emit false it only checks
// the values (Table.Validate).
type encoder struct {
	buf  []byte
	emit bool
}

func (e *encoder) table(t Table, depth int) *encodeError {
	if depth > MaxTableDepth {
		return &encodeError{err: ErrTableTooDeep, msg: "tables nest deeper than " + strconv.Itoa(MaxTableDepth) + " levels"}
	}
	if len(t) > MaxTableEntries {
		return &encodeError{err: ErrTooManyEntries, msg: "table of " + strconv.Itoa(len(t)) + " entries (max " + strconv.Itoa(MaxTableEntries) + ")"}
	}
	start := len(e.buf)
	if e.emit {
		e.buf = append(e.buf, 0, 0, 0, 0)
	}
	if len(t) == 0 {
		return nil
	}
	// Small tables sort their keys in a stack array.
	var small [32]string
	keys := small[:0]
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if len(k) > math.MaxUint8 {
			return &encodeError{err: ErrStringTooLong, msg: "key of " + strconv.Itoa(len(k)) + " bytes (max 255)", path: []pathSeg{{key: k}}}
		}
		if e.emit {
			e.buf = append(e.buf, byte(len(k)))
			e.buf = append(e.buf, k...)
		}
		if ee := e.value(t[k], depth); ee != nil {
			ee.path = append(ee.path, pathSeg{key: k})
			return ee
		}
	}
	return e.patchLength(start)
}

func (e *encoder) array(a []any, depth int) *encodeError {
	if depth > MaxTableDepth {
		return &encodeError{err: ErrTableTooDeep, msg: "tables and arrays nest deeper than " + strconv.Itoa(MaxTableDepth) + " levels"}
	}
	if len(a) > MaxTableEntries {
		return &encodeError{err: ErrTooManyEntries, msg: "array of " + strconv.Itoa(len(a)) + " values (max " + strconv.Itoa(MaxTableEntries) + ")"}
	}
	start := len(e.buf)
	if e.emit {
		e.buf = append(e.buf, 0, 0, 0, 0)
	}
	for i, v := range a {
		if ee := e.value(v, depth); ee != nil {
			ee.path = append(ee.path, pathSeg{index: i, isIdx: true})
			return ee
		}
	}
	return e.patchLength(start)
}

// patchLength writes the byte count since start+4 into the four bytes at
// start.
func (e *encoder) patchLength(start int) *encodeError {
	if !e.emit {
		return nil
	}
	n := len(e.buf) - start - 4
	if uint64(n) > math.MaxUint32 {
		return &encodeError{err: ErrStringTooLong, msg: "table or array of " + strconv.Itoa(n) + " bytes does not fit a 32-bit length"}
	}
	binary.BigEndian.PutUint32(e.buf[start:], uint32(n))
	return nil
}

// value appends one field value: its type octet, then its encoding. depth
// is the depth of the table or array that holds it.
func (e *encoder) value(v any, depth int) *encodeError {
	switch v := v.(type) {
	case nil:
		e.put('V')
	case bool:
		b := byte(0)
		if v {
			b = 1
		}
		e.put('t', b)
	case int8:
		e.put('b', byte(v))
	case uint8:
		e.put('B', v)
	case int16:
		e.put16('s', uint16(v))
	case uint16:
		e.put16('u', v)
	case int32:
		e.put32('I', uint32(v))
	case uint32:
		e.put32('i', v)
	case int64:
		e.put64('l', uint64(v))
	case int:
		e.put64('l', uint64(int64(v)))
	case uint:
		if uint64(v) > math.MaxInt64 {
			return unsupported(v, "value "+strconv.FormatUint(uint64(v), 10)+" exceeds the signed 64-bit range of type 'l'")
		}
		e.put64('l', uint64(v))
	case uint64:
		if v > math.MaxInt64 {
			return unsupported(v, "value "+strconv.FormatUint(v, 10)+" exceeds the signed 64-bit range of type 'l'")
		}
		e.put64('l', v)
	case float32:
		e.put32('f', math.Float32bits(v))
	case float64:
		e.put64('d', math.Float64bits(v))
	case Decimal:
		if e.emit {
			e.buf = append(e.buf, 'D', v.Scale)
			e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(v.Value))
		}
	case string:
		if uint64(len(v)) > math.MaxUint32 {
			return &encodeError{err: ErrStringTooLong, msg: "string of " + strconv.Itoa(len(v)) + " bytes"}
		}
		if e.emit {
			e.buf = append(e.buf, 'S')
			e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(v)))
			e.buf = append(e.buf, v...)
		}
	case []byte:
		if uint64(len(v)) > math.MaxUint32 {
			return &encodeError{err: ErrStringTooLong, msg: "byte array of " + strconv.Itoa(len(v)) + " bytes"}
		}
		if e.emit {
			e.buf = append(e.buf, 'x')
			e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(v)))
			e.buf = append(e.buf, v...)
		}
	case time.Time:
		// Unix truncates the sub-second part (see the Table doc).
		if v.Unix() < 0 {
			return unsupported(v, "timestamp "+v.String()+" is before 1970-01-01")
		}
		e.put64('T', uint64(v.Unix()))
	case Table:
		e.put('F')
		return e.table(v, depth+1)
	case map[string]any:
		e.put('F')
		return e.table(Table(v), depth+1)
	case []any:
		e.put('A')
		return e.array(v, depth+1)
	default:
		return unsupported(v, "no AMQP field type")
	}
	return nil
}

func unsupported(v any, msg string) *encodeError {
	return &encodeError{err: ErrUnsupportedValue, msg: fmt.Sprintf("%T: %s", v, msg)}
}

func (e *encoder) put(b ...byte) {
	if e.emit {
		e.buf = append(e.buf, b...)
	}
}

func (e *encoder) put16(t byte, v uint16) {
	if e.emit {
		e.buf = binary.BigEndian.AppendUint16(append(e.buf, t), v)
	}
}

func (e *encoder) put32(t byte, v uint32) {
	if e.emit {
		e.buf = binary.BigEndian.AppendUint32(append(e.buf, t), v)
	}
}

func (e *encoder) put64(t byte, v uint64) {
	if e.emit {
		e.buf = binary.BigEndian.AppendUint64(append(e.buf, t), v)
	}
}

// table decodes a field table (32-bit length, then entries) for generated
// code: what names the argument (for example "arguments") in errors. An
// empty table decodes as nil without allocating. Errors name the key path.
func (r *reader) table(what string) Table {
	if r.err != nil {
		return nil
	}
	// The decoder works on a copy of the cursor, so that the recursion does
	// not make r escape to the heap, and hands it back at the end.
	d := tableDecoder{r: *r}
	t := d.table()
	if d.r.err != nil {
		d.annotate(what)
		t = nil
	}
	*r = d.r
	return t
}

// tableDecoder decodes nested tables and arrays from a reader, collecting
// the key path of a failure as the recursion unwinds.
type tableDecoder struct {
	r    reader
	path []pathSeg // innermost first; only set on error
}

func (d *tableDecoder) annotate(what string) {
	e, ok := d.r.err.(*Error)
	if !ok {
		return
	}
	p := what + ": "
	if s := formatPath(d.path); s != "" {
		p += s + ": "
	}
	e.Detail = p + e.Detail
}

// enter bounds the reader to the next length-prefixed region and returns
// the previous bound, or ok false on error.
func (d *tableDecoder) enter(what string) (saved []byte, ok bool) {
	r := &d.r
	if r.depth >= MaxTableDepth {
		r.fail(ErrTableTooDeep, "tables and arrays nest deeper than "+strconv.Itoa(MaxTableDepth)+" levels")
		return nil, false
	}
	lenOff := r.off
	if len(r.b)-r.off < 4 {
		r.fail(ErrTruncated, what+" length")
		return nil, false
	}
	n := r.long("")
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.err = &Error{Err: ErrTruncated, Offset: lenOff, Detail: what + " length " + strconv.FormatUint(uint64(n), 10) + " exceeds the " + strconv.Itoa(len(r.b)-r.off) + " bytes remaining"}
		return nil, false
	}
	saved = r.b
	r.b = r.b[:r.off+int(n)]
	r.depth++
	return saved, true
}

func (d *tableDecoder) leave(saved []byte) {
	d.r.b = saved
	d.r.depth--
}

func (d *tableDecoder) table() Table {
	saved, ok := d.enter("table")
	if !ok {
		return nil
	}
	defer d.leave(saved)
	r := &d.r
	var t Table
	for r.off < len(r.b) {
		if len(t) == MaxTableEntries {
			r.fail(ErrTooManyEntries, "more than "+strconv.Itoa(MaxTableEntries)+" entries in one table")
			return nil
		}
		keyOff := r.off
		kn := int(r.octet("key length"))
		kb := r.bytesN(kn, "key")
		if r.err != nil {
			return nil
		}
		if t == nil {
			t = make(Table)
		} else if _, dup := t[string(kb)]; dup {
			r.err = &Error{Err: ErrDuplicateKey, Offset: keyOff, Detail: "key " + strconv.Quote(string(kb)) + " appears twice"}
			return nil
		}
		k := string(kb)
		v := d.value()
		if r.err != nil {
			d.path = append(d.path, pathSeg{key: k})
			return nil
		}
		t[k] = v
	}
	return t
}

func (d *tableDecoder) array() []any {
	saved, ok := d.enter("array")
	if !ok {
		return nil
	}
	defer d.leave(saved)
	r := &d.r
	a := []any{}
	for r.off < len(r.b) {
		if len(a) == MaxTableEntries {
			r.fail(ErrTooManyEntries, "more than "+strconv.Itoa(MaxTableEntries)+" values in one array")
			return nil
		}
		v := d.value()
		if r.err != nil {
			d.path = append(d.path, pathSeg{index: len(a), isIdx: true})
			return nil
		}
		a = append(a, v)
	}
	return a
}

// value decodes one field value: a type octet and the value it announces.
func (d *tableDecoder) value() any {
	r := &d.r
	typOff := r.off
	typ := r.octet("field value type")
	if r.err != nil {
		return nil
	}
	switch typ {
	case 't':
		return r.octet("boolean value") != 0
	case 'b':
		return int8(r.octet("int8 value"))
	case 'B':
		return r.octet("uint8 value")
	case 's':
		return int16(r.short("int16 value"))
	case 'u':
		return r.short("uint16 value")
	case 'I':
		return int32(r.long("int32 value"))
	case 'i':
		return r.long("uint32 value")
	case 'l':
		return int64(r.longlong("int64 value"))
	case 'f':
		return math.Float32frombits(r.long("float value"))
	case 'd':
		return math.Float64frombits(r.longlong("double value"))
	case 'D':
		scale := r.octet("decimal scale")
		v := int32(r.long("decimal value"))
		return Decimal{Scale: scale, Value: v}
	case 'S':
		return r.longstr("", "string value")
	case 'x':
		n := r.long("byte array length")
		if r.err != nil {
			return nil
		}
		if uint64(n) > uint64(len(r.b)-r.off) {
			r.fail(ErrTruncated, "byte array of "+strconv.FormatUint(uint64(n), 10)+" bytes")
			return nil
		}
		return append([]byte{}, r.bytesN(int(n), "byte array")...)
	case 'A':
		return d.array()
	case 'T':
		tsOff := r.off
		v := r.longlong("timestamp value")
		if r.err != nil {
			return nil
		}
		if v > math.MaxInt64 {
			r.err = &Error{Err: ErrUnsupportedValue, Offset: tsOff, Detail: "timestamp " + strconv.FormatUint(v, 10) + " is out of range"}
			return nil
		}
		return time.Unix(int64(v), 0).UTC()
	case 'F':
		return d.table()
	case 'V':
		return nil
	}
	desc := "0x" + strconv.FormatUint(uint64(typ), 16)
	if typ >= 0x21 && typ < 0x7f {
		desc = "'" + string(rune(typ)) + "' (" + desc + ")"
	}
	r.err = &Error{Err: ErrUnknownFieldType, Offset: typOff, Detail: "field value type " + desc}
	return nil
}
