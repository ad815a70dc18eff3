package pika

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// pipeServer is a Config.Dial whose server side reads the client's
// protocol header and then runs serve.
func pipeServer(t *testing.T, serve func(net.Conn)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		client, server := net.Pipe()
		t.Cleanup(func() { server.Close() })
		go func() {
			var hdr [8]byte
			if _, err := io.ReadFull(server, hdr[:]); err != nil {
				return
			}
			serve(server)
		}()
		return client, nil
	}
}

// TestDialNotAMQP: a server of another protocol (HTTP here) answers the
// protocol header; Dial says that the server at the address does not
// speak AMQP and shows what it answered.
func TestDialNotAMQP(t *testing.T) {
	cfg := Config{Addr: "web.example:8080", DisableRecovery: true,
		Dial: pipeServer(t, func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			c.Close()
		})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := DialConfig(ctx, cfg)
	want := `pika: the server at web.example:8080 does not speak AMQP 0-9-1 (it answered "HTTP/1.1 400 Bad Request\x0d\x0aContent-Length: 0\x0d\x0a\x0d\x0a")`
	if !errors.Is(err, ErrNotAMQP) || err.Error() != want {
		t.Fatalf("DialConfig: %v\nwant %s", err, want)
	}
}

// TestDialSilentServer: a server that accepts the connection and never
// answers fails the dial at the handshake timeout, with a message saying
// so.
func TestDialSilentServer(t *testing.T) {
	cfg := Config{Addr: "quiet.example:5672", DisableRecovery: true, HandshakeTimeout: 300 * time.Millisecond,
		Dial: pipeServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := DialConfig(ctx, cfg)
	want := "pika: the server at quiet.example:5672 did not complete the AMQP handshake: handshake timed out: the server sent nothing in 300ms (an AMQP 0-9-1 server answers the protocol header at once)"
	if !errors.Is(err, ErrHandshakeTimeout) || err.Error() != want {
		t.Fatalf("DialConfig: %v\nwant %s", err, want)
	}
}
