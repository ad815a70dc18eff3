package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/internal/obsmetrics"
)

// serveMetrics serves the Prometheus metrics of the connections dialled
// with e from now on (pika perf --metrics ADDR) at http://ADDR/metrics,
// and returns the function that stops the server.
//
// The metrics are those of the prompika plugin (plugins/prompika), made
// by the same code (internal/obsmetrics): the plugin is a module of its
// own because it needs client_golang, and this command belongs to the
// core module, which uses the standard library only, so it writes the
// text exposition format itself.
func serveMetrics(e *env, addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &usageError{msg: "--metrics: " + err.Error()}
	}
	m := obsmetrics.New(obsmetrics.Options{})
	e.hooks = append(e.hooks, pika.Hook(m))
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		obsmetrics.WriteText(w, m.Families())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(e.stderr, "pika perf: metrics server: %v\n", err)
		}
	}()
	fmt.Fprintf(e.stderr, "metrics at http://%s/metrics\n", ln.Addr())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}
