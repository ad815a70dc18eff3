package pika

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// recordEverything makes the peer record publishes and acknowledgements.
func (p *methodsPeer) recordEverything() {
	p.mu.Lock()
	p.recordAll = true
	p.mu.Unlock()
}

// confirmPeer dials a methods peer that answers confirm.select and records
// everything, and returns a channel in confirm mode.
func confirmPeer(t *testing.T, cfg func(*Config)) (*Conn, *methodsPeer, *Channel) {
	t.Helper()
	c, p := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
		switch m.(type) {
		case *wire.ConfirmSelect:
			p.reply(ch, &wire.ConfirmSelectOk{})
		case *wire.BasicPublish, *wire.BasicAck, *wire.BasicNack, *wire.BasicReject:
		default:
			p.reply(ch, okReply(m))
		}
	})
	if cfg != nil {
		c.mu.Lock()
		cfg(&c.cfg)
		c.mu.Unlock()
	}
	p.recordEverything()
	ch := peerChannel(t, c)
	if err := ch.ConfirmSelect(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.waitMethods(t, 1) // confirm.select
	return c, p, ch
}

// returnFrames is a basic.return of a message as RabbitMQ sends it.
func returnFrames(ch uint16, exchange, key string, p *wire.Properties, body string) []byte {
	return scripted.Message(ch, &wire.BasicReturn{ReplyCode: uint16(wire.ReplyNoRoute), ReplyText: "NO_ROUTE", Exchange: exchange, RoutingKey: key}, p, []byte(body), 131072)
}

func ackFrame(ch uint16, tag uint64, multiple bool) []byte {
	return scripted.Method(ch, &wire.BasicAck{DeliveryTag: tag, Multiple: multiple})
}

func nackFrame(ch uint16, tag uint64, multiple bool) []byte {
	return scripted.Method(ch, &wire.BasicNack{DeliveryTag: tag, Multiple: multiple})
}

