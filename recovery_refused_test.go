package pika

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika/wire"
)

// TestFakeRecoveryAttemptRefusedGivesUp: a recovery attempt that the
// broker ends with a code the first loss treats as final (403
// ACCESS_REFUSED at the login, a connection.close 530 NOT_ALLOWED or 403
// during the restore) ends the recovery with the broker's error: no
// further attempt.
func TestFakeRecoveryAttemptRefusedGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		code uint16
		at   func(m wire.Method) bool
	}{
		{"login 403", 403, func(m wire.Method) bool { _, ok := m.(*wire.ConnectionStartOk); return ok }},
		{"restore 530", 530, func(m wire.Method) bool { _, ok := m.(*wire.ChannelOpen); return ok }},
		{"restore 403", 403, func(m wire.Method) bool { _, ok := m.(*wire.QueueDeclare); return ok }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t)
			text := "REFUSED " + tc.name
			b.setHook(func(fc *fakeConn, ch uint16, m wire.Method) bool {
				if fc.n < 2 || !tc.at(m) {
					return false
				}
				fc.send(0, &wire.ConnectionClose{ReplyCode: tc.code, ReplyText: text})
				return true
			})
			c, _, rlog := fakeSetup(t, b, b.config())
			defer c.Close(context.Background())
			b.conn(1).kill()
			ev := rlog.wait(RecoveryGaveUp, 1, 10*time.Second)
			if ev.Err == nil || !strings.Contains(ev.Err.Error(), text) {
				t.Errorf("gave up with %v, want the broker's refusal", ev.Err)
			}
			if s := rlog.String(); strings.Count(s, " attempt attempt=") != 1 {
				t.Errorf("events:\n%s\nwant a single attempt", s)
			}
			if b.conn(3) != nil {
				t.Errorf("a third connection was dialed")
			}
		})
	}
}
