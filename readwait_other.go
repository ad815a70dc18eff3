//go:build !linux

package pika

import (
	"net"
	"time"
)

// fdConn is Config.BlockingRead's connection, on Linux only.
type fdConn struct{ net.Conn }

// newFdConn returns nil: elsewhere, the connection uses the runtime's
// network poller.
func newFdConn(net.Conn) *fdConn { return nil }

func (*fdConn) enableLinger() bool   { return false }
func (*fdConn) linger(time.Duration) {}
func (*fdConn) unlinger()            {}
