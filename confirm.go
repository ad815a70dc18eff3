package pika

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/pika-go/pika/internal/recovery"
	"github.com/pika-go/pika/wire"
)

// DefaultMaxUnconfirmed is the default Config.MaxUnconfirmed.
const DefaultMaxUnconfirmed = 10000

// outcome is the final verdict on one message published in confirm mode.
type outcome uint8

const (
	outAcked         outcome = iota // basic.ack, not returned
	outNacked                       // basic.nack
	outReturned                     // returned (basic.return), then confirmed
	outMaybeReturned                // one of several identical messages was returned
	outUnknown                      // the channel or connection closed first
)

// pubRecord is what a channel in confirm mode keeps for each message until
// its outcome is known. It is small: the confirm set holds it by value.
type pubRecord struct {
	conf      *Confirmation // nil when the publisher asked for none
	seq       uint64        // the tag of its first publish; kept when republished
	epoch     uint64        // the WaitConfirms batch it belongs to
	sig       uint64        // mandatory messages: see returnSig
	returned  *Return       // the return certainly attributed to it
	kept      *keptMsg      // the copy for republishing; nil when not kept
	hk        *pubHook      // for PublishOutcomeHooks; nil without them
	mandatory bool
}

// keptMsg is the copy of a message kept for republishing after a
// connection loss: its route, properties, headers (encoded, so that a table
// the application changes after Publish does not change the copy) and
// body. Copies are pooled.
type keptMsg struct {
	exchange, routingKey string
	props                wire.Properties // Headers nil: they are encoded in buf
	buf                  []byte          // the headers table (hdrLen bytes), then the body
	hdrLen               int
}

// Limits of a channel's free list of kept copies: the largest buffer a
// copy goes back to it with, and the bytes it may hold in all.
const (
	maxFreeKeptBuf   = 64 << 10
	maxFreeKeptBytes = 4 << 20
)

// keptFree is a channel's free list of kept copies (guarded by the
// connection's lock), so that keeping copies allocates nothing in the
// steady state.
type keptFree struct {
	list  []*keptMsg
	bytes int
}

func (f *keptFree) get() *keptMsg {
	if n := len(f.list); n > 0 {
		k := f.list[n-1]
		f.list[n-1] = nil
		f.list = f.list[:n-1]
		f.bytes -= cap(k.buf)
		return k
	}
	return new(keptMsg)
}

func (f *keptFree) put(k *keptMsg) {
	// The route and properties stay until the copy is reused (clearing
	// them costs more than the strings they keep alive, at most a free
	// list's worth).
	if cap(k.buf) > maxFreeKeptBuf {
		k.buf = nil // do not keep a large message's buffer
	}
	if f.bytes+cap(k.buf) > maxFreeKeptBytes {
		return
	}
	f.bytes += cap(k.buf)
	f.list = append(f.list, k)
}

// keep copies what republishing needs, into a copy from free.
func (r *pubRecord) keep(free *keptFree, exchange, routingKey string, msg *Message) {
	k := free.get()
	k.exchange, k.routingKey = exchange, routingKey
	k.props = msg.Properties
	k.props.Headers = nil
	k.buf, k.hdrLen = recovery.AppendKept(k.buf[:0], msg.Headers, msg.Body)
	r.kept = k
}

// message rebuilds the kept message for republishing.
func (r *pubRecord) message() (Message, error) {
	k := r.kept
	m := Message{Properties: k.props, Mandatory: r.mandatory}
	var err error
	m.Headers, m.Body, err = recovery.Kept(k.buf, k.hdrLen)
	return m, err
}

// release returns the kept copy to free.
func (r *pubRecord) release(free *keptFree) {
	if r.kept != nil {
		free.put(r.kept)
		r.kept = nil
	}
}

// Confirmation is the broker's verdict on one message published in confirm
// mode (see Channel.PublishWithConfirm). It is safe for concurrent use.
//
// Confirmations are carved from a per-channel slab (64 at a time), so that
// PublishWithConfirm allocates nothing per message: a Confirmation the
// application keeps keeps its slab (a few KiB) and its Conn alive.
type Confirmation struct {
	ch      *Channel // whose connection's reader a wait may end the linger of (Config.ReadLinger)
	counted bool     // guarded by mu: the wait (Done's or Wait's) is counted in confirmWaits
	mu      sync.Mutex
	tag     uint64 // guarded by mu: republishing after a recovery changes it
	settled bool
	done    chan struct{} // made by Done before the outcome; closed by settle
	// wake is the signal of the one Wait call in progress (from
	// waitSignals, cap 1), nil otherwise; settle sends on it. A second
	// concurrent Wait uses done instead.
	wake chan struct{}
	err  error
}

