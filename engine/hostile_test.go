package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/pika-go/pika/internal/scripted"
	"github.com/pika-go/pika/wire"
)

// malformed are frames a broken or hostile server might send to an open
// connection with channel 1 open, each with the reply code the client must
// close the connection with.
var malformed = []struct {
	name  string
	input []byte
	code  wire.ReplyCode
}{
	{"frame larger than frame_max", []byte{1, 0, 1, 0, 2, 0, 0}, wire.ReplyFrameError},
	{"frame larger than frame_max by one", scripted.RawFrame(wire.FrameBody, 1, make([]byte, 131072-7)), wire.ReplyFrameError},
	{"bad frame-end", func() []byte {
		b := scripted.Method(1, &wire.BasicQosOk{})
		b[len(b)-1] = 0xCD
		return b
	}(), wire.ReplyFrameError},
	{"unknown frame type", scripted.RawFrame(4, 1, []byte{1, 2, 3}), wire.ReplyFrameError},
	{"frame type zero", scripted.RawFrame(0, 0, nil), wire.ReplyFrameError},
	{"protocol header mid-stream", []byte("AMQP\x00\x00\x09\x01"), wire.ReplySyntaxError},
	{"'A' that is no header", []byte("ABCDEFGH"), wire.ReplyFrameError},
	{"unknown method", scripted.RawFrame(wire.FrameMethod, 1, []byte{0, 60, 0, 99}), wire.ReplyCommandInvalid},
	{"unknown class", scripted.RawFrame(wire.FrameMethod, 1, []byte{0x12, 0x34, 0, 10}), wire.ReplyCommandInvalid},
	{"method payload without ids", scripted.RawFrame(wire.FrameMethod, 1, []byte{0, 60}), wire.ReplySyntaxError},
	{"empty method payload", scripted.RawFrame(wire.FrameMethod, 1, nil), wire.ReplySyntaxError},
	{"truncated arguments", scripted.RawFrame(wire.FrameMethod, 1,
		scripted.MethodPayload(&wire.QueueDeclareOk{Queue: "q", MessageCount: 1})[:9]), wire.ReplySyntaxError},
	{"truncated deliver", scripted.RawFrame(wire.FrameMethod, 1,
		scripted.MethodPayload(&wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1})[:8]), wire.ReplySyntaxError},
	{"trailing bytes", scripted.RawFrame(wire.FrameMethod, 1,
		append(scripted.MethodPayload(&wire.BasicQosOk{}), 0)), wire.ReplySyntaxError},
	{"trailing bytes on channel 0", scripted.RawFrame(wire.FrameMethod, 0,
		append(scripted.MethodPayload(&wire.ConnectionUnblocked{}), 1, 2)), wire.ReplySyntaxError},
	{"bad property flags", scripted.Concat(
		scripted.Method(1, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}),
		scripted.RawFrame(wire.FrameHeader, 1, []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x00, 0x01})), wire.ReplySyntaxError},
	{"content header of another class", scripted.Concat(
		scripted.Method(1, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}),
		scripted.RawFrame(wire.FrameHeader, 1, []byte{0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})), wire.ReplySyntaxError},
	{"truncated content header", scripted.Concat(
		scripted.Method(1, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}),
		scripted.RawFrame(wire.FrameHeader, 1, []byte{0, 60, 0, 0, 0, 0})), wire.ReplySyntaxError},
	{"bad headers table", scripted.Concat(
		scripted.Method(1, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}),
		scripted.RawFrame(wire.FrameHeader, 1, []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x20, 0x00,
			0, 0, 0, 4, 1, 'k', '?', 0})), wire.ReplySyntaxError},
	{"client-only method", scripted.Method(1, &wire.BasicPublish{}), wire.ReplyCommandInvalid},
	{"client-only connection method", scripted.Method(0, &wire.ConnectionTuneOk{}), wire.ReplyCommandInvalid},
	{"connection method on a channel", scripted.Method(1, &wire.ConnectionBlocked{}), wire.ReplyCommandInvalid},
	{"channel method on channel 0", scripted.Method(0, &wire.BasicQosOk{}), wire.ReplyCommandInvalid},
	{"method on a channel never opened", scripted.Method(9, &wire.BasicQosOk{}), wire.ReplyChannelError},
	{"body on a channel never opened", scripted.Body(9, []byte("x")), wire.ReplyChannelError},
	{"heartbeat on a channel", scripted.RawFrame(wire.FrameHeartbeat, 1, nil), wire.ReplyFrameError},
	{"connection.start when open", scripted.Method(0, serverStart("PLAIN")), wire.ReplyCommandInvalid},
	{"open-ok when open", scripted.Method(0, &wire.ConnectionOpenOk{}), wire.ReplyCommandInvalid},
}

