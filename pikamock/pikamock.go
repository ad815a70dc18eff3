// Package pikamock helps unit test code that handles pika deliveries without
// a broker. A [Recorder] is a [pika.Acknowledger] that records every Ack,
// Nack and Reject; [Recorder.Delivery] builds a [pika.Delivery] bound to it:
//
//	func TestHandlerAcks(t *testing.T) {
//		var acks pikamock.Recorder
//		d := acks.Delivery(1, []byte(`{"id": 7}`))
//		handle(context.Background(), d) // the handler under test
//		if got := acks.Calls(); len(got) != 1 || got[0] != pikamock.AckOf(1) {
//			t.Errorf("acknowledgements %v, want one ack of tag 1", got)
//		}
//	}
//
// For a fake broker to run a whole client against, see package pikatest.
package pikamock

import (
	"fmt"
	"slices"
	"sync"

	"github.com/pika-go/pika"
)

// Kind is the kind of an acknowledgement.
type Kind uint8

// The kinds of acknowledgement.
const (
	Ack    Kind = iota + 1 // basic.ack
	Nack                   // basic.nack
	Reject                 // basic.reject
)

func (k Kind) String() string {
	switch k {
	case Ack:
		return "ack"
	case Nack:
		return "nack"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Call is one acknowledgement a Recorder received. Multiple is always false
// for a Reject, and Requeue always false for an Ack.
type Call struct {
	Kind     Kind
	Tag      uint64
	Multiple bool
	Requeue  bool
}

// AckOf is the Call of Ack(tag, false): the common case, for comparisons.
func AckOf(tag uint64) Call { return Call{Kind: Ack, Tag: tag} }

func (c Call) String() string {
	return fmt.Sprintf("%s tag %d (multiple %v, requeue %v)", c.Kind, c.Tag, c.Multiple, c.Requeue)
}

// Recorder records acknowledgements in order. Its zero value is ready to
// use, and it is safe for concurrent use (a handler may acknowledge from
// several goroutines).
type Recorder struct {
	mu    sync.Mutex
	calls []Call
	err   error
}

var _ pika.Acknowledger = (*Recorder)(nil)

// Delivery returns a Delivery with the given tag and body whose Ack, Nack
// and Reject are recorded by r. Set other fields (RoutingKey, Properties,
// ...) on the result as the test needs.
func (r *Recorder) Delivery(tag uint64, body []byte) *pika.Delivery {
	return &pika.Delivery{DeliveryTag: tag, Body: body, Acknowledger: r}
}

// FailWith makes every later acknowledgement return err (still recorded),
// to test how a handler deals with a failed Ack (pika.ErrStaleDelivery
// after a recovery, pika.ErrClosed, ...). nil restores success.
func (r *Recorder) FailWith(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

func (r *Recorder) record(c Call) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	return r.err
}

// Ack records an ack.
func (r *Recorder) Ack(tag uint64, multiple bool) error {
	return r.record(Call{Kind: Ack, Tag: tag, Multiple: multiple})
}

// Nack records a nack.
func (r *Recorder) Nack(tag uint64, multiple, requeue bool) error {
	return r.record(Call{Kind: Nack, Tag: tag, Multiple: multiple, Requeue: requeue})
}

// Reject records a reject.
func (r *Recorder) Reject(tag uint64, requeue bool) error {
	return r.record(Call{Kind: Reject, Tag: tag, Requeue: requeue})
}

// Calls returns a copy of the acknowledgements recorded so far, in order.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// Settled reports how delivery tag was settled: the first recorded call
// that covers it (its own, or a multiple one with a higher tag), and false
// when none does. A tag covered by a second call as well was settled twice,
// which a broker refuses; see Calls for everything.
func (r *Recorder) Settled(tag uint64) (Call, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.calls {
		if c.Tag == tag || c.Multiple && (c.Tag == 0 || c.Tag > tag) {
			return c, true
		}
	}
	return Call{}, false
}

// Reset forgets the recorded calls (not FailWith's error).
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
}
