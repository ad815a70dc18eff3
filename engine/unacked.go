package engine

import "math/bits"

// unackedSet tracks the delivery tags of a channel that await an
// acknowledgement from the client: deliveries to consumers without no-ack
// and get-ok messages fetched without no-ack. The broker numbers deliveries
// 1, 2, 3, ... per channel, so the set is a bitmap over a sliding window
// that starts at the lowest tag that may still be outstanding. Marking,
// clearing one tag and clearing up to a tag cost amortised O(1) per tag.
//
// The zero value is an empty set. It is not safe for concurrent use.
type unackedSet struct {
	base  uint64   // the tag of bit 0 of words[0]; a multiple of 64
	words []uint64 // bit i of words[j]: tag base+64j+i is outstanding
	n     int      // outstanding tags
}

// mark records tag as outstanding. Tags are expected in increasing order;
// a tag below the window (impossible from a conforming broker) is ignored.
func (s *unackedSet) mark(tag uint64) {
	if tag == 0 {
		return
	}
	if s.n == 0 {
		// Restart the window at this tag: nothing below it is outstanding.
		clear(s.words)
		s.words = s.words[:0]
		s.base = tag &^ 63
	}
	if tag < s.base {
		return
	}
	w := int((tag - s.base) / 64)
	for w >= len(s.words) {
		s.words = append(s.words, 0)
	}
	bit := uint64(1) << ((tag - s.base) % 64)
	if s.words[w]&bit == 0 {
		s.words[w] |= bit
		s.n++
	}
}

// has reports whether tag is outstanding.
func (s *unackedSet) has(tag uint64) bool {
	if tag < s.base || tag == 0 {
		return false
	}
	w := (tag - s.base) / 64
	if w >= uint64(len(s.words)) {
		return false
	}
	return s.words[w]&(uint64(1)<<((tag-s.base)%64)) != 0
}

// clearTag marks tag as settled. It reports false when tag was not
// outstanding.
func (s *unackedSet) clearTag(tag uint64) bool {
	if !s.has(tag) {
		return false
	}
	w := (tag - s.base) / 64
	s.words[w] &^= uint64(1) << ((tag - s.base) % 64)
	s.n--
	s.compact()
	return true
}

// clearUpTo settles every outstanding tag up to and including tag.
func (s *unackedSet) clearUpTo(tag uint64) {
	if tag < s.base {
		return
	}
	last := (tag - s.base) / 64
	for w := uint64(0); w < uint64(len(s.words)) && w <= last; w++ {
		mask := ^uint64(0)
		if w == last {
			k := (tag - s.base) % 64
			mask = ^uint64(0) >> (63 - k)
		}
		s.n -= bits.OnesCount64(s.words[w] & mask)
		s.words[w] &^= mask
	}
	s.compact()
}

// clearAll settles every tag.
func (s *unackedSet) clearAll() {
	clear(s.words)
	s.words = s.words[:0]
	s.n = 0
}

// compact drops leading empty words so that the window starts near the
// lowest outstanding tag.
func (s *unackedSet) compact() {
	if s.n == 0 {
		s.clearAll()
		return
	}
	k := 0
	for k < len(s.words) && s.words[k] == 0 {
		k++
	}
	if k == 0 {
		return
	}
	s.base += uint64(k) * 64
	n := copy(s.words, s.words[k:])
	clear(s.words[n:])
	s.words = s.words[:n]
}
