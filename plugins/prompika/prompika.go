// Package prompika exports the metrics of github.com/pika-go/pika
// connections to Prometheus through github.com/prometheus/client_golang.
//
// A Collector is both a pika hook and a prometheus.Collector: register it
// in pika.Config.Hooks of every connection to measure, and in a Prometheus
// registry:
//
//	metrics := prompika.New(prompika.Options{})
//	prometheus.MustRegister(metrics)
//	cfg.Hooks = append(cfg.Hooks, metrics)
//
// The metrics (all prefixed pika_; labels in braces):
//
//	pika_connections_open                       gauge
//	pika_connection_attempts_total{result}      counter: success, failure
//	pika_connections_blocked                    gauge: blocked by the broker now
//	pika_blocked_seconds_total                  counter: time blocked, ongoing episodes included
//	pika_recovery_events_total{event}           counter: started, succeeded, failed
//	pika_channels_open                          gauge
//	pika_consumers_active                       gauge
//	pika_messages_published_total               counter: Publish returned nil
//	pika_publish_errors_total                   counter: Publish failed
//	pika_publish_outcomes_total{outcome}        counter: acked, nacked, returned, maybe_returned, unknown
//	pika_confirm_latency_seconds                histogram: Publish to outcome, confirm mode
//	pika_deliveries_received_total              counter (by queue with Options.QueueLabel)
//	pika_deliveries_settled_total{kind}         counter: ack, nack, reject (messages settled)
//	pika_read_bytes_total                       counter
//	pika_written_bytes_total                    counter
//
// Labels are low-cardinality: no queue or exchange names unless
// Options.QueueLabel asks for them. pika perf --metrics serves the same
// metrics, by the same code, without client_golang.
package prompika

import (
	"github.com/pika-go/pika/internal/obsmetrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure New.
type Options struct {
	// QueueLabel labels pika_deliveries_received_total by queue name.
	// Default false: every queue name makes a time series (server-named
	// queues, one per RPC client, can make many).
	QueueLabel bool
	// ConstLabels are added to every metric, e.g. {"app": "billing"} to
	// tell several Collectors in one registry apart. Default: none.
	ConstLabels prometheus.Labels
}

// Collector counts what pika's hooks report and exports it as Prometheus
// metrics. It is safe for concurrent use; one Collector may be registered
// on many connections (their counts add up).
type Collector struct {
	*obsmetrics.Metrics // the pika hooks
	descs               map[string]*prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector.
func New(opts Options) *Collector {
	c := &Collector{
		Metrics: obsmetrics.New(obsmetrics.Options{QueueLabel: opts.QueueLabel}),
		descs:   make(map[string]*prometheus.Desc),
	}
	for _, f := range c.Families() {
		c.descs[f.Name] = prometheus.NewDesc(f.Name, f.Help, f.Labels, opts.ConstLabels)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.Families() {
		desc := c.descs[f.Name]
		for _, s := range f.Samples {
			values := make([]string, len(s.Labels))
			for i, l := range s.Labels {
				values[i] = l.Value
			}
			switch {
			case s.Hist != nil:
				buckets := make(map[float64]uint64, len(s.Hist.Bounds))
				for i, b := range s.Hist.Bounds {
					buckets[b] = s.Hist.Cumulative[i]
				}
				ch <- prometheus.MustNewConstHistogram(desc, s.Hist.Count, s.Hist.Sum, buckets, values...)
			case f.Type == "gauge":
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, s.Value, values...)
			default:
				ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, s.Value, values...)
			}
		}
	}
}
