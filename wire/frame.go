package wire

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strconv"
)

// ProtocolHeader is what a client sends first on a new connection: "AMQP",
// a zero octet, then the protocol version 0-9-1. A server that does not
// accept the version replies with its own protocol header and closes the
// connection.
const ProtocolHeader = "AMQP\x00\x00\x09\x01"

// DefaultMaxFrameSize is the frame size limit used where a limit of 0 is
// given: 128 KiB, RabbitMQ's default frame_max.
const DefaultMaxFrameSize = 131072

// frameOverhead is the size of a frame minus its payload: type octet,
// channel, payload size, and the frame-end octet.
const frameOverhead = 8

// frameHeaderSize is the size of the part of a frame before its payload.
const frameHeaderSize = 7

// Frame is one AMQP frame.
//
// A Frame returned by [ParseFrame] or [FrameReader.ReadFrame] aliases the
// input it was parsed from; see those functions for how long it stays
// valid.
type Frame struct {
	Type    FrameType
	Channel uint16
	Payload []byte
}

// ParseFrame parses one complete frame from the front of src and returns it
// with the number of bytes it took. When src does not yet hold a complete
// frame, ParseFrame returns n == 0 and a nil error: read more and call
// again. The returned Payload aliases src.
//
// maxSize is the largest acceptable frame including its 8 bytes of header
// and frame-end (the frame_max of AMQP's connection.tune); 0 means
// [DefaultMaxFrameSize]. A frame that declares a larger size is rejected as
// soon as its 7-byte header is available, without waiting for the payload.
//
// Errors are [*Error] values wrapping [ErrUnknownFrameType],
// [ErrFrameTooLarge] or [ErrBadFrameEnd], with FrameType and Channel set
// from the frame header and Offset counting from the start of the frame.
// If src starts with an AMQP protocol header, which is what a server sends
// when it rejects the client's protocol version, the error wraps
// [ErrBadProtocolHeader] and names the version the server offered.
//
// ParseFrame checks the frame's structure only; which frame types may
// appear on which channel is for the caller to enforce.
func ParseFrame(src []byte, maxSize uint32) (f Frame, n int, err error) {
	if len(src) > 0 && src[0] == 'A' {
		return Frame{}, 0, checkPeerProtocolHeader(src)
	}
	if len(src) < frameHeaderSize {
		return Frame{}, 0, nil
	}
	typ := FrameType(src[0])
	ch := binary.BigEndian.Uint16(src[1:])
	size := binary.BigEndian.Uint32(src[3:])
	switch typ {
	case FrameMethod, FrameHeader, FrameBody, FrameHeartbeat:
	default:
		return Frame{}, 0, &Error{Err: ErrUnknownFrameType, FrameType: typ, Channel: ch, Offset: 0,
			Detail: "frame type " + strconv.Itoa(int(typ))}
	}
	if maxSize == 0 {
		maxSize = DefaultMaxFrameSize
	}
	if uint64(size)+frameOverhead > uint64(maxSize) {
		return Frame{}, 0, &Error{Err: ErrFrameTooLarge, FrameType: typ, Channel: ch, Offset: 3,
			Detail: "frame of " + strconv.FormatUint(uint64(size)+frameOverhead, 10) +
				" bytes exceeds the maximum of " + strconv.FormatUint(uint64(maxSize), 10)}
	}
	end := frameHeaderSize + int(size)
	if len(src) <= end {
		return Frame{}, 0, nil
	}
	if src[end] != FrameEnd {
		return Frame{}, 0, &Error{Err: ErrBadFrameEnd, FrameType: typ, Channel: ch, Offset: end,
			Detail: "frame-end octet 0x" + strconv.FormatUint(uint64(src[end]), 16) + " after " +
				strconv.FormatUint(uint64(size), 10) + " payload bytes"}
	}
	return Frame{Type: typ, Channel: ch, Payload: src[frameHeaderSize:end:end]}, end + 1, nil
}

