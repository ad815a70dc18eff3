package pika

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// TestIdleConnectionCost: an idle connection with one channel is served by
// two goroutines (reader and writer; the heartbeat timer is a runtime
// timer) and holds a small read buffer, not the 128 KiB a busy connection
// reads into: together well under 32 KiB of Go heap and stack (the bench's
// -idle mode measures it against the broker, see BENCHMARKS.md).
func TestIdleConnectionCost(t *testing.T) {
	const n = 50
	b := newFakeBroker(t)
	cfg := b.config()
	cfg.DisableRecovery = true
	measure := func() (uint64, int) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc + m.StackInuse, runtime.NumGoroutine()
	}
	mem0, g0 := measure()
	conns := make([]*Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range n {
		c, err := DialConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Channel(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mem, g := measure()
	// The fake broker serves each connection with one goroutine.
	perConn := float64(g-g0)/n - 1
	// Less the fake broker's two read buffers (recovery_test.go).
	bytes := (float64(mem)-float64(mem0))/n - (64<<10 + 32<<10)
	t.Logf("per idle connection: %.2f goroutines of the client, %.0f bytes of heap and stack (with the fake broker's goroutine and net.Pipe)", perConn, bytes)
	if perConn > 2 {
		t.Errorf("%.2f goroutines per idle connection, want 2", perConn)
	}
	if bytes > 48<<10 {
		t.Errorf("%.0f bytes per idle connection, want under 48 KiB", bytes)
	}
}
