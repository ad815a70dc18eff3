package pika

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// fakeRPC plays a broker for an RPCClient: it records the reply consumer
// and hands every basic.publish (numbered from 1 across connections) to
// the test.
type fakeRPC struct {
	mu       sync.Mutex
	fc       *fakeConn // connection of the reply consumer
	ch       uint16    // its channel
	tag      string    // its tag
	consumes int
	n        int
	tags     uint64
	publish  chan int // receives the number of each publish
}

func newFakeRPC(t *testing.T, recovery bool) (*fakeRPC, *RPCClient, *fakeBroker) {
	t.Helper()
	f := &fakeRPC{publish: make(chan int, 100)}
	b := newFakeBroker(t)
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		switch m := m.(type) {
		case *wire.BasicConsume:
			if m.Queue == directReplyTo {
				f.mu.Lock()
				f.fc, f.ch, f.tag = fc, ch, m.ConsumerTag
				f.consumes++
				f.mu.Unlock()
			}
		case *wire.BasicPublish:
			f.mu.Lock()
			f.n++
			n := f.n
			f.mu.Unlock()
			f.publish <- n
		}
		return false
	})
	cfg := b.config()
	cfg.DisableRecovery = !recovery
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	cl, err := NewRPCClient(ctx, c, RPCClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	cl.prefix = "t-" // correlation ids t-1, t-2, ... (base 36)
	return f, cl, b
}

// reply delivers a reply with correlation id to the reply consumer.
func (f *fakeRPC) reply(id string, headers Table, body string) {
	f.mu.Lock()
	fc, ch, tag := f.fc, f.ch, f.tag
	f.tags++
	dt := f.tags
	f.mu.Unlock()
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.nc.Write(scripted.Message(ch, &wire.BasicDeliver{ConsumerTag: tag, DeliveryTag: dt, RoutingKey: "amq.rabbitmq.reply-to.x"},
		&wire.Properties{CorrelationID: id, Headers: headers}, []byte(body), 128<<10))
}

// send writes m on the reply consumer's channel.
func (f *fakeRPC) send(m wire.Method, p *wire.Properties) {
	f.mu.Lock()
	fc, ch := f.fc, f.ch
	f.mu.Unlock()
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	if p == nil {
		fc.nc.Write(scripted.Method(ch, m))
		return
	}
	fc.nc.Write(scripted.Message(ch, m, p, nil, 128<<10))
}

// waitPublish waits for publish number n.
func (f *fakeRPC) waitPublish(t *testing.T, n int) {
	t.Helper()
	select {
	case got := <-f.publish:
		if got != n {
			t.Fatalf("publish %d, want %d", got, n)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("publish %d never came", n)
	}
}

type rpcResult struct {
	d   *Delivery
	err error
}

func goCall(ctx context.Context, cl *RPCClient, body string) <-chan rpcResult {
	res := make(chan rpcResult, 1)
	go func() {
		d, err := cl.Call(ctx, "", "q", Message{Body: []byte(body)})
		res <- rpcResult{d, err}
	}()
	return res
}

func waitResult(t *testing.T, res <-chan rpcResult) rpcResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the call still waits")
		return rpcResult{}
	}
}

