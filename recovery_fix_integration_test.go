package pika

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
)

// brokerChannels returns how many channels the broker lists for the
// connection named name (waiting up to 15 s for it to be listed), read
// with rabbitmqctl.
func brokerChannels(t *testing.T, name string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := testenv.Rabbitmqctl(t, "list_connections", "-q", "channels", "client_properties")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, name) {
				return strings.Fields(line)[0]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no broker connection named %q; list_connections:\n%s", name, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rtOtherConn dials the broker directly, closed in t's cleanup.
func rtOtherConn(t *testing.T, url string) *Channel {
	t.Helper()
	c := fxDial(t, fxConfig(t, url, ""))
	return openChannel(t, c)
}

// TestRecoveryChannelCloseDuringRestore: Channel.Close called while the
// recovery restores the connection (before the channel is reopened, and
// after it is reopened and before its consumer is restarted) leaves
// nothing open on the broker: the recovered connection lists no channel,
// and the queue no consumer.
func TestRecoveryChannelCloseDuringRestore(t *testing.T) {
	url := testenv.Broker(t)
	for _, step := range []string{"before reopen", "after reopen"} {
		t.Run(step, func(t *testing.T) {
			p := faultproxy.New(t, fxBrokerAddr(t, url))
			cfg := fxConfig(t, url, p.Addr())
			cfg.DisableRecovery = false
			cfg.Reconnect = Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
			reached, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			block := func() {
				once.Do(func() {
					close(reached)
					<-release
				})
			}
			dials := 0
			var mu sync.Mutex
			if step == "before reopen" {
				cfg.Credentials = func(ctx context.Context) (string, string, error) {
					mu.Lock()
					dials++
					n := dials
					mu.Unlock()
					if n == 2 {
						block()
					}
					return cfg.Username, cfg.Password, nil
				}
			} else {
				cfg.RecoveryFilter.Queue = func(string, bool) bool { block(); return true }
			}
			c := fxDial(t, cfg)
			rlog := watchRecovery(t, c)
			ch := openChannel(t, c)
			other := rtOtherConn(t, url)
			q := testenv.Name(t, "q")
			rtDeclareQueue(t, ch, q, QueueDeclareOptions{})
			t.Cleanup(func() { other.QueueDelete(context.Background(), q, QueueDeleteOptions{}) })
			if _, err := ch.Consume(context.Background(), q, ConsumeOptions{}); err != nil {
				t.Fatal(err)
			}
			p.Cut()
			select {
			case <-reached:
			case <-time.After(fxWait):
				t.Fatalf("the restore did not reach the step; events:\n%s", rlog)
			}
			ctx, cancel := context.WithTimeout(context.Background(), fxWait)
			defer cancel()
			if err := ch.Close(ctx); err != nil {
				t.Errorf("Close during the restore: %v", err)
			}
			close(release)
			rlog.wait(RecoveryRecovered, 1, fxWait)
			if n := brokerChannels(t, cfg.ConnectionName); n != "0" {
				t.Errorf("the recovered connection has %s channels on the broker, want 0", n)
			}
			info, err := other.QueueDeclarePassive(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if info.Consumers != 0 {
				t.Errorf("queue %s has %d consumers after its channel was closed", q, info.Consumers)
			}
		})
	}
}

// TestRecoveryForgetsDeletedAndExpiredQueues: a queue deleted by another
// connection (the broker cancels its consumer) and a queue that expired
// (x-expires) during the outage do not come back with the recovery; a
// queue with a long expiry does.
func TestRecoveryForgetsDeletedAndExpiredQueues(t *testing.T) {
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	cfg := fxConfig(t, url, p.Addr())
	cfg.DisableRecovery = false
	cfg.Reconnect = Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	c := fxDial(t, cfg)
	rlog := watchRecovery(t, c)
	ch := openChannel(t, c)
	other := rtOtherConn(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	deleted, expiring, kept := testenv.Name(t, "deleted"), testenv.Name(t, "expiring"), testenv.Name(t, "kept")
	for _, q := range []string{deleted, expiring, kept} {
		t.Cleanup(func() { other.QueueDelete(context.Background(), q, QueueDeleteOptions{}) })
	}
	rtDeclareQueue(t, ch, deleted, QueueDeclareOptions{})
	rtDeclareQueue(t, ch, expiring, QueueDeclareOptions{Arguments: Table{"x-expires": int32(1000)}})
	rtDeclareQueue(t, ch, kept, QueueDeclareOptions{Arguments: Table{"x-expires": int32(600_000)}})
	cons, err := ch.Consume(ctx, deleted, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.QueueDelete(ctx, deleted, QueueDeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Next(ctx); !errors.Is(err, ErrConsumerCancelled) {
		t.Fatalf("consumer of the deleted queue: %v, want ErrConsumerCancelled", err)
	}
	// The outage outlasts the expiry.
	p.Refuse(true)
	p.Cut()
	time.Sleep(2 * time.Second)
	p.Refuse(false)
	rep := rlog.wait(RecoveryRecovered, 1, fxWait).Report
	if !slices.Contains(rep.Expired, expiring) {
		t.Errorf("report.Expired = %q, want %s", rep.Expired, expiring)
	}
	for _, q := range []string{deleted, expiring} {
		if _, err := other.QueueDeclarePassive(ctx, q); !errors.Is(err, ErrNotFound) {
			t.Errorf("queue %s after the recovery: %v, want ErrNotFound (it must not come back)", q, err)
		}
		other = openChannel(t, other.conn) // the 404 closed it
	}
	if _, err := other.QueueDeclarePassive(ctx, kept); err != nil {
		t.Errorf("queue %s after the recovery: %v", kept, err)
	}
}
