package pika

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// RPCHandler handles one request for Serve and returns the reply to send.
// ctx ends when Serve stops, or when its channel or consumer ends (the
// reply could not be sent). An error is sent back to the caller instead of
// the reply (see Serve).
type RPCHandler func(ctx context.Context, req *Delivery) (Message, error)

// ServeOptions configure Serve. The zero value works.
type ServeOptions struct {
	// Concurrency is the number of requests handled at once, each on a
	// goroutine of its own (default 1: one at a time, in order, so the
	// handler need not be safe for concurrent use).
	Concurrency int
	// Prefetch is the channel's prefetch count: how many requests the
	// broker sends ahead, unacknowledged (default 2 × Concurrency, at most
	// 65535, basic.qos's limit). The others wait in the queue, where other
	// servers can take them.
	Prefetch int
	// Consume are the options of the request consumer (tag, exclusive,
	// arguments, ...). AutoAck is ignored: requests are always
	// acknowledged manually, after their reply is confirmed.
	Consume ConsumeOptions
}

// Serve consumes requests from queue on a channel of its own and answers
// each with handler's reply, until ctx ends (it then returns nil) or the
// consumer ends otherwise (it returns why: the broker cancelled it, the
// channel or the connection closed). The queue must exist.
//
// For each request Serve calls handler, publishes the reply to the default
// exchange with the request's ReplyTo as routing key and its CorrelationID,
// on a channel in confirm mode, and acknowledges the request only once the
// broker confirmed the reply. A server that dies before then leaves the
// request unacknowledged, and the broker delivers it again, to this server
// once its connection recovers or to another one: requests are handled at
// least once, and a caller may receive a second reply (RPCClient drops it
// and counts it in RPCStats.Late).
//
// When handler returns an error, Serve replies with an empty body and the
// error's text in the RPCErrorHeader header (RPCClient.Call returns it as
// an *RPCError) and acknowledges the request: a request that fails is not
// redelivered, since a failure that repeats would loop forever. A handler
// that wants the request handled again must not return (it may block until
// ctx ends; the request then goes back to the queue).
//
// A request without ReplyTo is handled and acknowledged, and its reply
// dropped. A reply the broker nacks makes Serve reject the request with
// requeue (it is delivered again); a reply that cannot be published (its
// headers cannot be encoded, say) makes Serve reject the request without
// requeue (dead-lettered or dropped) and log the error at Warn level with
// the connection's Logger.
//
// Serve does not recover a panic in handler: it ends the program, as it
// would anywhere else.
//
// When ctx ends, Serve stops taking requests, cancels the ctx of the
// handlers still running, and closes its channel, which gives the requests
// not yet acknowledged back to the queue. Serve returns once its handlers
// have returned.
//
// Serve sets up its channel (open, qos, confirm.select, consume) when it
// starts; a connection loss during that setup makes it return the loss's
// error at once, like any call in flight at a loss: call it again (after
// the recovery) to serve. Once its consumer runs, recovery restores it.
func Serve(ctx context.Context, conn *Conn, queue string, handler RPCHandler, opts ServeOptions) error {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 1
	}
	if opts.Prefetch <= 0 {
		opts.Prefetch = min(2*opts.Concurrency, math.MaxUint16)
	}
	ch, err := conn.Channel(ctx)
	if err != nil {
		return stopErr(ctx, fmt.Errorf("pika: rpc serve: open channel: %w", err))
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ch.Close(cctx)
	}()
	if err := ch.Qos(ctx, QosOptions{PrefetchCount: opts.Prefetch}); err != nil {
		return stopErr(ctx, fmt.Errorf("pika: rpc serve: qos: %w", err))
	}
	if err := ch.ConfirmSelect(ctx); err != nil {
		return stopErr(ctx, fmt.Errorf("pika: rpc serve: confirm.select: %w", err))
	}
	copts := opts.Consume
	copts.AutoAck = false
	cons, err := ch.Consume(ctx, queue, copts)
	if err != nil {
		return stopErr(ctx, fmt.Errorf("pika: rpc serve: consume %q: %w", queue, err))
	}
	s := &server{conn: conn, ch: ch, handler: handler}
	// The handlers' ctx also ends with the channel or the consumer: a
	// handler then has nobody to reply through.
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	go func() {
		select {
		case <-ch.Done():
		case <-cons.Done():
		case <-hctx.Done():
		}
		hcancel()
	}()
	errs := make(chan error, opts.Concurrency)
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				d, err := cons.Next(hctx)
				if err != nil {
					errs <- err
					return
				}
				s.handle(hctx, d)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	err = <-errs
	// A worker that was handling a request when the consumer ended sees
	// only the handlers' ctx end: report why the consumer ended.
	if cerr := cons.Err(); cerr != nil {
		err = cerr
	}
	if cerr := ch.Err(); cerr != nil {
		err = cerr
	}
	return fmt.Errorf("pika: rpc serve %q: %w", queue, err)
}

// stopErr returns nil when ctx ended (Serve was stopped), err otherwise.
func stopErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// server is the state Serve's workers share.
type server struct {
	conn    *Conn
	ch      *Channel
	handler RPCHandler
}

// handle answers one request.
func (s *server) handle(ctx context.Context, d *Delivery) {
	reply, herr := s.handler(ctx, d)
	if ctx.Err() != nil {
		return // stopping: the request goes back to the queue
	}
	if d.ReplyTo == "" {
		d.Ack(false)
		return
	}
	if herr != nil {
		reply = Message{Properties: Properties{Headers: Table{RPCErrorHeader: herr.Error()}}}
	}
	reply.CorrelationID = d.CorrelationID
	reply.Mandatory = false
	conf, err := s.ch.PublishWithConfirm(ctx, "", d.ReplyTo, reply)
	if err == nil {
		err = conf.Wait(ctx)
	}
	switch {
	case err == nil:
		d.Ack(false)
	case ctx.Err() != nil:
		// Stopping: the request goes back to the queue.
	case errors.Is(err, ErrNacked):
		d.Nack(false, true)
	case s.ch.IsClosed() || errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrClosed) || errors.Is(err, ErrRecovering):
		// The channel or its connection went away: the broker gives the
		// request to a server again.
	default:
		if s.conn.log != nil {
			s.conn.log.Warn("pika: rpc serve: reply not sent; request rejected", "correlation_id", d.CorrelationID, "error", err)
		}
		d.Reject(false)
	}
}
