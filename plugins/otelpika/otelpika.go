// Package otelpika traces and measures github.com/pika-go/pika connections
// with OpenTelemetry, following the OpenTelemetry semantic conventions for
// messaging systems and RabbitMQ (semconv v1.43.0, the newest that
// go.opentelemetry.io/otel v1.47.0 ships).
//
// Register a Hooks value in pika.Config.Hooks:
//
//	h := otelpika.New() // the global tracer, meter and propagator providers
//	cfg.Hooks = append(cfg.Hooks, h)
//	conn, err := pika.DialConfig(ctx, cfg)
//
// What it records:
//
//   - a PRODUCER span "publish <exchange>" per Publish (amq.default for the
//     default exchange), started from Publish's ctx, with the W3C trace
//     context (the configured propagator's) injected into the message's
//     headers; the caller's Headers table is not modified (pika copies it
//     on the first header a hook adds). In confirm mode the span ends with
//     the broker's verdict: an event "confirm" with the outcome, and an
//     error status and error.type for a nack, a return or an unknown
//     outcome. Otherwise it ends when Publish returns.
//   - a CONSUMER span "process <queue>" around each call of a ConsumeFunc
//     handler, a child of the producer's context extracted from the
//     delivery's headers (and linked to it); the handler's ctx carries it.
//     For pull consumers (Next, All, Get) call Hooks.StartProcess around
//     the processing.
//   - metrics: messaging.client.sent.messages,
//     messaging.client.consumed.messages, messaging.client.operation.duration
//     (publish), messaging.process.duration, and pika.confirm.duration
//     (publish to the broker's verdict, by outcome),
//     pika.connection.recoveries (by kind: lost, recovered, gave_up) and
//     pika.connection.blocked.duration (each blocked episode).
//
// A Hooks value is safe for concurrent use and may be shared by many
// connections.
package otelpika

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/pika-go/pika"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/pika-go/pika/plugins/otelpika"

// DefaultExchangeName is the span name's destination for the default
// exchange (whose name is empty; messaging.destination.name is then "").
const DefaultExchangeName = "amq.default"

// Option configures New.
type Option func(*config)

type config struct {
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	prop propagation.TextMapPropagator
}

// WithTracerProvider sets the tracer provider. Default: otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithMeterProvider sets the meter provider. Default: otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.mp = mp } }

// WithPropagator sets the propagator that injects the trace context into
// published messages' headers and extracts it from deliveries. Default:
// otel.GetTextMapPropagator() (set it, e.g. to propagation.TraceContext{},
// or nothing is propagated).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

// Hooks is a pika hook (see pika.Hook) that traces and measures the
// connections it is registered on.
type Hooks struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator

	sent      messagingconv.ClientSentMessages
	consumed  messagingconv.ClientConsumedMessages
	opDur     messagingconv.ClientOperationDuration
	procDur   messagingconv.ProcessDuration
	confirm   metric.Float64Histogram
	recovered metric.Int64Counter
	blocked   metric.Float64Histogram

	mu    sync.Mutex
	conns map[*pika.Conn]*connState

	// processing holds the spans of the deliveries being processed (from
	// StartProcess to its end function), by channel and delivery tag, for
	// OnSettle.
	processing sync.Map // settleKey -> trace.Span
}

// settleKey names a delivery being processed.
type settleKey struct {
	ch  *pika.Channel
	tag uint64
}

// connState is what Hooks knows of one connection.
type connState struct {
	server       []attribute.KeyValue // server.address, server.port
	blockedSince time.Time            // zero while not blocked
}

var (
	_ pika.PublishHook        = (*Hooks)(nil)
	_ pika.PublishOutcomeHook = (*Hooks)(nil)
	_ pika.ProcessHook        = (*Hooks)(nil)
	_ pika.DeliveryHook       = (*Hooks)(nil)
	_ pika.ConnectHook        = (*Hooks)(nil)
	_ pika.DisconnectHook     = (*Hooks)(nil)
	_ pika.RecoveryHook       = (*Hooks)(nil)
	_ pika.BlockedHook        = (*Hooks)(nil)
	_ pika.SettleHook         = (*Hooks)(nil)
)

