// Package store holds the message storage of one broker queue: the ready
// messages in delivery order, with RabbitMQ's priority levels, requeueing to
// the original position, expiry at the head and the length and byte counts
// that x-max-length and x-max-length-bytes limit. It knows nothing about
// consumers or connections.
//
// A Ready is not safe for concurrent use; the broker serialises access.
package store

import (
	"sort"

	"github.com/pika-go/pika/wire"
)

// Content is a published message as the publisher sent it. One Content is
// shared by every queue the message was routed to and is never modified
// after publication (dead-lettering makes a new one).
type Content struct {
	Exchange    string
	RoutingKey  string
	RoutingKeys []string // routing key then CC and BCC keys, for x-death
	Props       wire.Properties
	// Header is the encoded content header payload (class, weight, body
	// size, property flags and properties), reused for every delivery.
	Header []byte
	Body   []byte
}

// Persistent reports whether the publisher asked for delivery mode 2.
func (c *Content) Persistent() bool { return c.Props.DeliveryMode == 2 }

// Message is one queue's copy of a Content with the state that queue keeps
// about it.
type Message struct {
	*Content
	Seq           uint64 // position in the queue, for requeueing in order
	ExpiresAt     int64  // unix nanoseconds; 0 never
	Redelivered   bool
	DeliveryCount int64 // times returned to the queue (quorum queues report it)
	Level         int   // priority level within the queue
}

// Size is the message size counted by x-max-length-bytes: its body.
func (m *Message) Size() int64 { return int64(len(m.Body)) }

// Ready is the ordered list of a queue's ready messages.
type Ready struct {
	levels  []fifo // by priority level, 0 lowest
	n       int
	bytes   int64
	nextSeq uint64
}

// NewReady returns an empty Ready with maxPriority+1 priority levels
// (maxPriority 0 is a queue without priorities).
func NewReady(maxPriority int) *Ready {
	return &Ready{levels: make([]fifo, maxPriority+1)}
}

// MaxPriority returns the highest priority level.
func (r *Ready) MaxPriority() int { return len(r.levels) - 1 }

// Len returns the number of ready messages.
func (r *Ready) Len() int { return r.n }

// Bytes returns the total body size of the ready messages.
func (r *Ready) Bytes() int64 { return r.bytes }

// LevelOf returns the priority level a message with priority p goes to:
// p capped at the queue's maximum.
func (r *Ready) LevelOf(p uint8) int { return min(int(p), len(r.levels)-1) }

// Push adds m at the tail of its priority level, giving it the next
// sequence number.
func (r *Ready) Push(m *Message) {
	r.nextSeq++
	m.Seq = r.nextSeq
	m.Level = r.LevelOf(m.Props.Priority)
	r.levels[m.Level].pushBack(m)
	r.n++
	r.bytes += m.Size()
}

// Requeue puts m back at its original position (by sequence number) among
// the ready messages of its level.
func (r *Ready) Requeue(m *Message) {
	r.levels[m.Level].insert(m)
	r.n++
	r.bytes += m.Size()
}

// Peek returns the message Pop would return, or nil.
func (r *Ready) Peek() *Message {
	for i := len(r.levels) - 1; i >= 0; i-- {
		if m := r.levels[i].front(); m != nil {
			return m
		}
	}
	return nil
}

// Pop removes and returns the next message to deliver (the oldest of the
// highest priority level), or nil.
func (r *Ready) Pop() *Message {
	for i := len(r.levels) - 1; i >= 0; i-- {
		if m := r.levels[i].popFront(); m != nil {
			r.n--
			r.bytes -= m.Size()
			return m
		}
	}
	return nil
}

// PopOldest removes and returns the message at the head of the lowest
// non-empty level, which is what drop-head overflow discards first.
func (r *Ready) PopOldest() *Message {
	for i := range r.levels {
		if m := r.levels[i].popFront(); m != nil {
			r.n--
			r.bytes -= m.Size()
			return m
		}
	}
	return nil
}

// Expire removes the messages at the head of each level whose expiry is at
// or before now and returns them, oldest first within each level. Like
// RabbitMQ's classic queues it looks only at the heads: a message with a
// short TTL behind one with a long TTL waits for it.
func (r *Ready) Expire(now int64, out []*Message) []*Message {
	for i := range r.levels {
		for {
			m := r.levels[i].front()
			if m == nil || m.ExpiresAt == 0 || m.ExpiresAt > now {
				break
			}
			r.levels[i].popFront()
			r.n--
			r.bytes -= m.Size()
			out = append(out, m)
		}
	}
	return out
}

// NextExpiry returns the earliest expiry among the level heads, or 0.
func (r *Ready) NextExpiry() int64 {
	var next int64
	for i := range r.levels {
		if m := r.levels[i].front(); m != nil && m.ExpiresAt != 0 && (next == 0 || m.ExpiresAt < next) {
			next = m.ExpiresAt
		}
	}
	return next
}

// Purge removes every ready message and returns how many there were.
func (r *Ready) Purge() int {
	n := r.n
	for i := range r.levels {
		r.levels[i] = fifo{}
	}
	r.n, r.bytes = 0, 0
	return n
}

// All returns the ready messages in delivery order.
func (r *Ready) All() []*Message {
	out := make([]*Message, 0, r.n)
	for i := len(r.levels) - 1; i >= 0; i-- {
		out = append(out, r.levels[i].items[r.levels[i].head:]...)
	}
	return out
}

// fifo is a slice-backed queue ordered by sequence number.
type fifo struct {
	items []*Message
	head  int
}

func (f *fifo) front() *Message {
	if f.head == len(f.items) {
		return nil
	}
	return f.items[f.head]
}

func (f *fifo) pushBack(m *Message) {
	if f.head > 0 && f.head == len(f.items) {
		f.items, f.head = f.items[:0], 0
	}
	f.items = append(f.items, m)
}

func (f *fifo) popFront() *Message {
	if f.head == len(f.items) {
		return nil
	}
	m := f.items[f.head]
	f.items[f.head] = nil
	f.head++
	if f.head == len(f.items) {
		f.items, f.head = f.items[:0], 0
	} else if f.head > 1024 && f.head*2 > len(f.items) {
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items, f.head = f.items[:n], 0
	}
	return m
}

// insert puts m in sequence order; a requeued message usually goes at or
// near the front.
func (f *fifo) insert(m *Message) {
	live := f.items[f.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].Seq > m.Seq })
	if i == 0 && f.head > 0 {
		f.head--
		f.items[f.head] = m
		return
	}
	pos := f.head + i
	f.items = append(f.items, nil)
	copy(f.items[pos+1:], f.items[pos:])
	f.items[pos] = m
}
