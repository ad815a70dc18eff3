package pika

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/pika-go/pika/internal/faultproxy"
	"github.com/pika-go/pika/internal/testenv"
	"github.com/pika-go/pika/wire"
)

// Logging: Config.Logger at Debug level logs every frame in and out,
// decoded. The session runs through a recording faultproxy so that the
// frames logged can be compared with the frames on the wire.

// logBuffer is a bytes.Buffer safe for the connection's goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records decodes the JSON lines.
func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// logSession runs a short session through a recording proxy with a logger
// at level, and returns the log and the proxy.
func logSession(t *testing.T, level slog.Level) (*logBuffer, *faultproxy.Proxy, string) {
	t.Helper()
	url := testenv.Broker(t)
	p := faultproxy.New(t, fxBrokerAddr(t, url))
	buf := &logBuffer{}
	cfg := fxConfig(t, url, p.Addr())
	cfg.Logger = slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(context.Background(), fxWait)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := openChannel(t, c)
	q := fxQueue(t, ch)
	if err := ch.Publish(ctx, "", q, Message{Body: bytes.Repeat([]byte("b"), 1234), Properties: Properties{ContentType: "text/plain"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, q, ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return buf, p, q
}

// frameKey names a frame the same way from a log record and from the wire:
// type, channel, and the method name or body size.
func frameKey(typ string, channel int, detail string) string {
	return fmt.Sprintf("%s/%d/%s", typ, channel, detail)
}

func TestLoggingDebugLogsEveryFrame(t *testing.T) {
	buf, p, q := logSession(t, slog.LevelDebug)
	recs := buf.records(t)

	var logged = map[string][]string{}
	var sawHeader bool
	var publish, header, body, deliver map[string]any
	for _, r := range recs {
		if r["msg"] != "amqp frame" {
			continue
		}
		if r["level"] != "DEBUG" {
			t.Errorf("frame logged at %v: %v", r["level"], r)
		}
		dir, _ := r["dir"].(string)
		typ, _ := r["type"].(string)
		if typ == "protocol-header" {
			sawHeader = dir == "send"
			continue
		}
		channel, _ := r["channel"].(float64)
		detail := ""
		switch typ {
		case "method":
			detail, _ = r["method"].(string)
		case "body":
			size, _ := r["size"].(float64)
			detail = fmt.Sprint(int(size))
		}
		logged[dir] = append(logged[dir], frameKey(typ, int(channel), detail))
		switch {
		case detail == "basic.publish":
			publish = r
		case detail == "basic.deliver":
			deliver = r
		case typ == "header" && dir == "send":
			header = r
		case typ == "body" && dir == "send":
			body = r
		}
	}
	if !sawHeader {
		t.Error("the protocol header sent is not logged")
	}

	// The same frames, in the same order, as on the wire.
	onWire := map[string][]string{}
	for _, r := range p.Frames() {
		if r.Err != nil {
			t.Fatalf("proxy: %v", r.Err)
		}
		detail := ""
		switch r.Frame.Type {
		case wire.FrameMethod:
			m, err := r.Method()
			if err != nil {
				t.Fatal(err)
			}
			detail = m.ID().Name()
		case wire.FrameBody:
			detail = fmt.Sprint(len(r.Frame.Payload))
		}
		dir := "send"
		if r.Dir == faultproxy.ServerToClient {
			dir = "recv"
		}
		onWire[dir] = append(onWire[dir], frameKey(r.Frame.Type.String(), int(r.Frame.Channel), detail))
	}
	for _, dir := range []string{"send", "recv"} {
		if strings.Join(logged[dir], " ") != strings.Join(onWire[dir], " ") {
			t.Errorf("frames logged as %s:\n  %s\nframes on the wire:\n  %s", dir,
				strings.Join(logged[dir], "\n  "), strings.Join(onWire[dir], "\n  "))
		}
	}
	for _, want := range []string{"connection.start", "connection.tune", "connection.open-ok", "channel.open-ok", "basic.deliver", "connection.close-ok"} {
		if !containsKey(logged["recv"], want) {
			t.Errorf("no %s logged as received", want)
		}
	}
	for _, want := range []string{"connection.start-ok", "connection.tune-ok", "connection.open", "basic.publish", "basic.consume", "basic.ack", "connection.close"} {
		if !containsKey(logged["send"], want) {
			t.Errorf("no %s logged as sent", want)
		}
	}

	// Decoded details: method fields, the content header's body size and
	// properties, the body's size.
	if f, _ := publish["fields"].(map[string]any); f == nil || f["RoutingKey"] != q {
		t.Errorf("basic.publish record %v does not carry its routing key %q", publish, q)
	}
	if f, _ := deliver["fields"].(map[string]any); f == nil || f["RoutingKey"] != q {
		t.Errorf("basic.deliver record %v does not carry its routing key %q", deliver, q)
	}
	if header["body_size"] != float64(1234) || !strings.Contains(fmt.Sprint(header["properties"]), "content-type") {
		t.Errorf("content header record %v; want body_size 1234 and the content-type property", header)
	}
	if body["size"] != float64(1234) {
		t.Errorf("body record %v; want size 1234", body)
	}
}

// TestLoggingDebugHidesCredentials checks that the frame log does not
// carry the password: connection.start-ok holds it in its SASL response.
func TestLoggingDebugHidesCredentials(t *testing.T) {
	url := testenv.Broker(t)
	cfg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	user, pass := cfg.Username, cfg.Password
	if user == "" {
		user, pass = "guest", "guest"
	}
	buf, _, _ := logSession(t, slog.LevelDebug)
	log := buf.String()
	response := "\x00" + user + "\x00" + pass // PLAIN
	for _, enc := range []string{
		response,
		strings.ReplaceAll(response, "\x00", `\u0000`), // JSON string
		base64.StdEncoding.EncodeToString([]byte(response)),
	} {
		if strings.Contains(log, enc) {
			t.Fatalf("the Debug frame log contains the SASL PLAIN response with the password (as %q): connection.start-ok's Response must be redacted", enc)
		}
	}
}

func TestLoggingInfoLogsNoFrames(t *testing.T) {
	buf, p, _ := logSession(t, slog.LevelInfo)
	recs := buf.records(t)
	for _, r := range recs {
		if r["msg"] == "amqp frame" || r["method"] != nil || r["type"] != nil {
			t.Errorf("per-frame record at Info level: %v", r)
		}
	}
	if frames := len(p.Frames()); len(recs) >= frames/2 {
		t.Errorf("%d records for a session of %d frames at Info level", len(recs), frames)
	}
}

func containsKey(keys []string, method string) bool {
	for _, k := range keys {
		if strings.HasSuffix(k, "/"+method) {
			return true
		}
	}
	return false
}
