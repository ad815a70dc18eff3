// Package retmatch correlates AMQP basic.return frames with the
// confirm-mode publishes they return. Package pika's Conn and package
// loop's Conn share it, so that both report the same outcome of a
// mandatory message in every order the broker allows.
package retmatch

import (
	"hash/maphash"
	"slices"
)

// Return correlation.
//
// A basic.return does not carry the publish sequence number of the message
// it returns, only the message itself (exchange, routing key, properties and
// body). What RabbitMQ guarantees on one channel (rabbit_channel handles a
// channel's publishes one at a time, in order, and writes through a single
// writer process):
//
//  1. A mandatory message that no queue takes is returned while its publish
//     is handled, so returns arrive in publish order.
//  2. Its basic.ack (or basic.nack) is sent after the return: a message's
//     return always precedes the confirmation that covers it.
//  3. Confirmations of routed messages come when their queues accept them,
//     so they may come before or after returns of earlier or later messages,
//     singly or as a multiple ack.
//
// So a return can only be for an outstanding (not yet confirmed) mandatory
// message that was published before the return arrived and that has the
// same exchange, routing key, message-id and body. When exactly one message
// qualifies, or when the order of returns leaves only one possibility, the
// match is certain. When several identical messages are outstanding the
// protocol cannot tell which of them was returned: the library never picks
// one. It keeps the return pending and decides each candidate when its
// confirmation arrives: a candidate that no pending return can belong to
// was delivered; one that every consistent assignment makes returned was
// returned; any other resolves as maybe returned (pika.ErrMaybeReturned).

// seed seeds the signatures of mandatory messages.
var seed = maphash.MakeSeed()

// Sig is the signature that matches a basic.return to the messages it
// may be: exchange, routing key, message-id and body.
func Sig(exchange, routingKey, messageID string, body []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.WriteString(exchange)
	h.WriteByte(0)
	h.WriteString(routingKey)
	h.WriteByte(0)
	h.WriteString(messageID)
	h.WriteByte(0)
	h.Write(body)
	return h.Sum64()
}

// Verdict is what the matcher concludes about one mandatory message when
// its confirmation arrives.
type Verdict uint8

const (
	NotReturned   Verdict = iota // no return can be this message's
	WasReturned                  // a return is certainly this message's
	MaybeReturned                // the protocol cannot tell
)

// pendingReturn is a return not yet attributed to one message.
type pendingReturn[R any] struct {
	maxTag uint64 // the highest tag published when it arrived
	ret    R
}

// retGroup gathers the outstanding mandatory messages of one signature
// while returns of that signature are pending.
type retGroup[R any] struct {
	tags    []uint64           // outstanding, not yet attributed, ascending
	pending []pendingReturn[R] // unattributed returns, in arrival order
	// ghosts counts messages resolved with ErrMaybeReturned while returns
	// were pending: each may have taken one of them.
	ghosts int
}

// window is how many of g.tags a pending return with maxTag may be for.
func (g *retGroup[R]) window(maxTag uint64) int {
	n, _ := slices.BinarySearch(g.tags, maxTag+1)
	return n
}

// Matcher correlates returns (of type R) with the outstanding mandatory
// messages of one channel. It is not safe for concurrent use: its client
// guards it. The zero value is ready.
type Matcher[R any] struct {
	groups map[uint64]*retGroup[R]
}

// Active reports whether any return is pending.
func (m *Matcher[R]) Active() bool { return len(m.groups) > 0 }

// Published records a mandatory message published with tag while returns
// of its signature are pending.
func (m *Matcher[R]) Published(tag, sig uint64) {
	if g := m.groups[sig]; g != nil {
		g.tags = append(g.tags, tag)
	}
}

