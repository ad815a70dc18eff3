package pika

import (
	"log/slog"

	"github.com/pika-go/pika/wire"
)

// frameAttrs describes one frame for a Debug log record: its direction,
// type and channel, and for methods the method's name and fields, for
// content headers a summary of the properties, for bodies the size.
func frameAttrs(dir string, f wire.Frame) []any {
	attrs := []any{"dir", dir, "type", f.Type.String(), "channel", f.Channel}
	switch f.Type {
	case wire.FrameMethod:
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			return append(attrs, "error", err.Error())
		}
		attrs = append(attrs, "method", m.ID().Name(), slog.Any("fields", m))
	case wire.FrameHeader:
		var h wire.ContentHeader
		if err := h.Decode(f.Payload, 0); err != nil {
			return append(attrs, "error", err.Error())
		}
		attrs = append(attrs, "body_size", h.BodySize, "properties", h.Properties.Flags.String())
	case wire.FrameBody:
		attrs = append(attrs, "size", len(f.Payload))
	}
	return attrs
}
