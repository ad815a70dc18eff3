package store

import (
	"testing"

	"github.com/pika-go/pika/wire"
)

func msg(body string, prio uint8, expires int64) *Message {
	c := &Content{Body: []byte(body), Props: wire.Properties{Priority: prio}}
	return &Message{Content: c, ExpiresAt: expires}
}

func bodies(ms []*Message) string {
	s := ""
	for _, m := range ms {
		s += string(m.Body)
	}
	return s
}

func TestFIFOAndRequeueOrder(t *testing.T) {
	r := NewReady(0)
	for _, b := range []string{"a", "b", "c", "d"} {
		r.Push(msg(b, 0, 0))
	}
	a, b, c := r.Pop(), r.Pop(), r.Pop()
	r.Requeue(c)
	r.Requeue(a)
	if got := bodies(r.All()); got != "acd" {
		t.Fatalf("after requeue of c then a: %q, want acd", got)
	}
	r.Requeue(b)
	if got := bodies(r.All()); got != "abcd" {
		t.Fatalf("after requeue of b: %q, want abcd", got)
	}
	if r.Len() != 4 || r.Bytes() != 4 {
		t.Fatalf("Len %d Bytes %d", r.Len(), r.Bytes())
	}
}

func TestPriorities(t *testing.T) {
	r := NewReady(5)
	r.Push(msg("low", 0, 0))
	r.Push(msg("high", 9, 0)) // capped at 5
	r.Push(msg("mid", 3, 0))
	if got := r.Peek(); string(got.Body) != "high" || got.Level != 5 {
		t.Fatalf("Peek = %q level %d", got.Body, got.Level)
	}
	if got := bodies([]*Message{r.Pop(), r.Pop(), r.Pop()}); got != "highmidlow" {
		t.Fatalf("order %q", got)
	}
	if r.Pop() != nil {
		t.Fatal("Pop of an empty queue")
	}
	r.Push(msg("x", 0, 0))
	r.Push(msg("y", 4, 0))
	if m := r.PopOldest(); string(m.Body) != "x" {
		t.Fatalf("PopOldest = %q, want the lowest level head", m.Body)
	}
}

func TestExpireOnlyAtHead(t *testing.T) {
	r := NewReady(0)
	r.Push(msg("long", 0, 100))
	r.Push(msg("short", 0, 10))
	if got := r.Expire(50, nil); len(got) != 0 {
		t.Fatalf("expired %q behind an unexpired head", bodies(got))
	}
	if r.NextExpiry() != 100 {
		t.Fatalf("NextExpiry = %d", r.NextExpiry())
	}
	if got := bodies(r.Expire(100, nil)); got != "longshort" {
		t.Fatalf("expired %q", got)
	}
	r.Push(msg("never", 0, 0))
	if got := r.Expire(1<<62, nil); len(got) != 0 || r.NextExpiry() != 0 {
		t.Fatal("a message without expiry expired")
	}
	if r.Purge() != 1 || r.Len() != 0 || r.Bytes() != 0 {
		t.Fatal("Purge")
	}
}

func TestLongQueueCompacts(t *testing.T) {
	r := NewReady(0)
	for i := 0; i < 5000; i++ {
		r.Push(msg("m", 0, 0))
		if i%2 == 1 {
			r.Pop()
		}
	}
	if r.Len() != 2500 {
		t.Fatalf("Len %d", r.Len())
	}
	var last uint64
	for m := r.Pop(); m != nil; m = r.Pop() {
		if m.Seq <= last {
			t.Fatalf("out of order: %d after %d", m.Seq, last)
		}
		last = m.Seq
	}
}
