package pika

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// loginLog records the PLAIN responses (username and password) of every
// connection to a fake broker, and answers connection.update-secret as
// answer says.
type loginLog struct {
	mu      sync.Mutex
	logins  map[int]string // connection number -> "user:password"
	secrets []string       // update-secret's new secrets, in order
}

// fakeLogins installs a hook on b recording logins; updateOK says whether
// (and how) to answer connection.update-secret: "ok", "silent" (never
// answered).
func fakeLogins(b *fakeBroker, update string) *loginLog {
	ll := &loginLog{logins: map[int]string{}}
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.ConnectionStartOk:
			parts := strings.Split(m.Response, "\x00")
			ll.mu.Lock()
			if len(parts) == 3 {
				ll.logins[fc.n] = parts[1] + ":" + parts[2]
			} else {
				ll.logins[fc.n] = m.Mechanism + " " + fmt.Sprintf("%q", m.Response)
			}
			ll.mu.Unlock()
		case *wire.ConnectionUpdateSecret:
			ll.mu.Lock()
			ll.secrets = append(ll.secrets, m.NewSecret)
			ll.mu.Unlock()
			if update == "ok" {
				fc.send(0, &wire.ConnectionUpdateSecretOk{})
			}
			return true
		}
		return false
	})
	return ll
}

func (ll *loginLog) login(n int) string {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	return ll.logins[n]
}

func (ll *loginLog) updates() []string {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	return append([]string(nil), ll.secrets...)
}

// TestFakeUpdateSecretStoredAfterOk: a secret the broker has not accepted
// (update-secret-ok never came) is not the one recovery logs in with.
func TestFakeUpdateSecretStoredAfterOk(t *testing.T) {
	b := newFakeBroker(t)
	ll := fakeLogins(b, "silent")
	cfg := b.config()
	cfg.Username, cfg.Password = "u", "old"
	c, _, rlog := fakeSetup(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.UpdateSecret(ctx, "new", "test"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("UpdateSecret without an answer: %v", err)
	}
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	if got := ll.login(2); got != "u:old" {
		t.Errorf("recovery logged in with %q, want u:old (the new secret was never accepted)", got)
	}
}

// TestFakeUpdateSecretWithMechanisms: the secret the broker accepted is
// used by recovery also when Config.Mechanisms is set (a URL with
// auth_mechanism), for PLAIN and AMQPLAIN.
func TestFakeUpdateSecretWithMechanisms(t *testing.T) {
	b := newFakeBroker(t)
	ll := fakeLogins(b, "ok")
	cfg, err := ParseURL("amqp://u:old@fake:5672/?auth_mechanism=plain")
	if err != nil {
		t.Fatal(err)
	}
	fc := b.config()
	cfg.Dial, cfg.Reconnect, cfg.HandshakeTimeout = fc.Dial, fc.Reconnect, fc.HandshakeTimeout
	c, _, rlog := fakeSetup(t, b, cfg)
	if got := ll.login(1); got != "u:old" {
		t.Fatalf("first login %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.UpdateSecret(ctx, "new", "test"); err != nil {
		t.Fatal(err)
	}
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	if got := ll.login(2); got != "u:new" {
		t.Errorf("recovery logged in with %q, want u:new", got)
	}
}

// TestFakeCredentialsProvider: Config.Credentials is consulted at the dial
// and at every reconnection attempt; an error from it fails that attempt
// (and the dial) with its cause, and the next attempt asks again.
func TestFakeCredentialsProvider(t *testing.T) {
	b := newFakeBroker(t)
	ll := fakeLogins(b, "ok")
	var mu sync.Mutex
	calls := 0
	cfg := b.config()
	cfg.Credentials = func(ctx context.Context) (string, string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 2 {
			return "", "", errors.New("token service down")
		}
		return "svc", fmt.Sprintf("token-%d", calls), nil
	}
	c, _, rlog := fakeSetup(t, b, cfg)
	if got := ll.login(1); got != "svc:token-1" {
		t.Fatalf("dial logged in with %q, want svc:token-1", got)
	}
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	if got := ll.login(2); got != "svc:token-3" {
		t.Errorf("recovery logged in with %q, want svc:token-3", got)
	}
	ev := rlog.wait(RecoveryAttempt, 2, time.Second)
	if ev.Err == nil || !strings.Contains(ev.Err.Error(), "token service down") {
		t.Errorf("attempt 2 follows %v, want the provider's error", ev.Err)
	}
	c.Close(context.Background())

	// At dial, the provider's error is the dial's.
	cfg.Credentials = func(ctx context.Context) (string, string, error) { return "", "", errors.New("no token") }
	if _, err := DialConfig(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("DialConfig with a failing provider: %v", err)
	}
}

// TestFakeSecretRefresh: with Config.SecretRefresh the Conn passes a fresh
// secret from Config.Credentials to the broker with update-secret, again
// and again, and recovery logs in with the latest.
func TestFakeSecretRefresh(t *testing.T) {
	b := newFakeBroker(t)
	ll := fakeLogins(b, "ok")
	var mu sync.Mutex
	calls := 0
	cfg := b.config()
	cfg.SecretRefresh = 20 * time.Millisecond
	cfg.Credentials = func(ctx context.Context) (string, string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return "svc", fmt.Sprintf("token-%d", calls), nil
	}
	_, _, _ = fakeSetup(t, b, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for len(ll.updates()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("update-secret sent %d times in 10s with SecretRefresh 20ms", len(ll.updates()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, s := range ll.updates()[:3] {
		if s != fmt.Sprintf("token-%d", i+2) {
			t.Errorf("update %d: secret %q, want token-%d", i, s, i+2)
		}
	}

	cfg.Credentials = nil
	if _, err := DialConfig(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "SecretRefresh") {
		t.Errorf("SecretRefresh without Credentials: %v, want an error naming it", err)
	}
}
