// Package amqpdial holds what every client of this module does the same
// way to reach a broker and to log frames: the list of addresses an
// attempt tries, the transport dial with TLS, the combined error of a
// failed attempt, and the Debug attributes of one frame. The blocking
// client (package pika) and the event-loop client (package loop) both use
// it, so that they dial and log alike.
package amqpdial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/pika-go/pika/wire"
)

// Endpoint is one address to dial, with the name TLS verifies.
type Endpoint struct {
	Addr       string // ip:port or host:port
	ServerName string // the host as configured
}

// Endpoints lists the addresses an attempt tries, in order: each of addrs,
// shuffled when shuffle is set, each host name expanded to every address
// it resolves to (unless custom is set: a custom dial function resolves
// names itself). A name that does not resolve is kept as it is, so that
// the dial reports the resolution error.
func Endpoints(ctx context.Context, addrs []string, shuffle, custom bool) []Endpoint {
	addrs = append([]string(nil), addrs...)
	if shuffle {
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	}
	var out []Endpoint
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || custom || net.ParseIP(host) != nil {
			out = append(out, Endpoint{Addr: a, ServerName: host})
			continue
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil || len(ips) == 0 {
			out = append(out, Endpoint{Addr: a, ServerName: host})
			continue
		}
		for _, ip := range ips {
			out = append(out, Endpoint{Addr: net.JoinHostPort(ip, port), ServerName: host})
		}
	}
	return out
}

// DialFunc establishes a transport, like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Transport opens the TCP connection to ep (with dial when it is not nil)
// and runs TLS over it when tlsConfig is not nil, bounded by ctx and
// timeout. Errors start with "pika: " and name the address.
func Transport(ctx context.Context, timeout time.Duration, dial DialFunc, tlsConfig *tls.Config, ep Endpoint) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var nc net.Conn
	var err error
	if dial != nil {
		nc, err = dial(dctx, "tcp", ep.Addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(dctx, "tcp", ep.Addr)
	}
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return nil, fmt.Errorf("pika: %w", err) // it names the address
		}
		return nil, fmt.Errorf("pika: dial %s: %w", ep.Addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if tlsConfig != nil {
		tcfg := tlsConfig.Clone()
		if tcfg.ServerName == "" {
			tcfg.ServerName = ep.ServerName
		}
		tlsConn := tls.Client(nc, tcfg)
		if err := tlsConn.HandshakeContext(dctx); err != nil {
			nc.Close()
			var rh tls.RecordHeaderError
			if errors.As(err, &rh) && string(rh.RecordHeader[:4]) == "AMQP" {
				// A broker's plain AMQP port answers a ClientHello with its
				// protocol header.
				return nil, fmt.Errorf("pika: TLS handshake with %s: the server answered in plain AMQP, not TLS "+
					"(use amqp:// for this port, or the broker's TLS port, 5671 by default): %w", ep.Addr, err)
			}
			return nil, fmt.Errorf("pika: TLS handshake with %s: %w", ep.Addr, err)
		}
		nc = tlsConn
	}
	return nc, nil
}

// JoinErrors returns the single error of a one-address attempt as it is,
// and names every address's failure otherwise (errors.Is and errors.As
// see each of them).
func JoinErrors(errs []error) error {
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

type dialError struct {
	msg  string
	errs []error
}

func (e *dialError) Error() string   { return e.msg }
func (e *dialError) Unwrap() []error { return e.errs }

// FrameAttrs describes one frame for a Debug log record: its direction,
// type and channel, and for methods the method's name and fields (secrets
// redacted), for content headers a summary of the properties, for bodies
// the size.
func FrameAttrs(dir string, f wire.Frame) []any {
	attrs := []any{"dir", dir, "type", f.Type.String(), "channel", f.Channel}
	switch f.Type {
	case wire.FrameMethod:
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			return append(attrs, "error", err.Error())
		}
		attrs = append(attrs, "method", m.ID().Name(), slog.Any("fields", RedactSecrets(m)))
	case wire.FrameHeader:
		var h wire.ContentHeader
		if err := h.Decode(f.Payload, 0); err != nil {
			return append(attrs, "error", err.Error())
		}
		attrs = append(attrs, "body_size", h.BodySize, "properties", h.Properties.Flags.String())
	case wire.FrameBody:
		attrs = append(attrs, "size", len(f.Payload))
	}
	return attrs
}

// RedactSecrets returns m, or for methods that carry credentials a copy
// with them hidden: the SASL response (PLAIN holds the password in the
// clear) and a new secret.
func RedactSecrets(m wire.Method) wire.Method {
	const hidden = "[redacted]"
	switch m := m.(type) {
	case *wire.ConnectionStartOk:
		cp := *m
		cp.Response = hidden
		return &cp
	case *wire.ConnectionSecureOk:
		cp := *m
		cp.Response = hidden
		return &cp
	case *wire.ConnectionUpdateSecret:
		cp := *m
		cp.NewSecret = hidden
		return &cp
	}
	return m
}

// EachFrame calls fn with every whole frame of an outgoing buffer, which
// may start with the protocol header (reported with header true and a zero
// frame). It stops at
// the first incomplete or malformed frame.
func EachFrame(b []byte, fn func(f wire.Frame, header bool)) {
	for len(b) > 0 {
		if len(b) >= 8 && string(b[:4]) == "AMQP" {
			fn(wire.Frame{}, true)
			b = b[8:]
			continue
		}
		f, n, err := wire.ParseFrame(b, ^uint32(0))
		if err != nil || n == 0 {
			return
		}
		b = b[n:]
		fn(f, false)
	}
}

// Credentials calls a Config.Credentials function for both clients: its
// error is returned naming it, and a panic in it becomes an error naming it
// (the call runs on a goroutine of the library's, where a panic would end
// the process).
func Credentials(ctx context.Context, fn func(context.Context) (string, string, error)) (user, pass string, err error) {
	defer func() {
		if v := recover(); v != nil {
			user, pass = "", ""
			if e, ok := v.(error); ok {
				err = fmt.Errorf("pika: Config.Credentials panicked: %w", e)
			} else {
				err = fmt.Errorf("pika: Config.Credentials panicked: %v", v)
			}
		}
	}()
	user, pass, err = fn(ctx)
	if err != nil {
		return "", "", fmt.Errorf("pika: Config.Credentials: %w", err)
	}
	return user, pass, nil
}
