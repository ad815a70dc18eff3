package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The broker lock is a readers-writer lock shared by every test process on
// the machine, made of two flock(2) files in os.TempDir():
//
//	pika-broker-tests.lock  held shared by Broker tests, exclusive by
//	                        Disruptive tests, until the test's cleanup.
//	pika-broker-tests.gate  held exclusive by a Disruptive test while it waits
//	                        for the main lock, and shared for a moment by a
//	                        Broker test before it takes the main lock.
//
// The gate gives a waiting writer priority: once a Disruptive test waits,
// new Broker tests queue behind it instead of keeping the main lock shared
// forever. Every acquisition opens its own file, and flock locks belong to
// the open file, so two acquisitions in one process conflict exactly like
// two in different processes.

const (
	lockFileName = "pika-broker-tests.lock"
	gateFileName = "pika-broker-tests.gate"
)

// lockWait bounds the wait for the broker lock; a variable so tests can
// shorten it.
var lockWait = 2 * time.Minute

// defaultLockDir is where the lock files live; a variable so tests can use
// their own directory.
var defaultLockDir = os.TempDir

// procLocks records which tests of this process hold the broker lock.
var procLocks = &registry{holders: make(map[string]*holding)}

// registry tracks the broker locks held by the tests of one process, by test
// name, so that a test nested in a test holding the lock neither deadlocks on
// it nor silently runs unprotected. It is safe for concurrent use.
type registry struct {
	mu      sync.Mutex
	holders map[string]*holding
}

type holding struct {
	shared, exclusive int
}

// heldLock is one acquisition of the broker lock.
type heldLock struct {
	reg       *registry
	name      string
	exclusive bool
	f         *os.File
}

// within reports whether the test named name is holder or one of its
// subtests.
func within(name, holder string) bool {
	return name == holder || strings.HasPrefix(name, holder+"/")
}

// acquire takes the broker lock for the test named name, waiting at most
// wait. It returns a nil lock and no error when the test or an enclosing test
// already holds the exclusive lock, and an error without waiting when an
// exclusive lock is asked for inside a test that holds the shared lock.
func (r *registry) acquire(name string, exclusive bool, dir string, wait time.Duration) (*heldLock, error) {
	r.mu.Lock()
	for holder, h := range r.holders {
		if !within(name, holder) {
			continue
		}
		if h.exclusive > 0 {
			r.mu.Unlock()
			return nil, nil
		}
		if exclusive && h.shared > 0 {
			r.mu.Unlock()
			return nil, fmt.Errorf("%s wants the exclusive broker lock (Disruptive) but %s already holds the shared one (Broker), which would deadlock; a test and its subtests call only one of Broker or Disruptive", name, holder)
		}
	}
	r.mu.Unlock()

	f, err := lockFiles(dir, exclusive, wait)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}

	r.mu.Lock()
	h := r.holders[name]
	if h == nil {
		h = &holding{}
		r.holders[name] = h
	}
	if exclusive {
		h.exclusive++
	} else {
		h.shared++
	}
	r.mu.Unlock()
	return &heldLock{reg: r, name: name, exclusive: exclusive, f: f}, nil
}

// release gives the lock back.
func (l *heldLock) release() {
	l.reg.mu.Lock()
	if h := l.reg.holders[l.name]; h != nil {
		if l.exclusive {
			h.exclusive--
		} else {
			h.shared--
		}
		if h.shared == 0 && h.exclusive == 0 {
			delete(l.reg.holders, l.name)
		}
	}
	l.reg.mu.Unlock()
	closeLock(l.f)
}

// lockFiles takes the main lock file in dir through the gate, shared or
// exclusive, and returns the open main file, whose closing releases it.
func lockFiles(dir string, exclusive bool, wait time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	gate, err := openLockFile(filepath.Join(dir, gateFileName))
	if err != nil {
		return nil, err
	}
	defer closeLock(gate)
	if err := waitLock(gate, exclusive, deadline); err != nil {
		return nil, err
	}
	f, err := openLockFile(filepath.Join(dir, lockFileName))
	if err != nil {
		return nil, err
	}
	if err := waitLock(f, exclusive, deadline); err != nil {
		closeLock(f)
		return nil, err
	}
	return f, nil
}

func openLockFile(path string) (*os.File, error) {
	// Read-only is enough for flock, and works when another user created
	// the file.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("opening the broker lock file: %w", err)
	}
	return f, nil
}

// waitLock polls for the flock on f until deadline.
func waitLock(f *os.File, exclusive bool, deadline time.Time) error {
	pause := 5 * time.Millisecond
	for {
		ok, err := tryLock(f, exclusive)
		if err != nil {
			return fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		if ok {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			mode := "shared"
			if exclusive {
				mode = "exclusive"
			}
			return fmt.Errorf("gave up waiting for the %s broker lock %s: other tests (in this or another test process) held it too long; a test that called Broker before t.Parallel, or calls Broker then Disruptive, can cause this", mode, f.Name())
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, 100*time.Millisecond)
	}
}
