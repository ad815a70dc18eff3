package pika

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// Integration tests for issue "publish outcomes that are always true":
// what a Confirmation and WaitConfirms say agrees with what the broker did.

// cuttableDial is a Config.Dial that remembers the last connection it made,
// so that a test can cut it as a network failure would.
type cuttableDial struct {
	mu   sync.Mutex
	last net.Conn
	n    int
}

func (d *cuttableDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.last = nc
	d.n++
	d.mu.Unlock()
	return nc, nil
}

func (d *cuttableDial) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last != nil {
		d.last.Close()
	}
}

// drainBodies consumes queue on a connection of its own until it has seen
// want distinct bodies or nothing arrives for idle, and returns how many
// times each body arrived.
func drainBodies(t *testing.T, url, queue string, want int, idle time.Duration) map[string]int {
	t.Helper()
	c := dialTest(t, url)
	ch := openChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cons, err := ch.Consume(ctx, queue, ConsumeOptions{AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for len(seen) < want {
		ictx, icancel := context.WithTimeout(ctx, idle)
		d, err := cons.Next(ictx)
		icancel()
		if err != nil {
			break
		}
		seen[string(d.Body)]++
	}
	return seen
}

// TestOutcomeSocketCutMidStream: 5,000 messages published with confirms,
// the socket cut in the middle. With the defaults (republishing on), every
// message reaches the queue and WaitConfirms returns nil; with
// DisableRepublish, WaitConfirms reports exactly the messages whose outcome
// the cut made unknown.
func TestOutcomeSocketCutMidStream(t *testing.T) {
	const total = 5000
	for _, republish := range []bool{true, false} {
		t.Run(fmt.Sprintf("republish=%v", republish), func(t *testing.T) {
			url := testenv.Broker(t)
			cfg := rtConfig(t, url)
			cfg.DisableRepublish = !republish
			var d cuttableDial
			cfg.Dial = d.dial
			c := rtDial(t, cfg)
			rlog := watchRecovery(t, c)
			ch := openChannel(t, c)
			q := testenv.Name(t, "q")
			deleteLater(t, url, []string{q}, nil)
			rtDeclareQueue(t, ch, q, QueueDeclareOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := ch.ConfirmSelect(ctx); err != nil {
				t.Fatal(err)
			}
			confs := make([]*Confirmation, 0, total)
			for i := range total {
				if i == total/2 {
					d.cut()
				}
				f, err := ch.PublishWithConfirm(ctx, "", q, Message{Body: []byte(strconv.Itoa(i))})
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				confs = append(confs, f)
			}
			werr := ch.WaitConfirms(ctx)
			if rlog.count(RecoveryRecovered) < 1 {
				t.Fatalf("no recovery after the cut: %v", rlog)
			}
			unknown, acked := 0, 0
			for i, f := range confs {
				select {
				case <-f.Done():
				default:
					t.Fatalf("confirmation %d unresolved after WaitConfirms returned %v", i, werr)
				}
				switch err := f.Err(); {
				case err == nil:
					acked++
				case errors.Is(err, ErrOutcomeUnknown):
					unknown++
				default:
					t.Fatalf("confirmation %d: %v", i, err)
				}
			}
			t.Logf("republish=%v: %d acked, %d unknown; WaitConfirms: %v", republish, acked, unknown, werr)
			if republish {
				if werr != nil || unknown != 0 {
					t.Fatalf("WaitConfirms %v with %d unknown outcomes, want nil and none", werr, unknown)
				}
				seen := drainBodies(t, url, q, total, 5*time.Second)
				dups := 0
				for _, n := range seen {
					dups += n - 1
				}
				t.Logf("consumer saw %d distinct bodies of %d, %d duplicates", len(seen), total, dups)
				if len(seen) != total {
					t.Fatalf("consumer saw %d distinct messages, want all %d", len(seen), total)
				}
				return
			}
			var ce *ConfirmsError
			if unknown == 0 {
				t.Fatalf("the cut left no outcome unknown (WaitConfirms: %v): the test did not test anything", werr)
			}
			if !errors.Is(werr, ErrOutcomeUnknown) || !errors.As(werr, &ce) || ce.Unknown != unknown || ce.Nacked+ce.Returned+ce.MaybeReturned != 0 {
				t.Fatalf("WaitConfirms: %v, want a *ConfirmsError with Unknown = %d", werr, unknown)
			}
			// Every acked message is in the queue.
			seen := drainBodies(t, url, q, total, 3*time.Second)
			for i, f := range confs {
				if f.Err() == nil && seen[strconv.Itoa(i)] == 0 {
					t.Fatalf("message %d was acked but is not in the queue", i)
				}
			}
		})
	}
}

// TestOutcomeReturnsUnderPressure: 10,000 pipelined mandatory publishes
// through a headers exchange, alternating routable and unroutable, all with
// the same exchange and routing key; a consumer records what arrived, and
// every Confirmation must agree with it.
func TestOutcomeReturnsUnderPressure(t *testing.T) {
	url := testenv.Broker(t)
	c := dialTest(t, url)
	ch := openChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	x := testenv.Name(t, "x")
	q := tempQueue(t, ch)
	deleteLater(t, url, nil, []string{x})
	if err := ch.ExchangeDeclare(ctx, x, "headers", ExchangeDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(ctx, q, x, "", BindOptions{Arguments: Table{"x-match": "all", "route": "yes"}}); err != nil {
		t.Fatal(err)
	}
	got := collect(t, ch, q)
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 10000
	confs := make([]*Confirmation, n)
	for i := range n {
		route := "no"
		if i%2 == 0 {
			route = "yes"
		}
		f, err := ch.PublishWithConfirm(ctx, x, "", Message{
			Properties: Properties{Headers: Table{"route": route}},
			Body:       []byte(strconv.Itoa(i)),
			Mandatory:  true,
		})
		if err != nil {
			t.Fatal(err)
		}
		confs[i] = f
	}
	checkAgainstDeliveries(t, ctx, ch, confs, got, n/2)
}

// TestOutcomeReturnsWhileBindingsChange: mandatory messages to a fanout
// exchange while another channel binds and unbinds its only queue: whether
// each was routed depends on timing only the broker knows, and every
// Confirmation must agree with what the consumer received.
func TestOutcomeReturnsWhileBindingsChange(t *testing.T) {
	url := testenv.Broker(t)
	c := dialTest(t, url)
	ch := openChannel(t, c)
	other := openChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	x := testenv.Name(t, "x")
	q := tempQueue(t, ch)
	deleteLater(t, url, nil, []string{x})
	if err := ch.ExchangeDeclare(ctx, x, "fanout", ExchangeDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
	got := collect(t, ch, q)
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	toggled := make(chan int)
	go func() {
		k := 0
		defer func() { toggled <- k }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := other.QueueBind(ctx, q, x, "", BindOptions{}); err != nil {
				t.Error(err)
				return
			}
			if err := other.QueueUnbind(ctx, q, x, "", BindOptions{}); err != nil {
				t.Error(err)
				return
			}
			k++
		}
	}()
	const n = 5000
	confs := make([]*Confirmation, n)
	for i := range n {
		if i%50 == 0 {
			time.Sleep(2 * time.Millisecond) // let bindings change between waves
		}
		f, err := ch.PublishWithConfirm(ctx, x, "", Message{Body: []byte(strconv.Itoa(i)), Mandatory: true})
		if err != nil {
			t.Fatal(err)
		}
		confs[i] = f
	}
	close(stop)
	t.Logf("%d bind/unbind cycles while publishing", <-toggled)
	checkAgainstDeliveries(t, ctx, ch, confs, got, -1)
}

// collect consumes q on ch and records the bodies that arrive.
func collect(t *testing.T, ch *Channel, q string) *sync.Map {
	t.Helper()
	var got sync.Map
	// The buffer holds every message the tests publish: with the default
	// soft limit a handler slowed by a busy machine would let the Discard
	// policy drop AutoAck deliveries, and the ground truth with them.
	_, err := ch.ConsumeFunc(context.Background(), q, ConsumeOptions{AutoAck: true, BufferSize: 1 << 17}, func(_ context.Context, d *Delivery) {
		got.Store(string(d.Body), true)
	})
	if err != nil {
		t.Fatal(err)
	}
	return &got
}

// checkAgainstDeliveries waits for every confirmation and compares each
// outcome with the ground truth of what the consumer received: accepted ⇒
// delivered, returned ⇒ not delivered; maybe-returned never happens with
// distinct bodies. wantDelivered < 0 skips the count check.
func checkAgainstDeliveries(t *testing.T, ctx context.Context, ch *Channel, confs []*Confirmation, got *sync.Map, wantDelivered int) {
	t.Helper()
	accepted := 0
	for i, f := range confs {
		if err := f.Wait(ctx); err == nil {
			accepted++
		} else if !errors.Is(err, ErrReturned) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	// Deliveries of accepted messages may trail their confirmations.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		got.Range(func(any, any) bool { n++; return true })
		if n >= accepted || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a late delivery of a "returned" message would show here
	wrong := 0
	for i, f := range confs {
		_, delivered := got.Load(strconv.Itoa(i))
		err := f.Err()
		switch {
		case err == nil && !delivered:
			wrong++
			t.Errorf("message %d resolved as accepted but never arrived", i)
		case err != nil && delivered:
			wrong++
			t.Errorf("message %d resolved %v but arrived", i, err)
		}
		if wrong > 10 {
			t.FailNow()
		}
	}
	if wantDelivered >= 0 && accepted != wantDelivered {
		t.Errorf("%d accepted, want %d", accepted, wantDelivered)
	}
	werr := ch.WaitConfirms(ctx)
	var ce *ConfirmsError
	if returned := len(confs) - accepted; returned > 0 {
		if !errors.As(werr, &ce) || ce.Returned != returned || ce.Nacked+ce.Unknown+ce.MaybeReturned != 0 {
			t.Errorf("WaitConfirms: %v, want %d returned", werr, returned)
		}
	} else if werr != nil {
		t.Errorf("WaitConfirms: %v", werr)
	}
	t.Logf("%d accepted, %d returned, all agreeing with the consumer", accepted, len(confs)-accepted)
}

// TestOutcomeConfirmSelectRace: ConfirmSelect racing eight publishing
// goroutines on one channel, 200 times: every confirmation resolves and
// WaitConfirms agrees, so the client's tags match the broker's.
func TestOutcomeConfirmSelectRace(t *testing.T) {
	url := testenv.Broker(t)
	c := dialTest(t, url)
	setup := openChannel(t, c)
	q := tempQueue(t, setup)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for trial := range 200 {
		ch := openChannel(t, c)
		var wg sync.WaitGroup
		var tracked atomic.Int64
		confs := make(chan *Confirmation, 8*20)
		start := make(chan struct{})
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := range 20 {
					msg := Message{Body: []byte{byte(g), byte(i)}}
					f, err := ch.PublishWithConfirm(ctx, "", q, msg)
					if errors.Is(err, ErrNotConfirmMode) {
						err = ch.Publish(ctx, "", q, msg)
					} else if err == nil {
						tracked.Add(1)
						confs <- f
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		close(start)
		if err := ch.ConfirmSelect(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(confs)
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		if err := ch.WaitConfirms(wctx); err != nil {
			wcancel()
			t.Fatalf("trial %d: WaitConfirms: %v (%d tracked confirmations)", trial, err, tracked.Load())
		}
		for f := range confs {
			if err := f.Wait(wctx); err != nil {
				wcancel()
				t.Fatalf("trial %d: confirmation %d: %v", trial, f.Tag(), err)
			}
		}
		wcancel()
		if err := ch.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOutcomeAckMisuseAgainstBroker: acknowledgements RabbitMQ answers by
// closing the channel with 406 are refused locally, nothing reaches the
// broker (checked with the frame recorder), and the channel stays open.
func TestOutcomeAckMisuseAgainstBroker(t *testing.T) {
	url := testenv.Broker(t)
	cfg := rtConfig(t, url)
	cfg.DisableRecovery = true
	p := faultproxy.New(t, cfg.Addr)
	cfg.Addr = p.Addr()
	cfg.Addrs = nil
	p.Record(true)
	c := rtDial(t, cfg)
	ch := openChannel(t, c)
	other := openChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := tempQueue(t, ch)
	q2 := tempQueue(t, ch)
	for _, qq := range []string{q, q, q2} {
		if err := ch.Publish(ctx, "", qq, Message{Body: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	manual, err := ch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	auto, err := ch.Consume(ctx, q2, ConsumeOptions{AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	d1, err := manual.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := manual.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	da, err := auto.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.Ack(false); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclarePassive(ctx, q); err != nil { // the good ack is on the wire
		t.Fatal(err)
	}
	p.ResetFrames()
	for name, err := range map[string]error{
		"second ack":                        d1.Ack(false),
		"Ack(0)":                            ch.Ack(0, false),
		"ack of an auto-ack delivery":       da.Ack(false),
		"tag of another channel (never on)": other.Ack(d2.DeliveryTag, false),
		"reject after ack":                  d1.Reject(true),
	} {
		if !errors.Is(err, ErrUnknownTag) {
			t.Errorf("%s: %v, want ErrUnknownTag", name, err)
		}
	}
	if _, err := ch.QueueDeclarePassive(ctx, q); err != nil {
		t.Fatalf("channel after the refused acks: %v", err)
	}
	if ch.IsClosed() || other.IsClosed() {
		t.Fatal("a channel closed")
	}
	for _, r := range p.Frames() {
		if r.Dir != faultproxy.ClientToServer || r.Frame.Type != wire.FrameMethod {
			continue
		}
		m, err := r.Method()
		if err != nil {
			continue
		}
		switch m.(type) {
		case *wire.BasicAck, *wire.BasicNack, *wire.BasicReject:
			t.Errorf("the broker received %s %+v after the refused acknowledgements", m.ID(), m)
		}
	}
	if err := d2.Ack(false); err != nil {
		t.Fatalf("a valid ack after the refused ones: %v", err)
	}
}
