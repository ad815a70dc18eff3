package pika

import (
	"context"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// TestReviewMaxUnconfirmedWakesAfterLoss: a publisher waiting for room
// under Config.MaxUnconfirmed must be woken when a connection loss settles
// the outstanding messages (ErrOutcomeUnknown without republishing), not
// wait for a confirmation that can never come.
func TestReviewMaxUnconfirmedWakesAfterLoss(t *testing.T) {
	b := newFakeBroker(t)
	b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
		_, ok := m.(*wire.BasicPublish)
		return ok // never confirmed
	})
	cfg := b.config()
	cfg.DisableRepublish = true
	cfg.MaxUnconfirmed = 1
	_, ch, rlog := fakeSetup(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.ConfirmSelect(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		_, err := ch.PublishWithConfirm(ctx, "", "q", Message{Body: []byte("2")})
		published <- err
	}()
	time.Sleep(20 * time.Millisecond) // the second publisher waits for room
	b.conn(1).kill()
	if err := first.Wait(ctx); err == nil {
		t.Fatalf("first message: nil after the loss, want ErrOutcomeUnknown")
	}
	rlog.wait(RecoveryRecovered, 1, 5*time.Second)
	wctx, wcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer wcancel()
	select {
	case err := <-published:
		if err != nil {
			t.Fatalf("second publish: %v", err)
		}
	case <-wctx.Done():
		t.Fatalf("second publish still waits for room after the loss settled the only unconfirmed message")
	}
}
