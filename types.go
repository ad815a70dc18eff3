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
