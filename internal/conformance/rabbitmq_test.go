package conformance

import (
	"context"
	"net"
	neturl "net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/testenv"
)

// TestRabbitMQ runs the whole table against the real broker: the reference
// the table was written from. No scenario of the table disturbs the broker's
// global state, so the shared broker lock is enough.
func TestRabbitMQ(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	prefix := run(t, Target{URL: url})
	checkClean(t, url, prefix)
}

// TestRabbitMQAlarm runs the alarm scenarios against the real broker, with
// a memory alarm raised by setting the high watermark to 0 and cleared by
// restoring the setting found. It holds the exclusive broker lock.
func TestRabbitMQAlarm(t *testing.T) {
	url := testenv.Disruptive(t)
	orig := testenv.MemoryWatermark(t)
	t.Logf("memory high watermark before the test: %v", orig)
	var mu sync.Mutex
	raised := false
	set := func(t testing.TB, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on == raised {
			return
		}
		if on {
			testenv.Rabbitmqctl(t, "set_vm_memory_high_watermark", "0")
		} else {
			testenv.Rabbitmqctl(t, append([]string{"set_vm_memory_high_watermark"}, orig...)...)
		}
		raised = on
	}
	// Whatever happens, the broker gets its watermark back.
	t.Cleanup(func() {
		set(t, false)
		testenv.WaitNoAlarms(t)
	})
	RunAlarm(t, url, func(t *testing.T, on bool) { set(t, on) })
}

// TestRabbitMQRestart runs the restart scenarios against the real broker,
// restarting the RabbitMQ application (rabbitmqctl stop_app, start_app). It
// holds the exclusive broker lock, and starts the application again
// whatever happens.
func TestRabbitMQRestart(t *testing.T) {
	url := testenv.Disruptive(t)
	var mu sync.Mutex
	stopped := false
	start := func(t testing.TB) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			testenv.Rabbitmqctl(t, "start_app")
			testenv.Rabbitmqctl(t, "await_startup")
			stopped = false
		}
	}
	t.Cleanup(func() { start(t) })
	RunRestart(t, url, func(t *testing.T) {
		mu.Lock()
		testenv.Rabbitmqctl(t, "stop_app")
		stopped = true
		mu.Unlock()
		start(t)
		waitAMQP(t, url)
	})
}

// waitAMQP waits up to a minute for the broker at url to accept an AMQP
// connection.
func waitAMQP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pika.Dial(ctx, url)
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker does not accept connections a minute after its restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkClean fails t when the broker still has a queue or exchange whose
// name starts with prefix. It asks rabbitmqctl, which reaches the broker
// only when the test URL names this machine.
func checkClean(t *testing.T, url, prefix string) {
	t.Helper()
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatalf("test URL: %v", err)
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		t.Logf("broker %s is not on this machine: not checking with rabbitmqctl that the run left nothing behind", u.Host)
		return
	}
	for _, kind := range []string{"queues", "exchanges"} {
		out := testenv.Rabbitmqctl(t, "list_"+kind, "-q", "--no-table-headers", "name")
		for _, line := range splitLines(out) {
			if strings.HasPrefix(line, prefix) {
				t.Errorf("left on the broker after the run: %s %s", kind, line)
			}
		}
	}
}

func splitLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
