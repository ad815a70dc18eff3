package testenv

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// holdEnv makes the test binary a helper that holds the broker lock in the
// directory it names (see TestMain).
const holdEnv = "PIKA_TESTENV_HOLD_LOCK"

// TestMain turns the test binary into a lock-holding helper process when
// holdEnv is set: it takes the lock ("dir:shared" or "dir:exclusive"),
// prints "locked", and holds it until its standard input closes.
func TestMain(m *testing.M) {
	if spec := os.Getenv(holdEnv); spec != "" {
		os.Exit(holdLockHelper(spec))
	}
	os.Exit(m.Run())
}

func holdLockHelper(spec string) int {
	dir, mode, _ := strings.Cut(spec, ":")
	f, err := lockFiles(dir, mode == "exclusive", 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	closeLock(f)
	return 0
}

// tryFor tries to take the lock in dir for a short time and reports whether
// it got it, releasing it at once.
func tryFor(t *testing.T, dir string, exclusive bool, wait time.Duration) bool {
	t.Helper()
	f, err := lockFiles(dir, exclusive, wait)
	if err != nil {
		if !strings.Contains(err.Error(), "gave up waiting") {
			t.Fatalf("lockFiles: unexpected error: %v", err)
		}
		return false
	}
	closeLock(f)
	return true
}

func mustLock(t *testing.T, dir string, exclusive bool) *os.File {
	t.Helper()
	f, err := lockFiles(dir, exclusive, time.Second)
	if err != nil {
		t.Fatalf("lockFiles(exclusive=%v): %v", exclusive, err)
	}
	return f
}

func TestLockModes(t *testing.T) {
	const short = 50 * time.Millisecond
	tests := []struct {
		name           string
		held, want     bool // exclusive?
		wantCompatible bool
	}{
		{"shared then shared", false, false, true},
		{"shared then exclusive", false, true, false},
		{"exclusive then shared", true, false, false},
		{"exclusive then exclusive", true, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := mustLock(t, dir, tc.held)
			if got := tryFor(t, dir, tc.want, short); got != tc.wantCompatible {
				t.Fatalf("second lock (exclusive=%v) while one (exclusive=%v) is held: got %v, want %v", tc.want, tc.held, got, tc.wantCompatible)
			}
			closeLock(f)
			if !tryFor(t, dir, tc.want, time.Second) {
				t.Fatalf("second lock (exclusive=%v) not available after the first was released", tc.want)
			}
		})
	}
}

// TestLockWriterPriority checks that a waiting Disruptive lock holds back new
// shared lockers, so a stream of Broker tests cannot starve it.
func TestLockWriterPriority(t *testing.T) {
	dir := t.TempDir()
	reader := mustLock(t, dir, false)

	type result struct {
		f   *os.File
		err error
	}
	writer := make(chan result, 1)
	go func() {
		f, err := lockFiles(dir, true, 10*time.Second)
		writer <- result{f, err}
	}()

	// Wait until the writer holds the gate: a shared try on it fails.
	waitUntil(t, "the writer to take the gate", func() bool {
		g, err := openLockFile(dir + "/" + gateFileName)
		if err != nil {
			t.Fatal(err)
		}
		defer closeLock(g)
		ok, err := tryLock(g, false)
		if err != nil {
			t.Fatal(err)
		}
		return !ok
	})
	if tryFor(t, dir, false, 50*time.Millisecond) {
		t.Fatal("a new shared lock was granted while an exclusive locker was waiting")
	}

	closeLock(reader)
	r := <-writer
	if r.err != nil {
		t.Fatalf("writer: %v", r.err)
	}
	if tryFor(t, dir, false, 50*time.Millisecond) {
		t.Fatal("a shared lock was granted while the exclusive lock was held")
	}
	closeLock(r.f)
	if !tryFor(t, dir, false, time.Second) {
		t.Fatal("shared lock not available after the exclusive lock was released")
	}
}

// TestLockAcrossProcesses checks that the lock orders separate test
// processes, which is what it is for.
func TestLockAcrossProcesses(t *testing.T) {
	for _, mode := range []string{"shared", "exclusive"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), holdEnv+"="+dir+":"+mode)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waited := false
			defer func() {
				if !waited { // a check failed: let the helper go
					stdin.Close()
					_ = cmd.Wait()
				}
			}()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || line != "locked\n" {
				t.Fatalf("helper process said %q, %v; stderr: %s", line, err, stderr.String())
			}

			if tryFor(t, dir, true, 50*time.Millisecond) {
				t.Fatalf("exclusive lock granted while another process holds the %s lock", mode)
			}
			wantShared := mode == "shared"
			if got := tryFor(t, dir, false, 50*time.Millisecond); got != wantShared {
				t.Fatalf("shared lock while another process holds the %s lock: got %v, want %v", mode, got, wantShared)
			}

			stdin.Close() // the helper releases the lock and exits
			waited = true
			if err := cmd.Wait(); err != nil {
				t.Fatalf("helper process: %v; stderr: %s", err, stderr.String())
			}
			if !tryFor(t, dir, true, time.Second) {
				t.Fatal("exclusive lock not available after the helper process exited")
			}
		})
	}
}

func TestRegistryNesting(t *testing.T) {
	dir := t.TempDir()
	r := &registry{holders: make(map[string]*holding)}
	const wait = 100 * time.Millisecond

	shared, err := r.acquire("TestA", false, dir, wait)
	if err != nil || shared == nil {
		t.Fatalf("shared acquire: %v, %v", shared, err)
	}
	// A second shared lock in the same test is fine.
	again, err := r.acquire("TestA/sub", false, dir, wait)
	if err != nil || again == nil {
		t.Fatalf("nested shared acquire: %v, %v", again, err)
	}
	again.release()
	// Exclusive inside a shared holder fails at once instead of deadlocking.
	start := time.Now()
	_, err = r.acquire("TestA/sub", true, dir, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "already holds the shared one") {
		t.Fatalf("exclusive inside shared: got %v, want a deadlock error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("exclusive inside shared waited instead of failing at once")
	}
	// A test whose name merely starts with the holder's is not nested:
	// it waits for the lock like anyone else.
	if _, err := r.acquire("TestAB", true, dir, wait); err == nil || !strings.Contains(err.Error(), "gave up waiting") {
		t.Fatalf("unrelated exclusive acquire while TestA holds shared: got %v, want a timeout", err)
	}
	shared.release()
	if len(r.holders) != 0 {
		t.Fatalf("registry not empty after release: %v", r.holders)
	}

	excl, err := r.acquire("TestB", true, dir, wait)
	if err != nil || excl == nil {
		t.Fatalf("exclusive acquire: %v, %v", excl, err)
	}
	// Broker or Disruptive inside an exclusive holder takes no second lock.
	for _, exclusive := range []bool{false, true} {
		inner, err := r.acquire("TestB/sub/deeper", exclusive, dir, wait)
		if err != nil || inner != nil {
			t.Fatalf("acquire(exclusive=%v) inside exclusive holder: got %v, %v; want nil, nil", exclusive, inner, err)
		}
	}
	// Other tests wait.
	if _, err := r.acquire("TestC", false, dir, wait); err == nil {
		t.Fatal("shared lock granted to another test while TestB holds the exclusive one")
	}
	excl.release()
	if len(r.holders) != 0 {
		t.Fatalf("registry not empty after release: %v", r.holders)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
