package wire

import "strconv"

// ContentHeader is the payload of a content header frame, which follows a
// method that carries content (basic.publish, basic.deliver, basic.return,
// basic.get-ok) and announces the body size and the message properties.
//
// A ContentHeader is plain data and not safe for concurrent modification;
// decode into one value per goroutine.
type ContentHeader struct {
	ClassID    ClassID // always ClassBasic in AMQP 0-9-1
	Weight     uint16  // unused; always 0
	BodySize   uint64  // total size of the body frames that follow
	Properties Properties
}

// Decode sets h from the payload of a content header frame. It does not
// retain payload: strings equal to those already in h.Properties are kept
// rather than allocated again, so decoding a stream of headers into the
// same ContentHeader allocates only for strings that change and for a
// headers table.
//
// maxBody, when not 0, is the largest acceptable BodySize; a larger one is
// an error wrapping [ErrBodyTooLarge], reported before any property is
// read. A class other than basic or a non-zero weight wraps
// [ErrBadContentHeader]; undefined property flag bits wrap
// [ErrBadPropertyFlags]. Errors are [*Error] values whose Offset counts from
// the start of payload; use [ContentHeader.DecodeFrame] to also have the
// frame's channel in the error. On error h holds partial results.
func (h *ContentHeader) Decode(payload []byte, maxBody uint64) error {
	r := reader{b: payload}
	h.ClassID = ClassID(r.short("class-id"))
	h.Weight = r.short("weight")
	h.BodySize = r.longlong("body-size")
	if r.err != nil {
		return r.err
	}
	if h.ClassID != ClassBasic {
		return &Error{Err: ErrBadContentHeader, Offset: 0,
			Detail: "class-id " + strconv.Itoa(int(h.ClassID)) + ", want " + strconv.Itoa(int(ClassBasic)) + " (basic)"}
	}
	if h.Weight != 0 {
		return &Error{Err: ErrBadContentHeader, Offset: 2,
			Detail: "weight " + strconv.Itoa(int(h.Weight)) + ", want 0"}
	}
	if maxBody != 0 && h.BodySize > maxBody {
		return &Error{Err: ErrBodyTooLarge, Offset: 4,
			Detail: "body-size " + strconv.FormatUint(h.BodySize, 10) + " exceeds the maximum of " + strconv.FormatUint(maxBody, 10)}
	}
	h.Properties.decodeFields(&r)
	return r.done("end of content header")
}

// DecodeFrame is [ContentHeader.Decode] for a frame's payload; errors also
// carry the frame's type and channel.
func (h *ContentHeader) DecodeFrame(f Frame, maxBody uint64) error {
	if err := h.Decode(f.Payload, maxBody); err != nil {
		return withFrame(err, f.Type, f.Channel)
	}
	return nil
}

// AppendTo appends the content header payload (not a whole frame; see
// [AppendHeaderFrame]) to dst. ClassID and Weight are written as they are,
// so a zero ClassID must be set to [ClassBasic] for a valid header. On error
// dst is returned unchanged.
func (h *ContentHeader) AppendTo(dst []byte) ([]byte, error) {
	b := appendShort(dst, uint16(h.ClassID))
	b = appendShort(b, h.Weight)
	b = appendLongLong(b, h.BodySize)
	b, err := h.Properties.appendFields(b)
	if err != nil {
		return dst, err
	}
	return b, nil
}
