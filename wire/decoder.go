package wire

import "encoding/binary"

// PeekMethodID returns the class and method id at the front of a method
// frame's payload. For an id the spec does not define it returns the id
// together with an error wrapping [ErrUnknownMethod]; for a payload shorter
// than 4 bytes, an error wrapping [ErrTruncated].
func PeekMethodID(payload []byte) (MethodID, error) {
	if len(payload) < 4 {
		return 0, &Error{Err: ErrTruncated, Offset: 0,
			Detail: "method frame payload of " + itoa(len(payload)) + " bytes has no class and method id"}
	}
	id := MethodID(binary.BigEndian.Uint32(payload))
	if !id.Known() {
		return id, &Error{Err: ErrUnknownMethod, Offset: 0,
			Detail: "class-id " + itoa(int(id.Class())) + ", method-id " + itoa(int(id.Index()))}
	}
	return id, nil
}

// DecodeMethod decodes a method frame's payload (class id, method id and
// arguments) into a new value of the method's type, such as *BasicDeliver.
// The result does not alias payload.
//
// Errors are [*Error] values with Method set (when the id is known) and
// Offset counting from the start of payload.
func DecodeMethod(payload []byte) (Method, error) {
	id, err := PeekMethodID(payload)
	if err != nil {
		return nil, err
	}
	m := id.New()
	if err := m.Decode(payload[4:]); err != nil {
		return nil, shiftOffset(err, 4)
	}
	return m, nil
}

// shiftOffset moves the offset of an *Error from an argument list to the
// payload that starts with 4 bytes of ids.
func shiftOffset(err error, by int) error {
	if e, ok := err.(*Error); ok && e.Offset >= 0 {
		e.Offset += by
	}
	return err
}

// MethodDecoder decodes method frame payloads into values it reuses: one
// value per method id, so that a stream of basic.deliver methods decodes
// into the same *BasicDeliver, keeping its strings when they repeat. This
// is the allocation-free path for consumers.
//
// A value returned by Decode is valid until the next Decode of the same
// method id through the same MethodDecoder, which overwrites it; copy it
// (or the fields needed) to keep it longer. The zero MethodDecoder is ready
// to use. A MethodDecoder is not safe for concurrent use.
type MethodDecoder struct {
	// Most connections see a handful of method ids; a short list beats a
	// map for those and needs no hashing.
	ids  []MethodID
	vals []Method
}

// Decode decodes a method frame's payload into the decoder's value for its
// method id and returns that value. Errors are as for [DecodeMethod]; after
// an error the value for that id holds partial results until the next
// successful Decode.
func (d *MethodDecoder) Decode(payload []byte) (Method, error) {
	id, err := PeekMethodID(payload)
	if err != nil {
		return nil, err
	}
	m := d.value(id)
	if err := m.Decode(payload[4:]); err != nil {
		return nil, shiftOffset(err, 4)
	}
	return m, nil
}

// DecodeFrame is [MethodDecoder.Decode] for a frame's payload; errors also
// carry the frame's type and channel.
func (d *MethodDecoder) DecodeFrame(f Frame) (Method, error) {
	m, err := d.Decode(f.Payload)
	if err != nil {
		return nil, withFrame(err, f.Type, f.Channel)
	}
	return m, nil
}

// value returns the reused value for a known id, making it on first use.
func (d *MethodDecoder) value(id MethodID) Method {
	for i, x := range d.ids {
		if x == id {
			return d.vals[i]
		}
	}
	m := id.New()
	d.ids = append(d.ids, id)
	d.vals = append(d.vals, m)
	return m
}
