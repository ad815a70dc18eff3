// Package examples_test runs every example program against the test broker
// and checks what it prints.
//
// Each example is built once (one go build for all of them) into a
// temporary directory and run as a process of its own, with a timeout,
// AMQP_URL pointing at the broker of internal/testenv, and unique names for
// the queues and exchanges it declares. The TLS example runs against a TLS
// proxy that this test starts in front of the broker, with certificates it
// generates.
package examples_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/pikatest"
)

// runTimeout bounds one example run.
const runTimeout = 20 * time.Second

// exampleNames lists the example directories; every one must have a case
// below (TestEveryExampleIsRun checks the directory against it).
var exampleNames = []string{"hello", "workqueue", "pubsub", "routing", "topics", "rpc", "confirms", "tls", "recovery", "ownloop"}

// buildExamples builds every example with one go build into a temporary
// directory and returns it.
func buildExamples(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build the examples: %v", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, name := range exampleNames {
		args = append(args, "./"+name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// runExample runs the example binary with args and AMQP_URL set to url,
// and returns what it printed on stdout. It fails the test when the example
// exits non-zero, writes to stderr, or runs longer than runTimeout.
func runExample(t *testing.T, bin, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "AMQP_URL="+url)
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), time.Since(start).Round(time.Millisecond), stdout.String())
	if ctx.Err() != nil {
		t.Fatalf("did not finish within %v; stderr:\n%s", runTimeout, stderr.String())
	}
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("wrote to stderr:\n%s", stderr.String())
	}
	return stdout.String()
}

// wantLines fails the test for every line of want that out lacks.
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	for _, w := range want {
		found := false
		for _, l := range lines {
			if l == w {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("output lacks the line %q", w)
		}
	}
}

// wantPrefixCount fails the test unless exactly n lines of out start with
// prefix.
func wantPrefixCount(t *testing.T, out, prefix string, n int) {
	t.Helper()
	got := 0
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, prefix) {
			got++
		}
	}
	if got != n {
		t.Errorf("%d lines start with %q, want %d", got, prefix, n)
	}
}

func TestExamples(t *testing.T) {
	runExamples(t, testenv.Broker(t))
}

// TestExamplesPikatest runs the same examples against the in-process
// broker of package pikatest: what they print must not change.
func TestExamplesPikatest(t *testing.T) {
	runExamples(t, pikatest.NewBroker(t).URL())
}

