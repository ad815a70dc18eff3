package pika

import (
	"context"
	"testing"
)

// applyBenchConfig copies the hooks of base into cfg.
func applyBenchConfig(cfg *Config, base Config) { cfg.Hooks = base.Hooks }

// BenchmarkPathPublishNoopHooks and BenchmarkPathConsumeNoopHooks are the
// hot paths with a hook of every kind that does nothing.
func BenchmarkPathPublishNoopHooks(b *testing.B) {
	benchPublish(b, Config{Hooks: []Hook{noopHooks{}}})
}

func BenchmarkPathConsumeNoopHooks(b *testing.B) {
	benchConsume(b, Config{Hooks: []Hook{noopHooks{}}})
}

// noopHooks implements every hook interface and does nothing.
type noopHooks struct{}

func (noopHooks) OnConnect(ConnectEvent)          {}
func (noopHooks) OnDisconnect(DisconnectEvent)    {}
func (noopHooks) OnRecovery(*Conn, RecoveryEvent) {}
func (noopHooks) OnBlocked(*Conn, bool, string)   {}
func (noopHooks) OnChannelOpen(*Channel)          {}
func (noopHooks) OnChannelClose(*Channel, error)  {}
func (noopHooks) OnPublish(*Publishing)           {}
func (noopHooks) OnPublished(*Publishing, error)  {}
func (noopHooks) OnPublishOutcome(PublishOutcome) {}
func (noopHooks) OnDelivery(string, *Delivery)    {}
func (noopHooks) OnSettle(SettleEvent)            {}
func (noopHooks) OnConsumerStart(*Consumer)       {}
func (noopHooks) OnConsumerEnd(*Consumer, error)  {}
func (noopHooks) OnBytes(*Conn, int64, int64)     {}
func (noopHooks) OnProcess(ctx context.Context, _ string, _ *Delivery) (context.Context, func(error)) {
	return ctx, nil
}

var _ interface {
	ConnectHook
	DisconnectHook
	RecoveryHook
	BlockedHook
	ChannelHook
	PublishHook
	PublishOutcomeHook
	DeliveryHook
	ProcessHook
	SettleHook
	ConsumerHook
	BytesHook
} = noopHooks{}

// BenchmarkPublishEntryNoopHooks is BenchmarkPublishEntry with a no-op
// hook of every kind: the difference is the whole CPU cost of the
// PublishHooks around a Publish (the Publishing's take, copy and release,
// and the calls), without the socket's noise.
func BenchmarkPublishEntryNoopHooks(b *testing.B) {
	benchPublishEntry(b, &Channel{conn: &Conn{hk: newHookSet([]Hook{noopHooks{}})}})
}

// BenchmarkNextBuffered is Consumer.Next taking deliveries already
// buffered, without hooks, and BenchmarkNextBufferedNoopHooks with a no-op
// hook of every kind: like BenchmarkPublishEntry*, the consume side's hook
// cost without the socket. Refilling the buffer (every 1,000) is measured
// in both.
func BenchmarkNextBuffered(b *testing.B) { benchNextBuffered(b, &Conn{}) }

func BenchmarkNextBufferedNoopHooks(b *testing.B) {
	benchNextBuffered(b, &Conn{hk: newHookSet([]Hook{noopHooks{}})})
}

func benchNextBuffered(b *testing.B, c *Conn) {
	ch := &Channel{conn: c}
	cons := &Consumer{ch: ch, qname: "q", limit: 1 << 20, limitBytes: 1 << 30, signal: make(chan struct{}, 1),
		endCh: make(chan struct{}), done: make(chan struct{})}
	ds := make([]*Delivery, 1000)
	for i := range ds {
		ds[i] = &Delivery{ch: ch, Body: make([]byte, 100)}
	}
	ctx := context.Background()
	b.ReportAllocs()
	cpu := cpuTime()
	for i := 0; i < b.N; {
		// Taking the last one emptied the buffer: refill it.
		cons.queue = append(cons.queue[:0], ds...)
		for j := 0; j < len(ds) && i < b.N; i, j = i+1, j+1 {
			if _, err := cons.Next(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}
