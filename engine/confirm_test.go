package engine

import (
	"slices"
	"testing"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// publishN publishes n messages on ch and checks their tags continue from
// first.
func (h *harness) publishN(ch uint16, n int, first uint64) {
	h.t.Helper()
	for i := 0; i < n; i++ {
		tag, err := h.c.Publish(ch, "", "q", false, false, nil, []byte{byte(i)})
		if err != nil {
			h.t.Fatal(err)
		}
		if want := first + uint64(i); tag != want {
			h.t.Fatalf("tag %d, want %d", tag, want)
		}
	}
	h.pump()
	h.drainPeer()
}

// expectConfirm checks the next event is the given EventConfirm.
func (h *harness) expectConfirm(ch uint16, tag uint64, multiple, ack bool, count int) {
	h.t.Helper()
	e := h.expect(EventConfirm)
	if e.Channel != ch || e.Tag != tag || e.Multiple != multiple || e.Ack != ack || e.Count != count {
		h.t.Fatalf("confirm ch=%d tag=%d multiple=%v ack=%v count=%d; want ch=%d tag=%d multiple=%v ack=%v count=%d",
			e.Channel, e.Tag, e.Multiple, e.Ack, e.Count, ch, tag, multiple, ack, count)
	}
}

func TestConfirms(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	// Publishes before confirm.select get no tag.
	if tag, _ := h.c.Publish(ch, "", "q", false, false, nil, nil); tag != 0 {
		t.Fatalf("tag %d before confirm.select", tag)
	}
	h.pump()
	h.drainPeer()
	h.rpc(ch, &wire.ConfirmSelect{}, &wire.ConfirmSelectOk{})
	h.publishN(ch, 10, 1)
	if n := h.c.Unconfirmed(ch); n != 10 {
		t.Fatalf("Unconfirmed = %d", n)
	}

	ack := func(tag uint64, multiple bool) []byte {
		return scripted.Method(ch, &wire.BasicAck{DeliveryTag: tag, Multiple: multiple})
	}
	nack := func(tag uint64, multiple bool) []byte {
		return scripted.Method(ch, &wire.BasicNack{DeliveryTag: tag, Multiple: multiple})
	}
	h.mustRecv(ack(1, false))
	h.expectConfirm(ch, 1, false, true, 1)
	// Out of order single acks.
	h.mustRecv(ack(4, false), ack(3, false))
	h.expectConfirm(ch, 4, false, true, 1)
	h.expectConfirm(ch, 3, false, true, 1)
	// Multiple settles only what is still outstanding: 2 and 5.
	h.mustRecv(ack(5, true))
	h.expectConfirm(ch, 5, true, true, 2)
	h.mustRecv(nack(7, true))
	h.expectConfirm(ch, 7, true, false, 2)
	h.mustRecv(nack(9, false))
	h.expectConfirm(ch, 9, false, false, 1)
	if n := h.c.Unconfirmed(ch); n != 2 {
		t.Fatalf("Unconfirmed = %d, want 2 (8 and 10)", n)
	}
	// A tag already settled or never published: reported with Count 0.
	h.mustRecv(ack(3, false), ack(99, false), ack(2, true))
	h.expectConfirm(ch, 3, false, true, 0)
	h.expectConfirm(ch, 99, false, true, 0)
	h.expectConfirm(ch, 2, true, true, 0)
	// Tag 0 with multiple: everything outstanding.
	h.mustRecv(ack(0, true))
	h.expectConfirm(ch, 0, true, true, 2)
	if n := h.c.Unconfirmed(ch); n != 0 {
		t.Fatalf("Unconfirmed = %d", n)
	}
	h.publishN(ch, 2, 11)
	h.noEvents()
	h.peer.ExpectEmpty()
}

func TestReturnBeforeConfirm(t *testing.T) {
	h := openDefault(t)
	ch := h.confirmChannel()
	tag, err := h.c.Publish(ch, "x", "unroutable", true, false, nil, []byte("m"))
	if err != nil || tag != 1 {
		t.Fatalf("Publish = %d, %v", tag, err)
	}
	h.pump()
	h.peer.ExpectMessage(ch, &wire.BasicPublish{Exchange: "x", RoutingKey: "unroutable", Mandatory: true}, nil, []byte("m"), 0)
	h.mustRecv(
		scripted.Message(ch, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: "x", RoutingKey: "unroutable"}, nil, []byte("m"), 0),
		scripted.Method(ch, &wire.BasicAck{DeliveryTag: 1}))
	e := h.expect(EventReturn)
	if string(e.Message.Body) != "m" || e.Message.ReplyCode != 312 {
		t.Fatalf("return %+v", e.Message)
	}
	h.expectConfirm(ch, 1, false, true, 1)
	h.noEvents()
}

