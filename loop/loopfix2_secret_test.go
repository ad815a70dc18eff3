package loop

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// A Config.Credentials that panics fails the dial, or the secret refresh
// (logged at Warn level), with an error naming it; the process goes on.
func TestCredentialsPanic(t *testing.T) {
	both(t, func(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) {
		cfg, wait := scriptedConfig(t, pair, func(p *peer) {
			p.handshake(0)
			p.closeConn()
		})
		var mu sync.Mutex
		calls := 0
		cfg.Credentials = func(ctx context.Context) (string, string, error) {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if n > 1 {
				panic("vault exploded")
			}
			return "user", "token", nil
		}
		cfg.SecretRefresh = 20 * time.Millisecond
		warns := &warnings{}
		cfg.Logger = slog.New(warns)
		panicked := func() bool {
			warns.mu.Lock()
			defer warns.mu.Unlock()
			for _, m := range warns.msgs {
				if strings.Contains(m, "pika: Config.Credentials panicked: vault exploded") {
					return true
				}
			}
			return false
		}
		var dialErr error
		run(t, 20*time.Second, func(l *Loop, stop func()) {
			l.DialConfig(cfg, func(c *Conn, err error) {
				if err != nil {
					t.Errorf("dial: %v", err)
					stop()
					return
				}
				waitFor(l, panicked, func() {
					c.Close(func(error) {
						// A dial whose Credentials panics fails with it.
						l.DialConfig(cfg, func(c *Conn, err error) {
							dialErr = err
							stop()
						})
					})
				})
			})
		})
		wait()
		if dialErr == nil || !strings.Contains(dialErr.Error(), "pika: Config.Credentials panicked: vault exploded") {
			t.Errorf("dial with a panicking Credentials: %v", dialErr)
		}
	})
}
