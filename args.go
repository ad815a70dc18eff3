package pika

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// QueueType is the type of a RabbitMQ queue (argument x-queue-type).
type QueueType string

// Queue types. Quorum queues and streams must be durable, and can be
// neither exclusive nor auto-delete.
const (
	QueueClassic QueueType = "classic" // the default: a single-node queue
	QueueQuorum  QueueType = "quorum"  // a replicated queue (Raft)
	QueueStream  QueueType = "stream"  // an append-only log read from any offset
)

// Overflow is what a queue does when it reaches its length limit (argument
// x-overflow).
type Overflow string

// Overflow behaviours.
const (
	OverflowDropHead         Overflow = "drop-head"          // drop (or dead-letter) the oldest messages; the default
	OverflowRejectPublish    Overflow = "reject-publish"     // refuse new messages (basic.nack in confirm mode)
	OverflowRejectPublishDLX Overflow = "reject-publish-dlx" // refuse new messages and dead-letter them (classic queues)
)

// DeadLetterStrategy says how a quorum queue dead-letters (argument
// x-dead-letter-strategy, RabbitMQ 3.10 and later).
type DeadLetterStrategy string

// Dead-letter strategies.
const (
	DeadLetterAtMostOnce  DeadLetterStrategy = "at-most-once"  // the default: a message may be lost on the way
	DeadLetterAtLeastOnce DeadLetterStrategy = "at-least-once" // needs OverflowRejectPublish
)

// QueueArgs are the optional arguments of a queue declaration, with types
// and checks; Table turns them into QueueDeclareOptions.Arguments. A field
// left at its zero value is not sent (the broker's default applies); the
// comment of each field names the x-argument it sets. Some arguments apply
// only to some queue types: the broker refuses the others with
// ErrPreconditionFailed, or ignores them.
//
//	args, err := pika.QueueArgs{Type: pika.QueueQuorum, DeliveryLimit: 5}.Table()
//	if err != nil { ... }
//	q, err := ch.QueueDeclare(ctx, "orders", pika.QueueDeclareOptions{Durable: true, Arguments: args})
//
// A QueueArgs is a plain value; Table does not modify it.
type QueueArgs struct {
	// Type is the queue type (x-queue-type).
	Type QueueType
	// MessageTTL discards (or dead-letters) messages that stayed longer in
	// the queue (x-message-ttl, sent in milliseconds). It must be a whole,
	// positive number of milliseconds; for a TTL of 0 (deliver at once or
	// drop), put "x-message-ttl": int64(0) in Extra.
	MessageTTL time.Duration
	// Expires deletes the queue after it has been unused (no consumers, no
	// basic.get, no redeclaration) for this long (x-expires, sent in
	// milliseconds). It must be a whole, positive number of milliseconds.
	Expires time.Duration
	// MaxLength limits the number of ready messages (x-max-length); what
	// happens beyond it is set by Overflow. It must be positive; for a
	// limit of 0, put "x-max-length": int64(0) in Extra.
	MaxLength int
	// MaxLengthBytes limits the total body size of ready messages
	// (x-max-length-bytes). It must be positive.
	MaxLengthBytes int64
	// Overflow is the behaviour at the length limit (x-overflow).
	Overflow Overflow
	// DeadLetterExchange is where rejected, expired and overflowing
	// messages are republished (x-dead-letter-exchange).
	DeadLetterExchange string
	// DeadLetterRoutingKey replaces the routing key of dead-lettered
	// messages (x-dead-letter-routing-key). The broker needs a dead-letter
	// exchange with it; when DeadLetterExchange is empty, Table sets
	// x-dead-letter-exchange to "" (the default exchange), so that
	// {DeadLetterRoutingKey: "q"} dead-letters straight to queue q.
	DeadLetterRoutingKey string
	// DeadLetterStrategy is the dead-lettering guarantee of a quorum queue
	// (x-dead-letter-strategy).
	DeadLetterStrategy DeadLetterStrategy
	// SingleActiveConsumer delivers to one consumer at a time, the others
	// taking over in turn when it goes away (x-single-active-consumer).
	SingleActiveConsumer bool
	// MaxPriority makes a classic queue a priority queue with priorities 0
	// to MaxPriority (x-max-priority), 1 to 255; RabbitMQ recommends at
	// most 10.
	MaxPriority int
	// DeliveryLimit is how many times a quorum queue delivers a message
	// that keeps being returned before it drops or dead-letters it
	// (x-delivery-limit). It must be positive.
	DeliveryLimit int
	// QuorumInitialGroupSize is the number of replicas of a new quorum
	// queue (x-quorum-initial-group-size). It must be positive.
	QuorumInitialGroupSize int
	// LeaderLocator places the leader of a new quorum queue or stream
	// (x-queue-leader-locator), e.g. "client-local" or "balanced".
	LeaderLocator string
	// Lazy keeps a classic queue's messages on disk as early as possible
	// (x-queue-mode "lazy"). RabbitMQ 3.12 and later ignore it.
	Lazy bool
	// MaxAge is how long a stream keeps messages (x-max-age, sent as a
	// number of seconds like "86400s"). It must be a whole, positive
	// number of seconds.
	MaxAge time.Duration
	// StreamMaxSegmentSizeBytes is the size of a stream's segment files
	// on disk (x-stream-max-segment-size-bytes). It must be positive.
	StreamMaxSegmentSizeBytes int64
	// Extra holds any other argument, sent as it is. A key also set by a
	// field above is an error.
	Extra Table
}