func TestMalformedFrames(t *testing.T) {
	for _, tc := range malformed {
		t.Run(tc.name, func(t *testing.T) {
			h := openDefault(t)
			ch := h.openChannel()
			h.consume(ch, "q", "c")
			err := h.recv(tc.input)
			e := h.expectProtocolClose(tc.code)
			if err != e {
				t.Errorf("Receive returned %v, want the close error %v", err, e)
			}
			if len(e.Text) == 0 || len(e.Text) > 255 {
				t.Errorf("reply text of %d bytes", len(e.Text))
			}
			t.Logf("%s", e.Text)
			// Nothing more happens, whatever arrives.
			if err := h.c.Receive(scripted.Method(0, &wire.ConnectionCloseOk{})); err != e {
				t.Errorf("Receive after close: %v", err)
			}
			h.pump()
			h.noEvents()
			h.peer.ExpectEmpty()
		})
	}
}

func TestMalformedDuringHandshake(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		code  wire.ReplyCode
	}{
		{"start with a bad table", scripted.RawFrame(wire.FrameMethod, 0, []byte{0, 10, 0, 10, 0, 9,
			0, 0, 0, 3, 1, 'k', '?', 0, 0, 0, 0, 0, 0, 0, 0}), wire.ReplySyntaxError},
		{"frame over the client's frame_max", []byte{1, 0, 0, 0, 2, 0, 0}, wire.ReplyFrameError},
		{"body before start", scripted.Body(0, []byte("x")), wire.ReplyUnexpectedFrame},
		{"header on a channel before start", scripted.Header(1, 0, nil), wire.ReplyChannelError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.recv(tc.input)
			h.expectProtocolClose(tc.code)
		})
	}
}

func TestLongReplyTextTruncated(t *testing.T) {
	h := openDefault(t)
	// No server input yields a text this long today; call the closing
	// path directly to check the limit of a shortstr is kept.
	h.c.protocolFail(wire.ReplyInternalError, string(bytes.Repeat([]byte("x"), 400)), nil)
	h.pump()
	e := h.expectProtocolClose(wire.ReplyInternalError)
	if len(e.Text) != 255 {
		t.Fatalf("reply text of %d bytes, want 255", len(e.Text))
	}
	h.c.protocolFail(wire.ReplyInternalError, "again", nil) // no-op after close
}

func TestCloseTextTruncated(t *testing.T) {
	h := openDefault(t)
	h.c.Close(string(bytes.Repeat([]byte("y"), 300)))
	h.pump()
	cl := h.peer.NextMethod(0).(*wire.ConnectionClose)
	if len(cl.ReplyText) != 255 {
		t.Fatalf("close text of %d bytes", len(cl.ReplyText))
	}
}

// conversation is a scripted exchange: setup returns an engine in some
// state with its output so far drained, and stream is everything the server
// sends next.
type conversation struct {
	setup  func() *Conn
	stream []byte
}

// handshakeConversation is the server's side of a handshake.
func handshakeConversation() conversation {
	return conversation{
		setup: func() *Conn {
			c := New(Config{Heartbeat: 20 * time.Second})
			c.Start(t0)
			c.AppendOutgoing(nil)
			return c
		},
		stream: scripted.Concat(
			scripted.Method(0, serverStart("AMQPLAIN PLAIN")),
			scripted.Method(0, &wire.ConnectionTune{ChannelMax: 64, FrameMax: 4096, Heartbeat: 30}),
			scripted.Heartbeat(),
			scripted.Method(0, &wire.ConnectionOpenOk{}),
		),
	}
}