func TestConfirmsQueuedBehindSelect(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	r := h.call(ch, &wire.QueueDeclare{Queue: "q"})
	h.call(ch, &wire.ConfirmSelect{})
	// Publishes queued behind the select get tags from 1.
	for want := uint64(1); want <= 3; want++ {
		if tag, _ := h.c.Publish(ch, "", "q", false, false, nil, nil); tag != want {
			t.Fatalf("tag %d, want %d", tag, want)
		}
	}
	h.peer.ExpectMethod(ch, &wire.QueueDeclare{Queue: "q"})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(ch, &wire.QueueDeclareOk{Queue: "q"}))
	h.expectReply(ch, r)
	h.peer.ExpectMethod(ch, &wire.ConfirmSelect{})
	h.peer.ExpectEmpty()
	h.mustRecv(scripted.Method(ch, &wire.ConfirmSelectOk{}))
	h.next()
	for i := 0; i < 3; i++ {
		h.peer.ExpectMessage(ch, &wire.BasicPublish{RoutingKey: "q"}, nil, nil, 0)
	}
	h.mustRecv(scripted.Method(ch, &wire.BasicAck{DeliveryTag: 3, Multiple: true}))
	h.expectConfirm(ch, 3, true, true, 3)
}

func TestAckWithoutConfirmMode(t *testing.T) {
	h := openDefault(t)
	ch := h.openChannel()
	h.recv(scripted.Method(ch, &wire.BasicAck{DeliveryTag: 1}))
	h.expectProtocolClose(wire.ReplyCommandInvalid)
}

func TestConfirmsDroppedWithChannel(t *testing.T) {
	h := openDefault(t)
	ch := h.confirmChannel()
	h.publishN(ch, 3, 1)
	h.mustRecv(scripted.Method(ch, &wire.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND"}))
	h.peer.ExpectMethod(ch, &wire.ChannelCloseOk{})
	h.expect(EventChannelClosed)
	if n := h.c.Unconfirmed(ch); n != 0 {
		t.Fatalf("Unconfirmed after close = %d", n)
	}
	// A new channel starts from tag 1.
	ch2 := h.confirmChannel()
	h.publishN(ch2, 1, 1)
}

func TestConfirmSetBasics(t *testing.T) {
	var fresh ConfirmSet[int]
	if n := fresh.Settle(0, true, nil); n != 0 || fresh.Add(1) != 1 {
		t.Fatalf("zero value: Settle = %d", n)
	}
	var s ConfirmSet[string]
	if s.Next() != 1 || s.Len() != 0 || s.FirstUnsettled() != 1 {
		t.Fatalf("zero value: Next %d Len %d FirstUnsettled %d", s.Next(), s.Len(), s.FirstUnsettled())
	}
	if n := s.Settle(1, false, nil); n != 0 {
		t.Fatalf("Settle on empty = %d", n)
	}
	for i, v := range []string{"a", "b", "c", "d", "e"} {
		if tag := s.Add(v); tag != uint64(i+1) {
			t.Fatalf("Add = %d", tag)
		}
	}
	var got []string
	record := func(tag uint64, v string) { got = append(got, v) }
	if n := s.Settle(3, false, record); n != 1 || s.Len() != 4 {
		t.Fatalf("Settle(3) = %d, Len %d", n, s.Len())
	}
	if n := s.Settle(3, false, record); n != 0 {
		t.Fatalf("second Settle(3) = %d", n)
	}
	if s.FirstUnsettled() != 1 {
		t.Fatalf("FirstUnsettled = %d", s.FirstUnsettled())
	}
	var each []uint64
	s.Each(func(tag uint64, v string) bool { each = append(each, tag); return tag < 4 })
	if len(each) != 3 || each[0] != 1 || each[1] != 2 || each[2] != 4 {
		t.Fatalf("Each visited %v, want [1 2 4]", each)
	}
	if n := s.Settle(4, true, record); n != 3 {
		t.Fatalf("Settle(4, multiple) = %d, want 3", n)
	}
	if s.FirstUnsettled() != 5 || s.Len() != 1 {
		t.Fatalf("FirstUnsettled %d Len %d", s.FirstUnsettled(), s.Len())
	}
	if n := s.Settle(6, false, record); n != 0 {
		t.Fatalf("Settle of a future tag = %d", n)
	}
	if n := s.SettleAll(record); n != 1 {
		t.Fatalf("SettleAll = %d", n)
	}
	if n := s.SettleAll(record); n != 0 {
		t.Fatalf("second SettleAll = %d", n)
	}
	if want := "c a b d e"; join(got) != want {
		t.Fatalf("settled in order %q, want %q", join(got), want)
	}
	if s.Next() != 6 || s.FirstUnsettled() != 6 {
		t.Fatalf("Next %d FirstUnsettled %d", s.Next(), s.FirstUnsettled())
	}
	s.Reset(100)
	if tag := s.Add("x"); tag != 100 || s.Len() != 1 {
		t.Fatalf("after Reset(100): Add = %d", tag)
	}
	if n := s.Settle(0, true, nil); n != 1 {
		t.Fatalf("Settle(0, multiple) = %d", n)
	}
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += " "
		}
		out += s
	}
	return out
}