// TestConfirmReturnOrderings plays the orderings RabbitMQ produces for
// returns and confirmations (a message's return always precedes the
// confirmation covering it; routed messages are confirmed in any order,
// singly or with multiple) with exact frames, and checks every outcome.
func TestConfirmReturnOrderings(t *testing.T) {
	type msg struct {
		key, body string
	}
	cases := []struct {
		name   string
		msgs   []msg
		frames func(ch uint16) [][]byte
		want   []error // nil: accepted
		batch  ConfirmsError
	}{
		{
			// The bug: an earlier routed, unconfirmed message with the same
			// exchange and key got the return; the dropped one resolved nil.
			name: "later same-key message returned while the earlier is unconfirmed",
			msgs: []msg{{"k", "routed"}, {"k", "dropped"}},
			frames: func(ch uint16) [][]byte {
				return [][]byte{returnFrames(ch, "x", "k", nil, "dropped"), ackFrame(ch, 2, false), ackFrame(ch, 1, false)}
			},
			want:  []error{nil, ErrReturned},
			batch: ConfirmsError{Returned: 1},
		},
		{
			name: "return then ack",
			msgs: []msg{{"k", "a"}},
			frames: func(ch uint16) [][]byte {
				return [][]byte{returnFrames(ch, "x", "k", nil, "a"), ackFrame(ch, 1, false)}
			},
			want:  []error{ErrReturned},
			batch: ConfirmsError{Returned: 1},
		},
		{
			name: "multiple ack spanning returns",
			msgs: []msg{{"k", "a"}, {"k", "b"}, {"j", "c"}, {"k", "d"}},
			frames: func(ch uint16) [][]byte {
				return [][]byte{
					returnFrames(ch, "x", "k", nil, "a"),
					returnFrames(ch, "x", "j", nil, "c"),
					ackFrame(ch, 4, true),
				}
			},
			want:  []error{ErrReturned, nil, ErrReturned, nil},
			batch: ConfirmsError{Returned: 2},
		},
		{
			name: "nack after return",
			msgs: []msg{{"k", "a"}, {"k", "b"}},
			frames: func(ch uint16) [][]byte {
				return [][]byte{returnFrames(ch, "x", "k", nil, "a"), nackFrame(ch, 2, true)}
			},
			want:  []error{ErrReturned, ErrNacked},
			batch: ConfirmsError{Returned: 1, Nacked: 1},
		},
		{
			name: "ack before the return of a later identical message",
			msgs: []msg{{"k", "same"}, {"k", "same"}},
			frames: func(ch uint16) [][]byte {
				return [][]byte{ackFrame(ch, 1, false), returnFrames(ch, "x", "k", nil, "same"), ackFrame(ch, 2, false)}
			},
			want:  []error{nil, ErrReturned},
			batch: ConfirmsError{Returned: 1},
		},
		{
			name: "two returns of two identical messages",
			msgs: []msg{{"k", "same"}, {"k", "same"}},
			frames: func(ch uint16) [][]byte {
				return [][]byte{returnFrames(ch, "x", "k", nil, "same"), returnFrames(ch, "x", "k", nil, "same"), ackFrame(ch, 2, true)}
			},
			want:  []error{ErrReturned, ErrReturned},
			batch: ConfirmsError{Returned: 2},
		},
		{
			// One of two identical messages was returned: which one, the
			// protocol does not say.
			name: "one return of two identical messages",
			msgs: []msg{{"k", "same"}, {"k", "same"}},
			frames: func(ch uint16) [][]byte {
				return [][]byte{returnFrames(ch, "x", "k", nil, "same"), ackFrame(ch, 2, true)}
			},
			want:  []error{ErrMaybeReturned, ErrMaybeReturned},
			batch: ConfirmsError{MaybeReturned: 2},
		},
		{
			// The same with distinct message ids is exact.
			name: "message ids tell identical bodies apart",
			msgs: []msg{{"k", "id:1"}, {"k", "id:2"}},
			frames: func(ch uint16) [][]byte {
				return [][]byte{returnFrames(ch, "x", "k", &wire.Properties{MessageID: "2", Flags: wire.FlagMessageID}, "same"), ackFrame(ch, 2, true)}
			},
			want:  []error{nil, ErrReturned},
			batch: ConfirmsError{Returned: 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, p, ch := confirmPeer(t, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var confs []*Confirmation
			for _, m := range tc.msgs {
				msg := Message{Body: []byte(m.body), Mandatory: true}
				if id, ok := cutPrefix(m.body, "id:"); ok {
					msg.MessageID = id
					msg.Body = []byte("same")
				}
				f, err := ch.PublishWithConfirm(ctx, "x", m.key, msg)
				if err != nil {
					t.Fatal(err)
				}
				confs = append(confs, f)
			}
			p.waitMethods(t, len(tc.msgs))
			for _, b := range tc.frames(ch.ID()) {
				p.write(b)
			}
			for i, f := range confs {
				err := f.Wait(ctx)
				switch want := tc.want[i]; {
				case want == nil && err != nil:
					t.Errorf("message %d: %v, want accepted", i+1, err)
				case want != nil && !errors.Is(err, want):
					t.Errorf("message %d: %v, want %v", i+1, err, want)
				case errors.Is(err, ErrReturned) && errors.Is(err, ErrMaybeReturned):
					t.Errorf("message %d: %v is both returned and maybe returned", i+1, err)
				}
			}
			err := ch.WaitConfirms(ctx)
			var ce *ConfirmsError
			if !errors.As(err, &ce) {
				t.Fatalf("WaitConfirms: %v, want a *ConfirmsError %+v", err, tc.batch)
			}
			if *ce != tc.batch {
				t.Errorf("WaitConfirms counts %+v, want %+v", *ce, tc.batch)
			}
		})
	}
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return s, false
}

// TestWaitConfirmsBatches: WaitConfirms reports the outcomes of what was
// published since the previous call, including outcomes known before the
// call, and nil only when everything was acked.
func TestWaitConfirmsBatches(t *testing.T) {
	c, p, ch := confirmPeer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unconfirmed := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return ch.unconfirmedLocked()
	}
	for range 3 {
		if err := ch.Publish(ctx, "", "q", Message{Body: []byte("a")}); err != nil {
			t.Fatal(err)
		}
	}
	p.waitMethods(t, 3)
	p.write(nackFrame(ch.ID(), 2, false))
	p.write(ackFrame(ch.ID(), 3, true))
	// Outcomes all known before the call: still reported.
	deadline := time.Now().Add(5 * time.Second)
	for unconfirmed() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	err := ch.WaitConfirms(ctx)
	var ce *ConfirmsError
	if !errors.Is(err, ErrNacked) || !errors.As(err, &ce) || ce.Nacked != 1 || ce.Unknown+ce.Returned+ce.MaybeReturned != 0 {
		t.Fatalf("first batch: %v, want one nacked", err)
	}
	// The next batch is clean.
	if err := ch.Publish(ctx, "", "q", Message{Body: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	p.waitMethods(t, 1)
	done := make(chan error, 1)
	go func() { done <- ch.WaitConfirms(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("WaitConfirms returned %v before the confirmation", err)
	case <-time.After(50 * time.Millisecond):
	}
	p.write(ackFrame(ch.ID(), 4, false))
	if err := <-done; err != nil {
		t.Fatalf("second batch: %v, want nil", err)
	}
	// Nothing published since: nil at once.
	if err := ch.WaitConfirms(ctx); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

// TestConfirmSelectAtomicWithPublish: publishes racing ConfirmSelect are
// either before confirm.select on the wire (no confirmation) or after it
// and tracked under the broker's tag; a peer that acks exactly the
// publishes it saw after confirm.select resolves every confirmation.
func TestConfirmSelectAtomicWithPublish(t *testing.T) {
	for trial := range 50 {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			var (
				mu        sync.Mutex
				selected  bool
				afterSeen uint64
			)
			c, p := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
				switch m.(type) {
				case *wire.ConfirmSelect:
					mu.Lock()
					selected = true
					mu.Unlock()
					p.reply(ch, &wire.ConfirmSelectOk{})
				case *wire.BasicPublish:
					mu.Lock()
					if selected {
						afterSeen++
						p.write(ackFrame(ch, afterSeen, false))
					}
					mu.Unlock()
				default:
					p.reply(ch, okReply(m))
				}
			})
			p.recordEverything()
			ch := peerChannel(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			start := make(chan struct{})
			var confs sync.Map
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for i := range 20 {
						f, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte{byte(g), byte(i)}})
						if errors.Is(err, ErrNotConfirmMode) {
							if err := ch.Publish(ctx, "", "q", Message{}); err != nil {
								t.Error(err)
							}
							continue
						}
						if err != nil {
							t.Error(err)
							return
						}
						confs.Store(f, true)
					}
				}()
			}
			close(start)
			if err := ch.ConfirmSelect(ctx); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if err := ch.WaitConfirms(ctx); err != nil {
				c.mu.Lock()
				next, first := ch.confirms.Next(), ch.confirms.FirstUnsettled()
				c.mu.Unlock()
				mu.Lock()
				seen := afterSeen
				mu.Unlock()
				t.Fatalf("WaitConfirms: %v (confirmations and broker tags disagree: client next tag %d, first unsettled %d; broker acked %d)", err, next, first, seen)
			}
			confs.Range(func(k, _ any) bool {
				if err := k.(*Confirmation).Wait(ctx); err != nil {
					t.Errorf("confirmation %d: %v", k.(*Confirmation).Tag(), err)
				}
				return true
			})
		})
	}
}