// checkPeerProtocolHeader handles input starting with 'A', which is no
// frame type: nil while it may still become a protocol header, otherwise
// the error to report.
func checkPeerProtocolHeader(src []byte) error {
	n, err := CheckProtocolHeader(src)
	switch {
	case err != nil && n == 0:
		// Not a protocol header: report the octet as a frame type.
		return &Error{Err: ErrUnknownFrameType, FrameType: FrameType(src[0]), Offset: 0,
			Detail: "frame type " + strconv.Itoa(int(src[0]))}
	case n == 0:
		return nil
	case err == nil:
		return &Error{Err: ErrBadProtocolHeader, Offset: 0,
			Detail: "peer sent a protocol header instead of a frame"}
	}
	if e, ok := err.(*Error); ok {
		e.Detail = "peer sent a protocol header instead of a frame: " + e.Detail
	}
	return err
}

// CheckProtocolHeader checks the front of b for the AMQP 0-9-1 protocol
// header, as a server (or a test peer) does with a client's first bytes.
//
// It returns n == 8 and a nil error for exactly [ProtocolHeader]; n == 8 and
// an [*Error] wrapping [ErrBadProtocolHeader] that names the version for the
// header of another AMQP version; n == 0 and a nil error while b is a
// proper prefix of "AMQP" plus version (more bytes are needed); and n == 0
// with an error wrapping [ErrBadProtocolHeader] when b cannot be an AMQP
// protocol header at all.
func CheckProtocolHeader(b []byte) (n int, err error) {
	const magic = "AMQP"
	for i := 0; i < len(b) && i < len(magic); i++ {
		if b[i] != magic[i] {
			return 0, &Error{Err: ErrBadProtocolHeader, Offset: i,
				Detail: "input does not start with \"AMQP\""}
		}
	}
	if len(b) < len(ProtocolHeader) {
		return 0, nil
	}
	if string(b[:len(ProtocolHeader)]) == ProtocolHeader {
		return len(ProtocolHeader), nil
	}
	return len(ProtocolHeader), &Error{Err: ErrBadProtocolHeader, Offset: 4,
		Detail: "protocol header for AMQP " + strconv.Itoa(int(b[4])) + "-" + strconv.Itoa(int(b[5])) + "-" +
			strconv.Itoa(int(b[6])) + "-" + strconv.Itoa(int(b[7])) + " (protocol id, major, minor, revision); want 0-0-9-1"}
}

// maxEmptyReads is how many consecutive empty reads FrameReader tolerates
// before reporting io.ErrNoProgress.
const maxEmptyReads = 100

// FrameReader reads frames from an io.Reader through a buffer that it
// reuses: a frame's Payload is valid only until the next call to
// [FrameReader.ReadFrame]. The buffer grows as bytes arrive, to fit the
// largest frame read, and never beyond the maximum frame size: a peer that
// announces a large frame and then stalls holds only what it sent.
//
// A FrameReader is not safe for concurrent use.
type FrameReader struct {
	r          io.Reader
	buf        []byte
	start, end int // unread bytes are buf[start:end]
	maxSize    uint32
	err        error // sticky: a frame error, after which the stream is unusable
	rerr       error // a read error to report once the buffered frames are out
}

// NewFrameReader returns a FrameReader reading from r that accepts frames of
// up to maxSize bytes in total (0 means [DefaultMaxFrameSize]).
func NewFrameReader(r io.Reader, maxSize uint32) *FrameReader {
	fr := &FrameReader{r: r}
	fr.SetMaxFrameSize(maxSize)
	return fr
}

// SetMaxFrameSize changes the frame size limit for frames not yet read, as
// after connection.tune; 0 means [DefaultMaxFrameSize].
func (fr *FrameReader) SetMaxFrameSize(maxSize uint32) {
	if maxSize == 0 {
		maxSize = DefaultMaxFrameSize
	}
	fr.maxSize = maxSize
}

// Buffered returns the bytes read from the underlying reader but not yet
// returned as frames. They are valid until the next call to ReadFrame.
func (fr *FrameReader) Buffered() []byte { return fr.buf[fr.start:fr.end] }

