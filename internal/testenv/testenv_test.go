package testenv

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTB records what testenv does to a test: skips, failures, cleanups.
// Only the methods testenv calls are faked; the embedded testing.TB (the
// real test) answers the others.
type fakeTB struct {
	testing.TB
	name string

	mu       sync.Mutex
	skipped  bool
	failed   bool
	msgs     []string
	cleanups []func()
}

func (f *fakeTB) Name() string { return f.name }
func (f *fakeTB) Helper()      {}
func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}
func (f *fakeTB) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Logf(format string, args ...any) { f.record(format, args...) }
func (f *fakeTB) Errorf(format string, args ...any) {
	f.record(format, args...)
	f.mu.Lock()
	f.failed = true
	f.mu.Unlock()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.record(format, args...)
	f.mu.Lock()
	f.skipped = true
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) messages() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.msgs, "\n")
}

// runFake runs body as the test named name, like the testing package would:
// in its own goroutine, then its cleanups last-in first-out. It returns the
// fake and body's result ("" when body did not finish).
func runFake(t *testing.T, name string, body func(tb testing.TB) string) (*fakeTB, string) {
	t.Helper()
	f := &fakeTB{TB: t, name: name}
	var got string
	inGoroutine := func(fn func()) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn()
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not finish", name)
		}
	}
	inGoroutine(func() { got = body(f) })
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		inGoroutine(f.cleanups[i])
	}
	return f, got
}

// isolate points the lock at a private directory and shortens the waits.
func isolate(t *testing.T) {
	dir := t.TempDir()
	oldDir, oldWait, oldAlarms := defaultLockDir, lockWait, checkAlarms
	defaultLockDir = func() string { return dir }
	lockWait = 2 * time.Second
	checkAlarms = func() (string, error) { return "", nil }
	t.Cleanup(func() { defaultLockDir, lockWait, checkAlarms = oldDir, oldWait, oldAlarms })
}

// fakeBroker listens on a loopback port and answers every connection's
// first 8 bytes with reply, then closes it. It returns an amqp URL for it.
func fakeBroker(t *testing.T, reply []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				var hdr [8]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				_, _ = c.Write(reply)
			}()
		}
	}()
	return "amqp://guest:secret@" + ln.Addr().String() + "/"
}

// closedPortURL returns an amqp URL for a loopback port nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "amqp://guest:secret@" + addr + "/"
}

// connectionStart is the start of a Connection.Start method frame.
var connectionStart = []byte{1, 0, 0, 0, 0, 0, 8}

func TestURL(t *testing.T) {
	t.Setenv("PIKA_TEST_URL", "")
	if got := URL(); got != DefaultURL {
		t.Errorf("URL() with PIKA_TEST_URL empty = %q, want %q", got, DefaultURL)
	}
	t.Setenv("PIKA_TEST_URL", "amqp://u:p@broker:1234/vh")
	if got := URL(); got != "amqp://u:p@broker:1234/vh" {
		t.Errorf("URL() = %q, want PIKA_TEST_URL", got)
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		url, addr string
		tls       bool
		err       string
	}{
		{url: DefaultURL, addr: "127.0.0.1:5672"},
		{url: "amqp://localhost", addr: "localhost:5672"},
		{url: "amqp://", addr: "localhost:5672"},
		{url: "amqps://u:p@host.example/", addr: "host.example:5671", tls: true},
		{url: "amqp://[::1]:5673/%2f", addr: "[::1]:5673"},
		{url: "http://host/", err: `scheme "http" is not amqp or amqps`},
		{url: "amqp://host:0/", err: `port "0" is not a number`},
		{url: "amqp://host:99999/", err: `port "99999" is not a number`},
		{url: "amqp://host:port/", err: "not a valid URL"},
	}
	for _, tc := range tests {
		ep, err := parseEndpoint(tc.url)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseEndpoint(%q) error = %v, want one containing %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseEndpoint(%q): %v", tc.url, err)
			continue
		}
		if ep.addr() != tc.addr || ep.tls != tc.tls {
			t.Errorf("parseEndpoint(%q) = %s tls=%v, want %s tls=%v", tc.url, ep.addr(), ep.tls, tc.addr, tc.tls)
		}
	}
}

