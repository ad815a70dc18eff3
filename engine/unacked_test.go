package engine

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// TestUnackedSetModel drives the bitmap window and a map with the same
// random operations and compares them after every step.
func TestUnackedSetModel(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		var s unackedSet
		model := map[uint64]bool{}
		next := uint64(1)
		for step := 0; step < 3000; step++ {
			switch op := r.IntN(10); {
			case op < 5: // deliver
				s.mark(next)
				model[next] = true
				next += uint64(1 + r.IntN(2)) // no-ack deliveries leave gaps
			case op < 8: // ack one
				tag := uint64(1 + r.IntN(int(next)))
				got := s.clearTag(tag)
				if got != model[tag] {
					t.Fatalf("seed %d step %d: clearTag(%d) = %v, model %v", seed, step, tag, got, model[tag])
				}
				delete(model, tag)
			case op < 9: // ack multiple
				tag := uint64(1 + r.IntN(int(next)))
				s.clearUpTo(tag)
				for k := range model {
					if k <= tag {
						delete(model, k)
					}
				}
			default:
				if r.IntN(20) == 0 {
					s.clearAll()
					clear(model)
				}
			}
			if s.n != len(model) {
				t.Fatalf("seed %d step %d: n = %d, model %d", seed, step, s.n, len(model))
			}
			for k := uint64(1); k < next; k++ {
				if s.has(k) != model[k] {
					t.Fatalf("seed %d step %d: has(%d) = %v, model %v", seed, step, k, s.has(k), model[k])
				}
			}
		}
	}
}

// TestUnackedSetWindowStaysSmall: acknowledging in order keeps the window
// at a few words however many tags pass through it.
func TestUnackedSetWindowStaysSmall(t *testing.T) {
	var s unackedSet
	for tag := uint64(1); tag <= 1_000_000; tag++ {
		s.mark(tag)
		if tag > 100 {
			if !s.clearTag(tag - 100) {
				t.Fatalf("tag %d not outstanding", tag-100)
			}
		}
	}
	if len(s.words) > 4 {
		t.Fatalf("window is %d words after in-order acks, want a few", len(s.words))
	}
}

// TestSettleChecksOutstandingTags: every settlement RabbitMQ would answer
// with a 406 channel close fails locally with a *TagError and sends nothing.
func TestSettleChecksOutstandingTags(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.consume(ch, "q", "manual")
	h.rpc(ch, &wire.BasicConsume{Queue: "q", ConsumerTag: "auto", NoAck: true}, &wire.BasicConsumeOk{ConsumerTag: "auto"})
	h.mustRecv(
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "manual", DeliveryTag: 1}, nil, nil, 0),
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "auto", DeliveryTag: 2}, nil, nil, 0),
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "manual", DeliveryTag: 3}, nil, nil, 0),
	)
	h.expect(EventDelivery)
	h.expect(EventDelivery)
	h.expect(EventDelivery)

	bad := []struct {
		name string
		err  error
	}{
		{"ack 0 without multiple", h.c.Ack(ch, 0, false)},
		{"reject 0", h.c.Reject(ch, 0, true)},
		{"ack of a no-ack delivery", h.c.Ack(ch, 2, false)},
		{"multiple ack up to a no-ack delivery", h.c.Ack(ch, 2, true)},
		{"nack of a tag never delivered", h.c.Nack(ch, 4, false, true)},
	}
	for _, b := range bad {
		var te *TagError
		if !errors.Is(b.err, ErrUnknownTag) || !errors.As(b.err, &te) || te.Channel != ch {
			t.Errorf("%s: %v, want a *TagError matching ErrUnknownTag", b.name, b.err)
		}
	}
	h.pump()
	h.peer.ExpectEmpty()

	must(t, h.c.Ack(ch, 1, false))
	if err := h.c.Ack(ch, 1, false); !errors.Is(err, ErrUnknownTag) {
		t.Errorf("second ack of tag 1: %v, want ErrUnknownTag", err)
	}
	if !h.c.Outstanding(ch, 3) || h.c.Outstanding(ch, 1) || h.c.Outstanding(ch, 2) {
		t.Errorf("outstanding tags wrong after acking 1")
	}
	must(t, h.c.Ack(ch, 3, true))
	if err := h.c.Reject(ch, 3, false); !errors.Is(err, ErrUnknownTag) {
		t.Errorf("reject after a multiple ack covered it: %v, want ErrUnknownTag", err)
	}
	h.pump()
	h.peer.ExpectMethod(ch, &wire.BasicAck{DeliveryTag: 1})
	h.peer.ExpectMethod(ch, &wire.BasicAck{DeliveryTag: 3, Multiple: true})
	h.peer.ExpectEmpty()

	// Tag 0 with multiple settles everything, even nothing.
	must(t, h.c.Nack(ch, 0, true, true))
	h.pump()
	h.peer.ExpectMethod(ch, &wire.BasicNack{DeliveryTag: 0, Multiple: true, Requeue: true})

	// basic.get with no-ack: nothing to acknowledge; without: one tag.
	h.call(ch, &wire.BasicGet{Queue: "q", NoAck: true})
	h.peer.NextMethod(ch)
	h.mustRecv(scripted.Message(ch, &wire.BasicGetOk{DeliveryTag: 4}, nil, []byte("g"), 0))
	h.expect(EventGetOk)
	if err := h.c.Ack(ch, 4, false); !errors.Is(err, ErrUnknownTag) {
		t.Errorf("ack of a no-ack get: %v, want ErrUnknownTag", err)
	}
	h.call(ch, &wire.BasicGet{Queue: "q"})
	h.peer.NextMethod(ch)
	h.mustRecv(scripted.Message(ch, &wire.BasicGetOk{DeliveryTag: 5}, nil, []byte("g"), 0))
	h.expect(EventGetOk)
	must(t, h.c.Ack(ch, 5, false))
}