// New returns Hooks with the given options. It fails only when the meter
// provider refuses an instrument.
func New(opts ...Option) (*Hooks, error) {
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.tp == nil {
		cfg.tp = otel.GetTracerProvider()
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	if cfg.prop == nil {
		cfg.prop = otel.GetTextMapPropagator()
	}
	m := cfg.mp.Meter(ScopeName)
	h := &Hooks{
		tracer: cfg.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   cfg.prop,
		conns:  make(map[*pika.Conn]*connState),
	}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	h.sent, err = messagingconv.NewClientSentMessages(m)
	add(err)
	h.consumed, err = messagingconv.NewClientConsumedMessages(m)
	add(err)
	h.opDur, err = messagingconv.NewClientOperationDuration(m)
	add(err)
	h.procDur, err = messagingconv.NewProcessDuration(m)
	add(err)
	h.confirm, err = m.Float64Histogram("pika.confirm.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from Publish to the broker's verdict on a message published in confirm mode, by outcome (pika.confirm.outcome)."))
	add(err)
	h.recovered, err = m.Int64Counter("pika.connection.recoveries", metric.WithUnit("{event}"),
		metric.WithDescription("Recovery events by kind (pika.recovery.kind: lost, recovered, gave_up)."))
	add(err)
	h.blocked, err = m.Float64Histogram("pika.connection.blocked.duration", metric.WithUnit("s"),
		metric.WithDescription("How long the broker kept the connection blocked (resource alarm), per episode."))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return h, nil
}

// Attribute keys of pika's own instruments.
const (
	ConfirmOutcomeKey = attribute.Key("pika.confirm.outcome")
	RecoveryKindKey   = attribute.Key("pika.recovery.kind")
)

const (
	opPublish = "publish"
	opProcess = "process"
)

// state returns the state of c, made on first use.
func (h *Hooks) state(c *pika.Conn) *connState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.conns[c]
	if s == nil {
		s = &connState{}
		h.conns[c] = s
	}
	return s
}

// serverAttrs returns server.address and server.port of c's broker.
func (h *Hooks) serverAttrs(c *pika.Conn) []attribute.KeyValue {
	if c == nil {
		return nil
	}
	h.mu.Lock()
	s := h.conns[c]
	var attrs []attribute.KeyValue
	if s != nil {
		attrs = s.server
	}
	h.mu.Unlock()
	if attrs != nil {
		return attrs
	}
	// Before OnConnect ran on the hook goroutine.
	attrs = addrAttrs(c.RemoteAddr().String())
	if c.IsClosed() {
		return attrs // not kept: OnDisconnect forgot it, or will
	}
	s = h.state(c)
	h.mu.Lock()
	if s.server == nil {
		s.server = attrs
	}
	h.mu.Unlock()
	return attrs
}

func addrAttrs(hostport string) []attribute.KeyValue {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return []attribute.KeyValue{semconv.ServerAddress(hostport)}
	}
	attrs := []attribute.KeyValue{semconv.ServerAddress(host)}
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	return attrs
}

// OnConnect records the address of the broker connected to.
func (h *Hooks) OnConnect(ev pika.ConnectEvent) {
	if ev.Err != nil {
		return
	}
	attrs := addrAttrs(ev.Addr)
	s := h.state(ev.Conn)
	h.mu.Lock()
	s.server = attrs
	h.mu.Unlock()
}

// OnDisconnect forgets a connection closed for good.
func (h *Hooks) OnDisconnect(ev pika.DisconnectEvent) {
	if ev.Conn.IsClosed() {
		h.mu.Lock()
		delete(h.conns, ev.Conn)
		h.mu.Unlock()
	}
}

// OnRecovery counts recovery events.
func (h *Hooks) OnRecovery(c *pika.Conn, ev pika.RecoveryEvent) {
	var kind string
	switch ev.Kind {
	case pika.RecoveryLost:
		kind = "lost"
	case pika.RecoveryRecovered:
		kind = "recovered"
	case pika.RecoveryGaveUp:
		kind = "gave_up"
	default:
		return
	}
	attrs := append([]attribute.KeyValue{semconv.MessagingSystemRabbitMQ, RecoveryKindKey.String(kind)}, h.serverAttrs(c)...)
	h.recovered.Add(context.Background(), 1, metric.WithAttributes(attrs...))
}

// OnBlocked measures blocked episodes.
func (h *Hooks) OnBlocked(c *pika.Conn, blocked bool, _ string) {
	s := h.state(c)
	h.mu.Lock()
	since := s.blockedSince
	if blocked {
		if since.IsZero() {
			s.blockedSince = time.Now()
		}
		h.mu.Unlock()
		return
	}
	s.blockedSince = time.Time{}
	h.mu.Unlock()
	if !since.IsZero() {
		attrs := append([]attribute.KeyValue{semconv.MessagingSystemRabbitMQ}, h.serverAttrs(c)...)
		h.blocked.Record(context.Background(), time.Since(since).Seconds(), metric.WithAttributes(attrs...))
	}
}

// pubState is a producer span in flight, kept in Publishing.Ctx.
type pubState struct {
	span     trace.Span
	start    time.Time
	exchange string
}

type pubKey struct{}

