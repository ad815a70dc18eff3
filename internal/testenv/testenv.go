// Package testenv gives the tests of every package in this module one way to
// reach the RabbitMQ broker they integrate with, and keeps tests in different
// packages from disturbing each other.
//
// The broker is named by the PIKA_TEST_URL environment variable, by default
// amqp://guest:guest@127.0.0.1:5672/. scripts/ensure-rabbitmq.sh starts (or
// installs) a local broker when nothing answers there.
//
// A test that talks to the broker calls [Broker] first. When the broker does
// not answer, Broker skips the test with a message saying so, or fails it when
// the CI environment variable is true: in CI a missing broker is a failure,
// never a silent pass.
//
// A test that disturbs the broker for everyone (stops or restarts it, sets a
// resource alarm, closes other connections with rabbitmqctl) calls
// [Disruptive] instead. go test runs the test binaries of different packages
// at the same time, so the two take a cross-process lock: any number of
// Broker tests run together, while a Disruptive test runs alone, after the
// running Broker tests finish and before new ones start. A disruptive test
// must put the broker back as it found it in a function registered with
// t.Cleanup after calling Disruptive (cleanups run last-in first-out, so the
// restore runs before the lock is released); Disruptive checks on release
// that the broker answers again and reports an alarm left behind.
//
// Rules that keep the lock from deadlocking:
//
//   - A test calls Broker or Disruptive after t.Parallel, never before: a
//     parallel test paused in t.Parallel while holding the shared lock would
//     wait for a sequential Disruptive test that waits for it.
//   - A test (with its subtests) uses Broker or Disruptive, not Broker and
//     then Disruptive. Calling Disruptive where the test or a parent test
//     holds the shared lock fails at once. Calling Broker inside a test that
//     holds the exclusive lock is fine: it takes no second lock.
//   - Waiting for the lock is bounded (two minutes); a test that waits longer
//     fails with a message naming the lock file.
//
// Use [Name] for every queue and exchange a test declares, and delete them
// before the test ends, so that tests never collide and leave nothing behind.
package testenv

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultURL is the broker URL used when PIKA_TEST_URL is not set.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// probeTimeout bounds the whole reachability check of the broker.
const probeTimeout = 2 * time.Second

// restoreWait bounds how long the release of the exclusive lock waits for a
// broker that a disruptive test restarted to answer again; a variable so
// tests can shorten it.
var restoreWait = 60 * time.Second

// URL returns the broker URL for integration tests: PIKA_TEST_URL when it is
// set and not empty, [DefaultURL] otherwise.
func URL() string {
	if u := os.Getenv("PIKA_TEST_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// inCI reports whether the CI environment variable holds a true value
// ("true", "1", ...), which turns a missing broker into a test failure.
func inCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Broker returns the broker URL for a test that talks to the broker. It
// first takes the shared broker lock (see the package doc), held until the
// test's cleanup, then checks that an AMQP broker answers at the URL's host
// and port within two seconds. When none does, the test is skipped, or
// failed when CI is true; the message says where it looked and how to start
// a broker.
func Broker(t testing.TB) string {
	t.Helper()
	return acquireBroker(t, false)
}

// Disruptive is like [Broker] for a test that disturbs the broker for
// everyone: it takes the exclusive broker lock, so no other test that uses
// the broker runs in any package until this test's cleanup. The test must
// restore the broker in a function it registers with t.Cleanup after calling
// Disruptive. On release, Disruptive waits up to a minute for the broker to
// answer again and fails the test if it does not, or if a local broker
// reports a resource alarm.
func Disruptive(t testing.TB) string {
	t.Helper()
	return acquireBroker(t, true)
}

func acquireBroker(t testing.TB, exclusive bool) string {
	t.Helper()
	raw := URL()
	ep, err := parseEndpoint(raw)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	held, err := procLocks.acquire(t.Name(), exclusive, defaultLockDir(), lockWait)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if held == nil {
		// An enclosing test already holds the exclusive lock.
		if err := ep.probe(); err != nil {
			unreachable(t, ep, err)
		}
		return raw
	}
	probeErr := ep.probe()
	t.Cleanup(func() {
		if exclusive && probeErr == nil {
			checkRestored(t, ep)
		}
		held.release()
	})
	if probeErr != nil {
		unreachable(t, ep, probeErr)
	}
	return raw
}

func unreachable(t testing.TB, ep endpoint, err error) {
	t.Helper()
	if inCI() {
		t.Fatalf("RabbitMQ not reachable at %s (from %s): %v (CI=true: a missing broker is a failure); start it with scripts/ensure-rabbitmq.sh",
			ep.addr(), ep.redacted, err)
	}
	t.Skipf("RabbitMQ not reachable at %s (from %s): %v; skipping this integration test (it would fail with CI=true); start a broker with scripts/ensure-rabbitmq.sh",
		ep.addr(), ep.redacted, err)
}

// checkRestored reports, at the end of a disruptive test, a broker that no
// longer answers or that reports a resource alarm.
func checkRestored(t testing.TB, ep endpoint) {
	t.Helper()
	deadline := time.Now().Add(restoreWait)
	err := ep.probe()
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		err = ep.probe()
	}
	if err != nil {
		t.Errorf("testenv: disruptive test left the broker unreachable at %s for %v: %v; restore it in t.Cleanup", ep.addr(), restoreWait, err)
		return
	}
	if ep.local() {
		if alarms, err := checkAlarms(); err != nil {
			t.Logf("testenv: could not check broker alarms: %v", err)
		} else if alarms != "" {
			t.Errorf("testenv: the broker reports resource alarms after a disruptive test: %s; clear them in t.Cleanup", alarms)
		}
	}
}

// checkAlarms returns the local broker's resource alarms; a variable so
// tests can stand in for rabbitmq-diagnostics.
var checkAlarms = localAlarms

// endpoint is the part of a broker URL that reachability checks need.
type endpoint struct {
	tls      bool
	host     string
	port     string
	redacted string // the URL without its password, for messages
}

func parseEndpoint(raw string) (endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return endpoint{}, fmt.Errorf("PIKA_TEST_URL is not a valid URL: %v", err)
	}
	ep := endpoint{host: u.Hostname(), port: u.Port(), redacted: u.Redacted()}
	switch u.Scheme {
	case "amqp":
		if ep.port == "" {
			ep.port = "5672"
		}
	case "amqps":
		ep.tls = true
		if ep.port == "" {
			ep.port = "5671"
		}
	default:
		return endpoint{}, fmt.Errorf("PIKA_TEST_URL %s: scheme %q is not amqp or amqps", ep.redacted, u.Scheme)
	}
	if ep.host == "" {
		ep.host = "localhost"
	}
	if n, err := strconv.Atoi(ep.port); err != nil || n < 1 || n > 65535 {
		return endpoint{}, fmt.Errorf("PIKA_TEST_URL %s: port %q is not a number between 1 and 65535", ep.redacted, ep.port)
	}
	return ep, nil
}

