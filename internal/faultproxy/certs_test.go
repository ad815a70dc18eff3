package faultproxy

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestGenerateCerts(t *testing.T) {
	c := GenerateCerts(t)
	for _, f := range []string{c.CAFile, c.ServerCertFile, c.ServerKeyFile, c.ClientCertFile, c.ClientKeyFile} {
		if filepath.Dir(f) != c.Dir {
			t.Errorf("%s is not in %s", f, c.Dir)
		}
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	server, err := tls.LoadX509KeyPair(c.ServerCertFile, c.ServerKeyFile)
	if err != nil {
		t.Fatalf("server files: %v", err)
	}
	client, err := tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile)
	if err != nil {
		t.Fatalf("client files: %v", err)
	}
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CAFile holds no certificate")
	}
	serverLeaf, _ := x509.ParseCertificate(server.Certificate[0])
	clientLeaf, _ := x509.ParseCertificate(client.Certificate[0])
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := serverLeaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if err := serverLeaf.VerifyHostname("example.com"); err == nil {
		t.Error("server certificate valid for example.com")
	}
	if _, err := clientLeaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if clientLeaf.Subject.CommonName != c.ClientName {
		t.Errorf("client common name %q, want %q", clientLeaf.Subject.CommonName, c.ClientName)
	}
	if !c.CA.IsCA || c.Server.Leaf.Issuer.CommonName != c.CA.Subject.CommonName || c.Client.Leaf == nil {
		t.Error("CA fields")
	}

	other := GenerateCerts(t)
	if _, err := serverLeaf.Verify(x509.VerifyOptions{Roots: other.CAPool, DNSName: "localhost"}); err == nil {
		t.Error("two GenerateCerts calls share a CA")
	}

	if cfg := c.MutualServerTLS(); cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil || len(cfg.Certificates) != 1 {
		t.Errorf("MutualServerTLS = %+v", cfg)
	}
	if cfg := c.ServerTLS(); cfg.ClientAuth != tls.NoClientCert {
		t.Errorf("ServerTLS asks for client certificates")
	}
	if cfg := c.ClientTLS(); cfg.RootCAs == nil || len(cfg.Certificates) != 1 {
		t.Errorf("ClientTLS = %+v", cfg)
	}
}
