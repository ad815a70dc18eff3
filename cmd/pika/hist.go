package main

import (
	"math/bits"
	"sync/atomic"
)

// The latency histogram has log-linear buckets: values below 2^(subBits+1)
// have a bucket each, and every power-of-two range above is split into
// 2^subBits equal buckets, so a bucket's width is at most 1/32 of its
// values (about 3%). 1,920 buckets cover every uint64.
const (
	subBits    = 5
	subCount   = 1 << subBits // buckets per power of two
	linearMax  = 2 * subCount // values below this have a bucket each
	numBuckets = (64-subBits)*subCount + subCount
)

// bucketOf returns the bucket of v.
func bucketOf(v uint64) int {
	if v < linearMax {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - subBits // >= 1
	return shift*subCount + int(v>>uint(shift))
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < linearMax {
		return uint64(i), uint64(i)
	}
	shift := uint(i/subCount - 1)
	m := uint64(i%subCount + subCount)
	return m << shift, (m+1)<<shift - 1
}

// histogram counts values (latencies in nanoseconds) in fixed buckets. Add
// and snapshot are safe for concurrent use and do not allocate.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	max    atomic.Uint64
}

// add records one value.
func (h *histogram) add(v uint64) {
	h.counts[bucketOf(v)].Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// snapshot copies the counts into dst.
func (h *histogram) snapshot(dst *histCounts) {
	for i := range h.counts {
		dst[i] = h.counts[i].Load()
	}
}

// histCounts is a plain copy of a histogram's counts; the difference of two
// snapshots is the histogram of the values added between them.
type histCounts [numBuckets]uint64

// sub sets c to a - b.
func (c *histCounts) sub(a, b *histCounts) {
	for i := range c {
		c[i] = a[i] - b[i]
	}
}

// total returns the number of values.
func (c *histCounts) total() uint64 {
	var n uint64
	for _, x := range c {
		n += x
	}
	return n
}

// percentiles returns the values at the quantiles qs (each 0 < q <= 1), in
// order, as the midpoint of the bucket holding the value of rank
// ceil(q*total); all zeros when c is empty. qs must be sorted.
func (c *histCounts) percentiles(qs ...float64) []uint64 {
	out := make([]uint64, len(qs))
	total := c.total()
	if total == 0 {
		return out
	}
	var seen uint64
	j := 0
	for i, x := range c {
		if x == 0 {
			continue
		}
		seen += x
		for j < len(qs) && seen >= rank(qs[j], total) {
			lo, hi := bucketRange(i)
			out[j] = lo + (hi-lo)/2
			j++
		}
		if j == len(qs) {
			break
		}
	}
	return out
}

// rank is the 1-based rank of quantile q among total values.
func rank(q float64, total uint64) uint64 {
	r := uint64(q * float64(total))
	if float64(r) < q*float64(total) {
		r++
	}
	return max(r, 1)
}
