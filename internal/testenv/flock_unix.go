//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package testenv

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes flock(2) on f without blocking: shared or exclusive. It
// reports false when another open file holds a conflicting lock.
func tryLock(f *os.File, exclusive bool) (bool, error) {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		default:
			return false, err
		}
	}
}

// closeLock closes f, which releases the flock it holds, if any.
func closeLock(f *os.File) { f.Close() }
