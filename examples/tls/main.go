// TLS connects to a broker over TLS (amqps) and sends a message through it.
//
// An amqps:// URL makes pika use TLS with the system's root certificates,
// verifying the broker's certificate against the URL's host. The flags
// adjust that configuration:
//
//	-cacert  a PEM file of CA certificates to trust instead of the system's
//	         (for a broker with a certificate from a private CA)
//	-cert    a PEM client certificate chain, with -key its private key, for
//	-key     brokers that require client certificates (ssl_options.verify =
//	         verify_peer and fail_if_no_peer_cert = true in RabbitMQ)
//
// The same can be written in the URL itself, without code:
// amqps://host/?cacertfile=ca.pem&certfile=cert.pem&keyfile=key.pem (see
// pika.ParseURL). This program builds the tls.Config by hand to show where
// each piece goes.
//
//	go run ./examples/tls -url amqps://guest:guest@broker.example:5671/ -cacert ca.pem
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/pika-go/pika"
)

type options struct {
	url, cacert, cert, key string
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", defaultURL(), "the broker's amqps:// URL (default $AMQP_URL when it is amqps)")
	flag.StringVar(&o.cacert, "cacert", "", "PEM file of CA certificates to trust instead of the system's")
	flag.StringVar(&o.cert, "cert", "", "PEM file of the client certificate chain (with -key)")
	flag.StringVar(&o.key, "key", "", "PEM file of the client certificate's private key (with -cert)")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "tls:", err)
		os.Exit(1)
	}
}

// defaultURL returns $AMQP_URL when it is an amqps URL, or the local
// broker's default TLS port.
func defaultURL() string {
	if u := os.Getenv("AMQP_URL"); len(u) > 8 && u[:8] == "amqps://" {
		return u
	}
	return "amqps://guest:guest@localhost:5671/"
}

func run(ctx context.Context, o options) error {
	cfg, err := pika.ParseURL(o.url)
	if err != nil {
		return err
	}
	if cfg.TLS == nil {
		return fmt.Errorf("%s is not an amqps:// URL", pika.RedactURL(o.url))
	}
	// ParseURL set cfg.TLS with ServerName (the URL's host, which the
	// broker's certificate must name) and TLS 1.2 as the minimum.
	if o.cacert != "" {
		pem, err := os.ReadFile(o.cacert)
		if err != nil {
			return err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificate found", o.cacert)
		}
		cfg.TLS.RootCAs = roots
	}
	if (o.cert == "") != (o.key == "") {
		return errors.New("-cert and -key go together")
	}
	if o.cert != "" {
		pair, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return err
		}
		cfg.TLS.Certificates = []tls.Certificate{pair}
	}
	// Record the outcome of the handshake to show it; VerifyConnection
	// runs after the usual verification succeeded.
	var (
		mu    sync.Mutex
		state tls.ConnectionState
	)
	cfg.TLS.VerifyConnection = func(cs tls.ConnectionState) error {
		mu.Lock()
		state = cs
		mu.Unlock()
		return nil
	}

	conn, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	mu.Lock()
	fmt.Printf("connected to %s over %s, cipher suite %s\n", conn.RemoteAddr(),
		tls.VersionName(state.Version), tls.CipherSuiteName(state.CipherSuite))
	if len(state.PeerCertificates) > 0 {
		fmt.Printf("broker certificate: %s, issued by %s\n",
			state.PeerCertificates[0].Subject, state.PeerCertificates[0].Issuer)
	}
	mu.Unlock()

	// From here on nothing differs from a plain connection.
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	q, err := ch.QueueDeclare(ctx, "", pika.QueueDeclareOptions{Exclusive: true})
	if err != nil {
		return err
	}
	defer ch.QueueDelete(context.Background(), q.Name, pika.QueueDeleteOptions{})
	if err := ch.Publish(ctx, "", q.Name, pika.Message{Body: []byte("sent over TLS")}); err != nil {
		return err
	}
	cons, err := ch.Consume(ctx, q.Name, pika.ConsumeOptions{AutoAck: true})
	if err != nil {
		return err
	}
	d, err := cons.Next(ctx)
	if err != nil {
		return fmt.Errorf("waiting for the message: %w", err)
	}
	fmt.Printf("received: %s\n", d.Body)
	return nil
}
