package otelpika

import (
	"errors"
	"testing"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/plugintest"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/loop"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Connections of package loop are traced like pika.Conns (they call the
// same hooks): a message published with confirms on one loop connection
// and consumed on another gets a producer span, ended with the broker's
// ack, and a consumer span that is its child, whose context the handler
// finds in Delivery.Context; an unroutable mandatory message's producer
// span is an error span.
func TestTraceLoopPublishConsume(t *testing.T) {
	t.Parallel()
	url := testenv.Broker(t)
	f := newFixture(t)
	q := testenv.Name(t, "otel-loop")
	var inHandler trace.SpanContext
	plugintest.RunLoop(t, url, []pika.Hook{f.hooks}, func(r *plugintest.LoopRun) {
		fail := func(what string, err error) bool { return r.Fail(t, what, err) }
		l, cfg := r.Loop, r.Cfg
		open := 2
		closed := func(what string, err error) {
			if !fail(what, err) {
				if open--; open == 0 {
					r.Stop()
				}
			}
		}
		l.DialConfig(cfg, func(sub *loop.Conn, err error) {
			if fail("dial", err) {
				return
			}
			sub.Channel(func(sch *loop.Channel, err error) {
				if fail("channel", err) {
					return
				}
				sch.QueueDeclare(q, pika.QueueDeclareOptions{AutoDelete: true}, func(_ pika.Queue, err error) { fail("declare", err) })
				sch.Consume(q, loop.ConsumeOptions{}, func(d *loop.Delivery) {
					inHandler = trace.SpanContextFromContext(d.Context())
					fail("ack", d.Ack(false))
					sub.Close(func(err error) { closed("close", err) })
				}, func(_ *loop.Consumer, err error) {
					if fail("consume", err) {
						return
					}
					l.DialConfig(cfg, func(pub *loop.Conn, err error) {
						if fail("dial 2", err) {
							return
						}
						pub.Channel(func(pch *loop.Channel, err error) {
							if fail("channel 2", err) {
								return
							}
							pch.ConfirmSelect(func(err error) { fail("confirm.select", err) })
							pch.PublishConfirm("", q+".nowhere", pika.Message{Body: []byte("lost"), Mandatory: true}, func(err error) {
								if !errors.Is(err, pika.ErrReturned) {
									t.Errorf("unroutable: %v, want ErrReturned", err)
								}
							})
							pch.PublishConfirm("", q, pika.Message{Body: []byte("hello")}, func(err error) {
								fail("publish", err)
								pub.Close(func(err error) { closed("close 2", err) })
							})
						})
					})
				})
			})
		})
	})
	prods := f.waitSpans(t, "publish amq.default", 2)
	proc := f.waitSpans(t, "process "+q, 1)[0]
	var prod, lost = prods[0], prods[1]
	if attrs(prod)["messaging.rabbitmq.destination.routing_key"].AsString() != q {
		prod, lost = lost, prod
	}
	if proc.Parent().SpanID() != prod.SpanContext().SpanID() || proc.SpanContext().TraceID() != prod.SpanContext().TraceID() {
		t.Errorf("consumer span's parent %v, want the producer span %v", proc.Parent(), prod.SpanContext())
	}
	if inHandler.SpanID() != proc.SpanContext().SpanID() {
		t.Errorf("Delivery.Context carries span %s, want the consumer span %s", inHandler.SpanID(), proc.SpanContext().SpanID())
	}
	if prod.Status().Code == codes.Error || lost.Status().Code != codes.Error {
		t.Errorf("producer statuses: routed %v, returned %v", prod.Status(), lost.Status())
	}
	checkAttrs(t, proc, map[string]any{
		"messaging.system":                        "rabbitmq",
		"messaging.destination.subscription.name": q,
		"messaging.rabbitmq.message.delivery_tag": int64(1),
		"server.address":                          "127.0.0.1",
		"server.port":                             int64(5672),
	})
}