// TestCallsWithEndedCtxSendNothing: every call that takes a ctx returns
// ctx.Err() at once when ctx has already ended, and sends nothing.
func TestCallsWithEndedCtxSendNothing(t *testing.T) {
	c, p, ch := confirmPeer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dead, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	calls := map[string]func(context.Context) error{
		"Publish": func(ctx context.Context) error { return ch.Publish(ctx, "", "q", Message{}) },
		"PublishWithConfirm": func(ctx context.Context) error {
			_, err := ch.PublishWithConfirm(ctx, "", "q", Message{})
			return err
		},
		"QueueDeclare": func(ctx context.Context) error {
			_, err := ch.QueueDeclare(ctx, "q", QueueDeclareOptions{})
			return err
		},
		"QueueDeclare NoWait": func(ctx context.Context) error {
			_, err := ch.QueueDeclare(ctx, "q", QueueDeclareOptions{NoWait: true})
			return err
		},
		"ExchangeDeclare": func(ctx context.Context) error {
			return ch.ExchangeDeclare(ctx, "x", "direct", ExchangeDeclareOptions{})
		},
		"Qos":           func(ctx context.Context) error { return ch.Qos(ctx, QosOptions{PrefetchCount: 10}) },
		"ConfirmSelect": func(ctx context.Context) error { return ch.ConfirmSelect(ctx) },
		"Consume": func(ctx context.Context) error {
			_, err := ch.Consume(ctx, "q", ConsumeOptions{})
			return err
		},
		"Get": func(ctx context.Context) error {
			_, _, err := ch.Get(ctx, "q", GetOptions{})
			return err
		},
		"Channel": func(ctx context.Context) error {
			_, err := c.Channel(ctx)
			return err
		},
		"UpdateSecret":  func(ctx context.Context) error { return c.UpdateSecret(ctx, "s", "r") },
		"WaitConfirms":  func(ctx context.Context) error { return ch.WaitConfirms(ctx) },
		"TxSelect":      func(ctx context.Context) error { return ch.TxSelect(ctx) },
		"QueuePurge":    func(ctx context.Context) error { _, err := ch.QueuePurge(ctx, "q", PurgeOptions{}); return err },
		"Confirm Wait":  func(ctx context.Context) error { return (&Confirmation{settled: true}).Wait(ctx) },
		"Consumer.Next": func(ctx context.Context) error { _, err := (&Consumer{ch: ch}).Next(ctx); return err },
	}
	for name, call := range calls {
		for _, ctx := range []context.Context{ctx, dead} {
			if err := call(ctx); !errors.Is(err, ctx.Err()) {
				t.Errorf("%s with an ended ctx: %v, want %v", name, err, ctx.Err())
			}
		}
	}
	// Let anything that was sent arrive, then check nothing was.
	if _, err := ch.QueueDeclarePassive(context.Background(), "probe"); err != nil {
		t.Fatal(err)
	}
	got := p.methods()
	if len(got) != 1 || got[0].ID() != wire.MethodQueueDeclare || got[0].(*wire.QueueDeclare).Queue != "probe" {
		t.Fatalf("the peer received %v, want only the probe's queue.declare", got)
	}
}

