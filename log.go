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
		attrs = append(attrs, "method", m.ID().Name(), slog.Any("fields", redactSecrets(m)))
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

// redactSecrets returns m, or for methods that carry credentials a copy
// with them hidden: the SASL response (PLAIN holds the password in the
// clear) and a new secret.
func redactSecrets(m wire.Method) wire.Method {
	const hidden = "[redacted]"
	switch m := m.(type) {
	case *wire.ConnectionStartOk:
		cp := *m
		cp.Response = hidden
		return &cp
	case *wire.ConnectionSecureOk:
		cp := *m
		cp.Response = hidden
		return &cp
	case *wire.ConnectionUpdateSecret:
		cp := *m
		cp.NewSecret = hidden
		return &cp
	}
	return m
}
