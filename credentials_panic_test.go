package pika

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFakeCredentialsPanic: a Config.Credentials that panics fails the
// recovery attempt, the secret refresh and the dial with an error naming
// it, instead of ending the process; the attempt after it recovers.
func TestFakeCredentialsPanic(t *testing.T) {
	const said = "pika: Config.Credentials panicked: vault exploded"
	b := newFakeBroker(t)
	ll := fakeLogins(b, "ok")
	var mu sync.Mutex
	calls, panics := 0, 0
	cfg := b.config()
	cfg.Credentials = func(ctx context.Context) (string, string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 2 || calls > 4 {
			panics++
			panic("vault exploded")
		}
		return "svc", "token", nil
	}
	c, _, rlog := fakeSetup(t, b, cfg)
	// Call 2 is the recovery's first attempt.
	b.conn(1).kill()
	rlog.wait(RecoveryRecovered, 1, 10*time.Second)
	if got := ll.login(2); got != "svc:token" {
		t.Errorf("recovery logged in with %q, want svc:token", got)
	}
	ev := rlog.wait(RecoveryAttempt, 2, 10*time.Second)
	if ev.Err == nil || !strings.Contains(ev.Err.Error(), said) {
		t.Errorf("attempt 2 follows %v, want the panic named", ev.Err)
	}
	c.Close(context.Background())

	// So do the secret refreshes (calls 5 on), each of them.
	cfg.SecretRefresh = 20 * time.Millisecond
	c, _, _ = fakeSetup(t, b, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := panics
		mu.Unlock()
		if n >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d refreshes in 10s with SecretRefresh 20ms", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close(context.Background())

	if _, err := DialConfig(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), said) {
		t.Errorf("DialConfig with a panicking Credentials: %v", err)
	}
}
