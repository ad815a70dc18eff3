package loop

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// resources counts the process's goroutines and open descriptors.
type resources struct {
	goroutines int
	fds        []string
}

func snapshot(t *testing.T) resources {
	t.Helper()
	var r resources
	r.goroutines = runtime.NumGoroutine()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		if runtime.GOOS == "linux" {
			t.Fatalf("reading /proc/self/fd: %v", err)
		}
		return r
	}
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		r.fds = append(r.fds, e.Name()+" -> "+target)
	}
	return r
}

// expectNoLeak fails the test when, within a few seconds, goroutines or
// descriptors remain beyond those of before. Goroutines of the runtime and
// the testing package come and go: they are waited for, and listed when
// they stay.
func expectNoLeak(t *testing.T, before resources) {
	t.Helper()
	var now resources
	for i := 0; i < 100; i++ {
		now = snapshot(t)
		if now.goroutines <= before.goroutines && len(now.fds) <= len(before.fds) {
			return
		}
		time.Sleep(30 * time.Millisecond)
	}
	if now.goroutines > before.goroutines {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("goroutines: %d before, %d after:\n%s", before.goroutines, now.goroutines, buf[:n])
	}
	if len(now.fds) > len(before.fds) {
		t.Errorf("descriptors: %d before, %d after:\n before: %s\n after: %s", len(before.fds), len(now.fds),
			strings.Join(before.fds, ", "), strings.Join(now.fds, ", "))
	}
}

// run runs a new Loop on the test's goroutine until stop is called or
// timeout passes (an error then), with start called on the loop first.
func run(t *testing.T, timeout time.Duration, start func(l *Loop, stop func())) {
	t.Helper()
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l.Post(func() { start(l, cancel) })
	t0 := time.Now()
	l.Run(ctx)
	t.Logf("loop ran %v", time.Since(t0))
	if ctx.Err() == context.DeadlineExceeded {
		t.Errorf("the test did not finish within %v", timeout)
	}
}