// TestRPCRepliesOutOfOrder: replies come in another order than the
// requests, with an unknown correlation id between them; each call gets
// its own, and the unknown one is counted late.
func TestRPCRepliesOutOfOrder(t *testing.T) {
	f, cl, _ := newFakeRPC(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first := goCall(ctx, cl, "a")
	f.waitPublish(t, 1)
	second := goCall(ctx, cl, "b")
	f.waitPublish(t, 2)
	f.reply("t-2", nil, "B")
	f.reply("someone-else", nil, "?")
	f.reply("t-1", nil, "A")
	if r := waitResult(t, first); r.err != nil || string(r.d.Body) != "A" || r.d.CorrelationID != "t-1" {
		t.Errorf("first call: %+v", r)
	}
	if r := waitResult(t, second); r.err != nil || string(r.d.Body) != "B" {
		t.Errorf("second call: %+v", r)
	}
	if st := cl.Stats(); st.Calls != 2 || st.Replies != 2 || st.Late != 1 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRPCLossInterruptsCalls: the connection is lost with a call waiting;
// it fails at once with ErrRPCInterrupted although its ctx has no
// deadline. A reply with its id arriving after the recovery is late, and a
// new call on the recovered connection works.
func TestRPCLossInterruptsCalls(t *testing.T) {
	f, cl, b := newFakeRPC(t, true)
	waiting := goCall(context.Background(), cl, "a")
	f.waitPublish(t, 1)
	b.conn(1).kill()
	if r := waitResult(t, waiting); !errors.Is(r.err, ErrRPCInterrupted) {
		t.Fatalf("call waiting at the loss: %v; want ErrRPCInterrupted", r.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	next := goCall(ctx, cl, "b") // waits for the recovery, then publishes
	f.waitPublish(t, 2)
	f.mu.Lock()
	consumes := f.consumes
	f.mu.Unlock()
	if consumes != 2 {
		t.Fatalf("reply consumer started %d times, want 2 (restored by the recovery)", consumes)
	}
	f.reply("t-1", nil, "A, too late")
	f.reply("t-2", nil, "B")
	if r := waitResult(t, next); r.err != nil || string(r.d.Body) != "B" {
		t.Fatalf("call after the recovery: %+v", r)
	}
	if st := cl.Stats(); st.Interrupted != 1 || st.Late != 1 || st.Replies != 1 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRPCLossWithoutRecovery: without recovery the waiting call fails with
// the connection's error and later calls fail too.
func TestRPCLossWithoutRecovery(t *testing.T) {
	f, cl, b := newFakeRPC(t, false)
	waiting := goCall(context.Background(), cl, "a")
	f.waitPublish(t, 1)
	b.conn(1).kill()
	r := waitResult(t, waiting)
	if r.err == nil || errors.Is(r.err, ErrRPCInterrupted) {
		t.Fatalf("call waiting at the loss: %v; want the connection's error", r.err)
	}
	if _, err := cl.Call(context.Background(), "", "q", Message{}); err == nil {
		t.Fatal("Call on a closed connection succeeded")
	}
}

// TestRPCReturnedAndRemoteError: a returned request and an error reply end
// their calls with ErrReturned and *RPCError.
func TestRPCReturnedAndRemoteError(t *testing.T) {
	f, cl, _ := newFakeRPC(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ret := goCall(ctx, cl, "a")
	f.waitPublish(t, 1)
	f.send(&wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "q"}, &wire.Properties{CorrelationID: "t-1"})
	if r := waitResult(t, ret); !errors.Is(r.err, ErrReturned) {
		t.Errorf("returned request: %v; want ErrReturned", r.err)
	}
	remote := goCall(ctx, cl, "b")
	f.waitPublish(t, 2)
	f.reply("t-2", Table{RPCErrorHeader: "division by zero"}, "")
	var re *RPCError
	if r := waitResult(t, remote); !errors.As(r.err, &re) || re.Text != "division by zero" {
		t.Errorf("error reply: %v; want *RPCError", r.err)
	}
	if st := cl.Stats(); st.Returned != 1 || st.Failed != 1 || st.Replies != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRPCReplyConsumerCancelled: the broker cancels the reply consumer;
// the waiting call fails with that, and the next call opens a new channel
// with a new reply consumer.
func TestRPCReplyConsumerCancelled(t *testing.T) {
	f, cl, _ := newFakeRPC(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waiting := goCall(ctx, cl, "a")
	f.waitPublish(t, 1)
	f.mu.Lock()
	tag := f.tag
	f.mu.Unlock()
	f.send(&wire.BasicCancel{ConsumerTag: tag, NoWait: true}, nil)
	if r := waitResult(t, waiting); !errors.Is(r.err, ErrConsumerCancelled) {
		t.Fatalf("call waiting when the consumer was cancelled: %v; want ErrConsumerCancelled", r.err)
	}
	next := goCall(ctx, cl, "b")
	f.waitPublish(t, 2)
	f.reply("t-2", nil, "B")
	if r := waitResult(t, next); r.err != nil || string(r.d.Body) != "B" {
		t.Fatalf("call on the new channel: %+v", r)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.consumes != 2 {
		t.Errorf("reply consumer started %d times, want 2", f.consumes)
	}
}

// rpcSessionEnded returns a client whose first session the broker ended
// (it cancelled the reply consumer), on a fake broker that never answers
// the next basic.consume of amq.rabbitmq.reply-to; secondConsume is closed
// when that consume arrives.
func rpcSessionEnded(t *testing.T) (cl *RPCClient, secondConsume chan struct{}) {
	t.Helper()
	b := newFakeBroker(t)
	var mu sync.Mutex
	var fc *fakeConn
	var rch uint16
	var rtag string
	consumes := 0
	secondConsume = make(chan struct{})
	b.setHook(func(c *fakeConn, ch uint16, m wire.Method) bool {
		if m, ok := m.(*wire.BasicConsume); ok && m.Queue == directReplyTo {
			mu.Lock()
			defer mu.Unlock()
			consumes++
			if consumes == 2 {
				close(secondConsume)
				return true // never answered
			}
			fc, rch, rtag = c, ch, m.ConsumerTag
		}
		return false
	})
	cfg := b.config()
	cfg.DisableRecovery = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dialFake(t, cfg)
	cl, err := NewRPCClient(ctx, c, RPCClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	mu.Lock()
	fc.send(rch, &wire.BasicCancel{ConsumerTag: rtag, NoWait: true})
	mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		cl.mu.Lock()
		ended := cl.sess.ended
		cl.mu.Unlock()
		if ended {
			return cl, secondConsume
		}
		if time.Now().After(deadline) {
			t.Fatal("the session did not end after the broker's cancel")
		}
	}
}

// TestRPCCallWaitsNoLongerThanItsCtxForASession: while one call opens a
// new session (the broker is slow to answer its basic.consume), another
// call whose ctx ends meanwhile returns then, instead of waiting for the
// first call's session opening to end.
func TestRPCCallWaitsNoLongerThanItsCtxForASession(t *testing.T) {
	cl, secondConsume := rpcSessionEnded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Call A opens the next session; its consume is never answered.
	actx, acancel := context.WithTimeout(ctx, 3*time.Second)
	defer acancel()
	goCall(actx, cl, "a")
	select {
	case <-secondConsume:
	case <-time.After(5 * time.Second):
		t.Fatal("no second reply consumer")
	}
	// Call B, with a short ctx, must not wait for A.
	bctx, bcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer bcancel()
	start := time.Now()
	_, err := cl.Call(bctx, "", "q", Message{Body: []byte("b")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call B: %v, want its ctx's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("call B returned %v after its 100ms ctx ended (it waited for call A)", d)
	}
}

// TestRPCCallEndsWithItsCtxWhenTheConsumeHangs: a call opening a session
// whose basic.consume the broker never answers returns when its ctx ends;
// the channel it opened is given up without holding the call.
func TestRPCCallEndsWithItsCtxWhenTheConsumeHangs(t *testing.T) {
	cl, _ := rpcSessionEnded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	select {
	case r := <-goCall(ctx, cl, "a"):
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("call: %v, want its ctx's deadline", r.err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the call still waits, long after its 200ms ctx ended")
	}
}
