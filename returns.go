package pika

import "github.com/pika-go/pika/internal/retmatch"

// Return correlation: a basic.return does not carry the publish sequence
// number of the message it returns. internal/retmatch explains what
// RabbitMQ guarantees and how a return is attributed to an outstanding
// mandatory message, never by a guess; package loop uses the same code.

// returnSig is the signature that matches a basic.return to the messages it
// may be: exchange, routing key, message-id and body.
func returnSig(exchange, routingKey, messageID string, body []byte) uint64 {
	return retmatch.Sig(exchange, routingKey, messageID, body)
}

// verdict is what the matcher concludes about one mandatory message when
// its confirmation arrives.
type verdict = retmatch.Verdict

const (
	notReturned   = retmatch.NotReturned   // no return can be this message's
	wasReturned   = retmatch.WasReturned   // a return is certainly this message's
	maybeReturned = retmatch.MaybeReturned // the protocol cannot tell
)

// returnMatcher correlates returns with the outstanding mandatory messages
// of one channel. It is guarded by the connection's lock. The zero value is
// ready.
type returnMatcher struct {
	m retmatch.Matcher[*Return]
}

func (m *returnMatcher) active() bool              { return m.m.Active() }
func (m *returnMatcher) published(tag, sig uint64) { m.m.Published(tag, sig) }
func (m *returnMatcher) reset()                    { m.m.Reset() }

func (m *returnMatcher) returned(sig, lastTag uint64, ret *Return, candidates func(sig uint64) []uint64, resolve func(tag uint64, ret *Return)) bool {
	return m.m.Returned(sig, lastTag, ret, candidates, resolve)
}

func (m *returnMatcher) confirmed(tag, sig uint64, resolve func(tag uint64, ret *Return)) verdict {
	return m.m.Confirmed(tag, sig, resolve)
}