// TestMaxUnconfirmedBoundsPublish: at Config.MaxUnconfirmed outstanding
// confirmations Publish waits (honouring ctx) until the broker confirms.
func TestMaxUnconfirmedBoundsPublish(t *testing.T) {
	_, p, ch := confirmPeer(t, func(cfg *Config) { cfg.MaxUnconfirmed = 5 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 5 {
		if err := ch.Publish(ctx, "", "q", Message{Body: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := ch.Publish(short, "", "q", Message{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish beyond MaxUnconfirmed: %v, want it to wait until ctx ends", err)
	}
	p.waitMethods(t, 5)
	done := make(chan error, 1)
	go func() { done <- ch.Publish(ctx, "", "q", Message{Body: []byte("6")}) }()
	p.write(ackFrame(ch.ID(), 2, true))
	if err := <-done; err != nil {
		t.Fatalf("publish after confirmations made room: %v", err)
	}
	if got := p.waitMethods(t, 1); got[0].ID() != wire.MethodBasicPublish {
		t.Fatalf("peer got %v", got)
	}
}

// TestAckMisuseSendsNothing: acknowledgements the broker would answer by
// closing the channel (tag 0, twice, a no-ack delivery) fail with
// ErrUnknownTag, send nothing, and leave the channel open.
func TestAckMisuseSendsNothing(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
		switch m := m.(type) {
		case *wire.BasicConsume:
			p.reply(ch, &wire.BasicConsumeOk{ConsumerTag: m.ConsumerTag})
		case *wire.BasicPublish, *wire.BasicAck, *wire.BasicNack, *wire.BasicReject:
		default:
			p.reply(ch, okReply(m))
		}
	})
	p.recordEverything()
	ch := peerChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	manual, err := ch.Consume(ctx, "q", ConsumeOptions{Tag: "m"})
	if err != nil {
		t.Fatal(err)
	}
	auto, err := ch.Consume(ctx, "q2", ConsumeOptions{Tag: "a", AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	p.waitMethods(t, 2)
	p.write(scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: "m", DeliveryTag: 1}, nil, []byte("1"), 0))
	p.write(scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: "a", DeliveryTag: 2}, nil, []byte("2"), 0))
	dm, err := manual.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	da, err := auto.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := dm.Ack(false); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"second ack":            dm.Ack(false),
		"nack after ack":        dm.Nack(false, true),
		"ack of auto-ack":       da.Ack(false),
		"reject of auto-ack":    da.Reject(false),
		"Ack(0)":                ch.Ack(0, false),
		"tag never delivered":   ch.Ack(7, false),
		"multiple up to no-ack": ch.Ack(2, true),
	} {
		if !errors.Is(err, ErrUnknownTag) {
			t.Errorf("%s: %v, want ErrUnknownTag", name, err)
		}
	}
	if _, err := ch.QueueDeclarePassive(ctx, "probe"); err != nil {
		t.Fatalf("channel after the refused acks: %v", err)
	}
	got := p.waitMethods(t, 2)
	if len(got) != 2 || !isAck(got[0], 1) || got[1].ID() != wire.MethodQueueDeclare {
		t.Fatalf("peer received %v, want the one good ack and the probe", got)
	}
}

func isAck(m wire.Method, tag uint64) bool {
	a, ok := m.(*wire.BasicAck)
	return ok && a.DeliveryTag == tag && !a.Multiple
}

// TestFakeWaitConfirmsWaitsForRepublished: a WaitConfirms pending when the
// connection is lost waits for the republished copies (instead of returning
// ErrOutcomeUnknown for messages about to be published again), and the
// copies' acks resolve every Confirmation.
func TestFakeWaitConfirmsWaitsForRepublished(t *testing.T) {
	b := newFakeBroker(t)
	var mu sync.Mutex
	acked := map[*fakeConn]uint64{}
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); !ok || fc.n == 1 {
			return false // the first connection never confirms
		}
		mu.Lock()
		acked[fc]++
		tag := acked[fc]
		mu.Unlock()
		fc.send(ch, &wire.BasicAck{DeliveryTag: tag})
		return true
	})
	c, ch, rlog := fakeSetup(t, b, b.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	var confs []*Confirmation
	for i := range 5 {
		f, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte{byte(i)}, Properties: Properties{Headers: Table{"i": int32(i)}}})
		if err != nil {
			t.Fatal(err)
		}
		confs = append(confs, f)
	}
	waited := make(chan error, 1)
	go func() { waited <- ch.WaitConfirms(ctx) }()
	time.Sleep(20 * time.Millisecond)
	b.conn(1).kill()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("WaitConfirms across the loss: %v, want nil once the copies are acked", err)
		}
	case <-ctx.Done():
		t.Fatalf("WaitConfirms never returned; recovery: %s", rlog)
	}
	for i, f := range confs {
		if err := f.Err(); err != nil {
			t.Errorf("confirmation %d: %v", i, err)
		}
		if f.Tag() != uint64(6+i) {
			t.Errorf("confirmation %d: tag %d after republishing, want %d", i, f.Tag(), 6+i)
		}
	}
	if ev := rlog.wait(RecoveryRecovered, 1, 5*time.Second); ev.Report == nil || ev.Report.Republished != 5 {
		t.Errorf("recovery report: %+v, want 5 republished", ev.Report)
	}
	_ = c
}

