//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package testenv

import (
	"os"
	"path/filepath"
	"sync"
)

// On systems without flock(2) the broker lock only orders the tests of one
// process: tests in different packages' test binaries may overlap.

var fallback = struct {
	sync.Mutex
	// byPath maps a lock file to its holders: -1 for exclusive, n>0 for n
	// shared holders.
	byPath map[string]int
	// held maps an open file to the lock file it holds.
	held map[*os.File]string
}{byPath: make(map[string]int), held: make(map[*os.File]string)}

// tryLock takes an in-process lock named by f's path, shared or exclusive,
// without blocking; [closeLock] releases it.
func tryLock(f *os.File, exclusive bool) (bool, error) {
	path, err := filepath.Abs(f.Name())
	if err != nil {
		return false, err
	}
	fallback.Lock()
	defer fallback.Unlock()
	n := fallback.byPath[path]
	switch {
	case exclusive && n != 0, !exclusive && n < 0:
		return false, nil
	case exclusive:
		fallback.byPath[path] = -1
	default:
		fallback.byPath[path] = n + 1
	}
	fallback.held[f] = path
	return true, nil
}

// closeLock releases the lock f holds, if any, and closes f.
func closeLock(f *os.File) {
	fallback.Lock()
	if path, ok := fallback.held[f]; ok {
		delete(fallback.held, f)
		if n := fallback.byPath[path]; n > 1 {
			fallback.byPath[path] = n - 1
		} else {
			delete(fallback.byPath, path)
		}
	}
	fallback.Unlock()
	f.Close()
}