// Table returns the arguments as a field table: only the fields that are
// set, durations as int64 milliseconds (x-message-ttl, x-expires) or
// interval strings (x-max-age), integers as int64. It fails, naming the
// field, for a negative or out-of-range value, a duration that is not a
// whole number of the unit sent, or an Extra key that a field also sets.
// The table is new on every call (Extra's values are not copied deeply).
func (a QueueArgs) Table() (Table, error) {
	b := argsBuilder{t: make(Table), what: "QueueArgs"}
	if a.Type != "" {
		b.set("x-queue-type", string(a.Type))
	}
	b.millis("MessageTTL", "x-message-ttl", a.MessageTTL)
	b.millis("Expires", "x-expires", a.Expires)
	b.positive("MaxLength", "x-max-length", int64(a.MaxLength), math.MaxInt64)
	b.positive("MaxLengthBytes", "x-max-length-bytes", a.MaxLengthBytes, math.MaxInt64)
	if a.Overflow != "" {
		b.set("x-overflow", string(a.Overflow))
	}
	if a.DeadLetterExchange != "" || a.DeadLetterRoutingKey != "" {
		b.set("x-dead-letter-exchange", a.DeadLetterExchange)
	}
	if a.DeadLetterRoutingKey != "" {
		b.set("x-dead-letter-routing-key", a.DeadLetterRoutingKey)
	}
	if a.DeadLetterStrategy != "" {
		b.set("x-dead-letter-strategy", string(a.DeadLetterStrategy))
	}
	if a.SingleActiveConsumer {
		b.set("x-single-active-consumer", true)
	}
	b.positive("MaxPriority", "x-max-priority", int64(a.MaxPriority), math.MaxUint8)
	b.positive("DeliveryLimit", "x-delivery-limit", int64(a.DeliveryLimit), math.MaxInt64)
	b.positive("QuorumInitialGroupSize", "x-quorum-initial-group-size", int64(a.QuorumInitialGroupSize), math.MaxInt64)
	if a.LeaderLocator != "" {
		b.set("x-queue-leader-locator", a.LeaderLocator)
	}
	if a.Lazy {
		b.set("x-queue-mode", "lazy")
	}
	if a.MaxAge != 0 {
		if s, ok := b.seconds("MaxAge", "x-max-age", a.MaxAge); ok {
			b.set("x-max-age", s)
		}
	}
	b.positive("StreamMaxSegmentSizeBytes", "x-stream-max-segment-size-bytes", a.StreamMaxSegmentSizeBytes, math.MaxInt64)
	b.extra(a.Extra)
	return b.result()
}

// StreamPosition is a symbolic position in a stream for
// ConsumerArgs.StreamOffset.
type StreamPosition string

// Stream positions.
const (
	StreamFirst StreamPosition = "first" // the first message still in the stream
	StreamLast  StreamPosition = "last"  // the start of the last chunk written
	StreamNext  StreamPosition = "next"  // messages written after the consumer starts; the default
)

// ConsumerArgs are the optional arguments of Consume, with types and
// checks; Table turns them into ConsumeOptions.Arguments. A field left at
// its zero value is not sent; the comment of each field names the
// x-argument it sets.
//
//	args, err := pika.ConsumerArgs{StreamOffset: pika.StreamFirst}.Table()
//
// A ConsumerArgs is a plain value; Table does not modify it.
type ConsumerArgs struct {
	// Priority is the consumer's priority (x-priority): while consumers of
	// higher priority can take messages, those of lower priority get none.
	// The default is 0; negative values are allowed.
	Priority int
	// StreamOffset is where a consumer of a stream starts reading
	// (x-stream-offset). It is one of:
	//
	//   - a StreamPosition: StreamFirst, StreamLast or StreamNext;
	//   - a string: "first", "last", "next", or an interval RabbitMQ
	//     understands: a positive number and a unit, Y, M, D, h, m or s
	//     ("7D", "30m"), for messages written since that long ago;
	//   - an offset: int, int64 or uint64, at least 0 (sent as int64);
	//   - a time.Time: the first chunk written at or after it (sent as an
	//     AMQP timestamp, rounded down to the second; not before 1970);
	//   - a time.Duration: messages written since that long ago (sent as
	//     an interval string like "600s"; whole, positive seconds).
	//
	// Consuming from a stream also needs a prefetch count (Channel.Qos) and
	// manual acknowledgements.
	StreamOffset any
	// Extra holds any other argument, sent as it is. A key also set by a
	// field above is an error.
	Extra Table
}

