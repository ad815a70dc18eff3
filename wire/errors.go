package wire

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinel errors. Every error this package returns is an [*Error] wrapping
// one of these, so callers can test the kind with [errors.Is] and still print
// where it happened.
var (
	// ErrTruncated: a length or fixed-size field runs past the end of its
	// frame, payload or table.
	ErrTruncated = errors.New("wire: truncated input")
	// ErrTrailingBytes: bytes remain after a complete method, header or table.
	ErrTrailingBytes = errors.New("wire: trailing bytes")
	// ErrFrameTooLarge: a frame's declared size exceeds the maximum frame size.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrBadFrameEnd: the octet after a frame's payload is not 0xCE.
	ErrBadFrameEnd = errors.New("wire: bad frame-end octet")
	// ErrUnknownFrameType: a frame type other than method, header, body or
	// heartbeat.
	ErrUnknownFrameType = errors.New("wire: unknown frame type")
	// ErrUnknownMethod: a class/method id pair that the spec does not define.
	ErrUnknownMethod = errors.New("wire: unknown class or method id")
	// ErrBadProtocolHeader: the peer sent something other than an AMQP
	// protocol header where one was expected (or a header for another
	// protocol version).
	ErrBadProtocolHeader = errors.New("wire: bad protocol header")
	// ErrTableTooDeep: tables and arrays nest deeper than MaxTableDepth.
	ErrTableTooDeep = errors.New("wire: field table nested too deep")
	// ErrTooManyEntries: a table or array holds more than MaxTableEntries
	// values.
	ErrTooManyEntries = errors.New("wire: too many field table entries")
	// ErrUnknownFieldType: a field value type octet this package does not know.
	ErrUnknownFieldType = errors.New("wire: unknown field value type")
	// ErrDuplicateKey: a field table on the wire names the same key twice.
	ErrDuplicateKey = errors.New("wire: duplicate field table key")
	// ErrUnsupportedValue: a Go value in a Table or Array that has no AMQP
	// field type, or that cannot be represented without loss.
	ErrUnsupportedValue = errors.New("wire: unsupported field value")
	// ErrStringTooLong: a shortstr over 255 bytes, or a longstr over 4 GiB.
	ErrStringTooLong = errors.New("wire: string too long")
	// ErrBodyTooLarge: a content header announces a body larger than the
	// configured maximum.
	ErrBodyTooLarge = errors.New("wire: body size too large")
	// ErrBadPropertyFlags: a content header's property flags have bits set
	// that no basic property uses (including the continuation bit).
	ErrBadPropertyFlags = errors.New("wire: unknown property flag bits")
	// ErrBadContentHeader: a content header is malformed in some other way
	// (wrong class id, non-zero weight).
	ErrBadContentHeader = errors.New("wire: bad content header")
)

// Error describes bad input or an unencodable value: what went wrong (Err,
// one of the sentinels above) and where. Fields that do not apply are zero;
// Offset is -1 when no byte offset applies (encoding errors).
type Error struct {
	Err       error     // the sentinel: ErrTruncated, ErrFrameTooLarge, ...
	FrameType FrameType // the frame being read, when known
	Channel   uint16    // the frame's channel, when FrameType is set
	Method    MethodID  // the method being decoded or encoded, when known
	Offset    int       // byte offset within the frame payload, or -1
	Detail    string    // what was being read, and any numbers involved
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Method != 0 {
		b.WriteString(" in ")
		b.WriteString(e.Method.String())
	}
	if e.FrameType != 0 {
		b.WriteString(" (")
		b.WriteString(e.FrameType.String())
		b.WriteString(" frame on channel ")
		b.WriteString(strconv.Itoa(int(e.Channel)))
		b.WriteString(")")
	}
	if e.Offset >= 0 {
		b.WriteString(" at offset ")
		b.WriteString(strconv.Itoa(e.Offset))
	}
	return b.String()
}

// Unwrap returns the sentinel, so errors.Is(err, ErrTruncated) works.
func (e *Error) Unwrap() error { return e.Err }

// withMethod fills in the method on an *Error that lacks one.
func withMethod(err error, id MethodID) error {
	var e *Error
	if errors.As(err, &e) && e.Method == 0 {
		e.Method = id
	}
	return err
}

// withFrame fills in the frame type and channel on an *Error that lacks them,
// and shifts its offset by base (the payload's offset within the frame).
func withFrame(err error, t FrameType, channel uint16) error {
	var e *Error
	if errors.As(err, &e) && e.FrameType == 0 {
		e.FrameType = t
		e.Channel = channel
	}
	return err
}
