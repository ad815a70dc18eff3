package pika

import (
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// Table is an AMQP field table: message headers and the arguments of
// declare, bind and consume. See package wire for the mapping of Go types
// to AMQP field types.
type Table = wire.Table

// Decimal is an AMQP decimal field value: Value / 10^Scale.
type Decimal = wire.Decimal

// Properties are the 14 basic content properties of a message.
type Properties = wire.Properties

// Mechanism is a SASL mechanism; see PlainAuth, AMQPlainAuth and
// ExternalAuth, or implement it for challenge/response mechanisms.
type Mechanism = engine.Mechanism

// PlainAuth is the SASL PLAIN mechanism.
type PlainAuth = engine.PlainAuth

// AMQPlainAuth is RabbitMQ's AMQPLAIN mechanism.
type AMQPlainAuth = engine.AMQPlainAuth

// ExternalAuth is the SASL EXTERNAL mechanism (TLS client certificates).
type ExternalAuth = engine.ExternalAuth

// PropertyFlags say which properties a message carries. A property is sent
// when its value is non-zero or its flag is set in Properties.Flags: set a
// flag to send a zero value (priority 0, an empty string) explicitly.
type PropertyFlags = wire.PropertyFlags

// The property flags, one per basic property.
const (
	FlagContentType     = wire.FlagContentType
	FlagContentEncoding = wire.FlagContentEncoding
	FlagHeaders         = wire.FlagHeaders
	FlagDeliveryMode    = wire.FlagDeliveryMode
	FlagPriority        = wire.FlagPriority
	FlagCorrelationID   = wire.FlagCorrelationID
	FlagReplyTo         = wire.FlagReplyTo
	FlagExpiration      = wire.FlagExpiration
	FlagMessageID       = wire.FlagMessageID
	FlagTimestamp       = wire.FlagTimestamp
	FlagType            = wire.FlagType
	FlagUserID          = wire.FlagUserID
	FlagAppID           = wire.FlagAppID
	FlagClusterID       = wire.FlagClusterID
)