// Tag returns the message's publish sequence number on its channel (the
// delivery tag of the broker's basic.ack or basic.nack for it). When
// recovery publishes the message again after a connection loss, the tag
// changes to the new copy's: read it after Done is closed for the tag the
// outcome came with. Tag is safe to call concurrently with the change.
func (f *Confirmation) Tag() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tag
}

// confSlabSize is how many Confirmations a channel allocates at once (the
// Confirmation documentation says 64).
const confSlabSize = 64

// newConfirmationLocked hands out the channel's next Confirmation from its
// slab.
func (ch *Channel) newConfirmationLocked(tag uint64) *Confirmation {
	if len(ch.confSlab) == 0 {
		ch.confSlab = make([]Confirmation, confSlabSize)
	}
	f := &ch.confSlab[0]
	ch.confSlab = ch.confSlab[1:]
	f.tag = tag
	f.ch = ch
	return f
}

// waitSignals pools the signal channels of Confirmation.Wait, so that
// waiting for a confirmation allocates nothing in the steady state. A
// signal goes back to the pool empty and referenced by no Confirmation.
var waitSignals = sync.Pool{New: func() any { return make(chan struct{}, 1) }}

// closedChan is the Done channel of a Confirmation settled before anyone
// asked for one.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Done returns a channel closed once the outcome is known.
func (f *Confirmation) Done() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done == nil {
		if f.settled {
			return closedChan
		}
		f.done = make(chan struct{})
		f.countWaitLocked()
	}
	return f.done
}

// countWaitLocked counts a wait for f's outcome (Wait's, or a Done
// channel made before the outcome, whose reader is unknown), until the
// outcome, in the connection's confirmWaits, ending the reader's linger
// (Config.ReadLinger). Only a wait for the newest message published on
// the channel counts: the broker then has nothing else of the publisher's
// to work on, and a linger would idle both. While messages published
// after f are unconfirmed the broker is busy with them, and f's outcome,
// if it comes, is read at most one linger later; when they are confirmed
// first, f is the newest unconfirmed and its wait is counted then (see
// newestOutstandingLocked).
func (f *Confirmation) countWaitLocked() {
	if !f.counted && f.ch != nil && f.ch.conn.cfg.ReadLinger > 0 && f.tag >= f.ch.lastPub.Load() {
		f.counted = true
		f.ch.conn.confirmWaitStart()
	}
}

// Err returns the outcome once it is known (nil before, and nil when the
// broker accepted the message). Otherwise it is exactly one of:
//
//   - ErrNacked: the broker refused the message (basic.nack);
//   - a *ReturnedError (errors.Is ErrReturned): the broker returned the
//     mandatory message because no queue took it;
//   - ErrMaybeReturned: the broker returned one of several identical
//     mandatory messages outstanding at the same time (same exchange,
//     routing key, message-id and body), and the protocol cannot tell which;
//   - an error matching ErrOutcomeUnknown: the channel or connection closed
//     before the broker's verdict, and the message was not republished.
func (f *Confirmation) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Wait waits for the outcome (see Err) or the end of ctx, which only ends
// the wait. It returns ctx.Err() at once when ctx has already ended.
func (f *Confirmation) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	if f.settled {
		err := f.err
		f.mu.Unlock()
		return err
	}
	if f.wake != nil || f.done != nil {
		// Someone else waits already (or asked for Done): share the
		// closed-on-settle channel.
		if f.done == nil {
			f.done = make(chan struct{})
			f.countWaitLocked()
		}
		done := f.done
		f.mu.Unlock()
		select {
		case <-done:
			return f.Err()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// The common case, one waiter: a pooled signal instead of a channel
	// made per confirmation.
	wake := waitSignals.Get().(chan struct{})
	f.wake = wake
	f.countWaitLocked()
	f.mu.Unlock()
	var err error
	select {
	case <-wake:
	case <-ctx.Done():
	}
	f.mu.Lock()
	f.wake = nil
	if f.done == nil {
		// (A Done channel made meanwhile stays counted until the
		// outcome.)
		f.uncountWaitLocked()
	}
	select {
	case <-wake: // settle signalled after ctx ended: leave it empty
	default:
	}
	if f.settled {
		err = f.err
	} else {
		err = ctx.Err()
	}
	f.mu.Unlock()
	waitSignals.Put(wake)
	return err
}

// uncountWaitLocked ends what countWaitLocked counted.
func (f *Confirmation) uncountWaitLocked() {
	if f.counted {
		f.counted = false
		f.ch.conn.confirmWaitEnd()
	}
}

// settle records the outcome once; later calls do nothing.
func (f *Confirmation) settle(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.settled {
		return
	}
	f.settled = true
	f.err = err
	f.uncountWaitLocked()
	if f.done != nil {
		close(f.done)
	}
	if f.wake != nil {
		f.wake <- struct{}{} // cap 1, sent at most once: never blocks
	}
}

// ConfirmsError is what Channel.WaitConfirms returns when not every message
// it covers was accepted: how many were nacked, returned, maybe returned
// (see ErrMaybeReturned) and of unknown outcome. errors.Is matches
// ErrNacked, ErrReturned, ErrMaybeReturned and ErrOutcomeUnknown for each
// count above zero, and Cause (the channel's or connection's close cause
// behind unknown outcomes, when there is one).
type ConfirmsError struct {
	Nacked, Returned, MaybeReturned, Unknown int
	Cause                                    error
}

func (e *ConfirmsError) Error() string {
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, strconv.Itoa(n)+" "+what)
		}
	}
	add(e.Nacked, "nacked")
	add(e.Returned, "returned")
	add(e.MaybeReturned, "maybe returned")
	add(e.Unknown, "of unknown outcome")
	s := "pika: not every message was confirmed: " + strings.Join(parts, ", ")
	if e.Cause != nil {
		s += " (" + e.Cause.Error() + ")"
	}
	return s
}

