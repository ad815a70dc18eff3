package pika

import (
	"context"
	"testing"
)

// In a file of its own: scripts/hookcost.sh copies hooks_bench_test.go
// into builds from before initHookQueue.

// BenchmarkBytesHookRead is what a BytesHook costs per read (or write) of
// the socket, reads back to back, the hook goroutine waited for after
// each: the counts, and the drains (posted to the hook mailbox, whose
// goroutine starts when it was idle) that bytesEvery allows. cpu-ns/op is
// the CPU of all of it.
func BenchmarkBytesHookRead(b *testing.B) {
	c := &Conn{hk: newHookSet([]Hook{noopHooks{}})}
	c.initHookQueue()
	ctx := context.Background()
	b.ReportAllocs()
	cpu := cpuTime()
	for range b.N {
		c.addBytes(4096, 0)
		c.hookBox.wait(ctx)
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}
