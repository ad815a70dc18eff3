package otelpika

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/plugintest"
	"github.com/pika-go/pika/internal/testenv"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// fixture is a Hooks value with an in-memory span recorder and a manual
// metric reader.
type fixture struct {
	hooks  *Hooks
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	f.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader))
	h, err := New(WithTracerProvider(f.tp), WithMeterProvider(mp), WithPropagator(propagation.TraceContext{}))
	if err != nil {
		t.Fatal(err)
	}
	f.hooks = h
	return f
}

// waitSpans waits until the recorder holds a span named name that ended,
// and returns the ended spans with that name.
func (f *fixture) waitSpans(t *testing.T, name string, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []sdktrace.ReadOnlySpan
		for _, s := range f.spans.Ended() {
			if s.Name() == name {
				got = append(got, s)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			var names []string
			for _, s := range f.spans.Ended() {
				names = append(names, s.Name())
			}
			t.Fatalf("%d ended spans named %q, want %d (ended: %q)", len(got), name, n, names)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value)
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func checkAttrs(t *testing.T, s sdktrace.ReadOnlySpan, want map[string]any) {
	t.Helper()
	got := attrs(s)
	for k, v := range want {
		g, ok := got[attribute.Key(k)]
		if !ok {
			t.Errorf("span %q: no attribute %s (have %v)", s.Name(), k, s.Attributes())
			continue
		}
		if g.AsInterface() != v {
			t.Errorf("span %q: %s = %v (%T), want %v (%T)", s.Name(), k, g.AsInterface(), g.AsInterface(), v, v)
		}
	}
}

// TestTracePublishConsumeAcrossConnections: a message published on one
// connection and processed by a ConsumeFunc handler on another yields a
// CONSUMER span in the producer's trace, child of the PRODUCER span, with
// the attributes of the conventions; the handler's ctx carries it; the
// caller's headers are not modified.
func TestTracePublishConsumeAcrossConnections(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	f := newFixture(t)
	_, pub := plugintest.Dial(t, url, f.hooks)
	_, sub := plugintest.Dial(t, url, f.hooks)
	q := testenv.Name(t, "otel")
	plugintest.Declare(t, pub, q, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	root, rootSpan := f.tp.Tracer("test").Start(ctx, "root")
	headers := pika.Table{"app": "x"}
	msg := pika.Message{Body: []byte("hello"), Properties: pika.Properties{MessageID: "m-1", CorrelationID: "conv-1", Headers: headers}}
	if err := pub.Publish(root, "", q, msg); err != nil {
		t.Fatal(err)
	}
	rootSpan.End()
	if len(headers) != 1 {
		t.Errorf("Publish changed the caller's headers: %v", headers)
	}

	handled := make(chan trace.SpanContext, 1)
	cons, err := sub.ConsumeFunc(ctx, q, pika.ConsumeOptions{}, func(hctx context.Context, d *pika.Delivery) {
		if d.Headers["traceparent"] == nil || d.Headers["app"] != "x" {
			t.Errorf("delivered headers %v: want traceparent and the application's", d.Headers)
		}
		d.Ack(false)
		handled <- trace.SpanContextFromContext(hctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	var inHandler trace.SpanContext
	select {
	case inHandler = <-handled:
	case <-ctx.Done():
		t.Fatal("handler not called")
	}
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}

	prod := f.waitSpans(t, "publish amq.default", 1)[0]
	proc := f.waitSpans(t, "process "+q, 1)[0]
	if prod.SpanKind() != trace.SpanKindProducer || proc.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("span kinds %v %v", prod.SpanKind(), proc.SpanKind())
	}
	if proc.SpanContext().TraceID() != prod.SpanContext().TraceID() {
		t.Errorf("consumer trace %s, producer trace %s", proc.SpanContext().TraceID(), prod.SpanContext().TraceID())
	}
	if prod.Parent().SpanID() != rootSpan.SpanContext().SpanID() {
		t.Errorf("producer span's parent is not Publish's ctx span")
	}
	if proc.Parent().SpanID() != prod.SpanContext().SpanID() || !proc.Parent().IsRemote() {
		t.Errorf("consumer span's parent %v, want the producer span %v", proc.Parent(), prod.SpanContext())
	}
	if len(proc.Links()) != 1 || proc.Links()[0].SpanContext.SpanID() != prod.SpanContext().SpanID() {
		t.Errorf("consumer span links %v", proc.Links())
	}
	if inHandler.SpanID() != proc.SpanContext().SpanID() {
		t.Errorf("the handler's ctx carries span %s, want the consumer span %s", inHandler.SpanID(), proc.SpanContext().SpanID())
	}
	checkAttrs(t, prod, map[string]any{
		"messaging.system":                           "rabbitmq",
		"messaging.destination.name":                 "",
		"messaging.rabbitmq.destination.routing_key": q,
		"messaging.operation.type":                   "send",
		"messaging.operation.name":                   "publish",
		"messaging.message.id":                       "m-1",
		"messaging.message.conversation_id":          "conv-1",
		"messaging.message.body.size":                int64(5),
		"server.address":                             "127.0.0.1",
		"server.port":                                int64(5672),
	})
	checkAttrs(t, proc, map[string]any{
		"messaging.system":                           "rabbitmq",
		"messaging.destination.name":                 "",
		"messaging.destination.subscription.name":    q,
		"messaging.rabbitmq.destination.routing_key": q,
		"messaging.rabbitmq.message.delivery_tag":    int64(1),
		"messaging.operation.type":                   "process",
		"messaging.operation.name":                   "process",
		"messaging.message.id":                       "m-1",
		"messaging.message.conversation_id":          "conv-1",
		"messaging.message.body.size":                int64(5),
		"server.address":                             "127.0.0.1",
		"server.port":                                int64(5672),
	})
	if proc.Status().Code == codes.Error || prod.Status().Code == codes.Error {
		t.Errorf("statuses %v %v", prod.Status(), proc.Status())
	}

	rm := f.collect(t)
	if n := sumInt(rm, "messaging.client.sent.messages", nil); n != 1 {
		t.Errorf("messaging.client.sent.messages = %d, want 1", n)
	}
	if n := sumInt(rm, "messaging.client.consumed.messages", map[string]string{"messaging.destination.subscription.name": q}); n != 1 {
		t.Errorf("messaging.client.consumed.messages = %d, want 1", n)
	}
	if n := histCount(rm, "messaging.process.duration", nil); n != 1 {
		t.Errorf("messaging.process.duration count = %d, want 1", n)
	}
	if n := histCount(rm, "messaging.client.operation.duration", map[string]string{"messaging.operation.name": "publish"}); n != 1 {
		t.Errorf("messaging.client.operation.duration count = %d, want 1", n)
	}
}

// TestTraceConfirmOutcomes: in confirm mode the producer span ends with
// the broker's verdict: an ack leaves it unset; a nack (a full queue with
// overflow reject-publish) and a return (mandatory, unroutable) make it an
// error span with error.type; pika.confirm.duration counts each outcome.
func TestTraceConfirmOutcomes(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	f := newFixture(t)
	_, ch := plugintest.Dial(t, url, f.hooks)
	ok := testenv.Name(t, "ok")
	full := testenv.Name(t, "full")
	plugintest.Declare(t, ch, ok, nil)
	plugintest.Declare(t, ch, full, pika.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key       string
		mandatory bool
		want      error
	}{
		{ok, false, nil},
		{full, false, pika.ErrNacked},
		{testenv.Name(t, "nowhere"), true, pika.ErrReturned},
	} {
		conf, err := ch.PublishWithConfirm(ctx, "", tc.key, pika.Message{Body: []byte("x"), Mandatory: tc.mandatory})
		if err != nil {
			t.Fatal(err)
		}
		if err := conf.Wait(ctx); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Fatalf("publish to %s: %v, want %v", tc.key, err, tc.want)
		}
	}
	spans := f.waitSpans(t, "publish amq.default", 3)
	byKey := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byKey[attrs(s)["messaging.rabbitmq.destination.routing_key"].AsString()] = s
	}
	for key, want := range map[string]string{ok: "acked", full: "nacked"} {
		s := byKey[key]
		if s == nil {
			t.Fatalf("no span for %s", key)
		}
		var outcome string
		for _, e := range s.Events() {
			if e.Name == "confirm" {
				for _, a := range e.Attributes {
					if a.Key == ConfirmOutcomeKey {
						outcome = a.Value.AsString()
					}
				}
			}
		}
		if outcome != want {
			t.Errorf("%s: confirm event outcome %q, want %q", key, outcome, want)
		}
	}
	if s := byKey[ok]; s.Status().Code == codes.Error {
		t.Errorf("acked publish: error status %v", s.Status())
	}
	for key, typ := range map[string]string{full: "nacked"} {
		s := byKey[key]
		if s.Status().Code != codes.Error || attrs(s)["error.type"].AsString() != typ {
			t.Errorf("%s: status %v, error.type %q, want an error span with %q", key, s.Status(), attrs(s)["error.type"].AsString(), typ)
		}
	}
	var returned sdktrace.ReadOnlySpan
	for key, s := range byKey {
		if strings.Contains(key, "nowhere") {
			returned = s
		}
	}
	if returned == nil || returned.Status().Code != codes.Error || attrs(returned)["error.type"].AsString() != "returned" {
		t.Errorf("returned publish: span %v", returned)
	}
	rm := f.collect(t)
	for _, o := range []string{"acked", "nacked", "returned"} {
		if n := histCount(rm, "pika.confirm.duration", map[string]string{"pika.confirm.outcome": o}); n != 1 {
			t.Errorf("pika.confirm.duration{outcome=%s} count %d, want 1", o, n)
		}
	}
}

// TestTracePullConsumer: StartProcess around Next makes the consumer span
// for a pull consumer, and a processing error marks it.
func TestTracePullConsumer(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	f := newFixture(t)
	_, pub := plugintest.Dial(t, url, f.hooks)
	_, sub := plugintest.Dial(t, url, f.hooks)
	q := testenv.Name(t, "pull")
	plugintest.Declare(t, pub, q, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, "", q, pika.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	cons, err := sub.Consume(ctx, q, pika.ConsumeOptions{AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pctx, end := f.hooks.StartProcess(ctx, q, d)
	if !trace.SpanContextFromContext(pctx).IsValid() {
		t.Error("StartProcess's ctx has no span")
	}
	end(errors.New("processing failed"))
	proc := f.waitSpans(t, "process "+q, 1)[0]
	prod := f.waitSpans(t, "publish amq.default", 1)[0]
	if proc.SpanContext().TraceID() != prod.SpanContext().TraceID() {
		t.Error("pull consumer span not in the producer's trace")
	}
	if proc.Status().Code != codes.Error || attrs(proc)["error.type"].AsString() != "_OTHER" {
		t.Errorf("failed processing: status %v, attributes %v", proc.Status(), proc.Attributes())
	}
	cons.Cancel(ctx)
}

// TestCarrierIgnoresOtherHeaderTypes: a traceparent header of a type other
// than a string or bytes extracts nothing (and does not panic).
func TestCarrierIgnoresOtherHeaderTypes(t *testing.T) {
	for _, v := range []any{int32(1), nil, pika.Table{"a": "b"}, []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")} {
		c := headerCarrier(pika.Table{"traceparent": v})
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
		if _, isBytes := v.([]byte); sc.IsValid() != isBytes {
			t.Errorf("%T: extracted %v", v, sc)
		}
	}
	if got := headerCarrier(nil).Get("traceparent"); got != "" {
		t.Errorf("nil table: %q", got)
	}
}

func (f *fixture) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

func matches(set attribute.Set, want map[string]string) bool {
	for k, v := range want {
		got, ok := set.Value(attribute.Key(k))
		if !ok || got.Emit() != v {
			return false
		}
	}
	return true
}

// sumInt adds the points of the int64 sum name whose attributes match want.
func sumInt(rm metricdata.ResourceMetrics, name string, want map[string]string) int64 {
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, p := range s.DataPoints {
					if matches(p.Attributes, want) {
						n += p.Value
					}
				}
			}
		}
	}
	return n
}

// histCount adds the counts of the float64 histogram name whose attributes
// match want.
func histCount(rm metricdata.ResourceMetrics, name string, want map[string]string) uint64 {
	var n uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
				for _, p := range h.DataPoints {
					if matches(p.Attributes, want) {
						n += p.Count
					}
				}
			}
		}
	}
	return n
}

