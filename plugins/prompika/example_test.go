package prompika_test

import (
	"context"
	"log"
	"net/http"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/plugins/prompika"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Count a connection's messages and serve them to Prometheus at
// :9419/metrics. (Not run: it needs a broker.)
func Example() {
	metrics := prompika.New(prompika.Options{})
	prometheus.MustRegister(metrics)
	go func() {
		log.Fatal(http.ListenAndServe(":9419", promhttp.Handler()))
	}()

	ctx := context.Background()
	cfg, err := pika.ParseURL("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	cfg.Hooks = []pika.Hook{metrics} // the same Collector may serve many connections
	conn, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.ConfirmSelect(ctx); err != nil {
		log.Fatal(err)
	}
	// Counted in pika_messages_published_total, and its outcome in
	// pika_publish_outcomes_total and pika_confirm_latency_seconds.
	if err := ch.Publish(ctx, "", "tasks", pika.Message{Body: []byte("hello")}); err != nil {
		log.Fatal(err)
	}
}
