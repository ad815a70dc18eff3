package wire

import (
	"encoding/binary"
	"math"
	"strconv"
	"time"
)

// This file holds the primitive field codecs that the generated method code
// and the hand-written frame, property and table code share. They follow the
// "AMQP 0-9-1 data types" section of the specification: integers are
// big-endian, a shortstr is an octet length followed by at most 255 bytes, a
// longstr is a 32-bit length followed by the bytes, a timestamp is a 64-bit
// count of seconds since the Unix epoch.

// reader is a cursor over a byte slice with a sticky error. Every getter
// returns the zero value once an error has been recorded, so generated code
// can decode a whole argument list and check the error once at the end.
//
// A reader never allocates by a length read from its input: every length is
// checked against the bytes that remain before anything is made.
type reader struct {
	b     []byte
	off   int
	err   error
	depth int // table/array nesting depth while decoding field values
}

// fail records the first error, naming what was being read and where.
func (r *reader) fail(sentinel error, detail string) {
	if r.err == nil {
		r.err = &Error{Err: sentinel, Offset: r.off, Detail: detail}
	}
}

// need reports whether n more bytes are available, recording ErrTruncated
// otherwise.
func (r *reader) need(n int, what string) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail(ErrTruncated, what)
		return false
	}
	return true
}

func (r *reader) octet(what string) uint8 {
	if !r.need(1, what) {
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *reader) short(what string) uint16 {
	if !r.need(2, what) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v
}

func (r *reader) long(what string) uint32 {
	if !r.need(4, what) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) longlong(what string) uint64 {
	if !r.need(8, what) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v
}

// bytesN returns the next n bytes, aliasing the input.
func (r *reader) bytesN(n int, what string) []byte {
	if !r.need(n, what) {
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

// shortstr reads a short string. When prev holds the same bytes it is
// returned instead of a new string, so decoding into a reused value whose
// strings repeat (consumer tags, exchange names, routing keys) allocates
// nothing.
func (r *reader) shortstr(prev string, what string) string {
	n := int(r.octet(what))
	return reuseString(prev, r.bytesN(n, what))
}

// longstr reads a long string, reusing prev like shortstr.
func (r *reader) longstr(prev string, what string) string {
	n := r.long(what)
	if r.err != nil {
		return ""
	}
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.fail(ErrTruncated, what)
		return ""
	}
	return reuseString(prev, r.bytesN(int(n), what))
}

// timestamp reads a 64-bit seconds-since-epoch timestamp as a UTC time.
// Like a table's timestamp, a value past math.MaxInt64 (a time before 1970
// once read as signed, which no encoder of ours writes) is an
// ErrUnsupportedValue.
func (r *reader) timestamp(what string) time.Time {
	off := r.off
	v := r.longlong(what)
	if r.err != nil {
		return time.Time{}
	}
	if v > math.MaxInt64 {
		r.err = &Error{Err: ErrUnsupportedValue, Offset: off, Detail: what + ": timestamp " + strconv.FormatUint(v, 10) + " is out of range"}
		return time.Time{}
	}
	return time.Unix(int64(v), 0).UTC()
}

// done records ErrTrailingBytes when input remains after a complete value,
// and returns the reader's error.
func (r *reader) done(what string) error {
	if r.err == nil && r.off != len(r.b) {
		r.fail(ErrTrailingBytes, what)
	}
	return r.err
}

// reuseString returns prev when it equals b (the comparison does not
// allocate), and a new string otherwise.
func reuseString(prev string, b []byte) string {
	if string(b) == prev {
		return prev
	}
	return string(b)
}

func appendOctet(dst []byte, v uint8) []byte { return append(dst, v) }

func appendShort(dst []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(dst, v) }

func appendLong(dst []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(dst, v) }

func appendLongLong(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

// appendShortstr appends a short string, or returns ErrStringTooLong naming
// what when s is longer than 255 bytes. On error dst is returned unchanged.
func appendShortstr(dst []byte, s string, what string) ([]byte, error) {
	if len(s) > math.MaxUint8 {
		return dst, &Error{Err: ErrStringTooLong, Offset: -1, Detail: what + ": shortstr of " + itoa(len(s)) + " bytes (max 255)"}
	}
	dst = append(dst, byte(len(s)))
	return append(dst, s...), nil
}

// appendLongstr appends a long string, or returns ErrStringTooLong naming what
// when s does not fit a 32-bit length.
func appendLongstr(dst []byte, s string, what string) ([]byte, error) {
	if uint64(len(s)) > math.MaxUint32 {
		return dst, &Error{Err: ErrStringTooLong, Offset: -1, Detail: what + ": longstr of " + itoa(len(s)) + " bytes"}
	}
	dst = appendLong(dst, uint32(len(s)))
	return append(dst, s...), nil
}

// appendTimestamp appends t as whole seconds since the Unix epoch: a
// sub-second part is truncated, the rule of a time.Time in a Table. A zero
// time encodes as 0; another time before 1970 is an ErrUnsupportedValue
// (what names the field).
func appendTimestamp(dst []byte, t time.Time, what string) ([]byte, error) {
	if t.IsZero() {
		return appendLongLong(dst, 0), nil
	}
	if t.Unix() < 0 {
		return dst, &Error{Err: ErrUnsupportedValue, Offset: -1, Detail: what + ": timestamp " + t.String() + " is before 1970-01-01"}
	}
	return appendLongLong(dst, uint64(t.Unix())), nil
}

// itoa formats a non-negative int without fmt, for error details on paths
// that must not pull in fmt's allocations unless they fail.
func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
