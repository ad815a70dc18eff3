package pika

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// Tests of Config.ReadLinger: the reader waits before its next read only
// while nothing is awaited from the broker, and anything that becomes
// awaited (a request's reply, a publisher confirmation, a close) ends the
// wait at once. They set a linger of an hour behind the clamp's back, so
// that a wait that did not end at once would fail them by their ctx
// instead of passing late.

// lingerFake dials a fake broker with recovery off and an hour's linger,
// opens a channel and waits until the reader lingers (after the
// channel.open-ok: nothing is awaited then). The fake broker's writes
// block until the client reads them (net.Pipe), so nothing can be
// delivered while the reader lingers.
func lingerFake(t *testing.T) (*fakeBroker, *Conn, *Channel) {
	t.Helper()
	b, c := stallFake(t, false)
	c.mu.Lock()
	c.cfg.ReadLinger = time.Hour
	c.mu.Unlock()
	ch := stallChannel(t, c)
	waitLingering(t, c)
	return b, c, ch
}

// waitLingering waits until the reader lingers.
func waitLingering(t *testing.T, c *Conn) {
	t.Helper()
	waitFor(t, "the reader to linger", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lingering
	})
}

// TestReadLingerEndsForReply: a request made while the reader lingers gets
// its reply (the linger ends as the request is sent); then the reader
// lingers again.
func TestReadLingerEndsForReply(t *testing.T) {
	_, c, _ := lingerFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Another channel's requests.
	ch2, err := c.Channel(ctx)
	if err != nil {
		t.Fatalf("channel.open while the reader lingered: %v", err)
	}
	if _, err := ch2.QueueDeclare(ctx, "other", QueueDeclareOptions{}); err != nil {
		t.Fatalf("queue.declare while the reader lingered: %v", err)
	}
	waitLingering(t, c)
}

// TestReadLingerEndsForConfirm: a publisher confirmation awaited while the
// reader lingers is read at once.
func TestReadLingerEndsForConfirm(t *testing.T) {
	b, c, ch := lingerFake(t)
	b.setHook(func(fc *fakeConn, chID uint16, m wire.Method) bool {
		if _, ok := m.(*wire.BasicPublish); ok {
			fc.send(chID, &wire.BasicAck{DeliveryTag: 1})
			return true
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	waitLingering(t, c)
	f, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(ctx); err != nil {
		t.Fatalf("confirmation while the reader lingered: %v", err)
	}
}

// TestReadLingerEndsForClose: Conn.Close while the reader lingers reads the
// broker's close-ok and returns.
func TestReadLingerEndsForClose(t *testing.T) {
	_, c, _ := lingerFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close while the reader lingered: %v", err)
	}
}

// TestReadLingerDelivers: with a short linger every delivery still
// arrives, in order, whether the broker's writes come one by one or
// together.
func TestReadLingerDelivers(t *testing.T) {
	b, c := stallFake(t, false)
	c.mu.Lock()
	c.cfg.ReadLinger = 5 * time.Millisecond
	c.mu.Unlock()
	ch := stallChannel(t, c)
	fc := b.conn(1)
	cons := stallConsume(t, ch, "q", ConsumeOptions{Tag: "c"})
	go func() {
		for tag := uint64(1); tag <= 50; tag++ {
			fc.deliver(ch.ID(), "c", tag, fmt.Sprint(tag))
		}
	}()
	for want := uint64(1); want <= 50; want++ {
		d := nextDelivery(t, cons)
		if d.DeliveryTag != want {
			t.Fatalf("delivery tag %d, want %d", d.DeliveryTag, want)
		}
		if want%10 == 0 {
			if err := d.Ack(true); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestReadLingerClamped: a ReadLinger past MaxReadLinger is taken as
// MaxReadLinger, a negative one as 0.
func TestReadLingerClamped(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{time.Hour, MaxReadLinger}, {-time.Second, 0}, {time.Millisecond, time.Millisecond},
	} {
		if got := (Config{ReadLinger: tc.in}).withDefaults().ReadLinger; got != tc.want {
			t.Errorf("ReadLinger %v → %v, want %v", tc.in, got, tc.want)
		}
	}
}
