package obsmetrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
)

// TestWriteTextAfterEvents feeds a known sequence of hook events and
// checks the exposition.
func TestWriteTextAfterEvents(t *testing.T) {
	m := New(Options{})
	m.OnConnect(pika.ConnectEvent{Addr: "a:5672"})
	m.OnConnect(pika.ConnectEvent{Addr: "b:5672", Err: errors.New("refused")})
	m.OnChannelOpen(nil)
	m.OnChannelOpen(nil)
	m.OnChannelClose(nil, nil)
	m.OnConsumerStart(nil)
	for range 3 {
		m.OnPublished(nil, nil)
	}
	m.OnPublished(nil, errors.New("closed"))
	m.OnPublishOutcome(pika.PublishOutcome{Outcome: pika.OutcomeAcked, Latency: 2 * time.Millisecond})
	m.OnPublishOutcome(pika.PublishOutcome{Outcome: pika.OutcomeNacked, Latency: 20 * time.Second})
	m.OnPublishOutcome(pika.PublishOutcome{Outcome: pika.OutcomeReturned, Latency: time.Millisecond})
	m.OnDelivery("q", nil)
	m.OnDelivery("q", nil)
	m.OnSettle(pika.SettleEvent{Kind: pika.SettleAck, Count: 2})
	m.OnSettle(pika.SettleEvent{Kind: pika.SettleNack, Count: 1})
	m.OnSettle(pika.SettleEvent{Kind: pika.SettleReject, Err: errors.New("stale")})
	m.OnSettle(pika.SettleEvent{Kind: pika.SettleReject, Count: 1, Requeue: true, ByLibrary: true})
	m.OnRecovery(nil, pika.RecoveryEvent{Kind: pika.RecoveryLost})
	m.OnRecovery(nil, pika.RecoveryEvent{Kind: pika.RecoveryAttempt})
	m.OnRecovery(nil, pika.RecoveryEvent{Kind: pika.RecoveryRecovered})
	m.OnBytes(nil, 100, 40)
	m.OnBytes(nil, 1, 2)
	var b strings.Builder
	if err := WriteText(&b, m.Families()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# TYPE pika_connections_open gauge\npika_connections_open 1\n",
		`pika_connection_attempts_total{result="success"} 1` + "\n",
		`pika_connection_attempts_total{result="failure"} 1` + "\n",
		"pika_channels_open 1\n",
		"pika_consumers_active 1\n",
		"pika_messages_published_total 3\n",
		"pika_publish_errors_total 1\n",
		`pika_publish_outcomes_total{outcome="acked"} 1` + "\n",
		`pika_publish_outcomes_total{outcome="nacked"} 1` + "\n",
		`pika_publish_outcomes_total{outcome="returned"} 1` + "\n",
		`pika_publish_outcomes_total{outcome="unknown"} 0` + "\n",
		`pika_confirm_latency_seconds_bucket{le="0.001"} 1` + "\n",
		`pika_confirm_latency_seconds_bucket{le="0.0025"} 2` + "\n",
		`pika_confirm_latency_seconds_bucket{le="10"} 2` + "\n",
		`pika_confirm_latency_seconds_bucket{le="+Inf"} 3` + "\n",
		"pika_confirm_latency_seconds_count 3\n",
		"pika_deliveries_received_total 2\n",
		`pika_deliveries_settled_total{kind="ack"} 2` + "\n",
		`pika_deliveries_settled_total{kind="nack"} 1` + "\n",
		`pika_deliveries_settled_total{kind="reject"} 0` + "\n",
		`pika_recovery_events_total{event="started"} 1` + "\n",
		`pika_recovery_events_total{event="succeeded"} 1` + "\n",
		"pika_read_bytes_total 101\n",
		"pika_written_bytes_total 42\n",
		"pika_connections_blocked 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
}

// TestBlockedSeconds counts ended and ongoing blocked episodes, and a
// disconnect ends an episode.
func TestBlockedSeconds(t *testing.T) {
	m := New(Options{})
	c1, c2 := new(pika.Conn), new(pika.Conn)
	m.OnBlocked(c1, true, "low on memory")
	m.OnBlocked(c1, true, "again") // still the same episode
	m.OnBlocked(c2, true, "disk")
	time.Sleep(20 * time.Millisecond)
	m.OnBlocked(c1, false, "")
	fams := m.Families()
	get := func(name string) float64 {
		for _, f := range fams {
			if f.Name == name {
				return f.Samples[0].Value
			}
		}
		t.Fatalf("no %s", name)
		return 0
	}
	if n := get(ConnectionsBlocked); n != 1 {
		t.Errorf("blocked now: %v, want 1", n)
	}
	if s := get(BlockedSeconds); s < 0.04 || s > 5 {
		t.Errorf("blocked seconds %v, want about 0.04 (two connections for 20 ms)", s)
	}
	m.OnDisconnect(pika.DisconnectEvent{Conn: c2})
	fams = m.Families()
	if n := get(ConnectionsBlocked); n != 0 {
		t.Errorf("blocked after the blocked connection ended: %v", n)
	}
}

// TestQueueLabel: with QueueLabel, deliveries are counted per queue.
func TestQueueLabel(t *testing.T) {
	m := New(Options{QueueLabel: true})
	m.OnDelivery("b", nil)
	m.OnDelivery("a", nil)
	m.OnDelivery("a", nil)
	m.OnDelivery(`we"ird`, nil)
	var b strings.Builder
	WriteText(&b, m.Families())
	for _, want := range []string{
		`pika_deliveries_received_total{queue="a"} 2`,
		`pika_deliveries_received_total{queue="b"} 1`,
		`pika_deliveries_received_total{queue="we\"ird"} 1`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("lacks %q:\n%s", want, b.String())
		}
	}
}
