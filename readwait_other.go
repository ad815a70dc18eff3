//go:build !linux

package pika

import (
	"errors"
	"net"
)

// blockingReader is Config.BlockingRead's reader, on Linux only.
type blockingReader struct{}

// newBlockingReader returns nil: elsewhere, the reader uses the runtime's
// network poller.
func newBlockingReader(net.Conn) *blockingReader { return nil }

func (*blockingReader) Read([]byte) (int, error) {
	return 0, errors.New("pika: no blocking reader on this system")
}

func (*blockingReader) wake() {}
