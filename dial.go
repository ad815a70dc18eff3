package pika

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// endpoint is one address to dial, with the name TLS verifies.
type endpoint struct {
	addr       string // ip:port or host:port
	serverName string // the host as configured
}

// endpoints lists the addresses to try, in order: each configured address
// (Config.Addrs, or Config.Addr), shuffled when Config.ShuffleAddrs is set,
// each host name expanded to every address it resolves to.
func (c *Conn) endpoints(ctx context.Context) []endpoint {
	addrs := c.cfg.Addrs
	if len(addrs) == 0 {
		addrs = []string{c.cfg.Addr}
	}
	addrs = append([]string(nil), addrs...)
	if c.cfg.ShuffleAddrs {
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	}
	var out []endpoint
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || c.cfg.Dial != nil || net.ParseIP(host) != nil {
			out = append(out, endpoint{addr: a, serverName: host})
			continue
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil || len(ips) == 0 {
			// Let the dial report the resolution error.
			out = append(out, endpoint{addr: a, serverName: host})
			continue
		}
		for _, ip := range ips {
			out = append(out, endpoint{addr: net.JoinHostPort(ip, port), serverName: host})
		}
	}
	return out
}

// dialTransport opens the TCP (or custom) connection to ep and runs TLS
// over it, bounded by ctx and Config.DialTimeout.
func dialTransport(ctx context.Context, cfg *Config, ep endpoint) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	if cfg.Dial != nil {
		nc, err = cfg.Dial(dctx, "tcp", ep.addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(dctx, "tcp", ep.addr)
	}
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return nil, fmt.Errorf("pika: %w", err) // it names the address
		}
		return nil, fmt.Errorf("pika: dial %s: %w", ep.addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if cfg.TLS != nil {
		tcfg := cfg.TLS.Clone()
		if tcfg.ServerName == "" {
			tcfg.ServerName = ep.serverName
		}
		tlsConn := tls.Client(nc, tcfg)
		if err := tlsConn.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("pika: TLS handshake with %s: %w", ep.addr, err)
		}
		nc = tlsConn
	}
	return nc, nil
}

// joinDialErrors returns the single error of a one-address dial as it is,
// and names every address's failure otherwise.
func joinDialErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return errors.New("pika: no address to dial")
	case 1:
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return &dialError{msg: "pika: every address failed: " + strings.Join(msgs, "; "), errs: errs}
}

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

type dialError struct {
	msg  string
	errs []error
}

func (e *dialError) Error() string   { return e.msg }
func (e *dialError) Unwrap() []error { return e.errs }

// isTerminal reports whether a connection failure should stop attempts:
// the broker refused the credentials or the virtual host.
func isTerminal(err error) bool {
	return errors.Is(err, ErrAuthentication) || errors.Is(err, ErrVhostRefused) || errors.Is(err, engine.ErrNoMechanism)
}

// recoverable reports whether a lost connection should be recovered: every
// loss the application did not ask for, except a broker close with a code
// that reconnecting cannot fix (access refused, vhost gone, ...), and
// authentication failures.
func recoverable(err error) bool {
	if err == nil || isTerminal(err) {
		return false
	}
	var e *Error
	if errors.As(err, &e) && e.Server {
		switch e.Code {
		case wire.ReplyConnectionForced, wire.ReplyInternalError, wire.ReplyResourceError,
			wire.ReplyFrameError, wire.ReplySyntaxError, wire.ReplyCommandInvalid,
			wire.ReplyChannelError, wire.ReplyUnexpectedFrame:
			return true
		}
		return false
	}
	return true
}
