package scripted

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pika-go/pika/wire"
)

// fatalTB records the first Fatalf and stops the calling assertion with a
// panic that run recovers.
type fatalTB struct {
	testing.TB
	msg string
}

type fatalStop struct{}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = format
	panic(fatalStop{})
}

// run calls fn with a fresh Client over a fatalTB and returns the failure
// message, or "" when fn passed.
func run(t *testing.T, sent []byte, fn func(c *Client)) (msg string) {
	t.Helper()
	tb := &fatalTB{TB: t}
	c := NewClient(tb)
	c.Write(sent)
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fatalStop); !ok {
				panic(r)
			}
			msg = tb.msg
		}
	}()
	fn(c)
	return ""
}

func TestBuilders(t *testing.T) {
	got := Method(3, &wire.ChannelOpenOk{})
	want := []byte{1, 0, 3, 0, 0, 0, 8, 0, 20, 0, 11, 0, 0, 0, 0, 0xCE}
	if !bytes.Equal(got, want) {
		t.Errorf("Method = % x, want % x", got, want)
	}
	if got, want := Heartbeat(), []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}; !bytes.Equal(got, want) {
		t.Errorf("Heartbeat = % x, want % x", got, want)
	}
	if got, want := Body(1, []byte("ab")), []byte{3, 0, 1, 0, 0, 0, 2, 'a', 'b', 0xCE}; !bytes.Equal(got, want) {
		t.Errorf("Body = % x, want % x", got, want)
	}
	if got, want := RawFrame(9, 0, nil), []byte{9, 0, 0, 0, 0, 0, 0, 0xCE}; !bytes.Equal(got, want) {
		t.Errorf("RawFrame = % x, want % x", got, want)
	}
	if got, want := MethodPayload(&wire.BasicQosOk{}), []byte{0, 60, 0, 11}; !bytes.Equal(got, want) {
		t.Errorf("MethodPayload = % x, want % x", got, want)
	}
	h := Header(1, 5, nil)
	if want := []byte{2, 0, 1, 0, 0, 0, 14, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0xCE}; !bytes.Equal(h, want) {
		t.Errorf("Header = % x, want % x", h, want)
	}
	msg := Message(1, &wire.BasicPublish{}, nil, make([]byte, 5000), 4096)
	// method + header + two body frames (4088 + 912 bytes).
	if n := len(msg); n != len(Method(1, &wire.BasicPublish{}))+len(Header(1, 5000, nil))+4096+912+8 {
		t.Errorf("Message is %d bytes", n)
	}
	if got := Concat([]byte("a"), nil, []byte("bc")); string(got) != "abc" {
		t.Errorf("Concat = %q", got)
	}
}

func TestBuilderPanicsOnUnencodable(t *testing.T) {
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.Contains(s, "cannot encode") {
			t.Errorf("recover() = %v, want a panic naming the problem", r)
		}
	}()
	Method(1, &wire.QueueDeclare{Queue: strings.Repeat("q", 300)})
}

func TestClientAssertions(t *testing.T) {
	declare := &wire.QueueDeclare{Queue: "q", Durable: true}
	stream := Concat([]byte(wire.ProtocolHeader), Method(1, declare), Heartbeat(),
		Message(1, &wire.BasicPublish{RoutingKey: "k"}, &wire.Properties{ContentType: "t"}, []byte("body"), 0))

	if msg := run(t, stream, func(c *Client) {
		c.ExpectProtocolHeader()
		c.ExpectMethod(1, declare)
		c.ExpectHeartbeat()
		c.ExpectMessage(1, &wire.BasicPublish{RoutingKey: "k"}, &wire.Properties{ContentType: "t"}, []byte("body"), 0)
		c.ExpectEmpty()
	}); msg != "" {
		t.Fatalf("correct script failed: %s", msg)
	}

	failing := []struct {
		name string
		fn   func(c *Client)
	}{
		{"wrong header", func(c *Client) { c.ExpectBytes([]byte("AMQP\x00\x00\x09\x00")) }},
		{"short header", func(c *Client) { c.ExpectBytes(make([]byte, 1000)) }},
		{"wrong method", func(c *Client) {
			c.ExpectProtocolHeader()
			c.ExpectMethod(1, &wire.QueueDeclare{Queue: "q"})
		}},
		{"wrong channel", func(c *Client) {
			c.ExpectProtocolHeader()
			c.NextMethod(2)
		}},
		{"not a heartbeat", func(c *Client) {
			c.ExpectProtocolHeader()
			c.ExpectHeartbeat()
		}},
		{"not empty", func(c *Client) { c.ExpectEmpty() }},
		{"no frame", func(c *Client) {
			c.ExpectProtocolHeader()
			c.Next()
			c.Next()
			c.Next()
			c.Next()
			c.Next()
			c.Next()
		}},
		{"wrong body", func(c *Client) {
			c.ExpectProtocolHeader()
			c.Next()
			c.Next()
			c.ExpectMessage(1, &wire.BasicPublish{RoutingKey: "k"}, &wire.Properties{ContentType: "t"}, []byte("BODY"), 0)
		}},
	}
	for _, tc := range failing {
		t.Run(tc.name, func(t *testing.T) {
			if msg := run(t, stream, tc.fn); msg == "" {
				t.Error("assertion passed, want a failure")
			}
		})
	}
	t.Run("malformed", func(t *testing.T) {
		if msg := run(t, RawFrame(1, 0, []byte{0, 10}), func(c *Client) { c.Next() }); msg == "" {
			t.Error("a truncated method passed")
		}
		if msg := run(t, RawFrame(9, 0, nil), func(c *Client) { c.Next() }); msg == "" {
			t.Error("an unknown frame type passed")
		}
	})
}

func TestClientNextDecodes(t *testing.T) {
	tb := &fatalTB{TB: t}
	c := NewClient(tb)
	c.SetMaxFrameSize(4096)
	c.Write(Header(2, 9, &wire.Properties{AppID: "a"}))
	s := c.Next()
	if s.Header == nil || s.Header.BodySize != 9 || s.Header.Properties.AppID != "a" || s.Channel != 2 {
		t.Fatalf("Next = %v", s)
	}
	if !strings.Contains(s.String(), "content header on channel 2") {
		t.Errorf("String = %q", s.String())
	}
	if len(c.Pending()) != 0 {
		t.Errorf("Pending = % x", c.Pending())
	}
}