// ReadFrame reads the next frame. The returned frame's Payload aliases the
// reader's buffer and is valid only until the next call to ReadFrame.
//
// Frame errors (see [ParseFrame]) are permanent: every later call returns
// the same error. Errors from the underlying reader are returned as they
// are, except that an io.EOF in the middle of a frame becomes
// io.ErrUnexpectedEOF; bytes already read stay buffered, so a call after a
// temporary error (such as a read deadline) resumes where it stopped.
func (fr *FrameReader) ReadFrame() (Frame, error) {
	if fr.err != nil {
		return Frame{}, fr.err
	}
	empty := 0
	for {
		f, n, err := ParseFrame(fr.buf[fr.start:fr.end], fr.maxSize)
		if err != nil {
			fr.err = err
			return Frame{}, err
		}
		if n > 0 {
			fr.start += n
			if fr.start == fr.end {
				fr.start, fr.end = 0, 0
			}
			return f, nil
		}
		if rerr := fr.rerr; rerr != nil {
			// Report a read error once the frames read before it are out.
			fr.rerr = nil
			if rerr == io.EOF && fr.end > fr.start {
				rerr = io.ErrUnexpectedEOF
			}
			return Frame{}, rerr
		}
		fr.makeRoom()
		m, rerr := fr.r.Read(fr.buf[fr.end:])
		if m < 0 || m > len(fr.buf)-fr.end {
			fr.err = errors.New("wire: io.Reader returned an invalid byte count")
			return Frame{}, fr.err
		}
		fr.end += m
		fr.rerr = rerr
		if m == 0 && rerr == nil {
			empty++
			if empty >= maxEmptyReads {
				return Frame{}, io.ErrNoProgress
			}
		}
	}
}

// makeRoom makes sure there is space after fr.end to read into. It moves
// the unread bytes to the front of the buffer when the frame they start
// would not fit behind them, and grows the buffer only when it is full of
// one incomplete frame: by doubling, so that a peer that announces a large
// frame and then sends nothing costs no more memory than it sent, and
// never beyond the frame size limit.
func (fr *FrameReader) makeRoom() {
	pending := fr.end - fr.start
	need := frameHeaderSize + 1
	if pending >= frameHeaderSize && fr.buf[fr.start] != 'A' {
		// ParseFrame has checked the size against the limit.
		need = frameHeaderSize + int(binary.BigEndian.Uint32(fr.buf[fr.start+3:])) + 1
	}
	if fr.start > 0 && len(fr.buf)-fr.start < need {
		copy(fr.buf, fr.buf[fr.start:fr.end])
		fr.start, fr.end = 0, pending
	}
	if fr.end < len(fr.buf) {
		return
	}
	size := max(2*len(fr.buf), FrameMinSize)
	size = min(size, max(int(fr.maxSize), need))
	nb := make([]byte, size)
	copy(nb, fr.buf[fr.start:fr.end])
	fr.buf = nb
	fr.start, fr.end = 0, pending
}

// appendFrameHeader appends a frame header with a zero payload size, to be
// patched by finishFrame.
func appendFrameHeader(dst []byte, t FrameType, channel uint16) []byte {
	return append(dst, byte(t), byte(channel>>8), byte(channel), 0, 0, 0, 0)
}

// finishFrame patches the payload size of the frame starting at start and
// appends the frame-end octet.
func finishFrame(dst []byte, start int) ([]byte, error) {
	size := len(dst) - start - frameHeaderSize
	if uint64(size) > math.MaxUint32-frameOverhead {
		return dst[:start], &Error{Err: ErrFrameTooLarge, FrameType: FrameType(dst[start]), Offset: -1,
			Detail: "payload of " + strconv.Itoa(size) + " bytes"}
	}
	binary.BigEndian.PutUint32(dst[start+3:], uint32(size))
	return append(dst, FrameEnd), nil
}

// AppendMethodFrame appends a method frame carrying m on channel to dst.
// On error dst is returned unchanged in length and the error, an [*Error]
// with FrameType, Channel and Method set, says which argument could not be
// encoded.
func AppendMethodFrame(dst []byte, channel uint16, m Method) ([]byte, error) {
	start := len(dst)
	id := m.ID()
	dst = appendFrameHeader(dst, FrameMethod, channel)
	dst = appendLong(dst, uint32(id))
	dst, err := m.AppendTo(dst)
	if err == nil {
		dst, err = finishFrame(dst, start)
	}
	if err != nil {
		return dst[:start], withFrame(withMethod(err, id), FrameMethod, channel)
	}
	return dst, nil
}

