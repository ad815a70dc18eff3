// Package obsmetrics counts what pika's hooks report (see pika.Hook) with
// the standard library only, and writes the counts in the Prometheus text
// exposition format. It is the one definition of pika's Prometheus metrics
// (names, help, types, labels): the prompika plugin exports a Metrics
// value through client_golang, and pika perf --metrics serves it with
// WriteText, so both show the same metrics.
//
// The labels are low-cardinality: the outcome, settlement kind and
// recovery event; a queue label only with Options.QueueLabel.
package obsmetrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pika-go/pika"
)

// Metric names (with the namespace "pika").
const (
	ConnectionsOpen    = "pika_connections_open"
	ConnectionAttempts = "pika_connection_attempts_total"
	ConnectionsBlocked = "pika_connections_blocked"
	BlockedSeconds     = "pika_blocked_seconds_total"
	RecoveryEvents     = "pika_recovery_events_total"
	ChannelsOpen       = "pika_channels_open"
	ConsumersActive    = "pika_consumers_active"
	MessagesPublished  = "pika_messages_published_total"
	PublishErrors      = "pika_publish_errors_total"
	PublishOutcomes    = "pika_publish_outcomes_total"
	ConfirmLatency     = "pika_confirm_latency_seconds"
	DeliveriesReceived = "pika_deliveries_received_total"
	DeliveriesSettled  = "pika_deliveries_settled_total"
	BytesRead          = "pika_read_bytes_total"
	BytesWritten       = "pika_written_bytes_total"
)

// ConfirmBuckets are the upper bounds of the confirm latency histogram, in
// seconds.
var ConfirmBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Options configure New.
type Options struct {
	// QueueLabel adds the queue name as a label ("queue") to
	// pika_deliveries_received_total. Default false: queue names can be
	// many (server-named queues, one per RPC client), and every name makes
	// a time series.
	QueueLabel bool
}

// Metrics is a pika hook (register it in pika.Config.Hooks) that counts
// connections, channels, consumers, publishes and their outcomes,
// deliveries and settlements, recoveries, blocked time and bytes. It is
// safe for concurrent use and may be shared by many connections; its
// methods never block.
type Metrics struct {
	opts Options

	connsOpen, chansOpen, consumers atomic.Int64
	attemptsOK, attemptsFailed      atomic.Uint64
	recovery                        [3]atomic.Uint64 // started, succeeded, failed
	published, publishErrs          atomic.Uint64
	outcomes                        [5]atomic.Uint64 // by pika.Outcome - 1
	delivered                       atomic.Uint64
	settled                         [3]atomic.Uint64 // by pika.SettleKind - 1
	read, written                   atomic.Uint64

	mu           sync.Mutex
	latency      histogram
	byQueue      map[string]uint64
	blockedSince map[*pika.Conn]time.Time
	blockedTotal time.Duration // ended episodes
}

// New returns Metrics with opts.
func New(opts Options) *Metrics {
	return &Metrics{
		opts:         opts,
		latency:      histogram{counts: make([]uint64, len(ConfirmBuckets))},
		byQueue:      make(map[string]uint64),
		blockedSince: make(map[*pika.Conn]time.Time),
	}
}

var (
	_ pika.ConnectHook        = (*Metrics)(nil)
	_ pika.DisconnectHook     = (*Metrics)(nil)
	_ pika.RecoveryHook       = (*Metrics)(nil)
	_ pika.BlockedHook        = (*Metrics)(nil)
	_ pika.ChannelHook        = (*Metrics)(nil)
	_ pika.PublishHook        = (*Metrics)(nil)
	_ pika.PublishOutcomeHook = (*Metrics)(nil)
	_ pika.DeliveryHook       = (*Metrics)(nil)
	_ pika.SettleHook         = (*Metrics)(nil)
	_ pika.ConsumerHook       = (*Metrics)(nil)
	_ pika.BytesHook          = (*Metrics)(nil)
)

// OnConnect implements pika.ConnectHook.
func (m *Metrics) OnConnect(ev pika.ConnectEvent) {
	if ev.Err != nil {
		m.attemptsFailed.Add(1)
		return
	}
	m.attemptsOK.Add(1)
	m.connsOpen.Add(1)
}

// OnDisconnect implements pika.DisconnectHook.
func (m *Metrics) OnDisconnect(ev pika.DisconnectEvent) {
	m.connsOpen.Add(-1)
	m.endBlocked(ev.Conn)
}

// OnRecovery implements pika.RecoveryHook.
func (m *Metrics) OnRecovery(_ *pika.Conn, ev pika.RecoveryEvent) {
	switch ev.Kind {
	case pika.RecoveryLost:
		m.recovery[0].Add(1)
	case pika.RecoveryRecovered:
		m.recovery[1].Add(1)
	case pika.RecoveryGaveUp:
		m.recovery[2].Add(1)
	}
}

