package pika

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// RPCErrorHeader is the header with which a reply reports that the server's
// handler failed (see Serve): its value is the handler's error text. Call
// turns such a reply into an *RPCError.
const RPCErrorHeader = "x-pika-rpc-error"

// defaultRPCReplyBuffer is the reply consumer's buffer size (see
// RPCClientOptions.ReplyBuffer).
const defaultRPCReplyBuffer = 1 << 14

var (
	// ErrRPCInterrupted is the error of a Call whose request or reply was
	// on a connection that was lost. Direct reply-to replies are addressed
	// to the lost connection, so none can ever arrive: the call fails at
	// once instead of waiting for its ctx. The server may or may not have
	// handled the request; Call does not retry it (a request is not known
	// to be safe to repeat), the caller may.
	ErrRPCInterrupted = errors.New("pika: rpc call interrupted by a connection loss (the request may or may not have been handled)")
	// ErrRPCClientClosed is the error of calls on a closed RPCClient, and
	// of calls still waiting when it was closed.
	ErrRPCClientClosed = errors.New("pika: rpc client closed")
)

// RPCError is the error of a Call whose server replied that its handler
// failed (the reply carried RPCErrorHeader).
type RPCError struct {
	Text  string    // the handler's error text
	Reply *Delivery // the reply itself
}

func (e *RPCError) Error() string { return "pika: rpc server error: " + e.Text }

// RPCClientOptions configure an RPCClient. The zero value works.
type RPCClientOptions struct {
	// ReplyBuffer is the reply consumer's buffer soft limit, in replies
	// (default 16384; the limit in bytes is DefaultConsumerBufferBytes).
	// Replies are taken off it at once by the client's own goroutine; it
	// matters only when more replies than this arrive faster than one
	// goroutine can match them to calls, and replies past twice the limit
	// are dropped (see ConsumerDiscard; such calls end with their ctx).
	ReplyBuffer int
}

// RPCStats are the counters of an RPCClient (see RPCClient.Stats).
type RPCStats struct {
	Calls       uint64 // requests published
	Replies     uint64 // replies matched to a waiting call
	Late        uint64 // replies that matched no waiting call (its ctx ended, or its connection was lost) and were dropped
	Cancelled   uint64 // calls whose ctx ended before their reply
	Interrupted uint64 // calls failed with ErrRPCInterrupted
	Returned    uint64 // requests the broker returned as unroutable
	Failed      uint64 // calls failed otherwise: error replies (*RPCError), publish refused, channel closed by the broker, client closed
	Pending     int    // calls waiting for their reply now
}

// RPCClient makes remote procedure calls over RabbitMQ's direct reply-to:
// it publishes requests with ReplyTo set to "amq.rabbitmq.reply-to" and a
// generated CorrelationID, and matches the replies, which the broker
// delivers straight to the client's consumer, to the waiting calls. It is
// safe for concurrent use: any number of goroutines may Call at once, on
// one channel.
//
// The client owns one channel of its connection, with a no-ack consumer on
// "amq.rabbitmq.reply-to" started before any request is published (as
// RabbitMQ requires). When the connection is lost and recovered, the
// library restores the channel and the consumer; the calls waiting at the
// loss fail at once with ErrRPCInterrupted, since their replies were
// addressed to the lost connection. When the broker closes the channel
// (for example, a request published to an exchange that does not exist:
// 404 NOT_FOUND), the calls waiting on it fail with that error and the
// next Call opens a new channel. A call never waits past its ctx, and
// never forever when the request cannot be answered: requests are
// published with Mandatory, so one that reaches no queue fails with a
// *ReturnedError (errors.Is ErrReturned).
//
// A server that never answers is noticed only through the ctx: give every
// Call a deadline. Like Publish, a Call also waits (bounded by its ctx and
// Config.BlockedTimeout) while the broker blocks the connection, and
// during a recovery (unless Config.FailWhileRecovering is set).
type RPCClient struct {
	conn   *Conn
	opts   RPCClientOptions
	prefix string // of correlation ids: unique to this client
	seq    atomic.Uint64

	opening chan struct{} // holds a value while a call opens a session

	mu      sync.Mutex
	sess    *rpcSession // the current session; nil or ended: open a new one
	pending map[string]*rpcCall
	closed  bool
	stats   RPCStats

	unsubscribe func()
	stop        chan struct{} // closed by Close
	wg          sync.WaitGroup
}

// rpcSession is a channel with its reply consumer.
type rpcSession struct {
	ch    *Channel
	cons  *Consumer
	ended bool  // guarded by RPCClient.mu
	err   error // why it ended
}

// rpcCall is a call waiting for its reply.
type rpcCall struct {
	sess *rpcSession
	gen  uint64        // Conn.lossCount before the request was published
	done chan rpcReply // buffered: receives exactly one result
}

type rpcReply struct {
	d   *Delivery
	err error
}