// TestConfirmSetVisitsEachTagOnce settles a million tags in the patterns
// brokers use and counts the callbacks: each tag exactly once, in order for
// multiple acks, and the buffer does not keep settled entries.
func TestConfirmSetVisitsEachTagOnce(t *testing.T) {
	const n = 1_000_000
	patterns := []struct {
		name   string
		settle func(s *ConfirmSet[uint64], fn func(uint64, uint64))
	}{
		{"multiple in steps of 1000", func(s *ConfirmSet[uint64], fn func(uint64, uint64)) {
			for tag := uint64(1000); tag <= n; tag += 1000 {
				s.Settle(tag, true, fn)
			}
		}},
		{"odd singly, then multiple in steps of 999", func(s *ConfirmSet[uint64], fn func(uint64, uint64)) {
			for tag := uint64(1); tag <= n; tag += 2 {
				s.Settle(tag, false, fn)
			}
			for tag := uint64(999); tag < n; tag += 999 {
				s.Settle(tag, true, fn)
			}
			s.Settle(n, true, fn)
		}},
		{"first held back, rest singly", func(s *ConfirmSet[uint64], fn func(uint64, uint64)) {
			for tag := uint64(2); tag <= n; tag++ {
				s.Settle(tag, false, fn)
			}
			s.Settle(1, false, fn)
		}},
		{"descending singly", func(s *ConfirmSet[uint64], fn func(uint64, uint64)) {
			for tag := uint64(n); tag >= 1; tag-- {
				s.Settle(tag, false, fn)
			}
		}},
	}
	for _, p := range patterns {
		t.Run(p.name, func(t *testing.T) {
			var s ConfirmSet[uint64]
			for i := uint64(1); i <= n; i++ {
				if tag := s.Add(i); tag != i {
					t.Fatalf("Add = %d, want %d", tag, i)
				}
			}
			seen := make([]bool, n+1)
			calls := 0
			p.settle(&s, func(tag, v uint64) {
				calls++
				if tag != v || seen[tag] {
					t.Fatalf("tag %d (value %d) visited twice or with the wrong value", tag, v)
				}
				seen[tag] = true
			})
			if calls != n || s.Len() != 0 {
				t.Fatalf("%d callbacks, Len %d; want %d, 0", calls, s.Len(), n)
			}
			if len(s.buf) != 0 || s.head != 0 {
				t.Fatalf("settled entries kept: len(buf) %d head %d", len(s.buf), s.head)
			}
			if s.Next() != n+1 {
				t.Fatalf("Next = %d", s.Next())
			}
		})
	}
}

