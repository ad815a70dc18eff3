package pika

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// Tests of issue 10 (callbacks and bounds): no application code under the
// connection's lock, bounded notification queues, the write buffer bound
// with requests in flight, and copies of the broker's tables.

// dialFake dials a fake broker with cfg (the broker's config plus what the
// test set) and closes the Conn at the end of the test.
func dialFake(t *testing.T, cfg Config) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("DialConfig to the fake broker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// TestServerPropertiesIsACopy checks that the table ServerProperties
// returns belongs to the caller: changing it, nested tables included, does
// not change what the next call returns.
func TestServerPropertiesIsACopy(t *testing.T) {
	b := newFakeBroker(t)
	c := dialFake(t, b.config())
	p := c.ServerProperties()
	if p["product"] != "fake" {
		t.Fatalf("ServerProperties = %v", p)
	}
	p["product"] = "changed"
	p["extra"] = true
	p["capabilities"].(Table)["publisher_confirms"] = false
	q := c.ServerProperties()
	if q["product"] != "fake" || q["extra"] != nil {
		t.Errorf("after changing the returned table, ServerProperties = %v", q)
	}
	if caps, _ := q["capabilities"].(Table); caps["publisher_confirms"] != true {
		t.Errorf("after changing the returned capabilities, ServerProperties()[capabilities] = %v", caps)
	}
}

// TestServerPropertiesCopyFieldValue checks the deep copy behind
// ServerProperties on every kind of nested value.
func TestServerPropertiesCopyFieldValue(t *testing.T) {
	orig := Table{"t": Table{"a": []any{Table{"x": int32(1)}, []byte("b")}}, "n": nil, "s": "str"}
	cp := copyFieldValue(orig).(Table)
	cp["t"].(Table)["a"].([]any)[0].(Table)["x"] = int32(2)
	cp["t"].(Table)["a"].([]any)[1].([]byte)[0] = 'z'
	if orig["t"].(Table)["a"].([]any)[0].(Table)["x"] != int32(1) || string(orig["t"].(Table)["a"].([]any)[1].([]byte)) != "b" {
		t.Errorf("changing the copy changed the original: %v", orig)
	}
	if cp["s"] != "str" || cp["n"] != nil {
		t.Errorf("copy %v", cp)
	}
	if copyFieldValue(Table(nil)).(Table) != nil {
		t.Error("copy of a nil table is not nil")
	}
}

// buffered returns the bytes the Conn holds for the socket: the engine's
// outgoing buffer and what waits on channels behind requests in flight.
func buffered(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.OutgoingLen() + c.eng.QueuedLen()
}

// TestWriteBufferLimitCountsQueuedPublishes checks that publishes queued on
// a channel behind a request the broker has not answered yet count against
// Config.WriteBufferLimit: Publish waits instead of queueing without bound,
// and goes on once the reply comes.
func TestWriteBufferLimitCountsQueuedPublishes(t *testing.T) {
	b := newFakeBroker(t)
	release := make(chan struct{})
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		if d, ok := m.(*wire.QueueDeclare); ok && d.Queue == "slow" {
			go func() {
				<-release
				fc.send(ch, &wire.QueueDeclareOk{Queue: "slow"})
			}()
			return true
		}
		return false
	})
	const limit = 32 << 10
	cfg := b.config()
	cfg.DisableRecovery = true
	cfg.WriteBufferLimit = limit
	c := dialFake(t, cfg)
	ch, err := c.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	declared := make(chan error, 2)
	go func() {
		_, err := ch.QueueDeclare(ctx, "slow", QueueDeclareOptions{})
		declared <- err
	}()
	// The first declare is in flight once the broker has it.
	waitMethod(t, b, 1, "1:queue.declare")
	go func() {
		_, err := ch.QueueDeclare(ctx, "second", QueueDeclareOptions{})
		declared <- err
	}()
	// The second waits behind it, and so does every publish.
	for buffered(c) == 0 {
		time.Sleep(time.Millisecond)
	}
	body := make([]byte, 1024)
	published, waited := 0, false
	for published < 2000 {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := ch.Publish(pctx, "", "q", Message{Body: body})
		pcancel()
		if err == context.DeadlineExceeded {
			waited = true
			break
		}
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		published++
		if n := buffered(c); n > limit+2*len(body) {
			t.Fatalf("after %d publishes behind an unanswered request, %d bytes wait for the socket; WriteBufferLimit is %d", published, n, limit)
		}
	}
	if !waited {
		t.Fatalf("%d publishes queued behind an unanswered request without Publish waiting (WriteBufferLimit %d)", published, limit)
	}
	// The reply lets everything through, and publishing goes on.
	close(release)
	for range 2 {
		if err := <-declared; err != nil {
			t.Fatalf("QueueDeclare: %v", err)
		}
	}
	if err := ch.Publish(ctx, "", "q", Message{Body: body}); err != nil {
		t.Fatalf("Publish after the reply: %v", err)
	}
}

// waitMethod waits (up to 10 s) until connection n of b has received
// method ("channel:name").
func waitMethod(t *testing.T, b *fakeBroker, n int, method string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if fc := b.conn(n); fc != nil && slices.Contains(fc.methods(), method) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("connection %d of the fake broker did not receive %s", n, method)
}
