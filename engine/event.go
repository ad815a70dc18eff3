package engine

import (
	"strconv"

	"github.com/pika-go/pika/wire"
)

// EventKind says what an Event reports and which of its fields are set.
type EventKind uint8

// The kinds of Event. The comment of each names the Event fields it sets;
// Channel is set on every channel-level event.
const (
	// EventOpen: the handshake completed. Tuning and ServerProperties are
	// available from the Conn from now on.
	EventOpen EventKind = iota + 1
	// EventReply: the reply to the request Request. Method is the reply
	// (e.g. *wire.QueueDeclareOk), or nil with Err set when the request
	// failed because its channel or the connection closed. A basic.get that
	// found a message replies with Kind EventGetOk instead; one that found
	// none replies with Method *wire.BasicGetEmpty.
	EventReply
	// EventGetOk: the reply to basic.get Request with a message: Message.
	EventGetOk
	// EventDelivery: a message for consumer Message.ConsumerTag: Message.
	EventDelivery
	// EventOrphanDelivery: a message for a consumer tag the channel does
	// not know (Message). The driver should reject or nack it.
	EventOrphanDelivery
	// EventReturn: a mandatory message the broker could not route
	// (Message, with ReplyCode and ReplyText). In confirm mode it comes
	// before the confirmation of the same message.
	EventReturn
	// EventConfirm: the broker confirmed (Ack true) or refused (Ack false)
	// the publishes with delivery tag Tag, or every outstanding tag up to and
	// including Tag when Multiple is set. Count is how many outstanding
	// publishes this settles.
	EventConfirm
	// EventCancel: the server cancelled consumer ConsumerTag (queue deleted,
	// node down, ...). The consumer is gone.
	EventCancel
	// EventFlow: the server asked the channel to stop (Active false) or
	// resume (Active true) publishing. The engine has answered flow-ok.
	EventFlow
	// EventChannelClosed: channel Channel is closed. Err is the *Error the
	// server closed it with, or nil after a close the client asked for. Its
	// pending requests were failed (EventReply with Err) before this event.
	// The channel id may be reused after this event.
	EventChannelClosed
	// EventBlocked: the broker blocked publishing on this connection
	// (resource alarm); Reason says why.
	EventBlocked
	// EventUnblocked: the broker lifted the block.
	EventUnblocked
	// EventClosed: the connection is closed. Err is nil after a close the
	// client asked for and the server confirmed, and the cause otherwise
	// (*Error from either side, ErrHeartbeatTimeout, a handshake error, a
	// transport error passed to Fail). It is always the last event; before
	// it, every pending request got an EventReply with Err. The driver
	// should write what AppendOutgoing still holds (a close-ok, say), then
	// close the transport.
	EventClosed
	// EventAuth: with Config.DeferAuth, the SASL mechanism (Conn.Mechanism)
	// must compute a response. Method is the *wire.ConnectionStart to
	// answer with the mechanism's Start, or the *wire.ConnectionSecure
	// whose Challenge to answer with its Challenge. The driver hands the
	// result to Conn.AuthResponse; the mechanism is application code, so a
	// driver holding a lock around engine calls runs it outside the lock.
	EventAuth
)

var eventNames = [...]string{
	EventOpen: "open", EventReply: "reply", EventGetOk: "get-ok", EventDelivery: "delivery",
	EventOrphanDelivery: "orphan-delivery", EventReturn: "return", EventConfirm: "confirm",
	EventCancel: "cancel", EventFlow: "flow", EventChannelClosed: "channel-closed",
	EventBlocked: "blocked", EventUnblocked: "unblocked", EventClosed: "closed",
	EventAuth: "auth",
}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && eventNames[k] != "" {
		return eventNames[k]
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is something the engine reports to its driver. Kind says which
// fields are set. Events are values: they hold no reference into the
// engine's buffers, and a Message's Body belongs to the receiver.
type Event struct {
	Kind    EventKind
	Channel uint16

	Request RequestID   // EventReply, EventGetOk: the request this answers
	Method  wire.Method // EventReply: the reply method; EventAuth: the step
	Err     error       // EventReply, EventChannelClosed, EventClosed

	Message Message // EventDelivery, EventOrphanDelivery, EventReturn, EventGetOk

	ConsumerTag string // EventCancel
	Tag         uint64 // EventConfirm
	Multiple    bool   // EventConfirm
	Ack         bool   // EventConfirm
	Count       int    // EventConfirm
	Active      bool   // EventFlow
	Reason      string // EventBlocked
}

// Message is a message received from the broker: a delivery to a consumer,
// a basic.get result or a returned message. Fields that do not apply to the
// kind of message are zero.
type Message struct {
	ConsumerTag  string         // delivery
	DeliveryTag  uint64         // delivery, get-ok
	Redelivered  bool           // delivery, get-ok
	Exchange     string         // all
	RoutingKey   string         // all
	MessageCount uint32         // get-ok: messages left in the queue
	ReplyCode    wire.ReplyCode // return
	ReplyText    string         // return
	Properties   wire.Properties
	// Body is the message body, a slice the engine allocated for this
	// message and never touches again: the receiver owns it. A body of at
	// most ArenaMaxBody bytes shares a chunk of memory (8 KiB) with other
	// small bodies, as a slice whose capacity ends with the body; keeping
	// it keeps that chunk reachable.
	Body []byte
}

// RequestID identifies a request made with Call (or a method that Call
// wraps, like OpenChannel): its EventReply carries the same id. Ids increase
// from 1 and are never reused within one engine.
type RequestID uint64