// Is matches the sentinel of every outcome counted.
func (e *ConfirmsError) Is(target error) bool {
	switch target {
	case ErrNacked:
		return e.Nacked > 0
	case ErrReturned:
		return e.Returned > 0
	case ErrMaybeReturned:
		return e.MaybeReturned > 0
	case ErrOutcomeUnknown:
		return e.Unknown > 0
	}
	return false
}

// Unwrap returns the cause behind unknown outcomes, if any.
func (e *ConfirmsError) Unwrap() error { return e.Cause }

func (e *ConfirmsError) add(o outcome) {
	switch o {
	case outNacked:
		e.Nacked++
	case outReturned:
		e.Returned++
	case outMaybeReturned:
		e.MaybeReturned++
	case outUnknown:
		e.Unknown++
	}
}

// WaitConfirms waits until every message published on the channel before
// the call has its outcome (republished copies included: a message that
// recovery publishes again counts once, with the new copy's outcome), and
// reports the outcomes of the messages published since the previous
// WaitConfirms call on the channel (or since ConfirmSelect): nil only when
// the broker accepted every one of them; otherwise a *ConfirmsError with
// how many were nacked, returned, maybe returned and of unknown outcome
// (errors.Is matches ErrNacked, ErrReturned, ErrMaybeReturned and
// ErrOutcomeUnknown accordingly). Use PublishWithConfirm to know which.
//
// It returns ctx.Err() at once when ctx has already ended; ctx ending later
// ends only the wait, and the outcomes of that batch are then not reported
// by any call. It fails with ErrNotConfirmMode on a channel not in confirm
// mode. On a channel that has closed it never returns nil: it returns the
// batch's *ConfirmsError when the close left messages of the batch without
// a confirmation (its Cause is the close's), or else the channel's close
// error, as every call on a closed channel does.
func (ch *Channel) WaitConfirms(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := ch.conn
	c.mu.Lock()
	if c.state == connRecovering && c.cfg.FailWhileRecovering {
		c.mu.Unlock()
		return ErrRecovering
	}
	if !ch.confirm {
		c.mu.Unlock()
		return ErrNotConfirmMode
	}
	if ch.err != nil {
		// Closed: the batch's failures if the close left some, else the
		// close itself, as for every call on a closed channel (a nil
		// here would keep a loop that waits until failure spinning).
		err := ch.err
		if e := ch.failed[ch.epoch]; e != nil {
			delete(ch.failed, ch.epoch)
			err = e
		}
		c.mu.Unlock()
		return err
	}
	fw := &flushWaiter{upTo: ch.confirms.Next() - 1, epoch: ch.epoch, done: make(chan struct{})}
	ch.epoch++
	ch.flushes = append(ch.flushes, fw)
	ch.releaseFlushesLocked()
	if len(ch.flushes) > 0 {
		c.unlingerLocked()
	}
	c.mu.Unlock()
	select {
	case <-fw.done:
	case <-ctx.Done():
		c.mu.Lock()
		select {
		case <-fw.done:
		default:
			// Its batch's counts are dropped when the messages settle.
			c.mu.Unlock()
			return ctx.Err()
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return fw.result
}

// flushWaiter is a WaitConfirms call waiting for sequence numbers up to
// upTo, reporting the outcomes of batch epoch.
type flushWaiter struct {
	upTo   uint64
	epoch  uint64
	done   chan struct{}
	result error // set when done closes
}

// republishing reports whether messages are kept for republishing.
func (c *Conn) republishing() bool { return !c.cfg.DisableRepublish && !c.cfg.DisableRecovery }

// recordPublishLocked records a message just published on a channel in
// confirm mode and returns its Confirmation when want is set. p is the
// PublishHooks' view of the message, nil without them.
func (ch *Channel) recordPublishLocked(exchange, routingKey string, msg *Message, want bool, p *Publishing) *Confirmation {
	tag := ch.confirms.Next()
	if ch.conn.cfg.ReadLinger > 0 {
		ch.lastPub.Store(tag)
	}
	rec := pubRecord{seq: tag, epoch: ch.epoch, mandatory: msg.Mandatory}
	if p != nil {
		p.Seq = tag
	}
	if len(ch.conn.hk.outcome) > 0 {
		rec.hk = &pubHook{start: monoNow()}
		if p != nil {
			rec.hk.ctx = p.Ctx
		}
	}
	if want {
		rec.conf = ch.newConfirmationLocked(tag)
	}
	if msg.Mandatory {
		rec.sig = returnSig(exchange, routingKey, msg.MessageID, msg.Body)
		if ch.returns.active() {
			ch.returns.published(tag, rec.sig)
		}
	}
	if ch.conn.republishing() {
		rec.keep(&ch.keptFree, exchange, routingKey, msg)
	}
	ch.confirms.Add(rec)
	return rec.conf
}

// unconfirmedLocked is the number of messages whose outcome is pending.
func (ch *Channel) unconfirmedLocked() int { return ch.confirms.Len() + len(ch.republish) }

// confirmLocked settles tags after an EventConfirm (tag is the client tag).
func (ch *Channel) confirmLocked(tag uint64, multiple, ack bool) {
	ch.conn.confirmsRead++
	cf := ConfirmEvent{Tag: tag, Multiple: multiple, Ack: ack}
	// Each record is decided in tag order as Settle hands it over: the
	// return matcher may attribute returns to records still in the set
	// (later tags of this ack included), never to ones already handed.
	cf.Count = ch.confirms.Settle(tag, multiple, func(t uint64, r pubRecord) {
		o := ch.verdictLocked(t, &r, ack)
		switch o {
		case outReturned:
			cf.Returned++
		case outMaybeReturned:
			cf.MaybeReturned++
		}
		ch.finishLocked(&r, o, nil)
	})
	if len(ch.notify.onConfirm) > 0 {
		ch.notify.confirmed(cf)
	}
	if ch.conn.cfg.ReadLinger > 0 {
		if _, ok := ch.confirms.Lookup(ch.lastPub.Load()); !ok {
			ch.newestOutstandingLocked()
		}
	}
	ch.releaseFlushesLocked()
	ch.roomLocked()
}

// newestOutstandingLocked sets lastPub to the newest message whose
// outcome is pending (0 when none is), after the newest ones were settled
// (the broker confirmed them before older ones) or republished, and counts
// a wait in progress for that message (see countWaitLocked): the broker
// has nothing newer of the channel's to work on, so its waiter must end
// the linger like a wait for the newest published. The waiter checks
// lastPub under its Confirmation's lock, which is taken here after the
// store: either it sees the new lastPub, or this sees its wait.
func (ch *Channel) newestOutstandingLocked() {
	tag := ch.confirms.LastUnsettled()
	if ch.lastPub.Load() != tag {
		ch.lastPub.Store(tag)
	}
	if tag == 0 {
		return
	}
	r, ok := ch.confirms.Lookup(tag)
	if !ok || r.conf == nil {
		return
	}
	f := r.conf
	f.mu.Lock()
	if !f.settled && (f.wake != nil || f.done != nil) {
		f.countWaitLocked()
	}
	f.mu.Unlock()
}

// verdictLocked decides the outcome of a message the broker confirmed.
func (ch *Channel) verdictLocked(tag uint64, rec *pubRecord, ack bool) outcome {
	if rec.returned != nil {
		return outReturned
	}
	if rec.mandatory && ch.returns.active() {
		switch ch.returns.confirmed(tag, rec.sig, ch.attributeReturnLocked) {
		case maybeReturned:
			return outMaybeReturned
		}
	}
	if !ack {
		return outNacked
	}
	return outAcked
}

// onReturnLocked correlates a basic.return with the outstanding message it
// is for (see returns.go).
func (ch *Channel) onReturnLocked(ret *Return) {
	if !ch.confirm || !ch.confirmOK {
		return // a message published before confirm mode
	}
	sig := returnSig(ret.Exchange, ret.RoutingKey, ret.MessageID, ret.Body)
	ch.returns.returned(sig, ch.confirms.Next()-1, ret, ch.returnCandidatesLocked, ch.attributeReturnLocked)
}

// returnCandidatesLocked lists the outstanding mandatory messages with
// signature sig not attributed to a return yet.
func (ch *Channel) returnCandidatesLocked(sig uint64) []uint64 {
	var tags []uint64
	ch.confirms.EachRef(func(tag uint64, r *pubRecord) bool {
		if r.mandatory && r.returned == nil && r.sig == sig {
			tags = append(tags, tag)
		}
		return true
	})
	return tags
}

// attributeReturnLocked records that the message with tag was returned: its
// Confirmation resolves at once; the broker's ack that follows completes it.
func (ch *Channel) attributeReturnLocked(tag uint64, ret *Return) {
	r, ok := ch.confirms.Lookup(tag)
	if !ok {
		return
	}
	r.returned = ret
	if r.conf != nil {
		r.conf.settle(&ReturnedError{Return: ret})
	}
}

// finishLocked records the final outcome of a message: its Confirmation,
// the counts of its WaitConfirms batch, and the release of its kept copy.
func (ch *Channel) finishLocked(rec *pubRecord, o outcome, cause error) {
	hooked := len(ch.conn.hk.outcome) > 0
	if rec.conf != nil || hooked {
		var err error
		switch o {
		case outNacked:
			err = ErrNacked
		case outReturned:
			err = &ReturnedError{Return: rec.returned}
		case outMaybeReturned:
			err = ErrMaybeReturned
		case outUnknown:
			err = &outcomeError{cause: cause}
		}
		if rec.conf != nil {
			rec.conf.settle(err)
		}
		if hooked {
			ch.conn.outcomeLocked(ch, rec, o, err)
		}
	}
	if o != outAcked {
		e := ch.failed[rec.epoch]
		if e == nil {
			if ch.failed == nil {
				ch.failed = make(map[uint64]*ConfirmsError)
			}
			e = &ConfirmsError{}
			ch.failed[rec.epoch] = e
		}
		e.add(o)
		if o == outUnknown && e.Cause == nil && cause != nil && cause != ErrChannelClosed {
			e.Cause = cause
		}
	}
	rec.release(&ch.keptFree)
}

// lowestPendingSeq is the lowest sequence number whose outcome is pending,
// or ^0 when none is.
func (ch *Channel) lowestPendingSeq() uint64 {
	low := ^uint64(0)
	if len(ch.republish) > 0 {
		low = ch.republish[0].seq
	}
	if first := ch.confirms.FirstUnsettled(); first < ch.confirms.Next() {
		if r, ok := ch.confirms.Lookup(first); ok {
			low = min(low, r.seq)
		}
	}
	return low
}

// releaseFlushesLocked completes the WaitConfirms calls whose messages all
// have their outcome.
func (ch *Channel) releaseFlushesLocked() {
	if len(ch.flushes) == 0 {
		return
	}
	low := ch.lowestPendingSeq()
	k := 0
	for _, fw := range ch.flushes {
		if low > fw.upTo {
			var result error
			if e := ch.failed[fw.epoch]; e != nil {
				result = e
			}
			delete(ch.failed, fw.epoch)
			fw.result = result
			close(fw.done)
		} else {
			ch.flushes[k] = fw
			k++
		}
	}
	clear(ch.flushes[k:])
	ch.flushes = ch.flushes[:k]
	// Batches nobody waits for any more (every call before them ended)
	// keep no counts.
	if len(ch.flushes) == 0 && len(ch.failed) > 0 {
		for e := range ch.failed {
			if e < ch.epoch {
				delete(ch.failed, e)
			}
		}
	}
}

// roomLocked wakes publishers waiting for the number of unconfirmed
// messages to fall below Config.MaxUnconfirmed.
func (ch *Channel) roomLocked() {
	if ch.room != nil && (ch.conn.cfg.MaxUnconfirmed <= 0 || ch.unconfirmedLocked() < ch.conn.cfg.MaxUnconfirmed) {
		close(ch.room)
		ch.room = nil
	}
}

// failConfirmsLocked resolves every outstanding confirmation with
// ErrOutcomeUnknown after the channel closed with cause, the messages kept
// for republishing included.
func (ch *Channel) failConfirmsLocked(cause error) {
	if cause == ErrChannelClosed {
		cause = nil
	}
	ch.confirms.SettleAll(func(_ uint64, r pubRecord) {
		ch.finishLocked(&r, unknownUnlessReturned(&r), cause)
	})
	for i := range ch.republish {
		ch.finishLocked(&ch.republish[i], unknownUnlessReturned(&ch.republish[i]), cause)
	}
	clear(ch.republish)
	ch.republish = ch.republish[:0]
	ch.returns.reset()
	ch.releaseFlushesLocked()
	if ch.room != nil {
		close(ch.room)
		ch.room = nil
	}
}

// unknownUnlessReturned is the outcome of a message whose channel was lost
// before its confirmation: returned if the broker returned it (it dropped
// the message: the missing ack changes nothing), unknown otherwise.
func unknownUnlessReturned(r *pubRecord) outcome {
	if r.returned != nil {
		return outReturned
	}
	return outUnknown
}

// suspendConfirmsLocked handles the outstanding messages at a connection
// loss: with republishing, every message not certainly returned is kept to
// be published again on the recovered channel (its Confirmation and
// WaitConfirms batch wait for the copy's outcome); without, they resolve
// with ErrOutcomeUnknown.
func (ch *Channel) suspendConfirmsLocked(cause error) {
	ch.returns.reset()
	if !ch.conn.republishing() {
		ch.confirms.SettleAll(func(_ uint64, r pubRecord) {
			ch.finishLocked(&r, unknownUnlessReturned(&r), cause)
		})
	} else {
		ch.confirms.SettleAll(func(_ uint64, r pubRecord) {
			if r.returned != nil || r.kept == nil {
				ch.finishLocked(&r, unknownUnlessReturned(&r), cause)
				return
			}
			ch.republish = append(ch.republish, r)
		})
	}
	ch.pubBase = ch.confirms.Next() - 1
	ch.releaseFlushesLocked()
	ch.roomLocked() // messages settled here leave room for waiting publishers
}

// republishLocked publishes the messages kept for republishing again, in
// order, and returns how many.
func (ch *Channel) republishLocked() int {
	n := 0
	for i := range ch.republish {
		r := ch.republish[i]
		m, err := r.message()
		if err == nil {
			_, err = ch.conn.eng.Publish(ch.id, r.kept.exchange, r.kept.routingKey, r.mandatory, false, &m.Properties, m.Body)
		}
		if err != nil {
			ch.finishLocked(&r, outUnknown, err)
			continue
		}
		tag := ch.confirms.Next()
		if ch.conn.cfg.ReadLinger > 0 {
			ch.lastPub.Store(tag)
		}
		if r.conf != nil {
			r.conf.mu.Lock()
			r.conf.tag = tag
			r.conf.mu.Unlock()
		}
		ch.confirms.Add(r)
		n++
	}
	clear(ch.republish)
	ch.republish = ch.republish[:0]
	if n > 0 && ch.conn.cfg.ReadLinger > 0 {
		// The newest copy may be of a message someone waits for, not
		// counted before: newer messages were settled before the loss.
		ch.newestOutstandingLocked()
	}
	ch.releaseFlushesLocked()
	ch.roomLocked() // copies that failed to publish leave room
	return n
}

// ErrMaybeReturned is the outcome of a mandatory message when the broker
// returned one of several identical messages (same exchange, routing key,
// message-id and body) outstanding on the channel at once: AMQP's
// basic.return does not say which, and the library does not guess. At most
// as many of them as the broker returned were dropped. Give each message a
// distinct MessageID (or body) to always get an exact outcome.
var ErrMaybeReturned = errors.New("pika: message may have been returned by the broker (one of several identical mandatory messages was)")