// TestRecoveryAndBlockedInstruments: recovery events are counted by kind
// and a blocked episode is timed, with the broker's address.
func TestRecoveryAndBlockedInstruments(t *testing.T) {
	f := newFixture(t)
	c := new(pika.Conn)
	f.hooks.OnConnect(pika.ConnectEvent{Conn: c, Addr: "rabbit:5672"})
	f.hooks.OnBlocked(c, true, "low on memory")
	time.Sleep(10 * time.Millisecond)
	f.hooks.OnBlocked(c, false, "")
	f.hooks.OnBlocked(c, false, "") // no episode open: nothing recorded
	f.hooks.OnRecovery(c, pika.RecoveryEvent{Kind: pika.RecoveryLost})
	f.hooks.OnRecovery(c, pika.RecoveryEvent{Kind: pika.RecoveryAttempt})
	f.hooks.OnRecovery(c, pika.RecoveryEvent{Kind: pika.RecoveryRecovered})
	rm := f.collect(t)
	if n := histCount(rm, "pika.connection.blocked.duration", map[string]string{"server.address": "rabbit"}); n != 1 {
		t.Errorf("blocked episodes recorded: %d, want 1", n)
	}
	for kind, want := range map[string]int64{"lost": 1, "recovered": 1, "gave_up": 0} {
		if n := sumInt(rm, "pika.connection.recoveries", map[string]string{"pika.recovery.kind": kind}); n != want {
			t.Errorf("recoveries{%s} = %d, want %d", kind, n, want)
		}
	}
}