// runExamples runs every example but recovery (which needs rabbitmqctl)
// against the broker at brokerURL.
func runExamples(t *testing.T, brokerURL string) {
	bins := buildExamples(t)
	bin := func(name string) string { return filepath.Join(bins, name) }

	t.Run("hello", func(t *testing.T) {
		out := runExample(t, bin("hello"), brokerURL)
		wantLines(t, out, "sent: Hello, World!", "received: Hello, World!")
	})

	t.Run("workqueue", func(t *testing.T) {
		q := testenv.Name(t, "tasks")
		out := runExample(t, bin("workqueue"), brokerURL, "-queue", q, "-n", "9", "-workers", "3", "-work", "5ms")
		wantLines(t, out, "the broker has all 9 tasks", "all 9 tasks done", "deleted queue "+q)
		wantPrefixCount(t, out, "sent ", 9)
		wantPrefixCount(t, out, "worker ", 9+3) // one line per task, one summary per worker
		// Every worker reports, and the reports add up to the tasks sent.
		total := 0
		for _, w := range []int{1, 2, 3} {
			var n int
			found := false
			for l := range strings.Lines(out) {
				if _, err := fmt.Sscanf(l, "worker %d did %d tasks\n", new(int), &n); err == nil && strings.HasPrefix(l, fmt.Sprintf("worker %d ", w)) {
					found = true
					total += n
				}
			}
			if !found {
				t.Errorf("no summary line for worker %d", w)
			}
		}
		if total != 9 {
			t.Errorf("the workers' summaries add up to %d tasks, want 9", total)
		}
	})

	t.Run("pubsub", func(t *testing.T) {
		out := runExample(t, bin("pubsub"), brokerURL, "-exchange", testenv.Name(t, "logs"), "-n", "4")
		wantLines(t, out, "subscriber 1 got 4 messages", "subscriber 2 got 4 messages",
			`subscriber 1 received "log entry 4"`, `subscriber 2 received "log entry 4"`)
	})

	t.Run("routing", func(t *testing.T) {
		out := runExample(t, bin("routing"), brokerURL, "-exchange", testenv.Name(t, "direct"))
		wantLines(t, out, "disk received [error] cannot write /var/data",
			"console received [error] cannot write /var/data",
			"console received [warning] disk 85% full",
			"every subscriber got the severities it bound")
		wantPrefixCount(t, out, "disk received", 1)
		wantPrefixCount(t, out, "console received", 4)
		if strings.Contains(out, "received [debug]") {
			t.Error("a subscriber received the debug message, which no binding matches")
		}
	})

	t.Run("topics", func(t *testing.T) {
		out := runExample(t, bin("topics"), brokerURL, "-exchange", testenv.Name(t, "topic"))
		wantLines(t, out, "critical received [kern.critical] kernel panic",
			"critical received [app.critical] out of memory",
			"kernel received [kern.net.warning] link down on eth0",
			"every subscriber got the messages its patterns match")
		wantPrefixCount(t, out, "critical received", 2)
		wantPrefixCount(t, out, "kernel received", 3)
		wantPrefixCount(t, out, "everything received", 5)
	})

	t.Run("rpc", func(t *testing.T) {
		out := runExample(t, bin("rpc"), brokerURL, "-queue", testenv.Name(t, "rpc"), "-n", "12")
		wantLines(t, out, "fib(1) = 1", "fib(10) = 55", "fib(12) = 144")
		wantPrefixCount(t, out, "fib(", 12)
		wantLines(t, out, `bad request refused by the server: not a number between 0 and 90: "ninety-one"`,
			"client: 13 calls, 12 replies, 1 errors, 0 late replies")
	})

	t.Run("confirms", func(t *testing.T) {
		out := runExample(t, bin("confirms"), brokerURL, "-n", "200", "-batch", "50")
		wantPrefixCount(t, out, "one at a time: 200 messages confirmed in ", 1)
		wantPrefixCount(t, out, "in batches: 200 messages confirmed in ", 1)
		wantPrefixCount(t, out, "with a callback: 200 messages confirmed in ", 1)
		wantLines(t, out,
			"mandatory message returned: pika: message returned by the broker: NO_ROUTE (errors.Is ErrReturned: true, reply code 312)",
			`OnReturn saw "nobody will get this" come back: 312 NO_ROUTE`)
	})

	t.Run("ownloop", func(t *testing.T) {
		out := runExample(t, bin("ownloop"), brokerURL, "-n", "50")
		wantLines(t, out, "connection open", "published 50 messages",
			"50 confirmed, 50 received and acknowledged", "connection closed")
		// The example's promise: a driver of the engine in at most 200 lines.
		src, err := os.ReadFile(filepath.Join("ownloop", "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(src, []byte("\n")); n > 200 {
			t.Errorf("ownloop/main.go has %d lines, more than 200", n)
		}
	})

	t.Run("tls", func(t *testing.T) {
		pki := newPKI(t)
		proxy := startTLSProxy(t, brokerURL, pki.serverConfig())
		u, err := url.Parse(brokerURL)
		if err != nil {
			t.Fatal(err)
		}
		u.Scheme = "amqps"
		u.Host = proxy.addr
		out := runExample(t, bin("tls"), "", "-url", u.String(),
			"-cacert", pki.caFile, "-cert", pki.clientCertFile, "-key", pki.clientKeyFile)
		wantPrefixCount(t, out, "connected to "+proxy.addr+" over TLS 1.3, cipher suite ", 1)
		wantLines(t, out, "broker certificate: CN=127.0.0.1,O=pika examples test, issued by CN=pika examples test CA",
			"received: sent over TLS")
		if n := proxy.verifiedClients.Load(); n != 1 {
			t.Errorf("the proxy saw %d TLS connections with a verified client certificate, want 1", n)
		}

		// Without the client certificate the proxy refuses the handshake,
		// and the example says so and exits non-zero.
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin("tls"), "-url", u.String(), "-cacert", pki.caFile, "-timeout", "5s")
		cmd.Env = append(os.Environ(), "AMQP_URL=")
		out2, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
			t.Fatalf("without a client certificate: %v (want exit status 1)\n%s", err, out2)
		}
		t.Logf("without a client certificate: %s", out2)
		if !strings.Contains(string(out2), "certificate required") {
			t.Errorf("without a client certificate, the error does not name the certificate problem:\n%s", out2)
		}
	})
}

