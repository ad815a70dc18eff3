package pika

import (
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// TestHeartbeatNegotiation checks what the client answers in tune-ok for
// each broker proposal, with the default and with explicit settings: the
// default asks for DefaultHeartbeat, which wins over a larger proposal and
// over none, and loses to a smaller one.
func TestHeartbeatNegotiation(t *testing.T) {
	tests := []struct {
		name     string
		cfg      time.Duration // Config.Heartbeat
		proposal uint16        // the broker's connection.tune heartbeat
		want     uint16        // tune-ok heartbeat, seconds
	}{
		{"default, RabbitMQ's 60 s", 0, 60, 10},
		{"default, broker proposes none", 0, 0, 10},
		{"default, broker proposes less", 0, 5, 5},
		{"explicit 30 s, broker 60 s", 30 * time.Second, 60, 30},
		{"explicit 120 s, broker 60 s", 120 * time.Second, 60, 60},
		{"explicit, rounded up", 1500 * time.Millisecond, 60, 2},
		{"NoHeartbeat", NoHeartbeat, 60, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBroker(t)
			var mu sync.Mutex
			var tuneOk *wire.ConnectionTuneOk
			b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
				switch m := m.(type) {
				case *wire.ConnectionStartOk:
					fc.send(0, &wire.ConnectionTune{ChannelMax: 2047, FrameMax: 128 << 10, Heartbeat: tt.proposal})
					return true
				case *wire.ConnectionTuneOk:
					mu.Lock()
					tuneOk = m
					mu.Unlock()
				}
				return false
			})
			cfg := b.config()
			cfg.Heartbeat = tt.cfg
			c := dialFake(t, cfg)
			mu.Lock()
			got := tuneOk
			mu.Unlock()
			if got == nil || got.Heartbeat != tt.want {
				t.Fatalf("tune-ok %+v, want heartbeat %d", got, tt.want)
			}
			if hb := c.Tuning().Heartbeat; hb != time.Duration(tt.want)*time.Second {
				t.Errorf("Tuning().Heartbeat = %v, want %ds", hb, tt.want)
			}
		})
	}
}

// TestDefaultHeartbeatInConfig checks that a zero Config.Heartbeat becomes
// DefaultHeartbeat and that an explicit value or NoHeartbeat is kept.
func TestDefaultHeartbeatInConfig(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{0: DefaultHeartbeat, NoHeartbeat: NoHeartbeat, 3 * time.Second: 3 * time.Second} {
		if got := (Config{Heartbeat: in}).withDefaults().Heartbeat; got != want {
			t.Errorf("Config{Heartbeat: %v}.withDefaults().Heartbeat = %v, want %v", in, got, want)
		}
	}
	if DefaultHeartbeat < 5*time.Second || 5*DefaultHeartbeat/2 >= time.Minute {
		t.Errorf("DefaultHeartbeat %v: want detection (up to 2.5x) well under a minute and no false positives below 5 s", DefaultHeartbeat)
	}
}