// TestTraceSettleInHandler: the process span of a ConsumeFunc handler
// records the handler's settlement as a "settle" event, and a nack or a
// reject marks it failed with error.type; an ack leaves its status unset.
func TestTraceSettleInHandler(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	f := newFixture(t)
	_, ch := plugintest.Dial(t, url, f.hooks)
	q := testenv.Name(t, "settle")
	plugintest.Declare(t, ch, q, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, body := range []string{"ack", "nack", "reject"} {
		if err := ch.Publish(ctx, "", q, pika.Message{Body: []byte(body), Properties: pika.Properties{MessageID: body}}); err != nil {
			t.Fatal(err)
		}
	}
	handled := make(chan struct{}, 3)
	cons, err := ch.ConsumeFunc(ctx, q, pika.ConsumeOptions{}, func(_ context.Context, d *pika.Delivery) {
		var err error
		switch string(d.Body) {
		case "ack":
			err = d.Ack(false)
		case "nack":
			if d.Redelivered {
				err = d.Ack(false)
				break
			}
			err = d.Nack(false, true) // requeued once, then acked
		case "reject":
			err = d.Reject(false)
		}
		if err != nil {
			t.Errorf("settle %s: %v", d.Body, err)
		}
		handled <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		select {
		case <-handled:
		case <-ctx.Done():
			t.Fatal("handler not called 4 times")
		}
	}
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	type settled struct {
		status, errType, op string
		requeue             bool
	}
	got := map[string][]settled{}
	for _, s := range f.waitSpans(t, "process "+q, 4) {
		a := attrs(s)
		id := a["messaging.message.id"].AsString()
		for _, ev := range s.Events() {
			if ev.Name != "settle" {
				continue
			}
			var st settled
			st.status = s.Status().Code.String()
			st.errType = a["error.type"].AsString()
			for _, kv := range ev.Attributes {
				switch kv.Key {
				case "messaging.operation.name":
					st.op = kv.Value.AsString()
				case SettleRequeueKey:
					st.requeue = kv.Value.AsBool()
				case "messaging.operation.type":
					if kv.Value.AsString() != "settle" {
						t.Errorf("settle event operation type %q", kv.Value.AsString())
					}
				}
			}
			got[id] = append(got[id], st)
		}
	}
	want := map[string][]settled{
		// The nacked message's two deliveries: the first span failed, the
		// redelivery's acked.
		"ack":    {{"Unset", "", "ack", false}},
		"reject": {{"Error", "reject", "reject", false}},
	}
	if fmt.Sprint(got["ack"]) != fmt.Sprint(want["ack"]) || fmt.Sprint(got["reject"]) != fmt.Sprint(want["reject"]) {
		t.Errorf("settled spans %v, want %v", got, want)
	}
	nacks := fmt.Sprint(got["nack"])
	if nacks != fmt.Sprint([]settled{{"Error", "nack", "nack", true}, {"Unset", "", "ack", false}}) &&
		nacks != fmt.Sprint([]settled{{"Unset", "", "ack", false}, {"Error", "nack", "nack", true}}) {
		t.Errorf("nacked message's spans %s, want one failed nack with requeue and one ack", nacks)
	}
}
