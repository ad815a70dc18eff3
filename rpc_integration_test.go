package pika

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
)

// rpcQueue declares a shared (non-exclusive) request queue, deleted at
// the end of the test.
func rpcQueue(t *testing.T, c *Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	ch := openChannel(t, c)
	q := testenv.Name(t, "rpc")
	if _, err := ch.QueueDeclare(ctx, q, QueueDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), fxWait)
		defer cancel()
		ch, err := c.Channel(ctx)
		if err == nil {
			_, err = ch.QueueDelete(ctx, q, QueueDeleteOptions{})
			ch.Close(ctx)
		}
		if err != nil {
			t.Errorf("deleting %s: %v", q, err)
		}
	})
	ch.Close(ctx)
	return q
}

// rpcServe runs Serve in the background until the test ends (or stop is
// called). done closes when Serve returned, with its result in *result.
func rpcServe(t *testing.T, c *Conn, q string, h RPCHandler, opts ServeOptions) (stop func(), done <-chan struct{}, result *error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	var res error
	go func() {
		res = Serve(ctx, c, q, h, opts)
		close(finished)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			select {
			case <-finished:
				return // ended on its own: the test checks *result
			default:
			}
			cancel()
			select {
			case <-finished:
				if res != nil {
					t.Errorf("Serve stopped by its ctx returned %v; want nil", res)
				}
			case <-time.After(fxWait):
				t.Errorf("Serve did not return %v after its ctx ended", fxWait)
			}
		})
	}
	t.Cleanup(stop)
	return stop, finished, &res
}

