package main

import (
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// ioCounters count a client's calls on its net.Conn.
type ioCounters struct {
	writes, reads atomic.Int64
}

// countingConn is a net.Conn that counts its Write and Read calls. It is
// safe for concurrent use as far as the wrapped net.Conn is.
type countingConn struct {
	net.Conn
	n *ioCounters
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.n.writes.Add(1)
	return c.Conn.Write(b)
}

func (c *countingConn) Read(b []byte) (int, error) {
	c.n.reads.Add(1)
	return c.Conn.Read(b)
}

// sample is a snapshot of the process's counters.
type sample struct {
	wall    time.Time
	cpu     time.Duration // user + system, this process only (children excluded)
	mallocs uint64
	bytes   uint64
	writes  int64
	reads   int64
}

// cpuTime returns the process's user+system CPU time (RUSAGE_SELF: its
// threads, not its children).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meter measures one section of a run: CPU, wall time, heap allocations
// (process-wide) and write calls on the client's counted connection. It is
// not safe for concurrent use.
type meter struct {
	io         *ioCounters // the measured client's counters
	begin, end sample
	started    bool
	stopped    bool
}

func (m *meter) snap(s *sample) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.mallocs, s.bytes = ms.Mallocs, ms.TotalAlloc
	s.writes, s.reads = m.io.writes.Load(), m.io.reads.Load()
	s.cpu = cpuTime()
	s.wall = time.Now()
}

// start collects garbage (so that one section's garbage is not charged to
// the next) and then takes the starting snapshot.
func (m *meter) start() {
	runtime.GC()
	m.snap(&m.begin)
	m.started = true
}

// stop takes the final snapshot.
func (m *meter) stop() {
	if !m.started || m.stopped {
		return
	}
	// Wall time and CPU first: ReadMemStats stops the world.
	m.end.wall = time.Now()
	m.end.cpu = cpuTime()
	m.end.writes, m.end.reads = m.io.writes.Load(), m.io.reads.Load()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.end.mallocs, m.end.bytes = ms.Mallocs, ms.TotalAlloc
	m.stopped = true
}

// result turns the section into per-message figures for n messages.
func (m *meter) result(n int) runResult {
	wall := m.end.wall.Sub(m.begin.wall)
	cpu := m.end.cpu - m.begin.cpu
	fn := float64(n)
	return runResult{
		WallS:        wall.Seconds(),
		CPUS:         cpu.Seconds(),
		MsgsPerS:     fn / wall.Seconds(),
		CPUSPer100k:  cpu.Seconds() / fn * 100000,
		AllocsPerMsg: float64(m.end.mallocs-m.begin.mallocs) / fn,
		BytesPerMsg:  float64(m.end.bytes-m.begin.bytes) / fn,
		WritesPerMsg: float64(m.end.writes-m.begin.writes) / fn,
		ReadsPerMsg:  float64(m.end.reads-m.begin.reads) / fn,
	}
}