// Table returns the arguments as a field table: only the fields that are
// set. It fails, naming the field, for a StreamOffset of another type or an
// invalid value, or an Extra key that a field also sets. The table is new
// on every call.
func (a ConsumerArgs) Table() (Table, error) {
	b := argsBuilder{t: make(Table), what: "ConsumerArgs"}
	if a.Priority != 0 {
		if a.Priority < math.MinInt32 || a.Priority > math.MaxInt32 {
			b.fail("Priority", "x-priority", fmt.Sprintf("%d out of range (%d to %d)", a.Priority, math.MinInt32, math.MaxInt32))
		} else {
			b.set("x-priority", int64(a.Priority))
		}
	}
	if a.StreamOffset != nil {
		if v, ok := b.streamOffset(a.StreamOffset); ok {
			b.set("x-stream-offset", v)
		}
	}
	b.extra(a.Extra)
	return b.result()
}

// streamOffset converts a ConsumerArgs.StreamOffset.
func (b *argsBuilder) streamOffset(v any) (any, bool) {
	const field, key = "StreamOffset", "x-stream-offset"
	switch v := v.(type) {
	case StreamPosition:
		switch v {
		case StreamFirst, StreamLast, StreamNext:
			return string(v), true
		}
		b.fail(field, key, fmt.Sprintf("unknown position %q (want first, last or next)", string(v)))
	case string:
		switch StreamPosition(v) {
		case StreamFirst, StreamLast, StreamNext:
			return v, true
		}
		if isInterval(v) {
			return v, true
		}
		b.fail(field, key, fmt.Sprintf("%q is neither a position (first, last, next) nor an interval like \"7D\"", v))
	case int:
		return b.offset(int64(v))
	case int64:
		return b.offset(v)
	case uint64:
		if v > math.MaxInt64 {
			b.fail(field, key, fmt.Sprintf("offset %d out of range (at most %d)", v, int64(math.MaxInt64)))
			return nil, false
		}
		return int64(v), true
	case time.Time:
		if v.Before(time.Unix(0, 0)) {
			b.fail(field, key, fmt.Sprintf("time %s is before 1970", v.Format(time.RFC3339)))
			return nil, false
		}
		return time.Unix(v.Unix(), 0).UTC(), true
	case time.Duration:
		return b.seconds(field, key, v)
	default:
		b.fail(field, key, fmt.Sprintf("unsupported type %T (want StreamPosition, string, an int64 offset, time.Time or time.Duration)", v))
	}
	return nil, false
}

// isInterval reports whether s is a RabbitMQ interval: digits, not all
// zero, and one unit letter.
func isInterval(s string) bool {
	if len(s) < 2 || !strings.ContainsRune("YMDhms", rune(s[len(s)-1])) {
		return false
	}
	nonZero := false
	for _, r := range s[:len(s)-1] {
		if r < '0' || r > '9' {
			return false
		}
		nonZero = nonZero || r != '0'
	}
	return nonZero
}

func (b *argsBuilder) offset(n int64) (any, bool) {
	if n < 0 {
		b.fail("StreamOffset", "x-stream-offset", fmt.Sprintf("offset %d is negative", n))
		return nil, false
	}
	return n, true
}

// argsBuilder collects arguments and the first error.
type argsBuilder struct {
	t    Table
	what string // "QueueArgs" or "ConsumerArgs"
	err  error
}

func (b *argsBuilder) set(key string, v any) {
	b.t[key] = v
}

func (b *argsBuilder) fail(field, key, msg string) {
	if b.err == nil {
		b.err = fmt.Errorf("pika: %s.%s (%s): %s", b.what, field, key, msg)
	}
}

// millis sets a duration as whole milliseconds.
func (b *argsBuilder) millis(field, key string, d time.Duration) {
	if d == 0 {
		return
	}
	switch {
	case d < 0:
		b.fail(field, key, fmt.Sprintf("%s is negative", d))
	case d%time.Millisecond != 0:
		b.fail(field, key, fmt.Sprintf("%s is not a whole number of milliseconds", d))
	default:
		b.set(key, d.Milliseconds())
	}
}

// seconds formats a duration as a RabbitMQ interval of whole seconds.
func (b *argsBuilder) seconds(field, key string, d time.Duration) (string, bool) {
	switch {
	case d <= 0:
		b.fail(field, key, fmt.Sprintf("%s is not positive", d))
	case d%time.Second != 0:
		b.fail(field, key, fmt.Sprintf("%s is not a whole number of seconds", d))
	default:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s", true
	}
	return "", false
}

// positive sets an integer that must be 1..max when not zero.
func (b *argsBuilder) positive(field, key string, n, max int64) {
	if n == 0 {
		return
	}
	if n < 0 || n > max {
		b.fail(field, key, fmt.Sprintf("%d out of range (1 to %d)", n, max))
		return
	}
	b.set(key, n)
}

// extra adds the Extra table, refusing keys already set.
func (b *argsBuilder) extra(extra Table) {
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		if _, dup := b.t[k]; dup {
			b.fail("Extra", k, "also set by a field")
			continue
		}
		b.t[k] = extra[k]
	}
}

func (b *argsBuilder) result() (Table, error) {
	if b.err != nil {
		return nil, b.err
	}
	return b.t, nil
}