// openEngine returns an engine after a handshake with frame_max 4096.
func openEngine() *Conn {
	c := handshakeConversation().setup()
	if err := c.Receive(handshakeConversation().stream); err != nil {
		panic(err)
	}
	c.AppendOutgoing(nil)
	for {
		if _, ok := c.NextEvent(); !ok {
			break
		}
	}
	return c
}

// busyConversation exercises most of the engine after the handshake:
// requests queued on two channels, confirms, deliveries with bodies over
// several frames, returns, get-ok, flow, blocked, cancel, a channel error
// and finally the server closing the connection.
func busyConversation() conversation {
	body := bytes.Repeat([]byte("0123456789abcdef"), 600) // 9600 bytes: 3 body frames
	return conversation{
		setup: func() *Conn {
			c := openEngine()
			ch, _, _ := c.OpenChannel()
			c.Call(ch, &wire.BasicConsume{Queue: "q", ConsumerTag: "c"})
			c.Call(ch, &wire.ConfirmSelect{})
			for i := 0; i < 3; i++ {
				c.Publish(ch, "x", "k", true, false, nil, []byte("m"))
			}
			c.Call(ch, &wire.BasicGet{Queue: "q"})
			c.Call(ch, &wire.QueueDeclare{Queue: "last"})
			ch2, _, _ := c.OpenChannel()
			c.Call(ch2, &wire.QueueDeclare{Queue: "doomed"})
			c.UpdateSecret("s", "r")
			c.AppendOutgoing(nil)
			return c
		},
		stream: scripted.Concat(
			scripted.Method(1, &wire.ChannelOpenOk{}),
			scripted.Method(2, &wire.ChannelOpenOk{}),
			scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c"}),
			scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, Exchange: "x", RoutingKey: "k"},
				&wire.Properties{ContentType: "text/plain", Headers: wire.Table{"n": int32(1)}}, body, 4096),
			scripted.Method(1, &wire.ConfirmSelectOk{}),
			scripted.Method(0, &wire.ConnectionUpdateSecretOk{}),
			scripted.Message(1, &wire.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: "x", RoutingKey: "k"}, nil, []byte("m"), 4096),
			scripted.Method(1, &wire.BasicAck{DeliveryTag: 2, Multiple: true}),
			scripted.Heartbeat(),
			scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "ghost", DeliveryTag: 2}, nil, nil, 4096),
			scripted.Method(1, &wire.BasicNack{DeliveryTag: 3}),
			scripted.Message(1, &wire.BasicGetOk{DeliveryTag: 3, MessageCount: 1}, nil, body[:5000], 4096),
			scripted.Method(1, &wire.ChannelFlow{Active: false}),
			scripted.Method(0, &wire.ConnectionBlocked{Reason: "memory"}),
			scripted.Method(1, &wire.QueueDeclareOk{Queue: "last"}),
			scripted.Method(2, &wire.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no queue 'doomed'", ClassID: 50, MethodID: 10}),
			scripted.Method(0, &wire.ConnectionUnblocked{}),
			scripted.Method(1, &wire.BasicCancel{ConsumerTag: "c"}),
			scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 4}, nil, []byte("z"), 4096),
			scripted.Method(0, &wire.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED"}),
		),
	}
}

// play runs conv with the stream cut at the given offsets, taking output
// and events after every Receive.
func (conv conversation) play(cuts []int) (events []Event, out []byte) {
	c := conv.setup()
	prev := 0
	feed := func(b []byte) {
		c.Receive(b)
		out = c.AppendOutgoing(out)
		for {
			e, ok := c.NextEvent()
			if !ok {
				break
			}
			events = append(events, e)
		}
	}
	for _, cut := range cuts {
		feed(conv.stream[prev:cut])
		prev = cut
	}
	feed(conv.stream[prev:])
	return events, out
}

