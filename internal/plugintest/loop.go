package plugintest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/loop"
)

// LoopRun is what RunLoop hands to the workload it runs on the loop.
type LoopRun struct {
	Loop *loop.Loop
	Cfg  pika.Config // url's, with the hooks
	Stop func()      // ends the run
}

// Fail reports err, when not nil, as a test error naming what, stops the
// run, and says whether err was set.
func (r *LoopRun) Fail(t testing.TB, what string, err error) bool {
	if err != nil {
		t.Errorf("%s: %v", what, err)
		r.Stop()
	}
	return err != nil
}

// RunLoop runs start on a new loop.Loop, with a Config for url whose hooks
// are hooks, until it calls Stop; a run that takes 30 s fails the test.
func RunLoop(t testing.TB, url string, hooks []pika.Hook, start func(r *LoopRun)) {
	t.Helper()
	cfg, err := pika.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Hooks = hooks
	l, err := loop.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	r := &LoopRun{Loop: l, Cfg: cfg, Stop: stop}
	l.Post(func() { start(r) })
	l.Run(ctx)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the workload on the loop did not finish")
	}
}
