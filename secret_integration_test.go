package pika

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// testUser creates a broker user of its own with full permissions on the
// test vhost, deleted in t's cleanup. (guest's password is never changed.)
func testUser(t *testing.T, vhost, password string) string {
	t.Helper()
	user := testenv.Name(t, "user")
	testenv.Rabbitmqctl(t, "add_user", user, password)
	t.Cleanup(func() { testenv.Rabbitmqctl(t, "delete_user", user) })
	if vhost == "" {
		vhost = "/"
	}
	testenv.Rabbitmqctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	return user
}

// TestSecretCredentialsAcrossPasswordChange: the user's password changes
// on the broker during an outage; Config.Credentials gives the new one, and
// recovery logs in with it. The refresher's connection.update-secret is
// accepted by RabbitMQ for a user of its internal database.
func TestSecretCredentialsAcrossPasswordChange(t *testing.T) {
	url := testenv.Disruptive(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())
	user := testUser(t, cfg.Vhost, "first-password")
	var mu sync.Mutex
	password := "first-password"
	cfg.DisableRecovery = false
	cfg.Reconnect = Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	cfg.SecretRefresh = 100 * time.Millisecond
	cfg.Credentials = func(ctx context.Context) (string, string, error) {
		mu.Lock()
		defer mu.Unlock()
		return user, password, nil
	}
	c := fxDial(t, cfg)
	rlog := watchRecovery(t, c)

	// The refresher's update-secret, and RabbitMQ's answer.
	if _, err := p.WaitFrame(fxWait, func(r faultproxy.Recorded) bool {
		return r.Dir == faultproxy.ServerToClient && r.IsMethod(wire.MethodConnectionUpdateSecretOk)
	}); err != nil {
		t.Fatalf("no update-secret-ok from RabbitMQ for the refresher's update-secret: %v", err)
	}
	if c.IsClosed() {
		t.Fatalf("connection closed after update-secret: %v", c.Err())
	}

	// The outage, and the password change during it.
	p.Refuse(true)
	p.Cut()
	rlog.wait(RecoveryAttempt, 1, fxWait)
	testenv.Rabbitmqctl(t, "change_password", user, "second-password")
	mu.Lock()
	password = "second-password"
	mu.Unlock()
	p.Refuse(false)
	rlog.wait(RecoveryRecovered, 1, fxWait)
	ch := openChannel(t, c)
	if _, err := ch.QueueDeclare(context.Background(), "", QueueDeclareOptions{Exclusive: true}); err != nil {
		t.Fatalf("QueueDeclare after recovering with the new password: %v", err)
	}

	// The old password no longer works: recovery did use the new one.
	old := fxConfig(t, url, "")
	old.Username, old.Password = user, "first-password"
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	if c2, err := DialConfig(ctx, old); !errors.Is(err, ErrAuthentication) {
		if c2 != nil {
			c2.Close(ctx)
		}
		t.Fatalf("dial with the old password: %v, want ErrAuthentication", err)
	}
}
