package amqpdial

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestTLSToPlainPort dials TLS to servers that answer the ClientHello with
// something else and checks that the error says what the server spoke.
func TestTLSToPlainPort(t *testing.T) {
	tests := []struct {
		name, answer, want string
		hint               bool
	}{
		{"plain AMQP", "AMQP\x00\x00\x09\x01", "answered in plain AMQP, not TLS", true},
		{"HTTP", "HTTP/1.1 400 Bad Request\r\n\r\n", "first record does not look like a TLS handshake", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.Write([]byte(tt.answer))
				io.Copy(io.Discard, c) // until the client closes
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ep := Endpoint{Addr: ln.Addr().String(), ServerName: "localhost"}
			nc, err := Transport(ctx, 30*time.Second, nil, &tls.Config{}, ep)
			if err == nil {
				nc.Close()
				t.Fatal("TLS handshake succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, ep.Addr) {
				t.Errorf("error %q: want it to name %s and contain %q", msg, ep.Addr, tt.want)
			}
			if got := strings.Contains(msg, "amqp://"); got != tt.hint {
				t.Errorf("error %q: hint to use amqp:// given %v, want %v", msg, got, tt.hint)
			}
			var rh tls.RecordHeaderError
			if !errors.As(err, &rh) {
				t.Errorf("error %q does not wrap the tls.RecordHeaderError", msg)
			}
		})
	}
}
