package pika

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI is a throwaway CA with a server and a client certificate, written
// as PEM files into a temporary directory.
type testPKI struct {
	dir      string
	ca       *x509.Certificate
	caKey    crypto.Signer
	server   tls.Certificate
	client   *x509.Certificate
	clientEC *ecdsa.PrivateKey

	caFile, clientCertFile, clientKeyFile string
}

var testCertSerial int64

func issueTestCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	testCertSerial++
	tmpl.SerialNumber = big.NewInt(testCertSerial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func certPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

func pkcs8PEM(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func sec1PEM(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func (p *testPKI) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	caKey := newTestECKey(t)
	p.caKey = caKey
	p.ca = issueTestCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "pika test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, nil, caKey.Public(), caKey)

	serverKey := newTestECKey(t)
	server := issueTestCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "rabbit.test"},
		DNSNames:    []string{"rabbit.test"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, p.ca, serverKey.Public(), caKey)
	p.server = tls.Certificate{Certificate: [][]byte{server.Raw}, PrivateKey: serverKey, Leaf: server}

	p.clientEC = newTestECKey(t)
	p.client = p.clientCert(t, p.clientEC.Public())

	p.caFile = p.write(t, "ca.pem", certPEM(p.ca))
	p.clientCertFile = p.write(t, "client.pem", certPEM(p.client))
	p.clientKeyFile = p.write(t, "client-key.pem", sec1PEM(t, p.clientEC))
	return p
}

func (p *testPKI) clientCert(t *testing.T, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	return issueTestCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "pika-client"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, p.ca, pub, p.caKey)
}

// tlsURL builds an amqps URL with the given file options.
func tlsURL(host string, opts ...string) string {
	var q []string
	for i := 0; i+1 < len(opts); i += 2 {
		q = append(q, opts[i]+"="+url.PathEscape(opts[i+1]))
	}
	return "amqps://u:hunter2@" + host + "/?" + strings.Join(q, "&")
}

func TestParseURLTLSFiles(t *testing.T) {
	p := newTestPKI(t)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCert := p.clientCert(t, rsaKey.Public())
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edCert := p.clientCert(t, edKey.Public())

	tests := []struct {
		name      string
		cert, key string
		leaf      *x509.Certificate
		chainLen  int
	}{
		{"ec sec1", p.clientCertFile, p.clientKeyFile, p.client, 1},
		{"ec pkcs8", p.clientCertFile, p.write(t, "ec8.pem", pkcs8PEM(t, p.clientEC)), p.client, 1},
		{"rsa pkcs1", p.write(t, "rsa.pem", certPEM(rsaCert)),
			p.write(t, "rsa-key.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})), rsaCert, 1},
		{"rsa pkcs8", p.write(t, "rsa2.pem", certPEM(rsaCert)), p.write(t, "rsa8.pem", pkcs8PEM(t, rsaKey)), rsaCert, 1},
		{"ed25519 pkcs8", p.write(t, "ed.pem", certPEM(edCert)), p.write(t, "ed-key.pem", pkcs8PEM(t, edKey)), edCert, 1},
		{"chain", p.write(t, "chain.pem", certPEM(p.client, p.ca)), p.clientKeyFile, p.client, 2},
		{"combined file", p.write(t, "both.pem", append(certPEM(p.client), sec1PEM(t, p.clientEC)...)),
			p.write(t, "both2.pem", append(certPEM(p.client), sec1PEM(t, p.clientEC)...)), p.client, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseURL(tlsURL("rabbit.test", "cacertfile", p.caFile, "certfile", tt.cert, "keyfile", tt.key))
			if err != nil {
				t.Fatal(err)
			}
			tc := cfg.TLS
			if tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 {
				t.Fatalf("TLS = %+v, want RootCAs and one certificate", tc)
			}
			got := tc.Certificates[0]
			if len(got.Certificate) != tt.chainLen {
				t.Errorf("chain length %d, want %d", len(got.Certificate), tt.chainLen)
			}
			if !bytes.Equal(got.Certificate[0], tt.leaf.Raw) || got.Leaf == nil || !got.Leaf.Equal(tt.leaf) {
				t.Errorf("leaf certificate differs from %s's", tt.cert)
			}
			if _, err := tt.leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("RootCAs does not hold the CA: %v", err)
			}
		})
	}
}

