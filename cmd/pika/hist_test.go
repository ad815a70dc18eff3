package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBucketOfRange(t *testing.T) {
	// Every bucket's range contains exactly the values that map to it, the
	// ranges tile the uint64 line in order, and each is narrow.
	prevHi := uint64(0)
	for i := range numBuckets {
		lo, hi := bucketRange(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, want %d (after bucket %d)", i, lo, prevHi+1, i-1)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d = [%d, %d], but bucketOf(lo)=%d bucketOf(hi)=%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= linearMax {
			if width := float64(hi-lo) + 1; width/float64(lo) > 1.0/subCount+1e-12 {
				t.Fatalf("bucket %d = [%d, %d] is %.4f of its values wide", i, lo, hi, width/float64(lo))
			}
		}
		prevHi = hi
	}
	if prevHi != math.MaxUint64 {
		t.Fatalf("last bucket ends at %d, want MaxUint64", prevHi)
	}
	if bucketOf(math.MaxUint64) != numBuckets-1 {
		t.Fatalf("bucketOf(MaxUint64) = %d", bucketOf(math.MaxUint64))
	}
}

func TestPercentiles(t *testing.T) {
	var h histogram
	var c histCounts
	h.snapshot(&c)
	if got := c.percentiles(0.5, 0.99); got[0] != 0 || got[1] != 0 {
		t.Errorf("empty histogram percentiles = %v, want zeros", got)
	}

	// Exact in the linear region.
	for v := range uint64(50) {
		h.add(v + 1) // 1..50
	}
	h.snapshot(&c)
	if got := c.percentiles(0.5, 0.9, 1); !slices.Equal(got, []uint64{25, 45, 50}) {
		t.Errorf("1..50: percentiles = %v, want [25 45 50]", got)
	}
	if c.total() != 50 || h.max.Load() != 50 {
		t.Errorf("total %d max %d, want 50 50", c.total(), h.max.Load())
	}

	// Within the bucket resolution on a wide random sample.
	var h2 histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]uint64, 100000)
	for i := range vals {
		vals[i] = uint64(r.ExpFloat64() * 2e6) // latencies around 2 ms
		h2.add(vals[i])
	}
	slices.Sort(vals)
	h2.snapshot(&c)
	qs := []float64{0.5, 0.95, 0.99, 0.999}
	got := c.percentiles(qs...)
	for i, q := range qs {
		want := vals[int(math.Ceil(q*float64(len(vals))))-1]
		if rel := math.Abs(float64(got[i])-float64(want)) / float64(want); rel > 1.0/subCount {
			t.Errorf("p%v = %d, exact %d: off by %.2f%%", q*100, got[i], want, rel*100)
		}
	}
	if h2.max.Load() != vals[len(vals)-1] {
		t.Errorf("max = %d, want %d", h2.max.Load(), vals[len(vals)-1])
	}

	// The difference of two snapshots holds what came between them.
	var before, after, diff histCounts
	h2.snapshot(&before)
	for range 10 {
		h2.add(1e9)
	}
	h2.snapshot(&after)
	diff.sub(&after, &before)
	if diff.total() != 10 {
		t.Fatalf("diff total = %d, want 10", diff.total())
	}
	if p := diff.percentiles(0.5)[0]; math.Abs(float64(p)-1e9)/1e9 > 1.0/subCount {
		t.Errorf("diff p50 = %d, want about 1e9", p)
	}
}

func TestRank(t *testing.T) {
	tests := []struct {
		q     float64
		total uint64
		want  uint64
	}{
		{0.5, 10, 5}, {0.5, 11, 6}, {0.99, 100, 99}, {0.99, 1, 1}, {1, 7, 7}, {0.001, 10, 1},
	}
	for _, tt := range tests {
		if got := rank(tt.q, tt.total); got != tt.want {
			t.Errorf("rank(%v, %d) = %d, want %d", tt.q, tt.total, got, tt.want)
		}
	}
}

func TestHistogramAddAllocs(t *testing.T) {
	var h histogram
	v := uint64(12345)
	if n := testing.AllocsPerRun(1000, func() { h.add(v); v += 977 }); n != 0 {
		t.Errorf("histogram.add allocates %v times per call", n)
	}
}