// TestKeptCopySurvivesCallerChanges: the copy kept for republishing holds
// the message as published, whatever the caller does with its headers and
// body afterwards, and its buffer returns to the pool.
func TestKeptCopySurvivesCallerChanges(t *testing.T) {
	for _, size := range []int{0, 10, 300, 5000, 5 << 20} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i)
		}
		msg := Message{
			Properties: Properties{ContentType: "a/b", MessageID: "m1", Headers: Table{"k": "v", "n": int64(3)}},
			Body:       body,
			Mandatory:  true,
		}
		var r pubRecord
		var free keptFree
		r.mandatory = true
		r.keep(&free, "x", "key", &msg)
		msg.Headers["k"] = "changed"
		if size > 0 {
			body[0] = 0xff
		}
		got, err := r.message()
		if err != nil {
			t.Fatal(err)
		}
		if got.Headers["k"] != "v" || got.Headers["n"] != int64(3) || got.ContentType != "a/b" || got.MessageID != "m1" || !got.Mandatory {
			t.Errorf("size %d: kept message %+v", size, got)
		}
		if len(got.Body) != size || size > 0 && got.Body[0] != 0 || size > 1 && got.Body[size-1] != byte(size-1) {
			t.Errorf("size %d: kept body differs", size)
		}
		if r.kept.exchange != "x" || r.kept.routingKey != "key" {
			t.Errorf("kept route %q %q", r.kept.exchange, r.kept.routingKey)
		}
		r.release(&free)
		if r.kept != nil {
			t.Error("release kept the copy")
		}
		if want := min(size, maxFreeKeptBuf); size <= maxFreeKeptBuf && len(free.list) != 1 || free.bytes > maxFreeKeptBytes || want < 0 {
			t.Errorf("size %d: free list %d copies, %d bytes", size, len(free.list), free.bytes)
		}
	}
}