func TestReceiveSplitAnywhere(t *testing.T) {
	for name, conv := range map[string]conversation{"handshake": handshakeConversation(), "busy": busyConversation()} {
		t.Run(name, func(t *testing.T) {
			wantEvents, wantOut := conv.play(nil)
			if len(wantEvents) == 0 || len(wantOut) == 0 {
				t.Fatalf("the conversation produced only %d events: %s", len(wantEvents), describeAll(wantEvents))
			}
			if name == "busy" {
				checkBusyEvents(t, wantEvents)
			}
			check := func(what string, cuts []int) {
				t.Helper()
				events, out := conv.play(cuts)
				if !bytes.Equal(out, wantOut) {
					t.Fatalf("%s: client output differs:\n% x\nwant\n% x", what, out, wantOut)
				}
				if !reflect.DeepEqual(events, wantEvents) {
					t.Fatalf("%s: events differ:%s\nwant%s", what, describeAll(events), describeAll(wantEvents))
				}
			}
			for k := 1; k < len(conv.stream); k++ {
				check(fmt.Sprintf("cut at %d", k), []int{k})
			}
			every := make([]int, len(conv.stream)-1)
			for i := range every {
				every[i] = i + 1
			}
			check("byte by byte", every)
		})
	}
}

// checkBusyEvents pins down what busyConversation produces when fed at once,
// so that the split test compares against a known-good run.
func checkBusyEvents(t *testing.T, events []Event) {
	t.Helper()
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.Kind.String())
	}
	want := []string{
		"reply", "reply", "reply", // open-ok 1, open-ok 2, consume-ok
		"delivery", "reply", "reply", // delivery, select-ok, update-secret-ok
		"return", "confirm", "orphan-delivery", "confirm", // return before ack; nack
		"get-ok", "flow", "blocked", "reply", // get-ok, flow, blocked, declare-ok "last"
		"reply", "channel-closed", // channel 2's pending declare fails, then it closes
		"unblocked", "cancel", "orphan-delivery", "closed",
	}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("events %v\nwant   %v", kinds, want)
	}
	if e := events[7]; e.Tag != 2 || !e.Multiple || !e.Ack || e.Count != 2 {
		t.Errorf("ack event %+v", e)
	}
	if e := events[14]; e.Channel != 2 || !errors.Is(e.Err, ReplyCodeError(404)) {
		t.Errorf("channel 2's request: %s", describe(e))
	}
	var ce *Error
	if e := events[len(events)-1]; !errors.As(e.Err, &ce) || ce.Code != 320 {
		t.Errorf("closed with %v", e.Err)
	}
}

// fuzzSetup returns an open engine with a consumer on channel 1 in confirm
// mode, three publishes outstanding, a get and a declare pending, and
// channel 2 opening.
func fuzzSetup() *Conn {
	c := openEngine()
	c.OpenChannel()
	c.Receive(scripted.Method(1, &wire.ChannelOpenOk{}))
	c.Call(1, &wire.BasicConsume{Queue: "q", ConsumerTag: "c"})
	c.Receive(scripted.Method(1, &wire.BasicConsumeOk{ConsumerTag: "c"}))
	c.Send(1, &wire.ConfirmSelect{NoWait: true})
	for i := 0; i < 3; i++ {
		c.Publish(1, "", "q", true, false, nil, []byte("m"))
	}
	c.Call(1, &wire.BasicGet{Queue: "q"})
	c.Call(1, &wire.QueueDeclare{Queue: "x"})
	c.OpenChannel()
	c.UpdateSecret("s", "r")
	c.AppendOutgoing(nil)
	for {
		if _, ok := c.NextEvent(); !ok {
			break
		}
	}
	return c
}

// fuzzSeeds are well-formed and malformed server streams for fuzzSetup.
func fuzzSeeds() [][]byte {
	seeds := [][]byte{
		busyConversation().stream,
		scripted.Concat(
			scripted.Message(1, &wire.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, nil, []byte("hello"), 4096),
			scripted.Method(1, &wire.BasicAck{DeliveryTag: 3, Multiple: true}),
			scripted.Message(1, &wire.BasicGetOk{DeliveryTag: 2}, nil, bytes.Repeat([]byte{7}, 5000), 4096),
			scripted.Method(1, &wire.QueueDeclareOk{Queue: "x"}),
			scripted.Method(2, &wire.ChannelOpenOk{}),
			scripted.Method(0, &wire.ConnectionUpdateSecretOk{}),
			scripted.Method(1, &wire.ChannelClose{ReplyCode: 406}),
			scripted.Method(2, &wire.ChannelFlow{}),
		),
		scripted.Method(0, &wire.ConnectionClose{ReplyCode: 320}),
		scripted.Concat(scripted.Method(1, &wire.BasicGetEmpty{}), scripted.Method(1, &wire.BasicCancel{ConsumerTag: "c", NoWait: true})),
	}
	for _, m := range malformed {
		if len(m.input) <= 4096 { // large seeds make the fuzzer's minimisation crawl
			seeds = append(seeds, m.input)
		}
	}
	return seeds
}

