package pika

import (
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// methodsPeer plays a broker over net.Pipe for unit tests of the channel
// methods: it completes the handshake, opens and closes channels, records
// every other method the client sends, and lets the test's answer function
// reply to it.
type methodsPeer struct {
	t      testing.TB
	srv    net.Conn
	answer func(p *methodsPeer, ch uint16, m wire.Method)

	wmu sync.Mutex // serialises writes to srv

	// recordAll makes the peer record basic.publish, ack, nack and reject
	// too (set it before the client sends any).
	recordAll bool

	mu   sync.Mutex
	got  []wire.Method // methods received after the handshake (but channel open/close)
	recv chan struct{} // cap 1: a method was recorded
}

// dialMethodsPeer connects a Conn to a new methodsPeer that says it is
// product. answer, run on the peer's goroutine, replies to each method
// (p.reply); nil replies with the usual -ok method (see okReply).
func dialMethodsPeer(t testing.TB, product string, answer func(p *methodsPeer, ch uint16, m wire.Method)) (*Conn, *methodsPeer) {
	t.Helper()
	cli, srv := net.Pipe()
	if answer == nil {
		answer = func(p *methodsPeer, ch uint16, m wire.Method) { p.reply(ch, okReply(m)) }
	}
	p := &methodsPeer{t: t, srv: srv, answer: answer, recv: make(chan struct{}, 1)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		p.serve(product)
	}()
	cfg := Config{
		Addr:            "peer:5672",
		Dial:            func(context.Context, string, string) (net.Conn, error) { return cli, nil },
		DisableRecovery: true,
		Heartbeat:       NoHeartbeat,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig to the scripted peer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
		srv.Close()
		<-served
	})
	return c, p
}

// okReply is the successful answer to a synchronous method, nil for
// methods without one.
func okReply(m wire.Method) wire.Method {
	switch m := m.(type) {
	case *wire.ExchangeDeclare:
		if !m.NoWait {
			return &wire.ExchangeDeclareOk{}
		}
	case *wire.ExchangeDelete:
		if !m.NoWait {
			return &wire.ExchangeDeleteOk{}
		}
	case *wire.ExchangeBind:
		if !m.NoWait {
			return &wire.ExchangeBindOk{}
		}
	case *wire.ExchangeUnbind:
		if !m.NoWait {
			return &wire.ExchangeUnbindOk{}
		}
	case *wire.QueueDeclare:
		if !m.NoWait {
			name := m.Queue
			if name == "" {
				name = "amq.gen-peer"
			}
			return &wire.QueueDeclareOk{Queue: name, MessageCount: 7, ConsumerCount: 2}
		}
	case *wire.QueueBind:
		if !m.NoWait {
			return &wire.QueueBindOk{}
		}
	case *wire.QueueUnbind:
		return &wire.QueueUnbindOk{}
	case *wire.QueuePurge:
		if !m.NoWait {
			return &wire.QueuePurgeOk{MessageCount: 5}
		}
	case *wire.QueueDelete:
		if !m.NoWait {
			return &wire.QueueDeleteOk{MessageCount: 3}
		}
	case *wire.BasicQos:
		return &wire.BasicQosOk{}
	case *wire.BasicRecover:
		return &wire.BasicRecoverOk{}
	case *wire.TxSelect:
		return &wire.TxSelectOk{}
	case *wire.TxCommit:
		return &wire.TxCommitOk{}
	case *wire.TxRollback:
		return &wire.TxRollbackOk{}
	}
	return nil
}

// reply sends m (nil: nothing) on channel ch.
func (p *methodsPeer) reply(ch uint16, m wire.Method) {
	if m == nil {
		return
	}
	b, err := wire.AppendMethodFrame(nil, ch, m)
	if err != nil {
		p.t.Errorf("peer: encoding %s: %v", m.ID(), err)
		return
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.srv.Write(b) // fails only once the client has gone
}

// write sends raw bytes (frames built with package scripted) to the client.
func (p *methodsPeer) write(b []byte) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.srv.Write(b)
}

// closeChannel refuses a request the way a broker does: channel.close with
// code and text, naming the refused method.
func (p *methodsPeer) closeChannel(ch uint16, code wire.ReplyCode, text string, refused wire.Method) {
	id := refused.ID()
	p.reply(ch, &wire.ChannelClose{ReplyCode: uint16(code), ReplyText: text, ClassID: uint16(id.Class()), MethodID: id.Index()})
}

