//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package loop

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// socketPair returns the two ends of a Unix socket pair as net.Conns: the
// client's end is a *net.UnixConn, which takes the descriptor path.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fds[0])
	syscall.CloseOnExec(fds[1])
	conv := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		nc, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	return conv(fds[0]), conv(fds[1])
}