// OnPublish starts the producer span and injects its context into the
// message's headers.
func (h *Hooks) OnPublish(p *pika.Publishing) {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemRabbitMQ,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName(opPublish),
		semconv.MessagingDestinationName(p.Exchange),
		semconv.MessagingMessageBodySize(len(p.Message.Body)),
	}
	if p.RoutingKey != "" {
		attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(p.RoutingKey))
	}
	if p.Message.MessageID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(p.Message.MessageID))
	}
	if p.Message.CorrelationID != "" {
		attrs = append(attrs, semconv.MessagingMessageConversationID(p.Message.CorrelationID))
	}
	attrs = append(attrs, h.serverAttrs(p.Channel.Conn())...)
	ctx, span := h.tracer.Start(p.Ctx, opPublish+" "+destination(p.Exchange),
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	h.prop.Inject(ctx, publishCarrier{p})
	p.Ctx = context.WithValue(ctx, pubKey{}, &pubState{span: span, start: time.Now(), exchange: p.Exchange})
}

// OnPublished ends the producer span of a message not in confirm mode (or
// one that failed), and counts and times the publish.
func (h *Hooks) OnPublished(p *pika.Publishing, err error) {
	st, _ := p.Ctx.Value(pubKey{}).(*pubState)
	if st == nil {
		return
	}
	attrs := []attribute.KeyValue{semconv.MessagingDestinationName(p.Exchange)}
	attrs = append(attrs, h.serverAttrs(p.Channel.Conn())...)
	if err != nil {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
	}
	ctx := context.Background()
	h.sent.Add(ctx, 1, opPublish, messagingconv.SystemRabbitMQ, attrs...)
	h.opDur.Record(ctx, time.Since(st.start).Seconds(), opPublish, messagingconv.SystemRabbitMQ,
		append(attrs, semconv.MessagingOperationTypeSend)...)
	if err != nil {
		fail(st.span, err)
		st.span.End()
		return
	}
	if p.Seq == 0 {
		st.span.End() // not in confirm mode: nothing more will come
		return
	}
	st.span.SetAttributes(attribute.Int64("messaging.rabbitmq.publish.sequence_number", int64(p.Seq)))
}

// OnPublishOutcome records the broker's verdict on the producer span and
// ends it.
func (h *Hooks) OnPublishOutcome(o pika.PublishOutcome) {
	outcome := outcomeName(o.Outcome)
	attrs := append([]attribute.KeyValue{semconv.MessagingSystemRabbitMQ, ConfirmOutcomeKey.String(outcome)},
		h.serverAttrs(o.Channel.Conn())...)
	h.confirm.Record(context.Background(), o.Latency.Seconds(), metric.WithAttributes(attrs...))
	st, _ := o.Ctx.Value(pubKey{}).(*pubState)
	if st == nil {
		return
	}
	st.span.AddEvent("confirm", trace.WithAttributes(ConfirmOutcomeKey.String(outcome)))
	if o.Err != nil {
		fail(st.span, o.Err)
	}
	st.span.End()
}

// OnDelivery counts the deliveries handed to the application.
func (h *Hooks) OnDelivery(queue string, d *pika.Delivery) {
	attrs := []attribute.KeyValue{
		semconv.MessagingDestinationName(d.Exchange),
		semconv.MessagingDestinationSubscriptionName(queue),
	}
	attrs = append(attrs, h.serverAttrs(d.Channel().Conn())...)
	op := "receive"
	if d.ConsumerTag == "" {
		op = "get"
	}
	h.consumed.Add(context.Background(), 1, op, messagingconv.SystemRabbitMQ, attrs...)
}

// OnProcess starts the consumer span around a ConsumeFunc handler: see
// StartProcess.
func (h *Hooks) OnProcess(ctx context.Context, queue string, d *pika.Delivery) (context.Context, func(error)) {
	return h.StartProcess(ctx, queue, d)
}

// StartProcess starts a CONSUMER span "process <queue>" for delivery d
// taken from queue, a child of the trace context its headers carry (and
// linked to it), and returns ctx with the span and the function that ends
// it: call it once the processing is over, with its error (nil for
// success). ConsumeFunc handlers get this through OnProcess; call it
// yourself around the processing of deliveries taken with Next, All or
// Get.
func (h *Hooks) StartProcess(ctx context.Context, queue string, d *pika.Delivery) (context.Context, func(error)) {
	producer := trace.SpanContextFromContext(h.prop.Extract(context.Background(), headerCarrier(d.Headers)))
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemRabbitMQ,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName(opProcess),
		semconv.MessagingDestinationName(d.Exchange),
		semconv.MessagingDestinationSubscriptionName(queue),
		semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag)),
		semconv.MessagingMessageBodySize(len(d.Body)),
	}
	if d.RoutingKey != "" {
		attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(d.RoutingKey))
	}
	if d.MessageID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(d.MessageID))
	}
	if d.CorrelationID != "" {
		attrs = append(attrs, semconv.MessagingMessageConversationID(d.CorrelationID))
	}
	server := h.serverAttrs(d.Channel().Conn())
	attrs = append(attrs, server...)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	parent := ctx
	if producer.IsValid() {
		parent = trace.ContextWithRemoteSpanContext(ctx, producer)
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: producer}))
	}
	start := time.Now()
	ctx, span := h.tracer.Start(parent, opProcess+" "+queue, opts...)
	key := settleKey{d.Channel(), d.DeliveryTag}
	tracked := d.Channel() != nil && d.DeliveryTag != 0
	if tracked {
		h.processing.Store(key, span)
	}
	return ctx, func(err error) {
		if tracked {
			h.processing.CompareAndDelete(key, span)
		}
		mattrs := []attribute.KeyValue{
			semconv.MessagingDestinationName(d.Exchange),
			semconv.MessagingDestinationSubscriptionName(queue),
		}
		mattrs = append(mattrs, server...)
		if err != nil {
			mattrs = append(mattrs, semconv.ErrorTypeKey.String(errorType(err)))
			fail(span, err)
		}
		h.procDur.Record(context.Background(), time.Since(start).Seconds(), opProcess, messagingconv.SystemRabbitMQ, mattrs...)
		span.End()
	}
}