// rpcWaitConsumers waits until q has n consumers.
func rpcWaitConsumers(t *testing.T, c *Conn, q string, n int) {
	t.Helper()
	ch := openChannel(t, c)
	defer ch.Close(context.Background())
	deadline := time.Now().Add(fxWait)
	for {
		st, err := ch.QueueDeclarePassive(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if st.Consumers == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d consumers after %v, want %d", q, st.Consumers, fxWait, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newRPCClientT(t *testing.T, c *Conn) *RPCClient {
	t.Helper()
	cl, err := NewRPCClient(context.Background(), c, RPCClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	return cl
}

// echoUpper replies with the request's body in upper case.
func echoUpper(_ context.Context, d *Delivery) (Message, error) {
	return Message{Body: []byte(strings.ToUpper(string(d.Body)))}, nil
}

// TestRPCConcurrentCalls makes 10,000 concurrent calls on one client (one
// channel) to two servers; every call gets its own reply.
func TestRPCConcurrentCalls(t *testing.T) {
	url := testenv.Broker(t)
	sc := fxDial(t, fxConfig(t, url, ""))
	cc := fxDial(t, fxConfig(t, url, ""))
	q := rpcQueue(t, sc)
	_, _, _ = rpcServe(t, sc, q, echoUpper, ServeOptions{Concurrency: 8})
	_, _, _ = rpcServe(t, sc, q, echoUpper, ServeOptions{Concurrency: 8})
	cl := newRPCClientT(t, cc)

	const n = 10000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var bad atomic.Int64
	errs := make(chan error, 10)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := "call-" + strconv.Itoa(i)
			d, err := cl.Call(ctx, "", q, Message{Body: []byte(req)})
			if err == nil && string(d.Body) != strings.ToUpper(req) {
				err = fmt.Errorf("call %q got reply %q", req, d.Body)
			}
			if err != nil {
				if bad.Add(1) <= 10 {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := cl.Stats()
	if bad.Load() != 0 || st.Calls != n || st.Replies != n || st.Pending != 0 || st.Late != 0 {
		t.Fatalf("%d calls failed; stats %+v; want %d calls and replies, none late or pending", bad.Load(), st, n)
	}
}

// TestRPCErrors covers the ways a call fails without a reply: a handler
// error, an unroutable request, an exchange that does not exist (the
// client then opens a new channel), a server that never answers, and a
// closed client.
func TestRPCErrors(t *testing.T) {
	url := testenv.Broker(t)
	sc := fxDial(t, fxConfig(t, url, ""))
	cc := fxDial(t, fxConfig(t, url, ""))
	q := rpcQueue(t, sc)
	_, _, _ = rpcServe(t, sc, q, func(_ context.Context, d *Delivery) (Message, error) {
		if string(d.Body) == "fail" {
			return Message{}, errors.New("cannot do that")
		}
		return Message{Body: d.Body}, nil
	}, ServeOptions{})
	silent := rpcQueue(t, sc) // nobody consumes it
	cl := newRPCClientT(t, cc)
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()

	_, err := cl.Call(ctx, "", q, Message{Body: []byte("fail")})
	var re *RPCError
	if !errors.As(err, &re) || re.Text != "cannot do that" || re.Reply == nil {
		t.Errorf("handler error: Call = %v; want *RPCError \"cannot do that\"", err)
	}

	_, err = cl.Call(ctx, "", testenv.Name(t, "nosuchqueue"), Message{Body: []byte("x")})
	if !errors.Is(err, ErrReturned) {
		t.Errorf("unroutable request: Call = %v; want ErrReturned", err)
	}

	_, err = cl.Call(ctx, testenv.Name(t, "nosuchexchange"), "k", Message{Body: []byte("x")})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("missing exchange: Call = %v; want 404 NOT_FOUND", err)
	}
	if d, err := cl.Call(ctx, "", q, Message{Body: []byte("again")}); err != nil || string(d.Body) != "again" {
		t.Errorf("call after the channel was closed by the broker: %v, %v; want a reply on a new channel", d, err)
	}

	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = cl.Call(sctx, "", silent, Message{Body: []byte("anyone?")})
	scancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("server that never answers: Call = %v; want context.DeadlineExceeded", err)
	}

	st := cl.Stats()
	if st.Calls != 5 || st.Replies != 1 || st.Returned != 1 || st.Cancelled != 1 || st.Failed != 2 || st.Pending != 0 {
		t.Errorf("stats %+v; want 5 calls: 1 reply, 1 returned, 1 cancelled, 2 failed", st)
	}
	if err := cl.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := cl.Call(ctx, "", q, Message{}); !errors.Is(err, ErrRPCClientClosed) {
		t.Errorf("Call after Close = %v; want ErrRPCClientClosed", err)
	}
}

// TestRPCCallerTimeoutLateReply: the caller's ctx ends before the server
// answers; the late reply is dropped and counted, and the next call gets
// its own reply, not the late one.
func TestRPCCallerTimeoutLateReply(t *testing.T) {
	url := testenv.Broker(t)
	sc := fxDial(t, fxConfig(t, url, ""))
	cc := fxDial(t, fxConfig(t, url, ""))
	q := rpcQueue(t, sc)
	release := make(chan struct{})
	_, _, _ = rpcServe(t, sc, q, func(ctx context.Context, d *Delivery) (Message, error) {
		if string(d.Body) == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return Message{Body: d.Body}, nil
	}, ServeOptions{Concurrency: 2})
	cl := newRPCClientT(t, cc)

	tctx, tcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := cl.Call(tctx, "", q, Message{Body: []byte("slow")})
	tcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v; want context.DeadlineExceeded", err)
	}
	close(release)
	deadline := time.Now().Add(fxWait)
	for cl.Stats().Late != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("late reply not counted: %+v", cl.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	d, err := cl.Call(ctx, "", q, Message{Body: []byte("fast")})
	if err != nil || string(d.Body) != "fast" {
		t.Fatalf("next call: %v, %v", d, err)
	}
	if st := cl.Stats(); st.Cancelled != 1 || st.Replies != 1 || st.Late != 1 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRPCServerKilledMidCall: the server handling a call loses its
// connection before replying; the broker redelivers the request to
// another server, whose reply reaches the caller.
func TestRPCServerKilledMidCall(t *testing.T) {
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	p.Record(false)
	doomed := fxDial(t, fxConfig(t, url, p.Addr())) // recovery off: the cut kills it
	sc := fxDial(t, fxConfig(t, url, ""))
	cc := fxDial(t, fxConfig(t, url, ""))
	q := rpcQueue(t, sc)

	got := make(chan struct{})
	_, doomedDone, doomedErr := rpcServe(t, doomed, q, func(ctx context.Context, d *Delivery) (Message, error) {
		close(got)
		<-ctx.Done() // never answers
		return Message{}, ctx.Err()
	}, ServeOptions{})
	rpcWaitConsumers(t, sc, q, 1)

	cl := newRPCClientT(t, cc)
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	type result struct {
		d   *Delivery
		err error
	}
	res := make(chan result, 1)
	go func() {
		d, err := cl.Call(ctx, "", q, Message{Body: []byte("work")})
		res <- result{d, err}
	}()
	select {
	case <-got:
	case <-time.After(fxWait):
		t.Fatal("the first server never got the request")
	}
	var redelivered atomic.Bool
	_, _, _ = rpcServe(t, sc, q, func(_ context.Context, d *Delivery) (Message, error) {
		redelivered.Store(d.Redelivered)
		return Message{Body: []byte("done by the survivor")}, nil
	}, ServeOptions{})
	p.Cut()
	select {
	case <-doomedDone:
		if *doomedErr == nil {
			t.Error("Serve on the killed connection returned nil; want the connection's error")
		}
	case <-time.After(fxWait):
		t.Fatal("Serve on the killed connection did not return")
	}
	r := <-res
	if r.err != nil || string(r.d.Body) != "done by the survivor" {
		t.Fatalf("Call = %v, %v; want the survivor's reply", r.d, r.err)
	}
	if !redelivered.Load() {
		t.Error("the survivor's request was not marked redelivered")
	}
}

// TestRPCConnectionCut cuts the client's connection with calls in flight:
// they fail at once with ErrRPCInterrupted (their replies can never come),
// the connection recovers with the reply consumer, and new calls work.
func TestRPCConnectionCut(t *testing.T) {
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	p.Record(false)
	cfg := fxConfig(t, url, p.Addr())
	cfg.DisableRecovery = false
	cfg.Reconnect = Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	cc := fxDial(t, cfg)
	sc := fxDial(t, fxConfig(t, url, ""))
	q := rpcQueue(t, sc)

	const inFlight = 50
	var arrived atomic.Int64
	allArrived := make(chan struct{})
	release := make(chan struct{})
	_, _, _ = rpcServe(t, sc, q, func(ctx context.Context, d *Delivery) (Message, error) {
		if string(d.Body) == "hold" {
			if arrived.Add(1) == inFlight {
				close(allArrived)
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return Message{Body: d.Body}, nil
	}, ServeOptions{Concurrency: inFlight})
	cl := newRPCClientT(t, cc)

	// Calls whose ctx would outlast the test: only the loss can end them.
	ctx, cancel := context.WithTimeout(context.Background(), 10*fxWait)
	defer cancel()
	errs := make(chan error, inFlight)
	for range inFlight {
		go func() {
			_, err := cl.Call(ctx, "", q, Message{Body: []byte("hold")})
			errs <- err
		}()
	}
	select {
	case <-allArrived:
	case <-time.After(fxWait):
		t.Fatalf("only %d of %d requests reached the server", arrived.Load(), inFlight)
	}
	p.Cut()
	for range inFlight {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrRPCInterrupted) {
				t.Errorf("call in flight at the cut: %v; want ErrRPCInterrupted", err)
			}
		case <-time.After(fxWait):
			t.Fatalf("a call in flight at the cut still waits after %v", fxWait)
		}
	}
	close(release) // the server now answers to the lost connection

	// After recovery the reply consumer is back: calls work again.
	cctx, ccancel := context.WithTimeout(context.Background(), fxWait)
	defer ccancel()
	d, err := cl.Call(cctx, "", q, Message{Body: []byte("after")})
	if err != nil || string(d.Body) != "after" {
		t.Fatalf("call after recovery: %v, %v", d, err)
	}
	if st := cl.Stats(); st.Interrupted != inFlight || st.Replies != 1 || st.Pending != 0 {
		t.Errorf("stats %+v; want %d interrupted, 1 reply", st, inFlight)
	}
}