// AppendHeaderFrame appends a content header frame for the basic class
// (weight 0) announcing a body of bodySize bytes with properties p (nil
// means no properties). On error dst is returned unchanged in length.
func AppendHeaderFrame(dst []byte, channel uint16, bodySize uint64, p *Properties) ([]byte, error) {
	start := len(dst)
	dst = appendFrameHeader(dst, FrameHeader, channel)
	dst = appendShort(dst, uint16(ClassBasic))
	dst = appendShort(dst, 0)
	dst = appendLongLong(dst, bodySize)
	var err error
	if p == nil {
		dst = appendShort(dst, 0)
	} else {
		dst, err = p.appendFields(dst)
	}
	if err == nil {
		dst, err = finishFrame(dst, start)
	}
	if err != nil {
		return dst[:start], withFrame(err, FrameHeader, channel)
	}
	return dst, nil
}

// bodyChunk returns the payload size of body frames under frameMax: 0
// means DefaultMaxFrameSize, and values below FrameMinSize (which no peer
// may negotiate) are raised to FrameMinSize.
func bodyChunk(frameMax uint32) int {
	if frameMax == 0 {
		frameMax = DefaultMaxFrameSize
	}
	frameMax = max(frameMax, FrameMinSize)
	return int(frameMax - frameOverhead)
}

// AppendBodyFrames appends body as body frames on channel, each at most
// frameMax bytes in total (0 means [DefaultMaxFrameSize]; values below
// [FrameMinSize] are raised to it). An empty body appends no frames.
func AppendBodyFrames(dst []byte, channel uint16, body []byte, frameMax uint32) []byte {
	chunk := bodyChunk(frameMax)
	if len(body) > chunk {
		// Grow once for a body of several frames, not once per frame.
		frames := (len(body) + chunk - 1) / chunk
		if need := len(body) + frames*frameOverhead; cap(dst)-len(dst) < need {
			// One make and copy, not slices.Grow: under -race its
			// append(make) is not fused and allocates twice.
			grown := make([]byte, len(dst), len(dst)+need)
			copy(grown, dst)
			dst = grown
		}
	}
	for len(body) > 0 {
		n := min(len(body), chunk)
		dst = append(dst, byte(FrameBody), byte(channel>>8), byte(channel))
		dst = appendLong(dst, uint32(n))
		dst = append(dst, body[:n]...)
		dst = append(dst, FrameEnd)
		body = body[n:]
	}
	return dst
}

// AppendHeartbeatFrame appends a heartbeat frame (channel 0, no payload).
func AppendHeartbeatFrame(dst []byte) []byte {
	return append(dst, byte(FrameHeartbeat), 0, 0, 0, 0, 0, 0, FrameEnd)
}

// AppendMessage appends a complete message on channel: the method frame
// for m (a method that carries content, such as *BasicPublish), a content
// header frame with properties p (nil means none), and body split into
// body frames under frameMax (0 means [DefaultMaxFrameSize]; values below
// [FrameMinSize] are raised to it).
//
// A method or header frame larger than frameMax is an error wrapping
// [ErrFrameTooLarge] (a large headers table is the usual cause). On error
// dst is returned unchanged in length.
func AppendMessage(dst []byte, channel uint16, m Method, p *Properties, body []byte, frameMax uint32) ([]byte, error) {
	start := len(dst)
	limit := bodyChunk(frameMax) + frameOverhead
	dst, err := AppendMethodFrame(dst, channel, m)
	if err != nil {
		return dst[:start], err
	}
	if n := len(dst) - start; n > limit {
		return dst[:start], &Error{Err: ErrFrameTooLarge, FrameType: FrameMethod, Channel: channel, Method: m.ID(), Offset: -1,
			Detail: "method frame of " + strconv.Itoa(n) + " bytes exceeds frame-max " + strconv.Itoa(limit)}
	}
	mid := len(dst)
	dst, err = AppendHeaderFrame(dst, channel, uint64(len(body)), p)
	if err != nil {
		return dst[:start], err
	}
	if n := len(dst) - mid; n > limit {
		return dst[:start], &Error{Err: ErrFrameTooLarge, FrameType: FrameHeader, Channel: channel, Offset: -1,
			Detail: "content header frame of " + strconv.Itoa(n) + " bytes exceeds frame-max " + strconv.Itoa(limit)}
	}
	return AppendBodyFrames(dst, channel, body, frameMax), nil
}
