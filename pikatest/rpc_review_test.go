package pikatest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/pikatest"
)

// TestRPCThroughLosses runs RPCClient and Serve against pikatest while the
// broker cuts every connection: every call ends (a reply, or
// ErrRPCInterrupted), none stays pending, and calls succeed afterwards.
func TestRPCThroughLosses(t *testing.T) {
	b := pikatest.NewBroker(t)
	ctx := testCtx(t)
	sconn, sch := dial(t, b)
	if _, err := sch.QueueDeclare(ctx, "rpc", pika.QueueDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- pika.Serve(sctx, sconn, "rpc", func(_ context.Context, d *pika.Delivery) (pika.Message, error) {
			return pika.Message{Body: d.Body}, nil
		}, pika.ServeOptions{Concurrency: 4})
	}()
	// Serve returns the error of a connection loss during its own setup
	// (see its doc): cut only once its consumer runs.
	if q, err := b.WaitQueue(ctx, "rpc", func(q pikatest.QueueInfo) bool { return q.Consumers == 1 }); err != nil {
		t.Fatalf("Serve's consumer did not start: %v (%+v)", err, q)
	}
	cconn, _ := dial(t, b)
	cl, err := pika.NewRPCClient(ctx, cconn, pika.RPCClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				body := fmt.Sprint(round, "-", i)
				r, err := cl.Call(cctx, "", "rpc", pika.Message{Body: []byte(body)})
				if err != nil {
					if !errors.Is(err, pika.ErrRPCInterrupted) {
						t.Errorf("call %s: %v", body, err)
					}
					return
				}
				if string(r.Body) != body {
					t.Errorf("call %s: reply %q", body, r.Body)
				}
			}()
		}
		time.Sleep(time.Millisecond)
		b.CutConnections()
		wg.Wait()
	}
	if st := cl.Stats(); st.Pending != 0 {
		t.Fatalf("pending calls left: %+v", st)
	}
	// After the losses, calls work.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		r, err := cl.Call(cctx, "", "rpc", pika.Message{Body: []byte("after")})
		cancel()
		if err == nil && string(r.Body) == "after" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call succeeds after the losses: %v", err)
		}
	}
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop")
	}
	if err := cl.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_ = pikatest.Message{}
}
