package engine

import (
	"errors"
	"strconv"
	"strings"

	"github.com/pika-go/pika/wire"
)

// Sentinel errors of the engine. Errors that carry an AMQP reply code are
// [*Error] values instead; these name conditions that have no reply code.
var (
	// ErrClosed is returned by calls made after the connection has closed.
	ErrClosed = errors.New("pika: connection closed")
	// ErrChannelClosed is returned by calls on a channel that is closed or
	// closing.
	ErrChannelClosed = errors.New("pika: channel closed")
	// ErrNotOpen is returned by calls that need an open connection while the
	// handshake is still running.
	ErrNotOpen = errors.New("pika: connection not open yet")
	// ErrNoFreeChannel is returned by OpenChannel when every channel id up
	// to the negotiated channel_max is in use.
	ErrNoFreeChannel = errors.New("pika: no free channel id (channel_max reached)")
	// ErrAuthentication is the error of a handshake the server refused
	// because of the credentials (ACCESS_REFUSED during the handshake, or the
	// socket closed right after start-ok without the
	// authentication_failure_close capability).
	ErrAuthentication = errors.New("pika: authentication failed")
	// ErrVhostRefused is the error of a connection.open the server refused:
	// the virtual host does not exist or the user may not access it.
	ErrVhostRefused = errors.New("pika: virtual host refused")
	// ErrHandshakeClosed is the error of a server that closed the connection
	// during the handshake for a reason other than authentication or vhost.
	ErrHandshakeClosed = errors.New("pika: server closed the connection during the handshake")
	// ErrHandshakeTimeout is the error of a handshake that did not complete
	// within Config.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("pika: handshake timed out")
	// ErrNoMechanism is the error of a handshake where the server offers none
	// of the configured SASL mechanisms.
	ErrNoMechanism = errors.New("pika: no common SASL mechanism")
	// ErrHeartbeatTimeout is the error of a connection whose peer sent
	// nothing for two heartbeat intervals.
	ErrHeartbeatTimeout = errors.New("pika: heartbeat timeout (peer sent nothing for two intervals)")
	// ErrNotAMQP is matched (errors.Is) by the *NotAMQPError of a server
	// that answered the protocol header with something other than AMQP
	// (an HTTP server, say).
	ErrNotAMQP = errors.New("pika: server does not speak AMQP 0-9-1")
	// ErrProtocolVersion is the error of a server that answered the protocol
	// header with a header of its own: it does not speak AMQP 0-9-1.
	ErrProtocolVersion = errors.New("pika: server rejected protocol version AMQP 0-9-1")
	// ErrNotSynchronous is returned by Call for a method that expects no
	// reply (or has no-wait set): use Send.
	ErrNotSynchronous = errors.New("pika: method expects no reply; use Send")
	// ErrNotClientMethod is returned for a method that the client may not
	// send.
	ErrNotClientMethod = errors.New("pika: method may not be sent by a client")
	// ErrBadChannel is returned for calls on a channel id that is not open.
	ErrBadChannel = errors.New("pika: no such channel")
	// ErrUnknownTag is matched (errors.Is) by the *TagError that Ack, Nack
	// and Reject return for a delivery tag that does not await an
	// acknowledgement: never delivered, settled already, delivered with
	// no-ack, or 0 without multiple. Nothing is sent for it.
	ErrUnknownTag = errors.New("pika: unknown delivery tag")
)

