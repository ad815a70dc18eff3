package otelpika_test

import (
	"context"
	"log"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/plugins/otelpika"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Trace publishes and consumers: the producer span's context travels in
// the message headers, and the handler's ctx carries the consumer span.
// (Not run: it needs a broker.)
func Example() {
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider() // add an exporter in a real program
	defer tp.Shutdown(ctx)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})

	hooks, err := otelpika.New() // the global providers and propagator
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := pika.ParseURL("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	cfg.Hooks = []pika.Hook{hooks}
	conn, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	// A "process tasks" span per delivery, child of the publisher's span.
	_, err = ch.ConsumeFunc(ctx, "tasks", pika.ConsumeOptions{}, func(ctx context.Context, d *pika.Delivery) {
		// ctx carries the span: pass it on to what the handler calls.
		d.Ack(false)
	})
	if err != nil {
		log.Fatal(err)
	}

	// A "publish amq.default" span, child of whatever span ctx holds.
	if err := ch.Publish(ctx, "", "tasks", pika.Message{Body: []byte("hello")}); err != nil {
		log.Fatal(err)
	}
}

// Pull consumers start the consumer span themselves around the processing.
func ExampleHooks_StartProcess() {
	ctx := context.Background()
	hooks, err := otelpika.New()
	if err != nil {
		log.Fatal(err)
	}
	var cons *pika.Consumer // from Channel.Consume on a connection with hooks
	for d := range cons.All(ctx) {
		pctx, end := hooks.StartProcess(ctx, "tasks", d)
		err := handle(pctx, d)
		end(err)
	}
}

func handle(ctx context.Context, d *pika.Delivery) error { return d.Ack(false) }