func (ep endpoint) addr() string { return net.JoinHostPort(ep.host, ep.port) }

// local reports whether the endpoint is on this machine, where rabbitmqctl
// and rabbitmq-diagnostics reach the same broker.
func (ep endpoint) local() bool {
	if ep.host == "localhost" {
		return true
	}
	if ip := net.ParseIP(ep.host); ip != nil {
		return ip.IsLoopback() || ip.IsUnspecified()
	}
	h, err := os.Hostname()
	return err == nil && strings.EqualFold(h, ep.host)
}

// probe checks that an AMQP 0-9-1 broker answers at the endpoint: it sends
// the protocol header and expects the first byte of a method frame (the
// broker's Connection.Start) within probeTimeout. A bare TCP connect is not
// enough, because proxies and unrelated services accept connections too.
func (ep endpoint) probe() error {
	deadline := time.Now().Add(probeTimeout)
	d := &net.Dialer{Deadline: deadline}
	var conn net.Conn
	var err error
	if ep.tls {
		// The probe only asks whether a broker answers; the tests' own
		// connections verify the certificate.
		conn, err = tls.DialWithDialer(d, "tcp", ep.addr(), &tls.Config{ServerName: ep.host, InsecureSkipVerify: true})
	} else {
		conn, err = d.Dial("tcp", ep.addr())
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return fmt.Errorf("sending the AMQP protocol header: %w", err)
	}
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		return fmt.Errorf("no answer to the AMQP protocol header: %w", err)
	}
	if b[0] != 1 { // frame type METHOD
		return fmt.Errorf("the peer is not an AMQP 0-9-1 broker: it answered the protocol header with byte %#02x", b[0])
	}
	return nil
}

// Name returns a name for a queue or exchange that no other test, run or
// process uses: prefix, the test's name with characters other than letters,
// digits, '-', '_', '.' and ':' replaced by '_', and a random suffix,
// separated by dots. The result fits an AMQP short string (255 bytes); the
// test name is shortened when needed.
func Name(t testing.TB, prefix string) string {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand.Read never fails
	suffix := "." + hex.EncodeToString(rnd[:])
	var b strings.Builder
	for _, r := range t.Name() {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '-', r == '_', r == '.', r == ':':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	head := prefix
	if head != "" {
		head += "."
	}
	room := min(255-len(head)-len(suffix), 120)
	if room < 1 {
		t.Fatalf("testenv.Name: prefix %q is too long for a 255-byte AMQP name", prefix)
	}
	if len(name) > room {
		name = name[:room]
	}
	return head + name + suffix
}