// TestParseURLTLSHandshake runs a TLS handshake over an in-memory pipe with
// the parsed configuration: the client verifies the server against
// cacertfile and the server verifies the client's certfile.
func TestParseURLTLSHandshake(t *testing.T) {
	p := newTestPKI(t)
	cfg, err := ParseURL(tlsURL("10.9.8.7", "cacertfile", p.caFile, "certfile", p.clientCertFile, "keyfile", p.clientKeyFile,
		"server_name_indication", "rabbit.test"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	cs, ss := net.Pipe()
	defer cs.Close()
	defer ss.Close()
	deadline := time.Now().Add(10 * time.Second) // a bound on a hang, not a performance assert
	_ = cs.SetDeadline(deadline)
	_ = ss.SetDeadline(deadline)

	server := tls.Server(ss, &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		MinVersion:   tls.VersionTLS12,
	})
	done := make(chan error, 1)
	go func() { done <- server.Handshake() }()
	client := tls.Client(cs, cfg.TLS)
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	peers := server.ConnectionState().PeerCertificates
	if len(peers) == 0 || !peers[0].Equal(p.client) {
		t.Errorf("server saw client certificates %v, want the certfile's", peers)
	}
}

func TestParseURLTLSFileErrors(t *testing.T) {
	p := newTestPKI(t)
	otherKey := p.write(t, "other-key.pem", sec1PEM(t, newTestECKey(t)))
	empty := p.write(t, "empty.pem", nil)
	garbage := p.write(t, "garbage.pem", []byte("this is not PEM\n"))
	der := p.write(t, "ca.der", p.ca.Raw)
	keyOnly := p.write(t, "key-only.pem", sec1PEM(t, p.clientEC))
	badCert := p.write(t, "bad-cert.pem", append(certPEM(p.ca), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})...))
	encrypted := p.write(t, "enc.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")}))
	legacyEnc := p.write(t, "enc1.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte("x")}))
	badKey := p.write(t, "bad-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("junk")}))
	big := p.write(t, "big.pem", bytes.Repeat([]byte("A"), maxPEMFileSize+1))
	missing := filepath.Join(p.dir, "missing.pem")

	tests := []struct {
		name    string
		url     string
		want    string
		wantErr error // also wrapped, besides ErrBadURL
	}{
		{"ca missing", tlsURL("h", "cacertfile", missing), `cacertfile "` + missing + `": file not found`, fs.ErrNotExist},
		{"ca directory", tlsURL("h", "cacertfile", p.dir), "not a regular file", nil},
		{"ca empty", tlsURL("h", "cacertfile", empty), "no PEM data", nil},
		{"ca garbage", tlsURL("h", "cacertfile", garbage), "no PEM data", nil},
		{"ca der", tlsURL("h", "cacertfile", der), "openssl x509 -inform der", nil},
		{"ca key only", tlsURL("h", "cacertfile", keyOnly), "no certificates in PEM", nil},
		{"ca corrupt block", tlsURL("h", "cacertfile", badCert), `cacertfile "` + badCert + `": certificate 2 in PEM`, nil},
		{"ca too big", tlsURL("h", "cacertfile", big), "larger than 8 MiB", nil},
		{"cert missing", tlsURL("h", "certfile", missing, "keyfile", p.clientKeyFile), `certfile "` + missing + `": file not found`, fs.ErrNotExist},
		{"cert has no certificate", tlsURL("h", "certfile", keyOnly, "keyfile", p.clientKeyFile), `certfile "` + keyOnly + `": no certificates in PEM`, nil},
		{"key missing", tlsURL("h", "certfile", p.clientCertFile, "keyfile", missing), `keyfile "` + missing + `": file not found`, fs.ErrNotExist},
		{"key has no key", tlsURL("h", "certfile", p.clientCertFile, "keyfile", p.caFile), `keyfile "` + p.caFile + `": no private key in PEM`, nil},
		{"key empty", tlsURL("h", "certfile", p.clientCertFile, "keyfile", empty), "no PEM data", nil},
		{"key encrypted", tlsURL("h", "certfile", p.clientCertFile, "keyfile", encrypted), "encrypted", nil},
		{"key legacy encrypted", tlsURL("h", "certfile", p.clientCertFile, "keyfile", legacyEnc), "encrypted", nil},
		{"key corrupt", tlsURL("h", "certfile", p.clientCertFile, "keyfile", badKey), "cannot parse the EC PRIVATE KEY block", nil},
		{"key mismatch", tlsURL("h", "certfile", p.clientCertFile, "keyfile", otherKey), `keyfile "` + otherKey + `" does not match certfile "` + p.clientCertFile + `"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseURL(tt.url)
			if err == nil {
				t.Fatalf("ParseURL(%q) succeeded, want an error containing %q", tt.url, tt.want)
			}
			if !errors.Is(err, ErrBadURL) {
				t.Errorf("error %q does not wrap ErrBadURL", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q does not wrap %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n %q\ndoes not contain\n %q", err, tt.want)
			}
			checkNoSecret(t, err.Error(), uriTestPassword)
		})
	}
}
