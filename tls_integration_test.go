package pika

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// TLS end to end: the broker listens for plain AMQP only, so the tests
// reach it through a faultproxy that terminates TLS (NewTLS) with
// certificates made for the test. The client side is the real thing: an
// amqps:// URL with the TLS query options, parsed by ParseURL and dialled
// by Dial.

// tlsProxyURL returns an amqps URL for the broker at brokerURL reached
// through the TLS proxy at proxyAddr, with the given query options.
func tlsProxyURL(t *testing.T, brokerURL, proxyAddr string, opts url.Values) string {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme = "amqps"
	u.Host = proxyAddr
	// ParseURL wants every '/' of a file path percent-encoded.
	u.RawQuery = opts.Encode()
	return u.String()
}

// tlsRoundTrip publishes a message and consumes it back over c.
func tlsRoundTrip(t *testing.T, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch := openChannel(t, c)
	q, err := ch.QueueDeclare(ctx, "", QueueDeclareOptions{Exclusive: true, AutoDelete: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := ch.PublishWithConfirm(ctx, "", q.Name, Message{Body: []byte("over TLS")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, q.Name, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Body) != "over TLS" {
		t.Fatalf("consumed %q", d.Body)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
}

// tlsDial dials rawURL with a bounded ctx and closes the connection in t's
// cleanup when it succeeds.
func tlsDial(t *testing.T, rawURL string) (*Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, rawURL)
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

func TestTLSPublishConsume(t *testing.T) {
	t.Parallel()
	brokerURL := testenv.Broker(t)
	certs := faultproxy.GenerateCerts(t)
	other := faultproxy.GenerateCerts(t) // an unrelated CA
	p := faultproxy.NewTLS(t, fxBrokerAddr(t, brokerURL), certs.ServerTLS())

	tests := []struct {
		name string
		opts url.Values
		// check is nil when Dial must succeed.
		check func(t *testing.T, err error)
	}{
		{name: "cacertfile", opts: url.Values{"cacertfile": {certs.CAFile}}},
		{
			name: "server_name_indication=localhost",
			opts: url.Values{"cacertfile": {certs.CAFile}, "server_name_indication": {"localhost"}},
		},
		{name: "verify_none", opts: url.Values{"verify": {"verify_none"}}},
		{
			name: "system roots",
			opts: url.Values{},
			check: func(t *testing.T, err error) {
				var unknown x509.UnknownAuthorityError
				if !errors.As(err, &unknown) {
					t.Errorf("want x509.UnknownAuthorityError in the chain")
				}
			},
		},
		{
			name: "another CA",
			opts: url.Values{"cacertfile": {other.CAFile}},
			check: func(t *testing.T, err error) {
				var unknown x509.UnknownAuthorityError
				if !errors.As(err, &unknown) {
					t.Errorf("want x509.UnknownAuthorityError in the chain")
				}
			},
		},
		{
			name: "wrong server name",
			opts: url.Values{"cacertfile": {certs.CAFile}, "server_name_indication": {"broker.example"}},
			check: func(t *testing.T, err error) {
				var host x509.HostnameError
				if !errors.As(err, &host) || host.Host != "broker.example" {
					t.Errorf("want x509.HostnameError for broker.example in the chain")
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tlsDial(t, tlsProxyURL(t, brokerURL, p.Addr(), tc.opts))
			if tc.check == nil {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				st := c.RemoteAddr().String()
				if st != p.Addr() {
					t.Fatalf("RemoteAddr %s, want the proxy %s", st, p.Addr())
				}
				tlsRoundTrip(t, c)
				return
			}
			if err == nil {
				t.Fatal("Dial succeeded; want a certificate verification failure")
			}
			t.Logf("Dial: %v", err)
			if !strings.HasPrefix(err.Error(), "pika: TLS handshake with "+p.Addr()+": ") {
				t.Errorf("error %q does not say the TLS handshake with %s failed", err, p.Addr())
			}
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Errorf("error %v does not wrap *tls.CertificateVerificationError", err)
			}
			tc.check(t, err)
		})
	}
	// The session went through the proxy, decrypted there: the recorded
	// frames include the publishes and deliveries.
	var publishes, delivers int
	for _, r := range p.Frames() {
		switch {
		case r.Dir == faultproxy.ClientToServer && r.IsMethod(wire.MethodBasicPublish):
			publishes++
		case r.Dir == faultproxy.ServerToClient && r.IsMethod(wire.MethodBasicDeliver):
			delivers++
		}
	}
	if publishes != 3 || delivers != 3 {
		t.Errorf("proxy saw %d basic.publish and %d basic.deliver; want 3 each (one per working subtest)", publishes, delivers)
	}
}

func TestTLSMutual(t *testing.T) {
	t.Parallel()
	brokerURL := testenv.Broker(t)
	certs := faultproxy.GenerateCerts(t)
	other := faultproxy.GenerateCerts(t)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			cfg := certs.MutualServerTLS()
			cfg.MaxVersion = version
			p := faultproxy.NewTLS(t, fxBrokerAddr(t, brokerURL), cfg)

			// No client certificate: the proxy refuses the handshake.
			_, err := tlsDial(t, tlsProxyURL(t, brokerURL, p.Addr(), url.Values{"cacertfile": {certs.CAFile}}))
			if err == nil {
				t.Fatal("Dial without a client certificate succeeded")
			}
			t.Logf("without a client certificate: %v", err)
			// TLS 1.2 fails the handshake itself ("handshake failure");
			// with TLS 1.3 the client finishes its side of the handshake
			// and learns of the refusal ("certificate required") when it
			// first reads. Either way the error must say TLS refused the
			// client.
			msg := err.Error()
			if !strings.Contains(msg, "remote error: tls: ") {
				t.Errorf("error %q does not carry the TLS alert", msg)
			}
			if version == tls.VersionTLS12 && !strings.HasPrefix(msg, "pika: TLS handshake with "+p.Addr()+": ") {
				t.Errorf("error %q does not say the TLS handshake with %s failed", msg, p.Addr())
			}
			if version == tls.VersionTLS13 && !strings.Contains(msg, "certificate required") {
				t.Errorf("error %q does not say a client certificate is required", msg)
			}
			// The client may see the alert before the proxy has recorded
			// its side of the failure.
			if errs := tlsHandshakeErrors(p, 1); len(errs) != 1 || !strings.Contains(errs[0].Error(), "certificate") {
				t.Errorf("proxy's handshake errors %v; want one about the missing client certificate", errs)
			}

			// A client certificate from another CA is refused too.
			if _, err := tlsDial(t, tlsProxyURL(t, brokerURL, p.Addr(), url.Values{
				"cacertfile": {certs.CAFile}, "certfile": {other.ClientCertFile}, "keyfile": {other.ClientKeyFile},
			})); err == nil || !strings.Contains(err.Error(), "remote error: tls: ") {
				t.Errorf("Dial with a client certificate from another CA: %v; want a TLS alert", err)
			}

			// With certfile and keyfile the proxy accepts the client.
			c, err := tlsDial(t, tlsProxyURL(t, brokerURL, p.Addr(), url.Values{
				"cacertfile": {certs.CAFile}, "certfile": {certs.ClientCertFile}, "keyfile": {certs.ClientKeyFile},
			}))
			if err != nil {
				t.Fatalf("Dial with a client certificate: %v", err)
			}
			tlsRoundTrip(t, c)
			if errs := tlsHandshakeErrors(p, 2); len(errs) != 2 {
				t.Errorf("proxy saw failed handshakes %v, want 2", errs)
			}
		})
	}
}

// tlsHandshakeErrors waits (bounded) until p has recorded n failed TLS
// handshakes, and returns them.
func tlsHandshakeErrors(p *faultproxy.Proxy, n int) []error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		errs := p.HandshakeErrors()
		if len(errs) >= n || time.Now().After(deadline) {
			return errs
		}
		time.Sleep(5 * time.Millisecond)
	}
}
