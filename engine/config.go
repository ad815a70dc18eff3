package engine

import (
	"runtime"
	"time"

	"github.com/pika-go/pika/wire"
)

// Version is the version of pika reported in the client properties.
const Version = "0.1.0"

// NoHeartbeat, as Config.Heartbeat, asks the server for no heartbeats.
const NoHeartbeat time.Duration = -1

// Defaults used for zero Config fields.
const (
	DefaultFrameMax         = 131072
	DefaultChannelMax       = 2047
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxBodySize      = 128 << 20 // RabbitMQ's default max_message_size
	DefaultLocale           = "en_US"
)

// Config configures an engine. The zero value is usable: it authenticates as
// guest/guest with PLAIN on vhost "/", and every field states its default.
type Config struct {
	// Mechanisms lists the SASL mechanisms in order of preference; the first
	// one the server offers is used. Default: PLAIN with Username/Password.
	Mechanisms []Mechanism
	// Username and Password are used by the default mechanism. Default
	// guest/guest.
	Username, Password string
	// Vhost is the virtual host to open. Default "/".
	Vhost string
	// DeferAuth makes the engine hand every SASL step to the driver instead
	// of calling the mechanism itself inside Receive: it queues EventAuth,
	// the driver calls the mechanism's Start or Challenge and passes the
	// result to AuthResponse, and the handshake waits meanwhile (bounded
	// by HandshakeTimeout). Drivers that hold a lock around engine calls set
	// it, so that an application's mechanism never runs under their lock.
	// Default false: the engine calls the mechanism itself.
	DeferAuth bool

	// ChannelMax is the highest channel number the client asks for; the
	// server may lower it. 0 means DefaultChannelMax (2047). The negotiated
	// value is the smaller of the two, where 0 from the server means 65535.
	ChannelMax uint16
	// FrameMax is the largest frame size the client asks for, in bytes; the
	// server may lower it. 0 means DefaultFrameMax (128 KiB). Values below
	// 4096 (the protocol's minimum) are raised to 4096. The negotiated value
	// is the smaller of the two, where 0 from the server means no limit.
	FrameMax uint32
	// Heartbeat is the heartbeat interval the client asks for. The rules:
	//   - NoHeartbeat (negative): no heartbeats, whatever the server proposes;
	//   - 0: accept the server's proposal (RabbitMQ's default is 60 s);
	//   - positive: the smaller of this and the server's proposal, or this if
	//     the server proposes 0. Rounded up to whole seconds.
	Heartbeat time.Duration
	// HandshakeTimeout bounds the time from Start to connection.open-ok.
	// 0 means DefaultHandshakeTimeout (10 s); negative means no limit.
	HandshakeTimeout time.Duration
	// MaxBodySize is the largest message body the client accepts from the
	// server; a content header announcing more is a connection error
	// (FRAME_ERROR). 0 means DefaultMaxBodySize (128 MiB).
	MaxBodySize uint64

	// ConnectionName is shown by the broker's management UI and rabbitmqctl.
	// Default: none.
	ConnectionName string
	// ClientProperties are merged into the client properties sent in
	// connection.start-ok; they override product, version, platform and
	// information, but not capabilities. Default: none.
	ClientProperties wire.Table
	// Locale is the message locale. Default "en_US".
	Locale string
}

// settings are a Config with defaults applied.
type settings struct {
	Config
	heartbeat uint16 // requested, seconds; 0 with noHeartbeat means none
	noHB      bool
}

func newSettings(cfg Config) settings {
	s := settings{Config: cfg}
	if len(s.Mechanisms) == 0 {
		user, pass := s.Username, s.Password
		if user == "" && pass == "" {
			user, pass = "guest", "guest"
		}
		s.Mechanisms = []Mechanism{PlainAuth{Username: user, Password: pass}}
	}
	if s.Vhost == "" {
		s.Vhost = "/"
	}
	if s.ChannelMax == 0 {
		s.ChannelMax = DefaultChannelMax
	}
	if s.FrameMax == 0 {
		s.FrameMax = DefaultFrameMax
	}
	if s.FrameMax < wire.FrameMinSize {
		s.FrameMax = wire.FrameMinSize
	}
	switch {
	case s.Heartbeat < 0:
		s.noHB = true
	case s.Heartbeat > 0:
		secs := (s.Heartbeat + time.Second - 1) / time.Second
		if secs > 65535 {
			secs = 65535
		}
		s.heartbeat = uint16(secs)
	}
	if s.HandshakeTimeout == 0 {
		s.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if s.MaxBodySize == 0 {
		s.MaxBodySize = DefaultMaxBodySize
	}
	if s.Locale == "" {
		s.Locale = DefaultLocale
	}
	return s
}

// clientProperties builds the client-properties table of connection.start-ok.
func (s *settings) clientProperties() wire.Table {
	t := wire.Table{
		"product":     "pika-go",
		"version":     Version,
		"platform":    "Go " + runtime.Version(),
		"information": "https://github.com/pika-go/pika",
	}
	for k, v := range s.ClientProperties {
		t[k] = v
	}
	if s.ConnectionName != "" {
		t["connection_name"] = s.ConnectionName
	}
	t["capabilities"] = wire.Table{
		"publisher_confirms":           true,
		"exchange_exchange_bindings":   true,
		"basic.nack":                   true,
		"consumer_cancel_notify":       true,
		"connection.blocked":           true,
		"authentication_failure_close": true,
		"per_consumer_qos":             true,
		"direct_reply_to":              true,
	}
	return t
}

// Tuning is the outcome of connection.tune negotiation.
type Tuning struct {
	ChannelMax uint16        // highest usable channel id
	FrameMax   uint32        // largest frame in either direction, in bytes
	Heartbeat  time.Duration // 0 when heartbeats are off
}

// negotiate applies the tuning rules documented on Config to the server's
// connection.tune proposal.
func (s *settings) negotiate(t *wire.ConnectionTune) Tuning {
	var out Tuning
	out.ChannelMax = s.ChannelMax
	if t.ChannelMax != 0 && t.ChannelMax < out.ChannelMax {
		out.ChannelMax = t.ChannelMax
	}
	out.FrameMax = s.FrameMax
	if t.FrameMax != 0 && t.FrameMax < out.FrameMax {
		out.FrameMax = t.FrameMax
	}
	var hb uint16
	switch {
	case s.noHB:
		hb = 0
	case s.heartbeat == 0:
		hb = t.Heartbeat
	case t.Heartbeat == 0 || s.heartbeat < t.Heartbeat:
		hb = s.heartbeat
	default:
		hb = t.Heartbeat
	}
	out.Heartbeat = time.Duration(hb) * time.Second
	return out
}