// OnSettle records an acknowledgement of a delivery whose processing span
// (StartProcess, OnProcess) is open on that span: a "settle" event with
// messaging.operation.type settle, messaging.operation.name ack, nack or
// reject and pika.settle.requeue. A nack or a reject marks the span
// failed (status Error, error.type "nack" or "reject"): the application
// refused the message. Settlements the library made itself
// (SettleEvent.ByLibrary) and failed ones leave the span alone.
func (h *Hooks) OnSettle(ev pika.SettleEvent) {
	if ev.ByLibrary || ev.Err != nil {
		return
	}
	if !ev.Multiple {
		if v, ok := h.processing.Load(settleKey{ev.Channel, ev.Tag}); ok {
			settleSpan(v.(trace.Span), ev)
		}
		return
	}
	h.processing.Range(func(k, v any) bool {
		if key := k.(settleKey); key.ch == ev.Channel && (ev.Tag == 0 || key.tag <= ev.Tag) {
			settleSpan(v.(trace.Span), ev)
		}
		return true
	})
}

// SettleRequeueKey is the attribute of a settle event saying whether a
// nack or reject asked the broker to requeue the message.
const SettleRequeueKey = attribute.Key("pika.settle.requeue")

func settleSpan(span trace.Span, ev pika.SettleEvent) {
	span.AddEvent("settle", trace.WithAttributes(
		semconv.MessagingOperationTypeSettle,
		semconv.MessagingOperationName(ev.Kind.String()),
		SettleRequeueKey.Bool(ev.Requeue),
	))
	if ev.Kind == pika.SettleNack || ev.Kind == pika.SettleReject {
		span.SetStatus(codes.Error, "message "+ev.Kind.String()+"ed by the handler")
		span.SetAttributes(semconv.ErrorTypeKey.String(ev.Kind.String()))
	}
}

// fail marks span as failed with err.
func fail(span trace.Span, err error) {
	span.SetStatus(codes.Error, err.Error())
	span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
}

// errorType is error.type for err: the outcome for publish outcomes, the
// reply code's name for broker errors, and the Go type otherwise.
func errorType(err error) string {
	var perr *pika.Error
	switch {
	case errors.Is(err, pika.ErrNacked):
		return "nacked"
	case errors.Is(err, pika.ErrReturned):
		return "returned"
	case errors.Is(err, pika.ErrMaybeReturned):
		return "maybe_returned"
	case errors.Is(err, pika.ErrOutcomeUnknown):
		return "outcome_unknown"
	case errors.Is(err, pika.ErrHandlerPanicked):
		return "panic"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &perr):
		return perr.Code.String()
	}
	return "_OTHER"
}

func outcomeName(o pika.Outcome) string {
	switch o {
	case pika.OutcomeAcked:
		return "acked"
	case pika.OutcomeNacked:
		return "nacked"
	case pika.OutcomeReturned:
		return "returned"
	case pika.OutcomeMaybeReturned:
		return "maybe_returned"
	}
	return "unknown"
}

func destination(exchange string) string {
	if exchange == "" {
		return DefaultExchangeName
	}
	return exchange
}

// publishCarrier injects into a message about to be published, through
// Publishing.SetHeader (which leaves the caller's table alone).
type publishCarrier struct{ p *pika.Publishing }

func (c publishCarrier) Get(key string) string { return headerCarrier(c.p.Message.Headers).Get(key) }
func (c publishCarrier) Set(key, value string) { c.p.SetHeader(key, value) }
func (c publishCarrier) Keys() []string        { return headerCarrier(c.p.Message.Headers).Keys() }

// headerCarrier reads a message's headers table.
type headerCarrier pika.Table

func (c headerCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[key] = value }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
