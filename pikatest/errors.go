package pikatest

import (
	"fmt"

	"github.com/pika-go/pika/wire"
)

// amqpError is an error the broker reports to a client with channel.close
// (soft, channel scope) or connection.close (hard, connection scope). The
// text starts with the reply code's name, as RabbitMQ writes it.
type amqpError struct {
	code   wire.ReplyCode
	text   string
	method wire.MethodID
	conn   bool // connection-level
}

func (e *amqpError) Error() string { return e.text }

// chanErr returns a channel-level error.
func chanErr(code wire.ReplyCode, format string, args ...any) *amqpError {
	return &amqpError{code: code, text: code.String() + " - " + fmt.Sprintf(format, args...)}
}

// connErr returns a connection-level error.
func connErr(code wire.ReplyCode, format string, args ...any) *amqpError {
	e := chanErr(code, format, args...)
	e.conn = true
	return e
}

// Shapes shared by several methods.

func errNoQueue(vh, name string) *amqpError {
	return chanErr(wire.ReplyNotFound, "no queue '%s' in vhost '%s'", name, vh)
}

func errNoExchange(vh, name string) *amqpError {
	return chanErr(wire.ReplyNotFound, "no exchange '%s' in vhost '%s'", name, vh)
}

func errDefaultExchange() *amqpError {
	return chanErr(wire.ReplyAccessRefused, "operation not permitted on the default exchange")
}

func errLocked(vh, name string) *amqpError {
	return chanErr(wire.ReplyResourceLocked, "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. "+
		"It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.", name, vh)
}

func errNotImplemented(format string, args ...any) *amqpError {
	return connErr(wire.ReplyNotImplemented, format, args...)
}
