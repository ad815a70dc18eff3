package recovery

import (
	"errors"
	"fmt"
	"testing"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// AttemptFinal: an attempt ends the recovery on a refused login or vhost,
// and on a broker's connection close with a code the first loss does not
// recover from; not on a recoverable close, a channel's close or a
// network error.
func TestAttemptFinal(t *testing.T) {
	conn := func(code wire.ReplyCode) error {
		return fmt.Errorf("attempt: %w", &engine.Error{Code: code, Server: true, Conn: true})
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("handshake: %w", engine.ErrAuthentication), true},
		{engine.ErrVhostRefused, true},
		{conn(wire.ReplyAccessRefused), true},
		{conn(wire.ReplyNotAllowed), true},
		{conn(wire.ReplyConnectionForced), false},
		{conn(wire.ReplyInternalError), false},
		{&engine.Error{Code: wire.ReplyAccessRefused, Server: true, Channel: 2}, false},
		{&engine.Error{Code: wire.ReplyNotAllowed, Conn: true}, false}, // the client's own close
		{errors.New("read: connection reset"), false},
		{nil, false},
	} {
		if got := AttemptFinal(tc.err); got != tc.want {
			t.Errorf("AttemptFinal(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