func TestEndpointLocal(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true, "0.0.0.0": true,
		"example.invalid": false, "10.1.2.3": false,
	} {
		if got := (endpoint{host: host}).local(); got != want {
			t.Errorf("endpoint{host: %q}.local() = %v, want %v", host, got, want)
		}
	}
}

func TestBrokerReachable(t *testing.T) {
	isolate(t)
	url := fakeBroker(t, connectionStart)
	t.Setenv("PIKA_TEST_URL", url)
	t.Setenv("CI", "true")
	f, got := runFake(t, "TestReachable", Broker)
	if f.failed || f.skipped || got != url {
		t.Fatalf("Broker = %q (failed=%v skipped=%v: %s), want %q", got, f.failed, f.skipped, f.messages(), url)
	}
	if len(procLocks.holders) != 0 {
		t.Fatalf("lock still registered after cleanup: %v", procLocks.holders)
	}
}

func TestBrokerUnreachable(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
		why  string
	}{
		{"closed port", closedPortURL, "connection refused"},
		{"not AMQP", func(t *testing.T) string { return fakeBroker(t, []byte("HTTP/1.1 400 Bad Request\r\n\r\n")) }, "not an AMQP 0-9-1 broker"},
		{"silent", func(t *testing.T) string { return fakeBroker(t, nil) }, "no answer to the AMQP protocol header"},
	} {
		for _, ci := range []string{"", "true"} {
			t.Run(tc.name+"/CI="+ci, func(t *testing.T) {
				url := tc.url(t)
				t.Setenv("PIKA_TEST_URL", url)
				t.Setenv("CI", ci)
				f, got := runFake(t, "TestUnreachable", Broker)
				msg := f.messages()
				if got != "" {
					t.Fatalf("Broker returned %q for an unreachable broker", got)
				}
				if ci == "true" && (!f.failed || f.skipped) {
					t.Fatalf("with CI=true: failed=%v skipped=%v, want a failure; messages: %s", f.failed, f.skipped, msg)
				}
				if ci == "" && (!f.skipped || f.failed) {
					t.Fatalf("without CI: failed=%v skipped=%v, want a skip; messages: %s", f.failed, f.skipped, msg)
				}
				for _, want := range []string{"RabbitMQ not reachable at 127.0.0.1:", tc.why, "scripts/ensure-rabbitmq.sh"} {
					if !strings.Contains(msg, want) {
						t.Errorf("message %q does not contain %q", msg, want)
					}
				}
				if ci == "true" && !strings.Contains(msg, "CI=true: a missing broker is a failure") {
					t.Errorf("message %q does not explain the CI failure", msg)
				}
				if strings.Contains(msg, "secret") {
					t.Errorf("message %q shows the password", msg)
				}
			})
		}
	}
}

func TestBrokerBadURL(t *testing.T) {
	isolate(t)
	t.Setenv("PIKA_TEST_URL", "http://localhost/")
	t.Setenv("CI", "")
	f, _ := runFake(t, "TestBadURL", Broker)
	if !f.failed || !strings.Contains(f.messages(), "not amqp or amqps") {
		t.Fatalf("bad PIKA_TEST_URL: failed=%v messages=%q, want a failure naming the scheme", f.failed, f.messages())
	}
}

func TestDisruptiveAfterBrokerFailsAtOnce(t *testing.T) {
	isolate(t)
	t.Setenv("PIKA_TEST_URL", fakeBroker(t, connectionStart))
	f, _ := runFake(t, "TestMixed", func(tb testing.TB) string {
		Broker(tb)
		sub, got := runFake(t, "TestMixed/sub", func(tb testing.TB) string {
			Disruptive(tb)
			return "returned"
		})
		if got != "" || !sub.failed || !strings.Contains(sub.messages(), "would deadlock") {
			t.Errorf("Disruptive inside Broker: returned=%q failed=%v messages=%q; want an immediate deadlock failure", got, sub.failed, sub.messages())
		}
		return "done"
	})
	if f.failed {
		t.Fatalf("outer test failed: %s", f.messages())
	}
}

