package engine

import (
	"errors"
	"strings"

	"github.com/pika-go/pika/wire"
)

// Mechanism is a SASL mechanism for the connection.start-ok /
// connection.secure exchange. Implementations need not be safe for
// concurrent use: one engine uses a mechanism from one goroutine at a time
// (with Config.DeferAuth the driver calls it, and keeps to that too).
type Mechanism interface {
	// Name is the mechanism's name as the server lists it, e.g. "PLAIN".
	Name() string
	// Start returns the initial response sent in connection.start-ok.
	Start() ([]byte, error)
	// Challenge returns the response to a connection.secure challenge.
	// Mechanisms without challenges return an error.
	Challenge(challenge []byte) ([]byte, error)
}

// PlainAuth is the SASL PLAIN mechanism (RFC 4616): the username and
// password sent in the clear (use TLS).
type PlainAuth struct {
	Username string
	Password string
}

// Name returns "PLAIN".
func (PlainAuth) Name() string { return "PLAIN" }

// Start returns "\x00username\x00password".
func (a PlainAuth) Start() ([]byte, error) {
	b := make([]byte, 0, 2+len(a.Username)+len(a.Password))
	b = append(b, 0)
	b = append(b, a.Username...)
	b = append(b, 0)
	return append(b, a.Password...), nil
}

// Challenge fails: PLAIN has no challenges.
func (PlainAuth) Challenge([]byte) ([]byte, error) {
	return nil, errors.New("pika: PLAIN received an unexpected connection.secure challenge")
}

// AMQPlainAuth is RabbitMQ's AMQPLAIN mechanism: the username and password
// in a field table with the keys LOGIN and PASSWORD.
type AMQPlainAuth struct {
	Username string
	Password string
}

// Name returns "AMQPLAIN".
func (AMQPlainAuth) Name() string { return "AMQPLAIN" }

// Start returns the table's entries without the table's length prefix, as
// AMQPLAIN expects.
func (a AMQPlainAuth) Start() ([]byte, error) {
	b, err := wire.AppendTable(nil, wire.Table{"LOGIN": a.Username, "PASSWORD": a.Password})
	if err != nil {
		return nil, err
	}
	return b[4:], nil
}

// Challenge fails: AMQPLAIN has no challenges.
func (AMQPlainAuth) Challenge([]byte) ([]byte, error) {
	return nil, errors.New("pika: AMQPLAIN received an unexpected connection.secure challenge")
}

// ExternalAuth is the SASL EXTERNAL mechanism: the server authenticates the
// client by other means, usually its TLS client certificate.
type ExternalAuth struct {
	// Identity is the optional authorization identity; empty means the one
	// the server derives from the certificate.
	Identity string
}

// Name returns "EXTERNAL".
func (ExternalAuth) Name() string { return "EXTERNAL" }

// Start returns the authorization identity (usually empty).
func (a ExternalAuth) Start() ([]byte, error) { return []byte(a.Identity), nil }

// Challenge fails: EXTERNAL has no challenges.
func (ExternalAuth) Challenge([]byte) ([]byte, error) {
	return nil, errors.New("pika: EXTERNAL received an unexpected connection.secure challenge")
}

// chooseMechanism returns the first of prefs that the server lists in its
// space-separated mechanisms string.
func chooseMechanism(prefs []Mechanism, server string) (Mechanism, error) {
	offered := strings.Fields(server)
	for _, m := range prefs {
		for _, o := range offered {
			if o == m.Name() {
				return m, nil
			}
		}
	}
	names := make([]string, len(prefs))
	for i, m := range prefs {
		names[i] = m.Name()
	}
	return nil, &handshakeError{err: ErrNoMechanism, detail: "client offers [" + strings.Join(names, " ") + "], server offers [" + server + "]"}
}
