package engine

import (
	"testing"

	"github.com/pika-go/pika/wire"
)

// TestErrorRetryableEveryReplyCode checks (*Error).Retryable against the
// classification its documentation gives, for every reply code the spec
// defines and for codes it does not.
func TestErrorRetryableEveryReplyCode(t *testing.T) {
	tests := []struct {
		code wire.ReplyCode
		want bool
	}{
		{wire.ReplySuccess, false},
		{wire.ReplyContentTooLarge, true},
		{wire.ReplyNoRoute, true},
		{wire.ReplyNoConsumers, true},
		{wire.ReplyConnectionForced, true},
		{wire.ReplyInvalidPath, false},
		{wire.ReplyAccessRefused, false},
		{wire.ReplyNotFound, true},
		{wire.ReplyResourceLocked, true},
		{wire.ReplyPreconditionFailed, false},
		{wire.ReplyFrameError, false},
		{wire.ReplySyntaxError, false},
		{wire.ReplyCommandInvalid, false},
		{wire.ReplyChannelError, false},
		{wire.ReplyUnexpectedFrame, false},
		{wire.ReplyResourceError, true},
		{wire.ReplyNotAllowed, false},
		{wire.ReplyNotImplemented, false},
		{wire.ReplyInternalError, true},
		{0, false},
		{999, false},
	}
	seen := map[wire.ReplyCode]bool{}
	for _, tt := range tests {
		seen[tt.code] = true
		for _, conn := range []bool{false, true} {
			e := &Error{Code: tt.code, Conn: conn, Server: true}
			if got := e.Retryable(); got != tt.want {
				t.Errorf("Error{Code: %d %s, Conn: %v}.Retryable() = %v, want %v", tt.code, tt.code, conn, got, tt.want)
			}
		}
	}
	// Every code the spec defines is in the table.
	for c := wire.ReplyCode(0); c < 1000; c++ {
		if c.Known() && !seen[c] {
			t.Errorf("reply code %d %s is not classified by this test", c, c)
		}
	}
}