// serve runs the broker's side until the client closes or goes away.
func (p *methodsPeer) serve(product string) {
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(p.srv, hdr); err != nil {
		p.t.Errorf("peer: reading the protocol header: %v", err)
		return
	}
	fr := wire.NewFrameReader(p.srv, 0)
	next := func() (uint16, wire.Method, bool) {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return 0, nil, false
			}
			if f.Type != wire.FrameMethod {
				continue // content of a publish, heartbeats
			}
			m, err := wire.DecodeMethod(f.Payload)
			if err != nil {
				p.t.Errorf("peer: decoding a method from the client: %v", err)
				return 0, nil, false
			}
			return f.Channel, m, true
		}
	}
	p.reply(0, &wire.ConnectionStart{VersionMinor: 9, ServerProperties: wire.Table{"product": product}, Mechanisms: "PLAIN", Locales: "en_US"})
	for _, want := range []wire.MethodID{wire.MethodConnectionStartOk, wire.MethodConnectionTuneOk, wire.MethodConnectionOpen} {
		if want == wire.MethodConnectionTuneOk {
			p.reply(0, &wire.ConnectionTune{ChannelMax: 2047, FrameMax: 131072})
		}
		_, m, ok := next()
		if !ok {
			return
		}
		if m.ID() != want {
			p.t.Errorf("peer: handshake: got %s, want %s", m.ID(), want)
			return
		}
	}
	p.reply(0, &wire.ConnectionOpenOk{})
	for {
		ch, m, ok := next()
		if !ok {
			return
		}
		switch m.(type) {
		case *wire.ChannelOpen:
			p.reply(ch, &wire.ChannelOpenOk{})
		case *wire.ChannelClose:
			p.reply(ch, &wire.ChannelCloseOk{})
		case *wire.ChannelCloseOk:
		case *wire.BasicPublish, *wire.BasicAck, *wire.BasicNack, *wire.BasicReject:
			p.mu.Lock()
			all := p.recordAll
			if all {
				p.got = append(p.got, m)
				select {
				case p.recv <- struct{}{}:
				default:
				}
			}
			p.mu.Unlock()
			if all {
				p.answer(p, ch, m)
			}
		case *wire.ConnectionClose:
			p.reply(0, &wire.ConnectionCloseOk{})
			return
		default:
			p.mu.Lock()
			p.got = append(p.got, m)
			p.mu.Unlock()
			select {
			case p.recv <- struct{}{}:
			default:
			}
			p.answer(p, ch, m)
		}
	}
}

// methods returns the methods recorded so far and forgets them.
func (p *methodsPeer) methods() []wire.Method {
	p.mu.Lock()
	defer p.mu.Unlock()
	got := p.got
	p.got = nil
	return got
}

// waitMethods waits until n methods are recorded (bounded by 5 s) and
// returns them, forgetting them.
func (p *methodsPeer) waitMethods(t testing.TB, n int) []wire.Method {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		p.mu.Lock()
		k := len(p.got)
		p.mu.Unlock()
		if k >= n {
			return p.methods()
		}
		select {
		case <-p.recv:
		case <-deadline:
			t.Fatalf("peer received %d methods, want %d: %v", k, n, p.methods())
		}
	}
}

// expectSent checks that exactly want was received, in order.
func (p *methodsPeer) expectSent(t testing.TB, want ...wire.Method) {
	t.Helper()
	got := p.waitMethods(t, len(want))
	if len(got) != len(want) {
		t.Fatalf("peer received %d methods %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("method %d: got %s %+v, want %s %+v", i, got[i].ID(), got[i], want[i].ID(), want[i])
		}
	}
}

// peerChannel opens a channel on c.
func peerChannel(t testing.TB, c *Conn) *Channel {
	t.Helper()
	ch, err := c.Channel(context.Background())
	if err != nil {
		t.Fatalf("Channel: %v", err)
	}
	return ch
}

