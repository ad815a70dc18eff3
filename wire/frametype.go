package wire

import "strconv"

// FrameType is the type octet that starts every frame.
type FrameType uint8

// The frame types of AMQP 0-9-1.
const (
	FrameMethod    FrameType = 1
	FrameHeader    FrameType = 2
	FrameBody      FrameType = 3
	FrameHeartbeat FrameType = 8
)

// String returns "method", "header", "body", "heartbeat", or "frame-type(N)".
func (t FrameType) String() string {
	switch t {
	case FrameMethod:
		return "method"
	case FrameHeader:
		return "header"
	case FrameBody:
		return "body"
	case FrameHeartbeat:
		return "heartbeat"
	}
	return "frame-type(" + strconv.Itoa(int(t)) + ")"
}
