package loop

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// Against the broker: the login comes from Config.Credentials (the
// Config's own password is wrong), and SecretRefresh's update-secret is
// accepted (RabbitMQ accepts it for a user of its internal database).
func TestIntegrationCredentialsAndSecretRefresh(t *testing.T) {
	url := testenv.Broker(t)
	before := snapshot(t)
	cfg, err := pika.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	user, pass := cfg.Username, cfg.Password
	cfg.Password = "not-the-password"
	var mu sync.Mutex
	calls := 0
	cfg.Credentials = func(context.Context) (string, string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return user, pass, nil
	}
	cfg.SecretRefresh = 20 * time.Millisecond
	run(t, 20*time.Second, func(l *Loop, stop func()) {
		l.DialConfig(cfg, func(c *Conn, err error) {
			if err != nil {
				t.Errorf("dial: %v", err)
				stop()
				return
			}
			// The dial's call and two refreshes, one accepted.
			waitFor(l, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return c.IsClosed() || calls >= 3 && !c.sec.running && c.sec.secretSet
			}, func() {
				if c.IsClosed() {
					t.Errorf("connection closed: %v", c.Err())
					stop()
					return
				}
				c.Close(func(err error) {
					if err != nil {
						t.Errorf("close: %v", err)
					}
					stop()
				})
			})
		})
	})
	expectNoLeak(t, before)
}
