package pika

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/amqpdial"
	"github.com/pika-go/pika/internal/recovery"
)

// endpoint is one address to dial, with the name TLS verifies.
type endpoint struct {
	addr       string // ip:port or host:port
	serverName string // the host as configured
}

// endpoints lists the addresses to try, in order: each configured address
// (Config.Addrs, or Config.Addr), shuffled when Config.ShuffleAddrs is set,
// each host name expanded to every address it resolves to (see
// amqpdial.Endpoints, shared with package loop).
func (c *Conn) endpoints(ctx context.Context) []endpoint {
	addrs := c.cfg.Addrs
	if len(addrs) == 0 {
		addrs = []string{c.cfg.Addr}
	}
	var out []endpoint
	for _, ep := range amqpdial.Endpoints(ctx, addrs, c.cfg.ShuffleAddrs, c.cfg.Dial != nil) {
		out = append(out, endpoint{addr: ep.Addr, serverName: ep.ServerName})
	}
	return out
}

// dialTransport opens the TCP (or custom) connection to ep and runs TLS
// over it, bounded by ctx and Config.DialTimeout.
func dialTransport(ctx context.Context, cfg *Config, ep endpoint) (net.Conn, error) {
	return amqpdial.Transport(ctx, cfg.DialTimeout, cfg.Dial, cfg.TLS, amqpdial.Endpoint{Addr: ep.addr, ServerName: ep.serverName})
}

// joinDialErrors returns the single error of a one-address dial as it is,
// and names every address's failure otherwise.
func joinDialErrors(errs []error) error { return amqpdial.JoinErrors(errs) }

// atAddr names the server in the handshake errors whose text alone would
// not say where: a server of another protocol, and one that did not
// complete the handshake in time.
func atAddr(addr string, err error) error {
	var na *engine.NotAMQPError
	switch {
	case errors.As(err, &na):
		return &serverError{err: err, msg: "pika: the server at " + addr + " does not speak AMQP 0-9-1 (it answered " + na.Quoted() + ")"}
	case errors.Is(err, ErrHandshakeTimeout):
		return &serverError{err: err, msg: "pika: the server at " + addr + " did not complete the AMQP handshake: " + strings.TrimPrefix(err.Error(), "pika: ")}
	}
	return err
}

// serverError is a handshake error with a message naming the server.
type serverError struct {
	msg string
	err error
}

func (e *serverError) Error() string { return e.msg }
func (e *serverError) Unwrap() error { return e.err }

// isTerminal reports whether a connection failure should stop attempts:
// the broker refused the credentials or the virtual host.
func isTerminal(err error) bool { return recovery.Terminal(err) }

// recoverable reports whether a lost connection should be recovered (see
// recovery.Recoverable).
func recoverable(err error) bool { return recovery.Recoverable(err) }
