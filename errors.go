package pika

import (
	"errors"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// Error is an AMQP error with a reply code: the server closed a channel
// (Conn false) or the whole connection (Conn true), or the client closed the
// connection because the server broke the protocol (Server false). Test the
// code with errors.Is and the reply-code sentinels below:
//
//	if errors.Is(err, pika.ErrNotFound) { ... }
type Error = engine.Error

// ReplyCode is an AMQP reply code; its String method gives the spec's name.
type ReplyCode = wire.ReplyCode

// Reply-code sentinels: errors.Is(err, ErrNotFound) is true for every *Error
// with code 404, whichever channel or connection it closed.
var (
	ErrContentTooLarge    error = engine.ReplyCodeError(wire.ReplyContentTooLarge)
	ErrNoRoute            error = engine.ReplyCodeError(wire.ReplyNoRoute)
	ErrNoConsumers        error = engine.ReplyCodeError(wire.ReplyNoConsumers)
	ErrConnectionForced   error = engine.ReplyCodeError(wire.ReplyConnectionForced)
	ErrInvalidPath        error = engine.ReplyCodeError(wire.ReplyInvalidPath)
	ErrAccessRefused      error = engine.ReplyCodeError(wire.ReplyAccessRefused)
	ErrNotFound           error = engine.ReplyCodeError(wire.ReplyNotFound)
	ErrResourceLocked     error = engine.ReplyCodeError(wire.ReplyResourceLocked)
	ErrPreconditionFailed error = engine.ReplyCodeError(wire.ReplyPreconditionFailed)
	ErrFrameError         error = engine.ReplyCodeError(wire.ReplyFrameError)
	ErrSyntaxError        error = engine.ReplyCodeError(wire.ReplySyntaxError)
	ErrCommandInvalid     error = engine.ReplyCodeError(wire.ReplyCommandInvalid)
	ErrChannelError       error = engine.ReplyCodeError(wire.ReplyChannelError)
	ErrUnexpectedFrame    error = engine.ReplyCodeError(wire.ReplyUnexpectedFrame)
	ErrResourceError      error = engine.ReplyCodeError(wire.ReplyResourceError)
	ErrNotAllowed         error = engine.ReplyCodeError(wire.ReplyNotAllowed)
	ErrNotImplemented     error = engine.ReplyCodeError(wire.ReplyNotImplemented)
	ErrInternalError      error = engine.ReplyCodeError(wire.ReplyInternalError)
)

// Sentinel errors of package pika (and those of the engine it re-exports).
var (
	// ErrClosed: the connection is closed (errors.Is also matches every
	// connection-level *Error).
	ErrClosed = engine.ErrClosed
	// ErrChannelClosed: the channel is closed (errors.Is also matches every
	// channel-level *Error).
	ErrChannelClosed = engine.ErrChannelClosed
	// ErrNoFreeChannel: every channel id up to channel_max is in use.
	ErrNoFreeChannel = engine.ErrNoFreeChannel
	// ErrAuthentication: the broker refused the credentials.
	ErrAuthentication = engine.ErrAuthentication
	// ErrVhostRefused: the virtual host does not exist or is not allowed.
	ErrVhostRefused = engine.ErrVhostRefused
	// ErrHandshakeClosed: the broker closed the connection during the
	// handshake.
	ErrHandshakeClosed = engine.ErrHandshakeClosed
	// ErrHandshakeTimeout: the handshake did not finish in time.
	ErrHandshakeTimeout = engine.ErrHandshakeTimeout
	// ErrNotAMQP: the server answered the protocol header with something
	// other than AMQP 0-9-1 (an HTTP server, say); the error shows the
	// start of its answer.
	ErrNotAMQP = engine.ErrNotAMQP
	// ErrHeartbeatTimeout: the broker sent nothing for two heartbeat
	// intervals.
	ErrHeartbeatTimeout = engine.ErrHeartbeatTimeout
	// ErrUnknownTag: Ack, Nack or Reject of a delivery tag that awaits no
	// acknowledgement on the channel (0 without multiple, already settled,
	// delivered to an AutoAck consumer or never delivered there); nothing
	// was sent. The error is an *engine.TagError saying which.
	ErrUnknownTag = engine.ErrUnknownTag

	// ErrNacked: the broker refused a published message (basic.nack).
	ErrNacked = errors.New("pika: message nacked by the broker")
	// ErrReturned: the broker returned a mandatory message it could not
	// route; the error is a *ReturnedError holding the message.
	ErrReturned = errors.New("pika: message returned by the broker")
	// ErrOutcomeUnknown: the channel or connection closed before the broker
	// confirmed or refused a message, and it was not republished (see
	// Config.DisableRepublish); it may or may not have been accepted.
	// Publish it again if duplicates are acceptable.
	ErrOutcomeUnknown = errors.New("pika: publish outcome unknown (channel closed before the confirmation)")
	// ErrNotConfirmMode: a confirmation was asked for on a channel that is
	// not in confirm mode (call ConfirmSelect first).
	ErrNotConfirmMode = errors.New("pika: channel is not in confirm mode")
	// ErrBlockedTimeout: the broker kept the connection blocked longer than
	// Config.BlockedTimeout.
	ErrBlockedTimeout = errors.New("pika: connection blocked by the broker for too long")
	// ErrConsumerCancelled: the broker cancelled the consumer (its queue was
	// deleted, or its node went down).
	ErrConsumerCancelled = errors.New("pika: consumer cancelled by the broker")
	// ErrConsumerClosed: the application cancelled the consumer
	// (Consumer.Cancel). A consumer whose channel closed ends with the
	// channel's close cause instead (see Consumer.Err).
	ErrConsumerClosed = errors.New("pika: consumer closed")
)

// ReturnedError is the outcome of a mandatory publish the broker could not
// route: errors.Is(err, ErrReturned) is true, and Return holds the returned
// message with the broker's reply code and text.
type ReturnedError struct {
	Return *Return
}

func (e *ReturnedError) Error() string {
	return "pika: message returned by the broker: " + e.Return.ReplyText
}

// Is makes errors.Is(err, ErrReturned) true.
func (e *ReturnedError) Is(target error) bool { return target == ErrReturned }

// outcomeError is ErrOutcomeUnknown with the cause of the closure.
type outcomeError struct{ cause error }

func (e *outcomeError) Error() string {
	if e.cause == nil {
		return ErrOutcomeUnknown.Error()
	}
	return ErrOutcomeUnknown.Error() + ": " + e.cause.Error()
}

func (e *outcomeError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrOutcomeUnknown}
	}
	return []error{ErrOutcomeUnknown, e.cause}
}