func TestExchangeMethodsSendWhatTheyAreAsked(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx := context.Background()
	args := Table{"alternate-exchange": "ae"}
	tests := []struct {
		name string
		call func() error
		want wire.Method
	}{
		{"declare", func() error {
			return ch.ExchangeDeclare(ctx, "x", ExchangeTopic, ExchangeDeclareOptions{Durable: true, AutoDelete: true, Internal: true, Arguments: args})
		}, &wire.ExchangeDeclare{Exchange: "x", Type: "topic", Durable: true, AutoDelete: true, Internal: true, Arguments: args}},
		{"declare plain", func() error {
			return ch.ExchangeDeclare(ctx, "y", ExchangeFanout, ExchangeDeclareOptions{})
		}, &wire.ExchangeDeclare{Exchange: "y", Type: "fanout"}},
		{"passive", func() error {
			return ch.ExchangeDeclarePassive(ctx, "x")
		}, &wire.ExchangeDeclare{Exchange: "x", Passive: true}},
		{"bind", func() error {
			return ch.ExchangeBind(ctx, "dst", "src", "a.*", BindOptions{Arguments: args})
		}, &wire.ExchangeBind{Destination: "dst", Source: "src", RoutingKey: "a.*", Arguments: args}},
		{"unbind", func() error {
			return ch.ExchangeUnbind(ctx, "dst", "src", "a.*", BindOptions{Arguments: args})
		}, &wire.ExchangeUnbind{Destination: "dst", Source: "src", RoutingKey: "a.*", Arguments: args}},
		{"delete", func() error {
			return ch.ExchangeDelete(ctx, "x", ExchangeDeleteOptions{IfUnused: true})
		}, &wire.ExchangeDelete{Exchange: "x", IfUnused: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Fatal(err)
			}
			p.expectSent(t, tt.want)
		})
	}
}

