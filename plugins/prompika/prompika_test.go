package prompika

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/obsmetrics"
	"github.com/pika-go/pika/internal/plugintest"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// eventually retries check until it passes (hook events that run on the
// connection's hook goroutine arrive a moment later) or 10 s pass.
func eventually(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCollectorAfterWorkload runs a known workload against the broker and
// checks the collected values: 3 messages acked, 1 nacked (a full queue
// with reject-publish), 1 returned; 3 delivered, 2 acked and 1 rejected;
// a consumer and two channels open, then closed.
func TestCollectorAfterWorkload(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	col := New(Options{})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	conn, ch := plugintest.Dial(t, url, col)
	q := testenv.Name(t, "prom")
	full := testenv.Name(t, "full")
	plugintest.Declare(t, ch, q, nil)
	plugintest.Declare(t, ch, full, pika.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := ch.Publish(ctx, "", q, pika.Message{Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Publish(ctx, "", full, pika.Message{Body: []byte("n")}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish(ctx, "", testenv.Name(t, "nowhere"), pika.Message{Body: []byte("r"), Mandatory: true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.WaitConfirms(ctx); !errors.Is(err, pika.ErrNacked) || !errors.Is(err, pika.ErrReturned) {
		t.Fatalf("WaitConfirms: %v, want a nack and a return", err)
	}

	sub, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	got := make(chan struct{})
	cons, err := sub.ConsumeFunc(ctx, q, pika.ConsumeOptions{}, func(_ context.Context, d *pika.Delivery) {
		n++
		if n == 3 {
			d.Reject(false)
			close(got)
			return
		}
		d.Ack(false)
	})
	if err != nil {
		t.Fatal(err)
	}
	<-got
	eventually(t, func() error {
		return testutil.CollectAndCompare(col, strings.NewReader(`
# HELP pika_channels_open Channels open.
# TYPE pika_channels_open gauge
pika_channels_open 2
# HELP pika_consumers_active Consumers started and not yet ended.
# TYPE pika_consumers_active gauge
pika_consumers_active 1
# HELP pika_connections_open Connections open (AMQP handshake done, not yet closed).
# TYPE pika_connections_open gauge
pika_connections_open 1
`), obsmetrics.ChannelsOpen, obsmetrics.ConsumersActive, obsmetrics.ConnectionsOpen)
	})
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		return testutil.CollectAndCompare(col, strings.NewReader(`
# HELP pika_channels_open Channels open.
# TYPE pika_channels_open gauge
pika_channels_open 1
# HELP pika_consumers_active Consumers started and not yet ended.
# TYPE pika_consumers_active gauge
pika_consumers_active 0
# HELP pika_messages_published_total Messages published (Publish returned nil).
# TYPE pika_messages_published_total counter
pika_messages_published_total 5
# HELP pika_publish_outcomes_total Outcomes of messages published in confirm mode.
# TYPE pika_publish_outcomes_total counter
pika_publish_outcomes_total{outcome="acked"} 3
pika_publish_outcomes_total{outcome="maybe_returned"} 0
pika_publish_outcomes_total{outcome="nacked"} 1
pika_publish_outcomes_total{outcome="returned"} 1
pika_publish_outcomes_total{outcome="unknown"} 0
# HELP pika_deliveries_received_total Deliveries handed to the application (consumers and Get).
# TYPE pika_deliveries_received_total counter
pika_deliveries_received_total 3
# HELP pika_deliveries_settled_total Deliveries the application acknowledged (ack), or rejected (nack, reject).
# TYPE pika_deliveries_settled_total counter
pika_deliveries_settled_total{kind="ack"} 2
pika_deliveries_settled_total{kind="nack"} 0
pika_deliveries_settled_total{kind="reject"} 1
`), obsmetrics.ChannelsOpen, obsmetrics.ConsumersActive, obsmetrics.MessagesPublished, obsmetrics.PublishOutcomes,
			obsmetrics.DeliveriesReceived, obsmetrics.DeliveriesSettled)
	})
	if c := testutil.CollectAndCount(col, obsmetrics.ConfirmLatency); c != 1 {
		t.Errorf("confirm latency series: %d", c)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(""), "none"); err != nil {
		t.Errorf("the pedantic registry refuses the collector: %v", err)
	}
	// Byte counts reach the hook at most every 100 ms: poll for them.
	eventually(t, func() error {
		var out bytes.Buffer
		mfs, err := reg.Gather()
		if err != nil {
			return err
		}
		for _, mf := range mfs {
			switch mf.GetName() {
			case obsmetrics.ConfirmLatency:
				if h := mf.GetMetric()[0].GetHistogram(); h.GetSampleCount() != 5 || h.GetSampleSum() <= 0 {
					fmt.Fprintf(&out, "confirm latency: count %d sum %v; ", h.GetSampleCount(), h.GetSampleSum())
				}
			case obsmetrics.BytesRead, obsmetrics.BytesWritten:
				if v := mf.GetMetric()[0].GetCounter().GetValue(); v < 100 {
					fmt.Fprintf(&out, "%s = %v; ", mf.GetName(), v)
				}
			}
		}
		if out.Len() > 0 {
			return errors.New(out.String())
		}
		return nil
	})
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		if v := testutil.ToFloat64(gaugeOf(col, obsmetrics.ConnectionsOpen)); v != 0 {
			return fmt.Errorf("connections open after Close: %v", v)
		}
		return nil
	})
}

// TestCollectorQueueLabel: with QueueLabel, deliveries are counted by
// queue.
func TestCollectorQueueLabel(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	col := New(Options{QueueLabel: true, ConstLabels: prometheus.Labels{"app": "test"}})
	prometheus.NewPedanticRegistry().MustRegister(col)
	_, ch := plugintest.Dial(t, url, col)
	q := testenv.Name(t, "label")
	plugintest.Declare(t, ch, q, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 {
		if err := ch.Publish(ctx, "", q, pika.Message{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		for {
			_, ok, err := ch.Get(ctx, q, pika.GetOptions{AutoAck: true})
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := testutil.CollectAndCompare(col, strings.NewReader(fmt.Sprintf(`
# HELP pika_deliveries_received_total Deliveries handed to the application (consumers and Get).
# TYPE pika_deliveries_received_total counter
pika_deliveries_received_total{app="test",queue=%q} 2
`, q)), obsmetrics.DeliveriesReceived); err != nil {
		t.Error(err)
	}
}

// gaugeOf is a collector of the single metric name of col.
func gaugeOf(col *Collector, name string) prometheus.Collector {
	return filtered{col, name}
}

type filtered struct {
	col  *Collector
	name string
}

func (f filtered) Describe(ch chan<- *prometheus.Desc) { ch <- f.col.descs[f.name] }

func (f filtered) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 64)
	go func() { f.col.Collect(all); close(all) }()
	for m := range all {
		if m.Desc() == f.col.descs[f.name] {
			ch <- m
		}
	}
}