// OnBlocked implements pika.BlockedHook.
func (m *Metrics) OnBlocked(c *pika.Conn, blocked bool, _ string) {
	if !blocked {
		m.endBlocked(c)
		return
	}
	m.mu.Lock()
	if _, ok := m.blockedSince[c]; !ok {
		m.blockedSince[c] = time.Now()
	}
	m.mu.Unlock()
}

func (m *Metrics) endBlocked(c *pika.Conn) {
	m.mu.Lock()
	if since, ok := m.blockedSince[c]; ok {
		delete(m.blockedSince, c)
		m.blockedTotal += time.Since(since)
	}
	m.mu.Unlock()
}

// OnChannelOpen implements pika.ChannelHook.
func (m *Metrics) OnChannelOpen(*pika.Channel) { m.chansOpen.Add(1) }

// OnChannelClose implements pika.ChannelHook.
func (m *Metrics) OnChannelClose(*pika.Channel, error) { m.chansOpen.Add(-1) }

// OnConsumerStart implements pika.ConsumerHook.
func (m *Metrics) OnConsumerStart(*pika.Consumer) { m.consumers.Add(1) }

// OnConsumerEnd implements pika.ConsumerHook.
func (m *Metrics) OnConsumerEnd(*pika.Consumer, error) { m.consumers.Add(-1) }

// OnPublish implements pika.PublishHook.
func (m *Metrics) OnPublish(*pika.Publishing) {}

// OnPublished implements pika.PublishHook.
func (m *Metrics) OnPublished(_ *pika.Publishing, err error) {
	if err != nil {
		m.publishErrs.Add(1)
		return
	}
	m.published.Add(1)
}

// OnPublishOutcome implements pika.PublishOutcomeHook.
func (m *Metrics) OnPublishOutcome(o pika.PublishOutcome) {
	if i := int(o.Outcome) - 1; i >= 0 && i < len(m.outcomes) {
		m.outcomes[i].Add(1)
	}
	m.mu.Lock()
	m.latency.observe(o.Latency.Seconds())
	m.mu.Unlock()
}

// OnDelivery implements pika.DeliveryHook.
func (m *Metrics) OnDelivery(queue string, _ *pika.Delivery) {
	if !m.opts.QueueLabel {
		m.delivered.Add(1)
		return
	}
	m.mu.Lock()
	m.byQueue[queue]++
	m.mu.Unlock()
}

// OnSettle implements pika.SettleHook. It counts the application's
// acknowledgements only, not those the library made itself
// (SettleEvent.ByLibrary: ConsumerStats counts them).
func (m *Metrics) OnSettle(ev pika.SettleEvent) {
	if i := int(ev.Kind) - 1; i >= 0 && i < len(m.settled) && ev.Err == nil && !ev.ByLibrary {
		m.settled[i].Add(uint64(ev.Count))
	}
}

// OnBytes implements pika.BytesHook.
func (m *Metrics) OnBytes(_ *pika.Conn, read, written int64) {
	m.read.Add(uint64(read))
	m.written.Add(uint64(written))
}

// histogram is a cumulative-at-export bucket histogram (guarded by
// Metrics.mu).
type histogram struct {
	counts []uint64 // per bucket, not cumulative; beyond the last: count - sum of counts
	count  uint64
	sum    float64
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(ConfirmBuckets, v) // first bound >= v
	if i < len(h.counts) {
		h.counts[i]++
	}
	h.count++
	h.sum += v
}

// Family is one metric family of a snapshot.
type Family struct {
	Name, Help string
	Type       string   // "counter", "gauge" or "histogram"
	Labels     []string // the label names of every sample, in order
	Samples    []Sample
}

// Sample is one time series of a family: its labels and value, or its
// histogram.
type Sample struct {
	Labels []Label
	Value  float64
	Hist   *Histogram // histograms only
}

// Label is a label pair.
type Label struct{ Name, Value string }

// Histogram is a snapshot of a histogram: cumulative counts per upper
// bound (Bounds), and the count and sum of all observations.
type Histogram struct {
	Bounds     []float64
	Cumulative []uint64
	Count      uint64
	Sum        float64
}

// Outcome label values, by pika.Outcome - 1.
var outcomeNames = [5]string{"acked", "nacked", "returned", "maybe_returned", "unknown"}

// Settle kind label values, by pika.SettleKind - 1.
var settleNames = [3]string{"ack", "nack", "reject"}

// Recovery event label values.
var recoveryNames = [3]string{"started", "succeeded", "failed"}

