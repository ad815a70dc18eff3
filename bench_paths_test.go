package pika

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
)

// Benchmarks of the publish and consume hot paths against the broker, with
// the process's CPU time per message (cpu-ns/op) beside the wall time:
// publishing is pipelined and consuming waits on the broker, so CPU is
// what a change of the client's paths shows. BENCHMARKS.md ("Cost of the
// observability hooks") runs them interleaved with other builds.

func BenchmarkPathPublish(b *testing.B) { benchPublish(b, Config{}) }

// sinkURL, when set, is the AMQP URI of bench/'s sink (go run ./bench
// -sink, in bench/), a server that discards what it reads, in another
// process: BenchmarkPathPublish* then measure the client alone.
var sinkURL = os.Getenv("PIKA_BENCH_SINK_URL")

func BenchmarkPathConsume(b *testing.B) { benchConsume(b, Config{}) }

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchURL is the sink's URL, or the broker's (taking the broker lock for
// the benchmark: once, or a disruptive test waiting between two takes
// would make the second wait for ever).
func benchURL(b *testing.B) string {
	if sinkURL != "" {
		return sinkURL
	}
	return testenv.Broker(b)
}

// benchDial dials url with base's hooks (and nothing else of it).
func benchDial(b *testing.B, url string, base Config) (*Conn, *Channel) {
	b.Helper()
	cfg, err := ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	applyBenchConfig(&cfg, base)
	cfg.DisableRecovery = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(context.Background()) })
	ch, err := c.Channel(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return c, ch
}

// benchQueue declares a queue for the benchmark and deletes it after.
func benchQueue(b *testing.B, ch *Channel) string {
	b.Helper()
	q := testenv.Name(b, "bench")
	if sinkURL != "" {
		return q
	}
	ctx := context.Background()
	if _, err := ch.QueueDeclare(ctx, q, QueueDeclareOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ch.QueueDelete(context.Background(), q, QueueDeleteOptions{}) })
	return q
}

// waitDepth waits until queue q holds n messages.
func waitDepth(b *testing.B, ch *Channel, q string, n int) {
	for sinkURL == "" {
		info, err := ch.QueueDeclarePassive(context.Background(), q)
		if err != nil {
			b.Fatal(err)
		}
		if info.Messages >= n {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// benchPublish publishes b.N messages of 100 bytes to a queue, waiting at
// the end until the broker holds them all.
func benchPublish(b *testing.B, cfg Config) {
	_, ch := benchDial(b, benchURL(b), cfg)
	q := benchQueue(b, ch)
	ctx := context.Background()
	msg := Message{Body: make([]byte, 100)}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		if err := ch.Publish(ctx, "", q, msg); err != nil {
			b.Fatal(err)
		}
	}
	// Wait for the broker: what the writer still had queued is part of
	// the cost.
	waitDepth(b, ch, q, b.N)
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// benchConsume fills a queue with b.N messages (not measured), then
// consumes them with prefetch 1000, acking (multiple) every 100.
func benchConsume(b *testing.B, cfg Config) {
	url := benchURL(b)
	_, pub := benchDial(b, url, Config{})
	q := benchQueue(b, pub)
	ctx := context.Background()
	msg := Message{Body: make([]byte, 100)}
	for range b.N {
		if err := pub.Publish(ctx, "", q, msg); err != nil {
			b.Fatal(err)
		}
	}
	waitDepth(b, pub, q, b.N)
	c, ch := benchDial(b, url, cfg)
	if err := ch.Qos(ctx, QosOptions{PrefetchCount: 1000}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	cons, err := ch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 1; i <= b.N; i++ {
		d, err := cons.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if i%100 == 0 || i == b.N {
			if err := d.Ack(true); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	// Reads of the socket per message: consuming costs more CPU the more
	// reads the broker's pace makes it take, whatever the build.
	c.mu.Lock()
	b.ReportMetric(float64(c.reads)/float64(b.N), "reads/op")
	c.mu.Unlock()
	cons.Cancel(ctx)
}

// endedCtx is a context that has ended, with an Err that costs nothing:
// Publish returns at its first check of ctx, so BenchmarkPublishEntry
// measures only what runs before it (with hooks, all of their cost but
// the socket's). No connection is needed.
type endedCtx struct{ context.Context }

func (endedCtx) Err() error { return context.Canceled }

// BenchmarkPublishEntry is Publish up to its first check of ctx, without
// hooks: the no-hook dispatch, comparable with builds that have none.
func BenchmarkPublishEntry(b *testing.B) {
	benchPublishEntry(b, &Channel{conn: &Conn{}})
}

func benchPublishEntry(b *testing.B, ch *Channel) {
	var ctx context.Context = endedCtx{context.Background()}
	msg := Message{Body: make([]byte, 100)}
	msg.ContentType, msg.MessageID, msg.Timestamp = "text/plain", "m-1", time.Unix(1, 0)
	b.ReportAllocs()
	cpu := cpuTime()
	for range b.N {
		if err := ch.Publish(ctx, "", "q", msg); err != context.Canceled {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}