// NewRPCClient returns a client making calls over conn. It opens its
// channel and starts its reply consumer before returning, bounded by ctx.
func NewRPCClient(ctx context.Context, conn *Conn, opts RPCClientOptions) (*RPCClient, error) {
	if opts.ReplyBuffer <= 0 {
		opts.ReplyBuffer = defaultRPCReplyBuffer
	}
	var b [8]byte
	rand.Read(b[:])
	c := &RPCClient{
		conn:    conn,
		opts:    opts,
		prefix:  hex.EncodeToString(b[:]) + "-",
		pending: make(map[string]*rpcCall),
		stop:    make(chan struct{}),
		opening: make(chan struct{}, 1),
	}
	if _, err := c.session(ctx); err != nil {
		return nil, err
	}
	sig, unsubscribe := conn.subscribeLoss()
	c.unsubscribe = unsubscribe
	c.wg.Add(1)
	go c.watchLosses(sig)
	return c, nil
}

// session returns the current session, opening a new one if there is none
// or the last one ended.
func (c *RPCClient) session(ctx context.Context) (*rpcSession, error) {
	c.mu.Lock()
	s, closed := c.sess, c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrRPCClientClosed
	}
	if s != nil && !c.sessionEnded(s) {
		return s, nil
	}
	// One call at a time opens a session; the others wait for it, but
	// not past their ctx.
	select {
	case c.opening <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.opening }()
	c.mu.Lock()
	s = c.sess
	c.mu.Unlock()
	if s != nil && !c.sessionEnded(s) {
		return s, nil // opened by another call meanwhile
	}
	ch, err := c.conn.Channel(ctx)
	if err != nil {
		return nil, fmt.Errorf("pika: rpc client: open channel: %w", err)
	}
	s = &rpcSession{ch: ch}
	ch.OnReturn(func(r *Return) { c.returned(s, r) })
	// Direct reply-to: consume in no-ack mode before the first publish.
	cons, err := ch.Consume(ctx, directReplyTo, ConsumeOptions{AutoAck: true, BufferSize: c.opts.ReplyBuffer})
	if err != nil {
		// Not waited for: the consume may be unanswered, and the close
		// waits behind it.
		closeLater(ch)
		return nil, fmt.Errorf("pika: rpc client: consume %s: %w", directReplyTo, err)
	}
	s.cons = cons
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		closeLater(ch)
		return nil, ErrRPCClientClosed
	}
	c.sess = s
	// Counted before the unlock: a Close that sees this session must also
	// wait for its dispatcher (after the unlock, Close could pass its
	// wg.Wait before the Add and return with the dispatcher still to run).
	c.wg.Add(1)
	c.mu.Unlock()
	go c.dispatch(s)
	return s, nil
}

// closeLater closes ch on a goroutine of its own, bounded in time, so that
// no call waits for it.
func closeLater(ch *Channel) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ch.Close(ctx)
	}()
}

// sessionEnded reports whether s ended (its consumer or channel did).
func (c *RPCClient) sessionEnded(s *rpcSession) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.ended
}

// Call publishes msg to exchange with routingKey as a request and waits for
// its reply, bounded by ctx. It sets msg's ReplyTo and CorrelationID
// (overwriting them) and its Mandatory flag.
//
// Call returns the reply, or:
//   - ctx.Err() when ctx ends first; a reply arriving later is dropped and
//     counted in RPCStats.Late;
//   - ErrRPCInterrupted when the connection was lost after the request was
//     published (the request may or may not have been handled);
//   - a *ReturnedError (errors.Is ErrReturned) when no queue took the
//     request;
//   - an *RPCError when the server replied that its handler failed;
//   - the broker's *Error when it closed the channel (e.g. 404 for an
//     exchange that does not exist), or the connection's close cause;
//   - ErrRPCClientClosed after Close.
func (c *RPCClient) Call(ctx context.Context, exchange, routingKey string, msg Message) (*Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	id := c.prefix + strconv.FormatUint(c.seq.Add(1), 36)
	call := &rpcCall{sess: s, gen: c.conn.lossCount(), done: make(chan rpcReply, 1)}
	c.mu.Lock()
	if s.ended {
		err := s.err
		c.stats.Failed++
		c.mu.Unlock()
		return nil, err
	}
	c.pending[id] = call
	c.stats.Calls++
	c.mu.Unlock()

	msg.ReplyTo = directReplyTo
	msg.CorrelationID = id
	msg.Mandatory = true
	// The reply is awaited: a reader lingering (Config.ReadLinger) must not
	// hold it up. Counted before the publish, whose afterLocked ends a
	// linger in progress.
	c.conn.mu.Lock()
	c.conn.rpcCalls++
	c.conn.mu.Unlock()
	defer func() {
		c.conn.mu.Lock()
		c.conn.rpcCalls--
		c.conn.mu.Unlock()
	}()
	if err := s.ch.Publish(ctx, exchange, routingKey, msg); err != nil {
		if c.finish(id, rpcReply{}) {
			c.mu.Lock()
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				c.stats.Cancelled++
			} else {
				c.stats.Failed++
			}
			c.mu.Unlock()
			return nil, err
		}
		// Failed by the session's end or a loss meanwhile: report that.
		r := <-call.done
		return r.d, r.err
	}
	if c.conn.lossCount() != call.gen {
		// The connection was lost while the request was being published:
		// it went out on the lost link, or on the new one, or not at all.
		// A reply could come only in the second case, and may be there.
		c.fail(id, ErrRPCInterrupted)
	}
	select {
	case r := <-call.done:
		return r.d, r.err
	case <-ctx.Done():
		if c.finish(id, rpcReply{}) {
			c.mu.Lock()
			c.stats.Cancelled++
			c.mu.Unlock()
			return nil, ctx.Err()
		}
		r := <-call.done // resolved at the same time
		return r.d, r.err
	}
}

