//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package loop

import (
	"errors"
	"time"
)

// chanPoller is the poller of platforms without epoll or kqueue here: it
// watches no descriptor (every connection takes the fallback path, see
// the package documentation) and waits for Post and timers only.
type chanPoller struct{ wakeC chan struct{} }

const pollerName = "none"

func newPoller() (poller, error) { return &chanPoller{wakeC: make(chan struct{}, 1)}, nil }

var errNoPoller = errors.New("loop: no descriptor poller on this platform")

func (p *chanPoller) native() bool             { return false }
func (p *chanPoller) add(fd int) error         { return errNoPoller }
func (p *chanPoller) setWrite(int, bool) error { return errNoPoller }
func (p *chanPoller) del(fd int)               {}
func (p *chanPoller) close()                   {}
func (p *chanPoller) wake() {
	select {
	case p.wakeC <- struct{}{}:
	default:
	}
}

func (p *chanPoller) wait(timeout time.Duration, fn func(fd int, readable, writable bool)) error {
	if timeout < 0 {
		<-p.wakeC
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.wakeC:
	case <-t.C:
	}
	return nil
}
