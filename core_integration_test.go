package pika

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// dialTest connects to the test broker and closes the connection at the end
// of the test.
func dialTest(t testing.TB, url string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, url)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func openChannel(t testing.TB, c *Conn) *Channel {
	t.Helper()
	ch, err := c.Channel(context.Background())
	if err != nil {
		t.Fatalf("Channel: %v", err)
	}
	return ch
}

// tempQueue declares a server-named exclusive queue, gone with the
// connection.
func tempQueue(t testing.TB, ch *Channel) string {
	t.Helper()
	ev, err := ch.call(context.Background(), &wire.QueueDeclare{Exclusive: true, AutoDelete: true})
	if err != nil {
		t.Fatalf("queue.declare: %v", err)
	}
	return ev.Method.(*wire.QueueDeclareOk).Queue
}

// namedTempQueue declares an exclusive queue with a client-chosen name, so
// that it can be declared again.
func namedTempQueue(t testing.TB, ch *Channel) string {
	t.Helper()
	name := testenv.Name(t, "q")
	if _, err := ch.call(context.Background(), &wire.QueueDeclare{Queue: name, Exclusive: true, AutoDelete: true}); err != nil {
		t.Fatalf("queue.declare: %v", err)
	}
	return name
}

func TestCorePublishConsumeRoundTrip(t *testing.T) {
	url := testenv.Broker(t)
	c := dialTest(t, url)
	ch := openChannel(t, c)
	q := tempQueue(t, ch)
	ctx := context.Background()

	props := Properties{
		ContentType: "text/plain", ContentEncoding: "utf-8", Headers: Table{"k": "v", "n": int64(7)},
		DeliveryMode: Persistent, Priority: 3, CorrelationID: "corr", ReplyTo: "reply",
		Expiration: "60000", MessageID: "id-1", Timestamp: time.Unix(1700000000, 0).UTC(),
		Type: "kind", UserID: "guest", AppID: "pika-test",
	}
	body := bytes.Repeat([]byte("x"), 300000) // spans several frames
	if err := ch.Publish(ctx, "", q, Message{Properties: props, Body: body}); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := cons.Next(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Body, body) {
		t.Fatalf("body: got %d bytes, want %d", len(d.Body), len(body))
	}
	got := d.Properties
	got.Flags = 0
	if fmt.Sprint(got) != fmt.Sprint(props) {
		t.Fatalf("properties:\n got %+v\nwant %+v", got, props)
	}
	if d.ConsumerTag != cons.Tag() || d.RoutingKey != q || d.DeliveryTag != 1 {
		t.Fatalf("delivery fields: %+v", d)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := cons.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Next(ctx); !errors.Is(err, ErrConsumerClosed) {
		t.Fatalf("Next after Cancel: %v", err)
	}
}

func TestCoreGetEmptyAndAckErrors(t *testing.T) {
	c := dialTest(t, testenv.Broker(t))
	ch := openChannel(t, c)
	q := tempQueue(t, ch)
	ctx := context.Background()
	if _, ok, err := ch.Get(ctx, q, false); err != nil || ok {
		t.Fatalf("Get on empty queue: ok=%v err=%v", ok, err)
	}
	if err := ch.Ack(42, false); !errors.Is(err, ErrUnknownTag) {
		t.Fatalf("Ack of an undelivered tag: %v", err)
	}
	ch.Publish(ctx, "", q, Message{Body: []byte("one")})
	d, ok, err := ch.Get(ctx, q, false)
	if err != nil || !ok || string(d.Body) != "one" || d.MessageCount != 0 {
		t.Fatalf("Get: %+v ok=%v err=%v", d, ok, err)
	}
	if err := d.Reject(true); err != nil {
		t.Fatal(err)
	}
	d, ok, err = ch.Get(ctx, q, true)
	if err != nil || !ok || !d.Redelivered {
		t.Fatalf("Get after requeue: %+v ok=%v err=%v", d, ok, err)
	}
}

func TestCoreConfirmsAndReturns(t *testing.T) {
	c := dialTest(t, testenv.Broker(t))
	ch := openChannel(t, c)
	q := tempQueue(t, ch)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := ch.PublishWithConfirm(ctx, "", q, Message{}); !errors.Is(err, ErrNotConfirmMode) {
		t.Fatalf("PublishWithConfirm before ConfirmSelect: %v", err)
	}
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	var returns []*Return
	var mu sync.Mutex
	ch.OnReturn(func(r *Return) { mu.Lock(); returns = append(returns, r); mu.Unlock() })

	var confs []*Confirmation
	for i := 0; i < 500; i++ {
		f, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: []byte(strconv.Itoa(i))})
		if err != nil {
			t.Fatal(err)
		}
		if f.Tag != uint64(i+1) {
			t.Fatalf("tag %d, want %d", f.Tag, i+1)
		}
		confs = append(confs, f)
	}
	for _, f := range confs {
		if err := f.Wait(ctx); err != nil {
			t.Fatalf("confirmation %d: %v", f.Tag, err)
		}
	}
	// Unroutable mandatory message: returned, then acked.
	f, err := ch.PublishWithConfirm(ctx, "", "no-such-queue-"+q, Message{Body: []byte("lost"), Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	err = f.Wait(ctx)
	var re *ReturnedError
	if !errors.Is(err, ErrReturned) || !errors.As(err, &re) || string(re.Return.Body) != "lost" || re.Return.ReplyCode != wire.ReplyNoRoute {
		t.Fatalf("mandatory unroutable: %v", err)
	}
	for i := 0; i < 100; i++ {
		ch.Publish(ctx, "", q, Message{Body: []byte("more")})
	}
	// The batch since ConfirmSelect holds the returned message: WaitConfirms
	// says so.
	err = ch.WaitConfirms(ctx)
	var ce *ConfirmsError
	if !errors.Is(err, ErrReturned) || errors.Is(err, ErrNacked) || errors.Is(err, ErrOutcomeUnknown) ||
		!errors.As(err, &ce) || ce.Returned != 1 || ce.Nacked+ce.Unknown+ce.MaybeReturned != 0 {
		t.Fatalf("WaitConfirms over a batch with one returned message: %v", err)
	}
	// The next batch is all acked.
	for i := 0; i < 100; i++ {
		ch.Publish(ctx, "", q, Message{Body: []byte("more")})
	}
	if err := ch.WaitConfirms(ctx); err != nil {
		t.Fatalf("WaitConfirms over an acked batch: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(returns)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("OnReturn saw %d returns, want 1", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCoreChannelErrorLeavesConnection(t *testing.T) {
	c := dialTest(t, testenv.Broker(t))
	ch := openChannel(t, c)
	other := openChannel(t, c)
	ctx := context.Background()
	_, err := ch.call(ctx, &wire.QueueDeclare{Queue: "pika-missing-" + strconv.Itoa(int(time.Now().UnixNano())), Passive: true})
	var e *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &e) || e.Conn || !e.Server {
		t.Fatalf("passive declare of a missing queue: %v", err)
	}
	<-ch.Done()
	if !errors.Is(ch.Err(), ErrNotFound) {
		t.Fatalf("ch.Err() = %v", ch.Err())
	}
	if err := ch.Publish(ctx, "", "x", Message{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("publish on a closed channel: %v", err)
	}
	// The connection and the other channel go on.
	tempQueue(t, other)
	if c.IsClosed() {
		t.Fatal("connection closed by a channel error")
	}
}

func TestCoreConcurrentUseOfOneChannel(t *testing.T) {
	c := dialTest(t, testenv.Broker(t))
	ch := openChannel(t, c)
	q := namedTempQueue(t, ch)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	const goroutines, rounds, size = 100, 3, 140000 // bodies span two frames
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				ev, err := ch.call(ctx, &wire.QueueDeclare{Queue: q, Exclusive: true, AutoDelete: true})
				if err != nil {
					errs <- err
					return
				}
				if got := ev.Method.(*wire.QueueDeclareOk).Queue; got != q {
					errs <- fmt.Errorf("reply for another request: %q", got)
					return
				}
				body := bytes.Repeat([]byte{byte(g)}, size)
				f, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: body})
				if err != nil {
					errs <- err
					return
				}
				if err := f.Wait(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every message arrived whole: frames of different messages were not
	// interleaved.
	for i := 0; i < goroutines*rounds; i++ {
		d, ok, err := ch.Get(ctx, q, true)
		if err != nil || !ok {
			t.Fatalf("Get %d: ok=%v err=%v", i, ok, err)
		}
		if len(d.Body) != size || bytes.Count(d.Body, d.Body[:1]) != size {
			t.Fatalf("message %d corrupted", i)
		}
	}
}

func TestCoreThousandChannels(t *testing.T) {
	c := dialTest(t, testenv.Broker(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chans := make([]*Channel, 1000)
	var wg sync.WaitGroup
	errs := make(chan error, len(chans))
	for i := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, err := c.Channel(ctx)
			if err != nil {
				errs <- err
				return
			}
			chans[i] = ch
			if _, err := ch.call(ctx, &wire.BasicQos{PrefetchCount: uint16(i)}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	for _, ch := range chans {
		if seen[ch.ID()] {
			t.Fatalf("channel id %d handed out twice", ch.ID())
		}
		seen[ch.ID()] = true
	}
	for _, ch := range chans {
		if err := ch.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCoreServerCancelReachesConsumer(t *testing.T) {
	c := dialTest(t, testenv.Broker(t))
	ch := openChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name := testenv.Name(t, "cancel")
	if _, err := ch.call(ctx, &wire.QueueDeclare{Queue: name, AutoDelete: false}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c2 := dialTest(t, testenv.URL())
		ch2, _ := c2.Channel(context.Background())
		ch2.call(context.Background(), &wire.QueueDelete{Queue: name})
	})
	cancelled := make(chan string, 1)
	ch.OnCancel(func(tag string) { cancelled <- tag })
	cons, err := ch.ConsumeFunc(ctx, name, ConsumeOptions{}, func(context.Context, *Delivery) {})
	if err != nil {
		t.Fatal(err)
	}
	other := openChannel(t, c)
	if _, err := other.call(ctx, &wire.QueueDelete{Queue: name}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cons.Done():
	case <-ctx.Done():
		t.Fatal("consumer did not end after its queue was deleted")
	}
	if !errors.Is(cons.Err(), ErrConsumerCancelled) {
		t.Fatalf("consumer ended with %v", cons.Err())
	}
	if tag := <-cancelled; tag != cons.Tag() {
		t.Fatalf("OnCancel tag %q", tag)
	}
}

func TestCoreContextCancelKeepsChannelConsistent(t *testing.T) {
	c := dialTest(t, testenv.Broker(t))
	ch := openChannel(t, c)
	q := namedTempQueue(t, ch)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ch.call(ctx, &wire.QueueDeclare{Queue: q, Exclusive: true, AutoDelete: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("call with a cancelled ctx: %v", err)
	}
	// Abandon requests that are already in flight: their replies are
	// absorbed and later calls get their own replies.
	for i := 0; i < 20; i++ {
		short, cancel := context.WithTimeout(context.Background(), time.Duration(i)*50*time.Microsecond)
		ch.call(short, &wire.QueueDeclare{Queue: q, Exclusive: true, AutoDelete: true})
		cancel()
	}
	ev, err := ch.call(context.Background(), &wire.QueuePurge{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ev.Method.(*wire.QueuePurgeOk); !ok {
		t.Fatalf("got %T, want *wire.QueuePurgeOk", ev.Method)
	}
}

func TestCoreCloseLeavesNoGoroutines(t *testing.T) {
	url := testenv.Broker(t)
	before := runtime.NumGoroutine()
	ctx := context.Background()
	c, err := Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	ch := openChannel(t, c)
	q := tempQueue(t, ch)
	closed := make(chan error, 1)
	c.OnClose(func(err error) { closed <- err })
	if _, err := ch.ConsumeFunc(ctx, q, ConsumeOptions{}, func(_ context.Context, d *Delivery) { d.Ack(false) }); err != nil {
		t.Fatal(err)
	}
	ch.Publish(ctx, "", q, Message{Body: []byte("x")})
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("OnClose got %v, want nil", err)
	}
	if _, err := c.Channel(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Channel after Close: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
