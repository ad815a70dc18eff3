package faultproxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs is a throwaway public key infrastructure for TLS tests: a CA, a
// server certificate it signed for 127.0.0.1, ::1 and localhost, and a
// client certificate it signed, as PEM files and as crypto/tls values. Its
// fields are not to be modified; the methods return new configurations
// and are safe for concurrent use.
type Certs struct {
	// Dir is the directory holding the files (a t.TempDir()).
	Dir string
	// CAFile is the CA certificate in PEM: a cacertfile for amqps URLs.
	CAFile string
	// ServerCertFile and ServerKeyFile are the server certificate and its
	// private key (PKCS #8) in PEM.
	ServerCertFile, ServerKeyFile string
	// ClientCertFile and ClientKeyFile are the client certificate and its
	// private key (PKCS #8) in PEM: certfile and keyfile for amqps URLs.
	ClientCertFile, ClientKeyFile string
	// ClientName is the client certificate's subject common name.
	ClientName string

	// CA is the CA certificate, and CAPool a pool holding only it.
	CA     *x509.Certificate
	CAPool *x509.CertPool
	// Server and Client are the two certificates with their keys.
	Server, Client tls.Certificate
}

// GenerateCerts makes a new CA, server and client certificate (ECDSA
// P-256, valid from an hour ago for a day) and writes them as PEM files
// into t.TempDir(). Each call makes an unrelated CA. It fails t on error.
func GenerateCerts(t testing.TB) *Certs {
	t.Helper()
	c, err := generateCerts(t.TempDir())
	if err != nil {
		t.Fatalf("faultproxy.GenerateCerts: %v", err)
	}
	return c
}

func generateCerts(dir string) (*Certs, error) {
	c := &Certs{Dir: dir, ClientName: "pika-test-client"}
	now := time.Now()

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "pika test CA", Organization: []string{"pika tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := sign(caTmpl, nil, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if c.CA, err = x509.ParseCertificate(caDER); err != nil {
		return nil, err
	}
	c.CAPool = x509.NewCertPool()
	c.CAPool.AddCert(c.CA)
	if c.CAFile, err = writePEM(dir, "ca.pem", "CERTIFICATE", caDER); err != nil {
		return nil, err
	}

	leaf := func(name string, tmpl *x509.Certificate) (tls.Certificate, string, string, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := sign(tmpl, c.CA, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		certFile, err := writePEM(dir, name+".pem", "CERTIFICATE", der)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		keyFile, err := writePEM(dir, name+"-key.pem", "PRIVATE KEY", keyDER)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		parsed, err := x509.ParseCertificate(der)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: parsed}, certFile, keyFile, nil
	}
	c.Server, c.ServerCertFile, c.ServerKeyFile, err = leaf("server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	c.Client, c.ClientCertFile, c.ClientKeyFile, err = leaf("client", &x509.Certificate{
		Subject:     pkix.Name{CommonName: c.ClientName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// sign issues a certificate from tmpl with a random serial number, signed
// by parent (the template itself when nil) with signer.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
}

func writePEM(dir, name, typ string, der []byte) (string, error) {
	path := filepath.Join(dir, name)
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// ServerTLS returns a server configuration with the server certificate
// that asks for no client certificate, for NewTLS.
func (c *Certs) ServerTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.Server}, MinVersion: tls.VersionTLS12}
}

// MutualServerTLS returns a server configuration with the server
// certificate that requires a client certificate signed by the CA
// (tls.RequireAndVerifyClientCert), for NewTLS.
func (c *Certs) MutualServerTLS() *tls.Config {
	cfg := c.ServerTLS()
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = c.CAPool
	return cfg
}

// ClientTLS returns a client configuration that trusts only the CA and
// presents the client certificate. ServerName is left empty: set it, or
// let the client fill it in from the address it dials.
func (c *Certs) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.CAPool, Certificates: []tls.Certificate{c.Client}, MinVersion: tls.VersionTLS12}
}