// Error is an AMQP error with a reply code: a connection.close or
// channel.close sent by the server, or one the client sent because the server
// broke the protocol.
//
// errors.Is(err, target) is true when target is the ReplyCodeError of the
// same code (package pika declares them: ErrNotFound, ...), and when target
// is ErrClosed for a connection error or ErrChannelClosed for a channel
// error.
type Error struct {
	Code     wire.ReplyCode // the reply code, e.g. 404 NOT_FOUND
	Text     string         // the reply text
	Method   wire.MethodID  // the method that caused it, when the peer said (0 otherwise)
	Server   bool           // true when the server sent the close; false when the client did
	Conn     bool           // true when the whole connection closed; false for one channel
	Channel  uint16         // the channel that closed (0 for a connection error)
	internal error          // a wire error behind a client-sent protocol error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("pika: ")
	if e.Conn {
		b.WriteString("connection")
	} else {
		b.WriteString("channel ")
		b.WriteString(strconv.Itoa(int(e.Channel)))
	}
	if e.Server {
		b.WriteString(" closed by server: ")
	} else {
		b.WriteString(" closed by client: ")
	}
	b.WriteString(strconv.Itoa(int(e.Code)))
	b.WriteByte(' ')
	// RabbitMQ's texts start with the code's name already.
	if !strings.HasPrefix(e.Text, e.Code.String()) {
		b.WriteString(e.Code.String())
		if e.Text != "" {
			b.WriteString(" - ")
		}
	}
	b.WriteString(e.Text)
	if e.Method != 0 {
		b.WriteString(" (in ")
		b.WriteString(e.Method.String())
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the wire error behind a protocol error the client detected,
// or nil.
func (e *Error) Unwrap() error { return e.internal }

// Is reports whether target matches e: the ReplyCodeError of e's code,
// ErrClosed for connection errors, or ErrChannelClosed for channel errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrClosed:
		return e.Conn
	case ErrChannelClosed:
		return !e.Conn
	}
	if t, ok := target.(ReplyCodeError); ok {
		return wire.ReplyCode(t) == e.Code
	}
	return false
}

// ReplyCodeError is a sentinel that matches, under errors.Is, every *Error
// with the same reply code: errors.Is(err, ReplyCodeError(404)) asks "was
// this a NOT_FOUND?". Package pika declares one per reply code.
type ReplyCodeError wire.ReplyCode

func (e ReplyCodeError) Error() string {
	return "pika: " + strconv.Itoa(int(e)) + " " + wire.ReplyCode(e).String()
}

// Retryable reports whether a retry of the same request could get past the
// error without anything in the request or the broker's configuration
// changing: true when the reply code names a state of the broker or of
// other clients that can pass on its own, false when it names a fault of
// the request or a decision of the broker's configuration. It is not the
// spec's soft/hard split (ReplyCode.IsSoft: whether the channel or the whole
// connection closed): 320 CONNECTION_FORCED is hard and retryable, 406
// PRECONDITION_FAILED soft and not. A retry needs a new channel (and, for a
// connection error, a new connection, which automatic recovery makes). To
// test for one reply code, use errors.Is with its sentinel (pika.ErrNotFound,
// ...). By class:
//
//   - 311 CONTENT_TOO_LARGE: true; the spec defines it as more than the
//     server can accept "at the present time".
//   - 312 NO_ROUTE, 313 NO_CONSUMERS: true; a queue or consumer may appear
//     (these codes normally come with basic.return, not as errors).
//   - 320 CONNECTION_FORCED: true; an operator or a broker shutdown closed
//     the connection, and reconnecting can succeed.
//   - 404 NOT_FOUND: true; another client may declare the entity, and
//     RabbitMQ also answers 404 for a queue whose node is down.
//   - 405 RESOURCE_LOCKED: true; another connection uses the exclusive
//     queue, and the lock goes with that connection.
//   - 506 RESOURCE_ERROR: true; the broker lacked resources at the time.
//   - 541 INTERNAL_ERROR: true; the broker failed while handling the request
//     (a crashed queue process, say), which is its state, not the request's.
//   - 402 INVALID_PATH, 403 ACCESS_REFUSED, 530 NOT_ALLOWED: false; the
//     broker's configuration refuses the request until an operator changes
//     it.
//   - 406 PRECONDITION_FAILED: false; the request contradicts what exists
//     (other arguments, an unknown delivery tag) and fails again the same way.
//   - 501 FRAME_ERROR, 502 SYNTAX_ERROR, 503 COMMAND_INVALID, 504
//     CHANNEL_ERROR, 505 UNEXPECTED_FRAME: false; a protocol violation, a bug
//     on one side that repeating the request repeats.
//   - 540 NOT_IMPLEMENTED: false; the broker does not support the request.
//   - 200 REPLY_SUCCESS and codes the spec does not define: false.
func (e *Error) Retryable() bool {
	switch e.Code {
	case wire.ReplyContentTooLarge, wire.ReplyNoRoute, wire.ReplyNoConsumers,
		wire.ReplyConnectionForced, wire.ReplyNotFound, wire.ReplyResourceLocked,
		wire.ReplyResourceError, wire.ReplyInternalError:
		return true
	}
	return false
}