// TestConfirmSetCompacts checks that a set that is never empty (a steady
// stream of publishes with acks trailing behind) keeps its buffer bounded.
func TestConfirmSetCompacts(t *testing.T) {
	var s ConfirmSet[struct{}]
	const window = 100
	for i := 0; i < window; i++ {
		s.Add(struct{}{})
	}
	maxLen := 0
	for i := 0; i < 200_000; i++ {
		tag := s.Add(struct{}{})
		if n := s.Settle(tag-window, false, nil); n != 1 {
			t.Fatalf("Settle(%d) = %d", tag-window, n)
		}
		maxLen = max(maxLen, len(s.buf))
	}
	if s.Len() != window {
		t.Fatalf("Len = %d", s.Len())
	}
	// Settled entries are dropped in batches of at least 1024.
	if maxLen > 1024+2*window {
		t.Fatalf("buffer grew to %d entries for %d outstanding", maxLen, window)
	}
}

// After the client sends channel.close, returns and confirmations of what
// it published before still reach it; deliveries do not.
func TestReturnsAndConfirmsWhileClosing(t *testing.T) {
	h := openDefault(t)
	ch := h.confirmChannel()
	h.consume(ch, "q", "c1")
	h.publishN(ch, 1, 1)
	req, err := h.c.CloseChannel(ch)
	if err != nil {
		t.Fatal(err)
	}
	h.pump()
	h.peer.ExpectMethod(ch, &wire.ChannelClose{ReplyCode: 200})
	h.mustRecv(
		scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: "c1", DeliveryTag: 1}, &wire.Properties{}, []byte("dropped"), 0),
		scripted.Message(ch, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "q"}, &wire.Properties{}, []byte{0}, 0),
		scripted.Method(ch, &wire.BasicAck{DeliveryTag: 1}),
		scripted.Method(ch, &wire.ChannelCloseOk{}),
	)
	if e := h.expect(EventReturn); string(e.Message.Body) != "\x00" || e.Message.ReplyCode != 312 {
		t.Fatalf("return %+v", e.Message)
	}
	h.expectConfirm(ch, 1, false, true, 1)
	h.expectReply(ch, req)
	if e := h.expect(EventChannelClosed); e.Err != nil {
		t.Fatalf("channel closed with %v", e.Err)
	}
	h.noEvents()
}

func TestConfirmSetLookupAndEachRef(t *testing.T) {
	var s ConfirmSet[int]
	for i := 1; i <= 5; i++ {
		s.Add(i * 10)
	}
	s.Settle(2, false, nil)
	if _, ok := s.Lookup(2); ok {
		t.Error("Lookup of a settled tag found it")
	}
	if _, ok := s.Lookup(0); ok {
		t.Error("Lookup(0) found something")
	}
	if _, ok := s.Lookup(6); ok {
		t.Error("Lookup of a tag not yet added found it")
	}
	p, ok := s.Lookup(3)
	if !ok || *p != 30 {
		t.Fatalf("Lookup(3) = %v, %v", p, ok)
	}
	*p = 33
	var seen []int
	s.EachRef(func(tag uint64, v *int) bool {
		seen = append(seen, int(tag), *v)
		*v++
		return tag < 4
	})
	if want := []int{1, 10, 3, 33, 4, 40}; !slices.Equal(seen, want) {
		t.Fatalf("EachRef saw %v, want %v", seen, want)
	}
	s.Settle(1, false, nil)
	if p, ok := s.Lookup(3); !ok || *p != 34 {
		t.Fatalf("after settling 1, Lookup(3) = %v, %v; want 34", *p, ok)
	}
	var empty ConfirmSet[int]
	if _, ok := empty.Lookup(1); ok {
		t.Error("Lookup on an empty set found something")
	}
}
