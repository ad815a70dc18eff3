//go:build linux

package loop

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"time"
)

// epoller is the Linux poller: one epoll instance, level-triggered, and an
// eventfd that Post writes to wake the loop.
type epoller struct {
	epfd   int
	evfd   int
	events []syscall.EpollEvent
}

const pollerName = "epoll"

func newPoller() (poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loop: epoll_create1: %w", err)
	}
	// EFD_NONBLOCK and EFD_CLOEXEC have the values of O_NONBLOCK and
	// O_CLOEXEC.
	r, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil, fmt.Errorf("loop: eventfd2: %w", errno)
	}
	p := &epoller{epfd: epfd, evfd: int(r), events: make([]syscall.EpollEvent, 128)}
	if err := p.ctl(syscall.EPOLL_CTL_ADD, p.evfd, syscall.EPOLLIN); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *epoller) ctl(op, fd int, events uint32) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("loop: epoll_ctl fd %d: %w", fd, err)
	}
	return nil
}

func (p *epoller) native() bool { return true }
func (p *epoller) add(fd int) error {
	return p.ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN|syscall.EPOLLRDHUP)
}

func (p *epoller) setWrite(fd int, on bool) error {
	ev := uint32(syscall.EPOLLIN | syscall.EPOLLRDHUP)
	if on {
		ev |= syscall.EPOLLOUT
	}
	return p.ctl(syscall.EPOLL_CTL_MOD, fd, ev)
}

func (p *epoller) del(fd int) { p.ctl(syscall.EPOLL_CTL_DEL, fd, 0) }

func (p *epoller) wait(timeout time.Duration, fn func(fd int, readable, writable bool)) error {
	n, err := syscall.EpollWait(p.epfd, p.events, pollMillis(timeout))
	if err == syscall.EINTR {
		return nil
	}
	if err != nil {
		return fmt.Errorf("loop: epoll_wait: %w", err)
	}
	for i := 0; i < n; i++ {
		ev := p.events[i]
		if int(ev.Fd) == p.evfd {
			var b [8]byte
			syscall.Read(p.evfd, b[:])
			continue
		}
		bad := ev.Events&(syscall.EPOLLERR|syscall.EPOLLHUP) != 0
		fn(int(ev.Fd), bad || ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP) != 0, bad || ev.Events&syscall.EPOLLOUT != 0)
	}
	return nil
}

func (p *epoller) wake() {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	syscall.Write(p.evfd, b[:])
}

func (p *epoller) close() {
	syscall.Close(p.evfd)
	syscall.Close(p.epfd)
}