// finish removes call id from the pending calls and, when it was there,
// sends r to it (unless r is zero: the caller returns on its own) and
// returns true.
func (c *RPCClient) finish(id string, r rpcReply) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.finishLocked(id, r)
}

func (c *RPCClient) finishLocked(id string, r rpcReply) bool {
	call, ok := c.pending[id]
	if !ok {
		return false
	}
	delete(c.pending, id)
	if r.d != nil || r.err != nil {
		call.done <- r
	}
	return true
}

// fail ends call id, if still waiting, with err (counted by kind).
func (c *RPCClient) fail(id string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finishLocked(id, rpcReply{err: err}) {
		c.countLocked(err)
	}
}

func (c *RPCClient) countLocked(err error) {
	switch {
	case errors.Is(err, ErrRPCInterrupted):
		c.stats.Interrupted++
	case errors.Is(err, ErrReturned):
		c.stats.Returned++
	default:
		c.stats.Failed++
	}
}

// dispatch matches the replies of session s to the waiting calls until its
// consumer ends, then fails the calls still waiting on s.
func (c *RPCClient) dispatch(s *rpcSession) {
	defer c.wg.Done()
	ctx := context.Background()
	for {
		d, err := s.cons.Next(ctx)
		if err != nil {
			c.endSession(s, err)
			return
		}
		c.mu.Lock()
		call, ok := c.pending[d.CorrelationID]
		if !ok || call.sess != s {
			c.stats.Late++
			c.mu.Unlock()
			continue
		}
		delete(c.pending, d.CorrelationID)
		r := rpcReply{d: d}
		if v, ok := d.Headers[RPCErrorHeader]; ok {
			r = rpcReply{err: &RPCError{Text: fmt.Sprint(v), Reply: d}}
			c.stats.Failed++
		} else {
			c.stats.Replies++
		}
		call.done <- r
		c.mu.Unlock()
	}
}

// endSession marks s ended by err and fails the calls waiting on it.
func (c *RPCClient) endSession(s *rpcSession, err error) {
	if cerr := s.ch.Err(); cerr != nil {
		err = cerr // the broker's reason, rather than "consumer closed"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		err = ErrRPCClientClosed
	}
	s.ended = true
	s.err = err
	for id, call := range c.pending {
		if call.sess == s {
			c.finishLocked(id, rpcReply{err: err})
			c.countLocked(err)
		}
	}
	if !s.ch.IsClosed() {
		// The consumer ended on its own (recovery could not restore it):
		// give the channel up too.
		closeLater(s.ch)
	}
}

// returned fails the call whose request the broker returned.
func (c *RPCClient) returned(s *rpcSession, r *Return) {
	c.mu.Lock()
	defer c.mu.Unlock()
	call, ok := c.pending[r.CorrelationID]
	if !ok || call.sess != s {
		return
	}
	err := &ReturnedError{Return: r}
	c.finishLocked(r.CorrelationID, rpcReply{err: err})
	c.countLocked(err)
}

// watchLosses fails the calls published on a link that was lost.
func (c *RPCClient) watchLosses(sig <-chan struct{}) {
	defer c.wg.Done()
	for {
		select {
		case <-sig:
		case <-c.stop:
			return
		case <-c.conn.Done():
			return // closed for good: the channel's end fails the calls
		}
		gen := c.conn.lossCount()
		c.mu.Lock()
		for id, call := range c.pending {
			if call.gen < gen {
				c.finishLocked(id, rpcReply{err: ErrRPCInterrupted})
				c.stats.Interrupted++
			}
		}
		c.mu.Unlock()
	}
}

// Stats returns the client's counters.
func (c *RPCClient) Stats() RPCStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.Pending = len(c.pending)
	return st
}

// Close fails the calls still waiting with ErrRPCClientClosed and closes
// the client's channel, bounded by ctx. The connection stays open.
func (c *RPCClient) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	s := c.sess
	for id := range c.pending {
		c.finishLocked(id, rpcReply{err: ErrRPCClientClosed})
		c.stats.Failed++
	}
	c.mu.Unlock()
	close(c.stop)
	c.unsubscribe()
	var err error
	if s != nil {
		err = s.ch.Close(ctx)
	}
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}