// FuzzReceive feeds arbitrary bytes, cut at arbitrary points, to an open
// engine with state on several channels. The engine must never panic, its
// output must always be well-formed frames, EventClosed must come once and
// last, and Receive must report an error only once the connection closed.
func FuzzReceive(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add(uint64(i), s)
	}
	f.Fuzz(func(t *testing.T, seed uint64, data []byte) {
		c := fuzzSetup()
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		var out []byte
		closed := false
		now := t0
		for len(data) > 0 {
			n := 1 + rng.IntN(len(data))
			if rng.IntN(4) == 0 {
				n = min(n, 1+rng.IntN(8))
			}
			err := c.Receive(data[:n])
			data = data[n:]
			if err != nil && !c.IsClosed() {
				t.Fatalf("Receive returned %v while the connection lives", err)
			}
			if rng.IntN(8) == 0 {
				now = now.Add(time.Duration(rng.IntN(40)) * time.Second)
				c.Tick(now)
			}
			out = c.AppendOutgoing(out)
			for {
				e, ok := c.NextEvent()
				if !ok {
					break
				}
				if closed {
					t.Fatalf("event %s after EventClosed", e.Kind)
				}
				if e.Kind == EventClosed {
					closed = true
				}
			}
			if closed != c.IsClosed() {
				t.Fatalf("IsClosed %v, EventClosed seen %v", c.IsClosed(), closed)
			}
		}
		checkWellFormed(t, out)
	})
}

// checkWellFormed checks that the client's output is a sequence of
// complete, decodable frames.
func checkWellFormed(t *testing.T, out []byte) {
	t.Helper()
	for len(out) > 0 {
		fr, n, err := wire.ParseFrame(out, 4096)
		if err != nil || n == 0 {
			t.Fatalf("client output is not a frame (err %v): % x", err, out[:min(len(out), 32)])
		}
		switch fr.Type {
		case wire.FrameMethod:
			if _, err := wire.DecodeMethod(fr.Payload); err != nil {
				t.Fatalf("client sent a bad method: %v", err)
			}
		case wire.FrameHeader:
			var h wire.ContentHeader
			if err := h.Decode(fr.Payload, 0); err != nil {
				t.Fatalf("client sent a bad content header: %v", err)
			}
		}
		out = out[n:]
	}
}

// TestFuzzSeedsMutated runs the fuzz body over deterministic mutations of
// the seeds, so that plain go test exercises hostile input beyond the seeds.
func TestFuzzSeedsMutated(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seeds := fuzzSeeds()
	for i := 0; i < 3000; i++ {
		s := bytes.Clone(seeds[rng.IntN(len(seeds))])
		if len(s) == 0 {
			continue
		}
		for k := rng.IntN(4); k >= 0; k-- {
			switch rng.IntN(4) {
			case 0: // flip a byte
				s[rng.IntN(len(s))] = byte(rng.Uint32())
			case 1: // change a length field's high byte
				if j := rng.IntN(len(s)); j+4 <= len(s) {
					binary.BigEndian.PutUint32(s[j:], rng.Uint32()>>rng.IntN(32))
				}
			case 2: // cut
				s = s[:rng.IntN(len(s))+1]
			case 3: // duplicate a slice
				a := rng.IntN(len(s))
				b := a + rng.IntN(len(s)-a)
				s = append(s[:b:b], s[a:]...)
			}
		}
		c := fuzzSetup()
		off := 0
		for off < len(s) {
			n := 1 + rng.IntN(len(s)-off)
			err := c.Receive(s[off : off+n])
			if err != nil && !c.IsClosed() {
				t.Fatalf("Receive error %v with the connection open", err)
			}
			off += n
		}
		checkWellFormed(t, c.AppendOutgoing(nil))
		var last Event
		for {
			e, ok := c.NextEvent()
			if !ok {
				break
			}
			if last.Kind == EventClosed {
				t.Fatalf("event after EventClosed")
			}
			last = e
		}
	}
}