// TestPublishInConfirmModeAllocations: keeping copies for republishing
// costs no allocation per message in the steady state.
func TestPublishInConfirmModeAllocations(t *testing.T) {
	ch := &Channel{conn: &Conn{}, confirm: true}
	ch.confirms.Reset(1)
	msg := Message{Body: make([]byte, 100), Properties: Properties{Headers: Table{"a": "b"}}}
	allocs := testing.AllocsPerRun(1000, func() {
		ch.recordPublishLocked("", "q", &msg, false, nil)
		ch.confirmLocked(ch.confirms.Next()-1, true, true)
	})
	if allocs > 0.1 {
		t.Fatalf("%.2f allocations per confirmed publish with a kept copy, want ~0", allocs)
	}
}

// TestOnConfirmCountsReturned: an OnConfirm callback learns how many of the
// messages an ack settled were returned, so that counting acks never
// counts a dropped message as delivered.
func TestOnConfirmCountsReturned(t *testing.T) {
	_, p, ch := confirmPeer(t, nil)
	got := make(chan ConfirmEvent, 4)
	ch.OnConfirm(func(c ConfirmEvent) { got <- c })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range []string{"a", "b", "c"} {
		if err := ch.Publish(ctx, "x", "k", Message{Body: []byte(b), Mandatory: true}); err != nil {
			t.Fatal(err)
		}
	}
	p.waitMethods(t, 3)
	p.write(returnFrames(ch.ID(), "x", "k", nil, "b"))
	p.write(ackFrame(ch.ID(), 3, true))
	select {
	case c := <-got:
		if want := (ConfirmEvent{Tag: 3, Multiple: true, Ack: true, Count: 3, Returned: 1}); c != want {
			t.Fatalf("OnConfirm got %+v, want %+v", c, want)
		}
	case <-ctx.Done():
		t.Fatal("no OnConfirm call")
	}
}

// TestAutoAckDeliveriesSurviveChannelClose: deliveries of an AutoAck
// consumer are already acknowledged by the broker; when the channel closes
// with some still buffered, they stay takeable instead of being lost.
func TestAutoAckDeliveriesSurviveChannelClose(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
		switch m := m.(type) {
		case *wire.BasicConsume:
			p.reply(ch, &wire.BasicConsumeOk{ConsumerTag: m.ConsumerTag})
		default:
			p.reply(ch, okReply(m))
		}
	})
	ch := peerChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := ch.Consume(ctx, "q", ConsumeOptions{Tag: "a", AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		p.write(scripted.Message(ch.ID(), &wire.BasicDeliver{ConsumerTag: "a", DeliveryTag: i}, nil, []byte{byte(i)}, 0))
	}
	waitFor(t, "three buffered deliveries", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		n, _ := cons.bufferedLocked()
		return n == 3
	})
	p.closeChannel(ch.ID(), wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - test", &wire.BasicQos{})
	<-ch.Done()
	for i := 1; i <= 3; i++ {
		d, err := cons.Next(ctx)
		if err != nil || d.Body[0] != byte(i) {
			t.Fatalf("delivery %d after the channel closed: %v, %v", i, d, err)
		}
	}
	if _, err := cons.Next(ctx); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("after the buffer: %v, want the channel's cause", err)
	}
}

