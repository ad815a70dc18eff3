//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package loop

import (
	"fmt"
	"syscall"
	"time"
)

// kqueuer is the BSD and macOS poller: one kqueue and a non-blocking pipe
// that Post writes to wake the loop.
type kqueuer struct {
	kq     int
	wr, ww int // the wake pipe's ends
	events []syscall.Kevent_t
}

const pollerName = "kqueue"

func newPoller() (poller, error) {
	kq, err := syscall.Kqueue()
	if err != nil {
		return nil, fmt.Errorf("loop: kqueue: %w", err)
	}
	syscall.CloseOnExec(kq)
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		syscall.Close(kq)
		return nil, fmt.Errorf("loop: pipe: %w", err)
	}
	for _, fd := range fds {
		syscall.CloseOnExec(fd)
		syscall.SetNonblock(fd, true)
	}
	p := &kqueuer{kq: kq, wr: fds[0], ww: fds[1], events: make([]syscall.Kevent_t, 128)}
	if err := p.change(p.wr, syscall.EVFILT_READ, syscall.EV_ADD); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *kqueuer) change(fd, filter, flags int) error {
	var ev [1]syscall.Kevent_t
	syscall.SetKevent(&ev[0], fd, filter, flags)
	if _, err := syscall.Kevent(p.kq, ev[:], nil, nil); err != nil {
		return fmt.Errorf("loop: kevent fd %d: %w", fd, err)
	}
	return nil
}

func (p *kqueuer) native() bool     { return true }
func (p *kqueuer) add(fd int) error { return p.change(fd, syscall.EVFILT_READ, syscall.EV_ADD) }

func (p *kqueuer) setWrite(fd int, on bool) error {
	if on {
		return p.change(fd, syscall.EVFILT_WRITE, syscall.EV_ADD|syscall.EV_ENABLE)
	}
	return p.change(fd, syscall.EVFILT_WRITE, syscall.EV_DELETE)
}

// del needs nothing: closing a descriptor removes its kevents.
func (p *kqueuer) del(fd int) {}

func (p *kqueuer) wait(timeout time.Duration, fn func(fd int, readable, writable bool)) error {
	var ts *syscall.Timespec
	if timeout >= 0 {
		t := syscall.NsecToTimespec(int64(timeout))
		ts = &t
	}
	n, err := syscall.Kevent(p.kq, nil, p.events, ts)
	if err == syscall.EINTR {
		return nil
	}
	if err != nil {
		return fmt.Errorf("loop: kevent: %w", err)
	}
	for i := 0; i < n; i++ {
		ev := p.events[i]
		fd := int(ev.Ident)
		if fd == p.wr {
			var b [64]byte
			for {
				if n, _ := syscall.Read(p.wr, b[:]); n <= 0 {
					break
				}
			}
			continue
		}
		bad := ev.Flags&(syscall.EV_EOF|syscall.EV_ERROR) != 0
		fn(fd, bad || ev.Filter == syscall.EVFILT_READ, bad || ev.Filter == syscall.EVFILT_WRITE)
	}
	return nil
}

func (p *kqueuer) wake() { syscall.Write(p.ww, []byte{1}) }

func (p *kqueuer) close() {
	syscall.Close(p.wr)
	syscall.Close(p.ww)
	syscall.Close(p.kq)
}