func TestExchangeNoWaitDoesNotWait(t *testing.T) {
	// The peer answers nothing to no-wait methods: a call that waited
	// would hang until the test's deadline.
	c, p := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ch.ExchangeDeclare(ctx, "x", ExchangeDirect, ExchangeDeclareOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeBind(ctx, "x", "src", "k", BindOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeUnbind(ctx, "x", "src", "k", BindOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDelete(ctx, "x", ExchangeDeleteOptions{NoWait: true}); err != nil {
		t.Fatal(err)
	}
	// A synchronous call after them gets its own reply.
	if err := ch.ExchangeDeclarePassive(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	p.expectSent(t,
		&wire.ExchangeDeclare{Exchange: "x", Type: "direct", NoWait: true},
		&wire.ExchangeBind{Destination: "x", Source: "src", RoutingKey: "k", NoWait: true},
		&wire.ExchangeUnbind{Destination: "x", Source: "src", RoutingKey: "k", NoWait: true},
		&wire.ExchangeDelete{Exchange: "x", NoWait: true},
		&wire.ExchangeDeclare{Exchange: "x", Passive: true},
	)
}

func TestExchangeDeclareWithoutKind(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx := context.Background()
	err := ch.ExchangeDeclare(ctx, "x", "", ExchangeDeclareOptions{})
	if err == nil || !strings.Contains(err.Error(), `"x"`) || !strings.Contains(err.Error(), "kind") {
		t.Fatalf("err = %v, want one naming the exchange and the missing kind", err)
	}
	// Nothing was sent: the next method is the first the peer sees.
	if err := ch.TxSelect(ctx); err != nil {
		t.Fatal(err)
	}
	p.expectSent(t, &wire.TxSelect{})
}

func TestExchangeTopologyIsRecorded(t *testing.T) {
	c, _ := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx := context.Background()
	args := Table{"k": "v"}
	if err := ch.ExchangeDeclare(ctx, "src", ExchangeTopic, ExchangeDeclareOptions{Durable: true, NoWait: true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(ctx, "dst", ExchangeFanout, ExchangeDeclareOptions{Arguments: args}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclarePassive(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeBind(ctx, "dst", "src", "a.#", BindOptions{Arguments: args}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeBind(ctx, "dst", "src", "b.#", BindOptions{}); err != nil {
		t.Fatal(err)
	}
	args["k"] = "changed after the call" // the record keeps its own copy

	c.mu.Lock()
	var names []string
	for _, e := range c.topo.Exchanges {
		names = append(names, e.Exchange+"/"+e.Type)
		if e.NoWait {
			t.Errorf("exchange %q recorded with NoWait", e.Exchange)
		}
	}
	if len(c.topo.Bindings) != 2 || c.topo.Bindings[0].Args["k"] != "v" || !c.topo.Bindings[0].ToExchange {
		t.Errorf("bindings = %+v, want two exchange bindings, the first with k=v", c.topo.Bindings)
	}
	c.mu.Unlock()
	if got := strings.Join(names, ","); got != "src/topic,dst/fanout" {
		t.Errorf("recorded exchanges %s, want src/topic,dst/fanout (passive declarations are not recorded)", got)
	}

	if err := ch.ExchangeUnbind(ctx, "dst", "src", "b.#", BindOptions{}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	if len(c.topo.Bindings) != 1 || c.topo.Bindings[0].Key != "a.#" {
		t.Errorf("after unbind, bindings = %+v, want only a.#", c.topo.Bindings)
	}
	c.mu.Unlock()

	if err := ch.ExchangeDelete(ctx, "src", ExchangeDeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	if len(c.topo.Exchanges) != 1 || c.topo.Exchanges[0].Exchange != "dst" || len(c.topo.Bindings) != 0 {
		t.Errorf("after deleting src: exchanges %+v bindings %+v, want dst and no bindings", c.topo.Exchanges, c.topo.Bindings)
	}
	c.mu.Unlock()
}

func TestExchangeRefusedClosesChannelAndIsNotRecorded(t *testing.T) {
	c, _ := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
		if d, ok := m.(*wire.ExchangeDeclare); ok && d.Exchange == "bad" {
			p.closeChannel(ch, wire.ReplyPreconditionFailed, "PRECONDITION_FAILED - inequivalent arg 'type'", m)
			return
		}
		p.reply(ch, okReply(m))
	})
	ch := peerChannel(t, c)
	ctx := context.Background()
	err := ch.ExchangeDeclare(ctx, "bad", ExchangeDirect, ExchangeDeclareOptions{})
	var perr *Error
	if !errors.Is(err, ErrPreconditionFailed) || !errors.As(err, &perr) || perr.Conn {
		t.Fatalf("err = %v, want a channel-level *Error matching ErrPreconditionFailed", err)
	}
	select {
	case <-ch.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("channel still open after the broker closed it")
	}
	if err := ch.ExchangeDeclare(ctx, "next", ExchangeDirect, ExchangeDeclareOptions{}); !errors.Is(err, ErrPreconditionFailed) {
		t.Errorf("call on the closed channel: %v, want its close cause", err)
	}
	c.mu.Lock()
	n := len(c.topo.Exchanges)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d exchanges recorded, want none", n)
	}
	// The connection goes on.
	ch2 := peerChannel(t, c)
	if err := ch2.ExchangeDeclare(ctx, "good", ExchangeDirect, ExchangeDeclareOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestExchangeLateReplyIsAbsorbedAndRecorded(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	c, _ := dialMethodsPeer(t, "RabbitMQ", func(p *methodsPeer, ch uint16, m wire.Method) {
		if d, ok := m.(*wire.ExchangeDeclare); ok && d.Exchange == "slow" && !d.Passive {
			close(arrived)
			<-release
		}
		p.reply(ch, okReply(m))
	})
	ch := peerChannel(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived // the declaration reached the broker
		cancel()
	}()
	if err := ch.ExchangeDeclare(ctx, "slow", ExchangeDirect, ExchangeDeclareOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	close(release)
	// The next call's reply comes after the late one: by then it was
	// absorbed, and the exchange recorded.
	if err := ch.ExchangeDeclarePassive(context.Background(), "slow"); err != nil {
		t.Fatalf("call after an abandoned one: %v", err)
	}
	c.mu.Lock()
	n := len(c.topo.Exchanges)
	c.mu.Unlock()
	if n != 1 {
		t.Errorf("%d exchanges recorded, want the one declared late", n)
	}
}

func TestExchangeCancelledContextSendsNothing(t *testing.T) {
	c, p := dialMethodsPeer(t, "RabbitMQ", nil)
	ch := peerChannel(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ch.ExchangeDeclare(ctx, "x", ExchangeDirect, ExchangeDeclareOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("declare: %v, want context.Canceled", err)
	}
	if err := ch.ExchangeDeclare(ctx, "x", ExchangeDirect, ExchangeDeclareOptions{NoWait: true}); !errors.Is(err, context.Canceled) {
		t.Errorf("no-wait declare: %v, want context.Canceled", err)
	}
	if err := ch.ExchangeDelete(context.Background(), "y", ExchangeDeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p.expectSent(t, &wire.ExchangeDelete{Exchange: "y"})
}
