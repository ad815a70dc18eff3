//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package loop

import "net"

// fdConn has no descriptor path on this platform: every connection takes
// the fallback path.
type fdConn struct{}

func takeFD(nc net.Conn) (int, bool, error)                              { return -1, false, nil }
func newFDConn(l *Loop, c *Conn, fd int, remote string) (*fdConn, error) { panic("unreachable") }
func (t *fdConn) pending() int                                           { return 0 }
func (t *fdConn) write(b []byte)                                         {}
func (t *fdConn) onWritable()                                            {}
func (t *fdConn) onReadable()                                            {}
func (t *fdConn) closeAfterFlush()                                       {}
func (t *fdConn) closeNow()                                              {}