// protocolError builds the *Error the client sends when the server breaks
// the protocol.
func protocolError(code wire.ReplyCode, text string, cause error) *Error {
	return &Error{Code: code, Text: text, Conn: true, internal: cause}
}

// replyCodeFor maps a wire decoding error to the reply code the client closes
// the connection with.
func replyCodeFor(err error) wire.ReplyCode {
	switch {
	case errors.Is(err, wire.ErrFrameTooLarge), errors.Is(err, wire.ErrBadFrameEnd),
		errors.Is(err, wire.ErrUnknownFrameType), errors.Is(err, wire.ErrBodyTooLarge):
		return wire.ReplyFrameError
	case errors.Is(err, wire.ErrUnknownMethod):
		return wire.ReplyCommandInvalid
	}
	return wire.ReplySyntaxError
}

// NotAMQPError is the error of a server that answered the client's
// protocol header with bytes that are neither an AMQP frame nor an AMQP
// protocol header: it speaks another protocol. errors.Is(err, ErrNotAMQP)
// is true.
type NotAMQPError struct {
	// Answer is the start of what the server sent (at most 64 bytes).
	Answer []byte
}

// maxAnswer bounds NotAMQPError.Answer.
const maxAnswer = 64

func (e *NotAMQPError) Error() string {
	return "pika: server does not speak AMQP 0-9-1 (it answered " + e.Quoted() + ")"
}

// Quoted returns Answer quoted, non-printable bytes escaped, with "..."
// when the server sent more than maxAnswer bytes.
func (e *NotAMQPError) Quoted() string {
	if len(e.Answer) >= maxAnswer {
		return quoteBytes(e.Answer[:maxAnswer]) + "..."
	}
	return quoteBytes(e.Answer)
}

// Is makes errors.Is(err, ErrNotAMQP) true.
func (e *NotAMQPError) Is(target error) bool { return target == ErrNotAMQP }

// handshakeError is a handshake failure: one of the handshake sentinels, a
// detail, and the server's close when there was one. errors.Is matches the
// sentinel; errors.As finds the *Error.
type handshakeError struct {
	err    error
	detail string
	cause  error
}

func (e *handshakeError) Error() string {
	s := e.err.Error()
	if e.detail != "" {
		s += ": " + e.detail
	}
	if e.cause != nil {
		s += ": " + strings.TrimPrefix(e.cause.Error(), "pika: ")
	}
	return s
}

func (e *handshakeError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.err}
	}
	return []error{e.err, e.cause}
}

// TagError is the error of an acknowledgement (Ack, Nack, Reject) that was
// not sent because its delivery tag does not await one on the channel:
// sending it would make the broker close the channel with
// PRECONDITION_FAILED. errors.Is(err, ErrUnknownTag) is true.
type TagError struct {
	Channel uint16
	Tag     uint64
	Reason  string // e.g. "never delivered on this channel"
}

func (e *TagError) Error() string {
	return "pika: delivery tag " + strconv.FormatUint(e.Tag, 10) + " on channel " + strconv.Itoa(int(e.Channel)) + ": " + e.Reason
}

// Unwrap returns ErrUnknownTag.
func (e *TagError) Unwrap() error { return ErrUnknownTag }