// Families returns a snapshot of the metrics, in a fixed order.
func (m *Metrics) Families() []Family {
	m.mu.Lock()
	blocked := m.blockedTotal
	now := time.Now()
	for _, since := range m.blockedSince {
		blocked += now.Sub(since)
	}
	nBlocked := len(m.blockedSince)
	lat := Histogram{Bounds: ConfirmBuckets, Cumulative: make([]uint64, len(ConfirmBuckets)), Count: m.latency.count, Sum: m.latency.sum}
	var cum uint64
	for i, n := range m.latency.counts {
		cum += n
		lat.Cumulative[i] = cum
	}
	var queues []Sample
	if m.opts.QueueLabel {
		for q, n := range m.byQueue {
			queues = append(queues, Sample{Labels: []Label{{"queue", q}}, Value: float64(n)})
		}
	}
	m.mu.Unlock()
	sort.Slice(queues, func(i, j int) bool { return queues[i].Labels[0].Value < queues[j].Labels[0].Value })

	one := func(v float64) []Sample { return []Sample{{Value: v}} }
	labelled := func(name string, values []string, get func(i int) uint64) []Sample {
		s := make([]Sample, len(values))
		for i, v := range values {
			s[i] = Sample{Labels: []Label{{name, v}}, Value: float64(get(i))}
		}
		return s
	}
	delivered := one(float64(m.delivered.Load()))
	var deliveredLabels []string
	if m.opts.QueueLabel {
		delivered, deliveredLabels = queues, []string{"queue"}
	}
	return []Family{
		{ConnectionsOpen, "Connections open (AMQP handshake done, not yet closed).", "gauge", nil, one(float64(m.connsOpen.Load()))},
		{ConnectionAttempts, "Connection attempts (dials and recovery attempts), by result.", "counter", []string{"result"},
			[]Sample{{Labels: []Label{{"result", "success"}}, Value: float64(m.attemptsOK.Load())}, {Labels: []Label{{"result", "failure"}}, Value: float64(m.attemptsFailed.Load())}}},
		{ConnectionsBlocked, "Connections the broker blocks now (resource alarm).", "gauge", nil, one(float64(nBlocked))},
		{BlockedSeconds, "Seconds connections spent blocked by the broker, the current episodes included.", "counter", nil, one(blocked.Seconds())},
		{RecoveryEvents, "Automatic recovery events: started (connection lost), succeeded, failed (gave up).", "counter", []string{"event"},
			labelled("event", recoveryNames[:], func(i int) uint64 { return m.recovery[i].Load() })},
		{ChannelsOpen, "Channels open.", "gauge", nil, one(float64(m.chansOpen.Load()))},
		{ConsumersActive, "Consumers started and not yet ended.", "gauge", nil, one(float64(m.consumers.Load()))},
		{MessagesPublished, "Messages published (Publish returned nil).", "counter", nil, one(float64(m.published.Load()))},
		{PublishErrors, "Publish calls that failed.", "counter", nil, one(float64(m.publishErrs.Load()))},
		{PublishOutcomes, "Outcomes of messages published in confirm mode.", "counter", []string{"outcome"},
			labelled("outcome", outcomeNames[:], func(i int) uint64 { return m.outcomes[i].Load() })},
		{ConfirmLatency, "Time from Publish to the outcome of messages published in confirm mode.", "histogram", nil, []Sample{{Hist: &lat}}},
		{DeliveriesReceived, "Deliveries handed to the application (consumers and Get).", "counter", deliveredLabels, delivered},
		{DeliveriesSettled, "Deliveries the application acknowledged (ack), or rejected (nack, reject).", "counter", []string{"kind"},
			labelled("kind", settleNames[:], func(i int) uint64 { return m.settled[i].Load() })},
		{BytesRead, "Bytes read from the network.", "counter", nil, one(float64(m.read.Load()))},
		{BytesWritten, "Bytes written to the network.", "counter", nil, one(float64(m.written.Load()))},
	}
}

// WriteText writes families in the Prometheus text exposition format
// (version 0.0.4).
func WriteText(w io.Writer, families []Family) error {
	bw := bufio.NewWriter(w)
	for _, f := range families {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", f.Name, escapeHelp(f.Help), f.Name, f.Type)
		for _, s := range f.Samples {
			if s.Hist != nil {
				h := s.Hist
				for i, b := range h.Bounds {
					writeSample(bw, f.Name+"_bucket", append(s.Labels[:len(s.Labels):len(s.Labels)], Label{"le", formatFloat(b)}), float64(h.Cumulative[i]))
				}
				writeSample(bw, f.Name+"_bucket", append(s.Labels[:len(s.Labels):len(s.Labels)], Label{"le", "+Inf"}), float64(h.Count))
				writeSample(bw, f.Name+"_sum", s.Labels, h.Sum)
				writeSample(bw, f.Name+"_count", s.Labels, float64(h.Count))
				continue
			}
			writeSample(bw, f.Name, s.Labels, s.Value)
		}
	}
	return bw.Flush()
}

func writeSample(w *bufio.Writer, name string, labels []Label, v float64) {
	w.WriteString(name)
	if len(labels) > 0 {
		w.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(l.Name)
			w.WriteString(`="`)
			w.WriteString(escapeLabel(l.Value))
			w.WriteByte('"')
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
