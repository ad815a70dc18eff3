package engine

// ConfirmSet tracks outstanding publisher confirmations: values added in
// delivery-tag order, settled one at a time or "up to and including" a tag.
// Each tag is visited once over its whole life, so settling costs amortised
// O(1) per message however the broker batches its acks.
//
// The engine uses one per channel in confirm mode; the default client uses
// one to map tags to the callers waiting on them. The zero value is an empty
// set whose first tag is 1. A ConfirmSet is not safe for concurrent use.
type ConfirmSet[T any] struct {
	base uint64 // the tag of buf[head]
	buf  []confirmEntry[T]
	head int // buf[:head] is settled and dropped
	open int // entries not yet settled
}

type confirmEntry[T any] struct {
	settled bool
	v       T
}

// Next returns the tag the next Add will get.
func (s *ConfirmSet[T]) Next() uint64 {
	if s.base == 0 {
		s.base = 1
	}
	return s.base + uint64(len(s.buf)-s.head)
}

// Reset empties the set and makes firstTag the next tag.
func (s *ConfirmSet[T]) Reset(firstTag uint64) {
	clear(s.buf)
	s.buf = s.buf[:0]
	s.head = 0
	s.base = firstTag
	s.open = 0
}

// Add records v under the next tag and returns that tag.
func (s *ConfirmSet[T]) Add(v T) uint64 {
	tag := s.Next()
	s.buf = append(s.buf, confirmEntry[T]{v: v})
	s.open++
	return tag
}

// FirstUnsettled returns the lowest unsettled tag, or Next() when every tag
// is settled.
func (s *ConfirmSet[T]) FirstUnsettled() uint64 {
	next := s.Next()
	for i, e := range s.buf[s.head:] {
		if !e.settled {
			return s.base + uint64(i)
		}
	}
	return next
}

// LastUnsettled returns the highest unsettled tag, or 0 when every tag is
// settled. It looks back from the newest tag over the settled ones.
func (s *ConfirmSet[T]) LastUnsettled() uint64 {
	if s.open == 0 {
		return 0
	}
	for i := len(s.buf) - 1; i >= s.head; i-- {
		if !s.buf[i].settled {
			return s.base + uint64(i-s.head)
		}
	}
	return 0
}

// Each calls fn for every unsettled tag in order until fn returns false.
func (s *ConfirmSet[T]) Each(fn func(tag uint64, v T) bool) {
	for i, e := range s.buf[s.head:] {
		if !e.settled && !fn(s.base+uint64(i), e.v) {
			return
		}
	}
}

// Lookup returns a pointer to the value of unsettled tag, valid until the
// next call that changes the set, or false when tag is settled or unknown.
func (s *ConfirmSet[T]) Lookup(tag uint64) (*T, bool) {
	if s.base == 0 || tag < s.base || tag >= s.Next() {
		return nil, false
	}
	e := &s.buf[s.head+int(tag-s.base)]
	if e.settled {
		return nil, false
	}
	return &e.v, true
}

// EachRef is Each with a pointer to each value (valid during the call), for
// values too large to copy or that fn updates.
func (s *ConfirmSet[T]) EachRef(fn func(tag uint64, v *T) bool) {
	for i := range s.buf[s.head:] {
		e := &s.buf[s.head+i]
		if !e.settled && !fn(s.base+uint64(i), &e.v) {
			return
		}
	}
}

// Len returns the number of unsettled tags.
func (s *ConfirmSet[T]) Len() int { return s.open }

// Settle settles tag, or with multiple every unsettled tag up to and
// including tag (tag 0 with multiple means all of them), calling fn for each
// value settled, in tag order. It returns how many were settled; 0 means the
// tag was unknown or already settled.
func (s *ConfirmSet[T]) Settle(tag uint64, multiple bool, fn func(tag uint64, v T)) int {
	if s.base == 0 {
		s.base = 1
	}
	entries := s.buf[s.head:]
	end := s.base + uint64(len(entries)) // one past the last tag
	if multiple && tag == 0 {
		tag = end - 1
	}
	if tag < s.base || tag >= end {
		return 0
	}
	n := 0
	if multiple {
		last := int(tag - s.base)
		for i := 0; i <= last; i++ {
			e := &entries[i]
			if !e.settled {
				n++
				if fn != nil {
					fn(s.base+uint64(i), e.v)
				}
			}
		}
		s.drop(last + 1)
	} else {
		e := &entries[tag-s.base]
		if e.settled {
			return 0
		}
		e.settled = true
		n = 1
		if fn != nil {
			fn(tag, e.v)
		}
		var zero T
		e.v = zero
		k := 0
		for k < len(entries) && entries[k].settled {
			k++
		}
		s.drop(k)
	}
	s.open -= n
	return n
}

// SettleAll settles every outstanding tag, calling fn for each in tag order,
// and returns how many there were. Used when a channel closes.
func (s *ConfirmSet[T]) SettleAll(fn func(tag uint64, v T)) int {
	if s.open == 0 {
		return 0
	}
	return s.Settle(0, true, fn)
}

// drop removes the first k live entries (all settled).
func (s *ConfirmSet[T]) drop(k int) {
	if k == 0 {
		return
	}
	clear(s.buf[s.head : s.head+k])
	s.head += k
	s.base += uint64(k)
	switch {
	case s.head == len(s.buf):
		s.buf = s.buf[:0]
		s.head = 0
	case s.head >= 1024 && s.head*2 >= len(s.buf):
		n := copy(s.buf, s.buf[s.head:])
		clear(s.buf[n:])
		s.buf = s.buf[:n]
		s.head = 0
	}
}