func TestBrokerInsideDisruptive(t *testing.T) {
	isolate(t)
	url := fakeBroker(t, connectionStart)
	t.Setenv("PIKA_TEST_URL", url)
	f, got := runFake(t, "TestOuter", func(tb testing.TB) string {
		Disruptive(tb)
		_, inner := runFake(t, "TestOuter/sub", Broker)
		return inner
	})
	if f.failed || got != url {
		t.Fatalf("Broker inside Disruptive = %q, failed=%v: %s; want %q", got, f.failed, f.messages(), url)
	}
}

func TestDisruptiveReportsBrokerNotRestored(t *testing.T) {
	isolate(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		var hdr [8]byte
		_, _ = io.ReadFull(c, hdr[:])
		_, _ = c.Write(connectionStart)
		c.Close()
		close(accepted)
	}()
	// The listener answers one probe; the test "stops" the broker by
	// closing it and does not restore it.
	t.Setenv("PIKA_TEST_URL", "amqp://"+ln.Addr().String()+"/")
	old := restoreWait
	restoreWait = 500 * time.Millisecond
	defer func() { restoreWait = old }()
	f, _ := runFake(t, "TestStopsBroker", func(tb testing.TB) string {
		Disruptive(tb)
		<-accepted
		ln.Close()
		return "stopped"
	})
	if !f.failed || !strings.Contains(f.messages(), "left the broker unreachable") {
		t.Fatalf("failed=%v messages=%q; want a failure saying the broker was not restored", f.failed, f.messages())
	}
}

func TestDisruptiveReportsAlarm(t *testing.T) {
	isolate(t)
	t.Setenv("PIKA_TEST_URL", fakeBroker(t, connectionStart))
	checkAlarms = func() (string, error) { return `{"node":"rabbit@x","resource":"memory"}`, nil }
	f, _ := runFake(t, "TestSetsAlarm", Disruptive)
	if !f.failed || !strings.Contains(f.messages(), `reports resource alarms after a disruptive test: {"node":"rabbit@x","resource":"memory"}`) {
		t.Fatalf("failed=%v messages=%q; want a failure naming the alarm", f.failed, f.messages())
	}
}

func TestName(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		n := Name(t, "q")
		if !strings.HasPrefix(n, "q.TestName.") || !valid.MatchString(n) {
			t.Fatalf("Name(t, %q) = %q", "q", n)
		}
		if seen[n] {
			t.Fatalf("Name returned %q twice", n)
		}
		seen[n] = true
	}
	t.Run("odd characters/ünïcode (#1)", func(t *testing.T) {
		n := Name(t, "")
		if !valid.MatchString(n) || !strings.HasPrefix(n, "TestName_odd_characters_") {
			t.Fatalf("Name = %q, want a sanitized test name", n)
		}
	})
	t.Run(strings.Repeat("long", 100), func(t *testing.T) {
		n := Name(t, strings.Repeat("p", 200))
		if len(n) > 255 || !valid.MatchString(n) {
			t.Fatalf("Name has %d bytes: %q", len(n), n)
		}
	})
}

func TestRabbitmqctl(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\nif [ \"$1\" = fail ]; then echo partial; echo boom >&2; exit 3; fi\necho \"args: $*\"\n"
	if err := os.WriteFile(filepath.Join(bin, "rabbitmqctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)

	f, got := runFake(t, "TestCtl", func(tb testing.TB) string { return Rabbitmqctl(tb, "list_queues", "name") })
	if f.failed || got != "args: list_queues name\n" {
		t.Fatalf("Rabbitmqctl = %q, failed=%v: %s", got, f.failed, f.messages())
	}

	f, _ = runFake(t, "TestCtl", func(tb testing.TB) string { return Rabbitmqctl(tb, "fail") })
	msg := f.messages()
	if !f.failed || !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "partial") || !strings.Contains(msg, "boom") {
		t.Fatalf("failing rabbitmqctl: failed=%v message=%q; want the exit status and both outputs", f.failed, msg)
	}

	t.Setenv("PATH", t.TempDir())
	f, _ = runFake(t, "TestCtl", func(tb testing.TB) string { return Rabbitmqctl(tb, "status") })
	if !f.failed || !strings.Contains(f.messages(), "rabbitmqctl not found in PATH") {
		t.Fatalf("missing rabbitmqctl: failed=%v message=%q", f.failed, f.messages())
	}
}