// TestPublishWithConfirmAllocations: a Confirmation comes from the
// channel's slab and settling it allocates nothing, so publishing with a
// confirmation costs well under one allocation per message.
func TestPublishWithConfirmAllocations(t *testing.T) {
	ch := &Channel{conn: &Conn{cfg: Config{DisableRepublish: true}}, confirm: true}
	ch.confirms.Reset(1)
	msg := Message{Body: make([]byte, 100)}
	allocs := testing.AllocsPerRun(1000, func() {
		f := ch.recordPublishLocked("", "q", &msg, true, nil)
		ch.confirmLocked(ch.confirms.Next()-1, true, true)
		if err := f.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0.1 {
		t.Fatalf("%.3f allocations per PublishWithConfirm record, want <= 0.1", allocs)
	}
}

// TestConfirmationWaitOrderings: Wait returns the outcome whether it comes
// before, during or after the wait; a wait ended by its ctx leaves nothing
// behind that a later Wait, or another Confirmation sharing the pooled
// signal, would mistake for an outcome; concurrent waiters all see it.
func TestConfirmationWaitOrderings(t *testing.T) {
	ctx := context.Background()
	t.Run("settled before", func(t *testing.T) {
		f := &Confirmation{}
		f.settle(ErrNacked)
		if err := f.Wait(ctx); err != ErrNacked {
			t.Fatalf("Wait = %v", err)
		}
	})
	t.Run("settled during", func(t *testing.T) {
		f := &Confirmation{}
		go func() {
			for {
				f.mu.Lock()
				w := f.wake
				f.mu.Unlock()
				if w != nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
			f.settle(ErrNacked)
		}()
		if err := f.Wait(ctx); err != ErrNacked {
			t.Fatalf("Wait = %v", err)
		}
	})
	t.Run("ctx ends, then settled", func(t *testing.T) {
		for range 100 {
			f, g := &Confirmation{}, &Confirmation{}
			cctx, cancel := context.WithCancel(ctx)
			go func() {
				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
				f.settle(nil) // races with the cancel
			}()
			go cancel()
			err := f.Wait(cctx)
			if err != nil && err != context.Canceled {
				t.Fatalf("Wait = %v", err)
			}
			f.mu.Lock()
			if f.wake != nil {
				t.Fatal("the signal stayed attached after Wait returned")
			}
			f.mu.Unlock()
			// g may get the same pooled signal: it must not see f's.
			gctx, gcancel := context.WithTimeout(ctx, 5*time.Millisecond)
			if err := g.Wait(gctx); err != context.DeadlineExceeded {
				t.Fatalf("an unsettled confirmation's Wait = %v, want the deadline", err)
			}
			gcancel()
			if err := f.Wait(ctx); err != nil {
				t.Fatalf("Wait after settle = %v", err)
			}
		}
	})
	t.Run("concurrent waiters and Done", func(t *testing.T) {
		f := &Confirmation{}
		errs := make(chan error, 4)
		for range 4 {
			go func() { errs <- f.Wait(ctx) }()
		}
		done := f.Done()
		time.Sleep(5 * time.Millisecond)
		f.settle(ErrNacked)
		for range 4 {
			if err := <-errs; err != ErrNacked {
				t.Fatalf("Wait = %v", err)
			}
		}
		<-done
	})
}

// TestWaitConfirmsOnClosedChannel: once the channel is closed, WaitConfirms
// reports the close instead of nil, even when every message of the batch
// was confirmed first; before, a loop calling it until it failed (as the
// forced-close fault test does) spun for ever on nil.
func TestWaitConfirmsOnClosedChannel(t *testing.T) {
	_, p, ch := confirmPeer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.Publish(ctx, "", "q", Message{Body: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	p.waitMethods(t, 1)
	p.write(ackFrame(ch.ID(), 1, false))
	if err := ch.WaitConfirms(ctx); err != nil {
		t.Fatalf("batch confirmed before the close: %v, want nil", err)
	}
	p.closeChannel(ch.ID(), wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - test close", &wire.BasicPublish{})
	select {
	case <-ch.Done():
	case <-ctx.Done():
		t.Fatal("the channel did not close")
	}
	for i := 0; i < 2; i++ {
		err := ch.WaitConfirms(ctx)
		var e *Error
		if !errors.As(err, &e) || e.Code != wire.ReplyPreconditionFailed {
			t.Fatalf("WaitConfirms %d after the broker closed the channel: %v; want its close (406)", i+1, err)
		}
	}
}