// Returned records a return with signature sig that arrived when lastTag
// was the highest tag published. candidates lists, in ascending order, every
// outstanding mandatory tag with that signature not already attributed
// (it is called only when no group exists yet). It reports the tags that
// are now certainly returned, each with its return, through resolve, and
// false when no outstanding message can be the returned one (a message
// published before confirm mode, say).
func (m *Matcher[R]) Returned(sig, lastTag uint64, ret R, candidates func(sig uint64) []uint64, resolve func(tag uint64, ret R)) bool {
	g := m.groups[sig]
	if g == nil {
		tags := candidates(sig)
		if len(tags) == 0 {
			return false
		}
		g = &retGroup[R]{tags: tags}
		if m.groups == nil {
			m.groups = make(map[uint64]*retGroup[R])
		}
		m.groups[sig] = g
	}
	if g.window(lastTag) == 0 {
		// Every candidate was confirmed already (or resolved as maybe
		// returned): nothing outstanding can be it.
		m.tidy(sig, g)
		return false
	}
	g.pending = append(g.pending, pendingReturn[R]{maxTag: lastTag, ret: ret})
	m.settleForced(sig, g, resolve)
	return true
}

// Confirmed decides a mandatory message with tag and signature sig whose
// confirmation arrived (and that was not resolved as returned before).
// Tags must be given in ascending order within one multiple ack.
func (m *Matcher[R]) Confirmed(tag, sig uint64, resolve func(tag uint64, ret R)) Verdict {
	g := m.groups[sig]
	if g == nil {
		return NotReturned
	}
	i, found := slices.BinarySearch(g.tags, tag)
	if !found {
		return NotReturned
	}
	g.tags = slices.Delete(g.tags, i, i+1)
	if len(g.pending) == 0 || tag > g.pending[len(g.pending)-1].maxTag {
		// Outside every pending return's window: it was published after
		// the last of them arrived.
		m.tidy(sig, g)
		return NotReturned
	}
	// Returns that forced it would have resolved it already (settleForced
	// runs after every change), so some assignment of the pending returns
	// leaves it out and another takes it in.
	g.ghosts++
	m.settleForced(sig, g, resolve)
	return MaybeReturned
}

// settleForced resolves the messages that every consistent assignment
// makes returned: returns are in publish order, so when the j-th pending
// return (from 0) can only be for the first j+1 candidates, the first j+1
// returns are exactly those candidates. Once a message of the group was
// resolved with ErrMaybeReturned it may have taken any one of the pending
// returns, so nothing more is concluded until every candidate of the
// pending returns is confirmed; then the group is forgotten.
func (m *Matcher[R]) settleForced(sig uint64, g *retGroup[R], resolve func(tag uint64, ret R)) {
	if g.ghosts > 0 {
		if len(g.pending) > 0 && g.window(g.pending[len(g.pending)-1].maxTag) == 0 {
			g.pending = g.pending[:0]
			g.ghosts = 0
		}
		m.tidy(sig, g)
		return
	}
	// A return that no candidate is left for is not correlated (it cannot
	// happen with a conforming broker); drop it.
	for j := 0; j < len(g.pending); {
		if g.window(g.pending[j].maxTag) < j+1 {
			g.pending = slices.Delete(g.pending, j, j+1)
			continue
		}
		j++
	}
	last := -1
	for j, p := range g.pending {
		if g.window(p.maxTag) == j+1 {
			last = j
		}
	}
	if last >= 0 {
		for j := 0; j <= last; j++ {
			resolve(g.tags[j], g.pending[j].ret)
		}
		g.tags = slices.Delete(g.tags, 0, last+1)
		g.pending = slices.Delete(g.pending, 0, last+1)
	}
	m.tidy(sig, g)
}

// tidy forgets a group with no pending return.
func (m *Matcher[R]) tidy(sig uint64, g *retGroup[R]) {
	if len(g.pending) == 0 {
		delete(m.groups, sig)
	}
}

// Reset forgets every pending return (the channel's link was lost).
func (m *Matcher[R]) Reset() { clear(m.groups) }