// TestRecoveryExample runs examples/recovery, which force-closes its own
// connection with rabbitmqctl: a disruptive test, run alone.
func TestRecoveryExample(t *testing.T) {
	brokerURL := testenv.Disruptive(t)
	bins := buildExamples(t)
	out := runExample(t, filepath.Join(bins, "recovery"), brokerURL, "-duration", "3s", "-close", "1")
	wantLines(t, out, "recoveries: 1", "every confirmed message was consumed")
}

// TestEveryExampleIsRun checks that every example directory is in
// exampleNames, so that a new example cannot go untested.
func TestEveryExampleIsRun(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	known := make(map[string]bool)
	for _, n := range exampleNames {
		known[n] = true
	}
	var dirs int
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dirs++
		if !known[e.Name()] {
			t.Errorf("examples/%s is not in exampleNames: add it and a case to TestExamples", e.Name())
		}
		if _, err := os.Stat(filepath.Join(e.Name(), "main.go")); err != nil {
			t.Errorf("examples/%s has no main.go: %v", e.Name(), err)
		}
	}
	if dirs != len(exampleNames) {
		t.Errorf("%d example directories, %d names in exampleNames", dirs, len(exampleNames))
	}
}

// pki is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files into a temporary directory.
type pki struct {
	caPool                                *x509.CertPool
	server                                tls.Certificate
	caFile, clientCertFile, clientKeyFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pika examples test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, tmpl *x509.Certificate) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	serverDER, serverKey := issue(2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1", Organization: []string{"pika examples test"}},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	clientDER, clientKey := issue(3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "pika example client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})

	writePEM := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	p := &pki{caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	p.caFile = writePEM("ca.pem", "CERTIFICATE", caDER)
	p.clientCertFile = writePEM("client.pem", "CERTIFICATE", clientDER)
	p.clientKeyFile = writePEM("client-key.pem", "PRIVATE KEY", keyDER(clientKey))
	p.server = tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}
	return p
}

// serverConfig is the proxy's TLS configuration: the server certificate,
// and client certificates required and verified against the CA.
func (p *pki) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.caPool,
		MinVersion:   tls.VersionTLS13,
	}
}

// tlsProxy terminates TLS on a local port and forwards the plain bytes to
// the broker.
type tlsProxy struct {
	addr            string
	verifiedClients atomic.Int32 // TLS handshakes that completed with a client certificate
}

// startTLSProxy starts a TLS proxy in front of the broker at brokerURL;
// it stops, with every connection it forwards, when the test ends.
func startTLSProxy(t *testing.T, brokerURL string, cfg *tls.Config) *tlsProxy {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	if port == "" {
		port = "5672"
	}
	if u.Scheme != "amqp" {
		t.Fatalf("the TLS proxy forwards to a plain amqp:// broker, not %s", u.Redacted())
	}
	upstream := net.JoinHostPort(u.Hostname(), port)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsProxy{addr: ln.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Go(func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := tc.HandshakeContext(hctx)
				cancel()
				if err != nil {
					t.Logf("TLS proxy: handshake: %v", err)
					return
				}
				if len(tc.ConnectionState().VerifiedChains) > 0 {
					p.verifiedClients.Add(1)
				}
				b, err := net.DialTimeout("tcp", upstream, 5*time.Second)
				if err != nil {
					t.Errorf("TLS proxy: dial the broker: %v", err)
					return
				}
				track(b)
				defer b.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(b, tc); b.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				go func() { io.Copy(tc, b); tc.CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}
