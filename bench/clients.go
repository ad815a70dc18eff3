package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pika-go/pika"
	amqp "github.com/rabbitmq/amqp091-go"
)

// env is what one measured run of one workload with one client gets.
type env struct {
	url      string // the broker's or the sink's AMQP URI
	queue    string // the queue to publish to (default exchange) or consume from
	n        int    // messages
	body     []byte // message body
	window   int    // outstanding confirmations at most (publish-confirm)
	prefetch int    // basic.qos prefetch count (consume)
	ackEvery int    // ack with multiple=true every this many deliveries (consume)
	io       *ioCounters
	m        *meter
	// await, when set, waits until the destination holds all n messages
	// (the broker's queue, or the sink's count); it runs inside the
	// measured section, after the last publish call returned.
	await func(ctx context.Context) error
}

// wrap counts the write and read calls of nc in e.io.
func (e *env) wrap(nc net.Conn) net.Conn { return &countingConn{Conn: nc, n: e.io} }

// client runs the workloads with one AMQP client library. Each method
// dials its own connection (not measured), measures the workload with e.m,
// and closes the connection (not measured).
type client interface {
	name() string
	publish(ctx context.Context, e *env) error
	publishConfirm(ctx context.Context, e *env) error
	consume(ctx context.Context, e *env) error
}

// pikaClient is github.com/pika-go/pika with its defaults.
type pikaClient struct{}

func (pikaClient) name() string { return "pika" }

func (pikaClient) dial(ctx context.Context, e *env) (*pika.Conn, *pika.Channel, error) {
	cfg, err := pika.ParseURL(e.url)
	if err != nil {
		return nil, nil, err
	}
	cfg.ConnectionName = "pika-bench"
	// Like amqp091-go (whose recovery is opt-in), a lost connection fails
	// the run instead of being repaired behind its back; this changes
	// nothing on the hot path.
	cfg.DisableRecovery = true
	cfg.BlockingRead = pikaReadMode == "block"
	cfg.ReadLinger = pikaReadLinger
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tcp, ok := nc.(*net.TCPConn); ok && cfg.BlockingRead {
			// The library takes the socket over (read(2) and
			// write(2) on a dup of its descriptor): neither its reads
			// nor its writes are counted.
			return &rawCountingConn{countingConn{Conn: nc, n: e.io}, tcp}, nil
		}
		return e.wrap(nc), nil
	}
	conn, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("pika: dial: %w", err)
	}
	ch, err := conn.Channel(ctx)
	if err != nil {
		conn.Close(context.Background())
		return nil, nil, fmt.Errorf("pika: channel: %w", err)
	}
	return conn, ch, nil
}

func closePika(conn *pika.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn.Close(ctx)
}

func (p pikaClient) publish(ctx context.Context, e *env) error {
	conn, ch, err := p.dial(ctx, e)
	if err != nil {
		return err
	}
	defer closePika(conn)
	msg := pika.Message{Body: e.body}
	e.m.start()
	for range e.n {
		if err := ch.Publish(ctx, "", e.queue, msg); err != nil {
			return fmt.Errorf("pika: publish: %w", err)
		}
	}
	if e.await != nil {
		if err := e.await(ctx); err != nil {
			return err
		}
	}
	e.m.stop()
	return nil
}

func (p pikaClient) publishConfirm(ctx context.Context, e *env) error {
	conn, ch, err := p.dial(ctx, e)
	if err != nil {
		return err
	}
	defer closePika(conn)
	if err := ch.ConfirmSelect(ctx); err != nil {
		return fmt.Errorf("pika: confirm.select: %w", err)
	}
	switch pikaConfirmMode {
	case "onconfirm":
		return pikaConfirmCallback(ctx, ch, e)
	case "batch":
		return pikaConfirmBatch(ctx, ch, e)
	}
	msg := pika.Message{Body: e.body}
	ring := make([]*pika.Confirmation, e.window)
	e.m.start()
	for i := range e.n {
		slot := i % len(ring)
		if c := ring[slot]; c != nil {
			if err := c.Wait(ctx); err != nil {
				return fmt.Errorf("pika: confirmation %d: %w", c.Tag(), err)
			}
		}
		c, err := ch.PublishWithConfirm(ctx, "", e.queue, msg)
		if err != nil {
			return fmt.Errorf("pika: publish: %w", err)
		}
		ring[slot] = c
	}
	for _, c := range ring {
		if c == nil {
			continue
		}
		if err := c.Wait(ctx); err != nil {
			return fmt.Errorf("pika: confirmation %d: %w", c.Tag(), err)
		}
	}
	e.m.stop()
	return nil
}

func (p pikaClient) consume(ctx context.Context, e *env) error {
	conn, ch, err := p.dial(ctx, e)
	if err != nil {
		return err
	}
	defer closePika(conn)
	if err := ch.Qos(ctx, pika.QosOptions{PrefetchCount: e.prefetch}); err != nil {
		return fmt.Errorf("pika: qos: %w", err)
	}
	e.m.start()
	if pikaConsumeMode != "next" {
		return pikaConsumeFunc(ctx, ch, e)
	}
	cons, err := ch.Consume(ctx, e.queue, pika.ConsumeOptions{})
	if err != nil {
		return fmt.Errorf("pika: consume: %w", err)
	}
	for i := 1; i <= e.n; i++ {
		d, err := cons.Next(ctx)
		if err != nil {
			return fmt.Errorf("pika: delivery %d: %w", i, err)
		}
		if i%e.ackEvery == 0 || i == e.n {
			if err := d.Ack(true); err != nil {
				return fmt.Errorf("pika: ack: %w", err)
			}
		}
	}
	e.m.stop()
	return cons.Cancel(ctx)
}

// pikaConsumeMode selects how pika takes deliveries (the -pika-consume
// flag): "next" calls Consumer.Next in a loop, "handler" uses ConsumeFunc
// (the handler on the consumer's goroutine), "inline" ConsumeFunc with
// ConsumeOptions.Inline (the handler on the connection's reader).
var pikaConsumeMode = "next"

// pikaReadMode selects how pika's reader waits for the socket (the
// -pika-read flag): "poller" (the runtime's network poller, the default)
// or "block" (Config.BlockingRead).
var pikaReadMode = "poller"

// pikaReadLinger is pika's Config.ReadLinger (the -pika-read-linger flag;
// it takes effect with -pika-read block).
var pikaReadLinger time.Duration

// rawCountingConn is a countingConn that also offers its TCP socket's
// SyscallConn, as Config.BlockingRead needs.
type rawCountingConn struct {
	countingConn
	tcp *net.TCPConn
}

func (c *rawCountingConn) SyscallConn() (syscall.RawConn, error) { return c.tcp.SyscallConn() }

// pikaConsumeFunc consumes e.n messages with a ConsumeFunc handler; the
// measurement (started by the caller) stops when the handler took the
// last one.
func pikaConsumeFunc(ctx context.Context, ch *pika.Channel, e *env) error {
	i := 0
	var ackErr error
	last := make(chan struct{})
	cons, err := ch.ConsumeFunc(ctx, e.queue, pika.ConsumeOptions{Inline: pikaConsumeMode == "inline"}, func(_ context.Context, d *pika.Delivery) {
		i++
		if i > e.n {
			return
		}
		if i%e.ackEvery == 0 || i == e.n {
			if err := d.Ack(true); err != nil && ackErr == nil {
				ackErr = err
			}
		}
		if i == e.n {
			close(last)
		}
	})
	if err != nil {
		return fmt.Errorf("pika: consume: %w", err)
	}
	select {
	case <-last:
	case <-cons.Done():
		return fmt.Errorf("pika: the consumer ended after %d deliveries: %v", i, cons.Err())
	case <-ctx.Done():
		return fmt.Errorf("pika: delivery %d: %w", i+1, ctx.Err())
	}
	e.m.stop()
	if err := cons.Cancel(ctx); err != nil {
		return err
	}
	<-cons.Done() // the handler is done with i and ackErr
	if ackErr != nil {
		return fmt.Errorf("pika: ack: %w", ackErr)
	}
	return nil
}

// amqpClient is github.com/rabbitmq/amqp091-go with its defaults.
type amqpClient struct{}

func (amqpClient) name() string { return "amqp091-go" }

func (amqpClient) dial(e *env) (*amqp.Connection, *amqp.Channel, error) {
	cfg := amqp.Config{
		Properties: amqp.Table{"connection_name": "amqp091-bench"},
		Dial: func(network, addr string) (net.Conn, error) {
			nc, err := net.DialTimeout(network, addr, 30*time.Second)
			if err != nil {
				return nil, err
			}
			return e.wrap(nc), nil
		},
	}
	conn, err := amqp.DialConfig(e.url, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("amqp091-go: dial: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("amqp091-go: channel: %w", err)
	}
	return conn, ch, nil
}

func (a amqpClient) publish(ctx context.Context, e *env) error {
	conn, ch, err := a.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()
	msg := amqp.Publishing{Body: e.body}
	e.m.start()
	for range e.n {
		if err := ch.PublishWithContext(ctx, "", e.queue, false, false, msg); err != nil {
			return fmt.Errorf("amqp091-go: publish: %w", err)
		}
	}
	if e.await != nil {
		if err := e.await(ctx); err != nil {
			return err
		}
	}
	e.m.stop()
	return nil
}

func (a amqpClient) publishConfirm(ctx context.Context, e *env) error {
	conn, ch, err := a.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("amqp091-go: confirm.select: %w", err)
	}
	msg := amqp.Publishing{Body: e.body}
	ring := make([]*amqp.DeferredConfirmation, e.window)
	wait := func(dc *amqp.DeferredConfirmation) error {
		ack, err := dc.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("amqp091-go: confirmation %d: %w", dc.DeliveryTag, err)
		}
		if !ack {
			return fmt.Errorf("amqp091-go: confirmation %d: nacked", dc.DeliveryTag)
		}
		return nil
	}
	e.m.start()
	for i := range e.n {
		slot := i % len(ring)
		if amqpConfirmMode == "batch" && slot == 0 && i > 0 {
			// Drain the whole window before the next batch.
			for j, dc := range ring {
				if err := wait(dc); err != nil {
					return err
				}
				ring[j] = nil
			}
		}
		if dc := ring[slot]; dc != nil {
			if err := wait(dc); err != nil {
				return err
			}
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", e.queue, false, false, msg)
		if err != nil {
			return fmt.Errorf("amqp091-go: publish: %w", err)
		}
		if dc == nil {
			return errors.New("amqp091-go: no deferred confirmation in confirm mode")
		}
		ring[slot] = dc
	}
	for _, dc := range ring {
		if dc == nil {
			continue
		}
		if err := wait(dc); err != nil {
			return err
		}
	}
	e.m.stop()
	return nil
}

func (a amqpClient) consume(ctx context.Context, e *env) error {
	conn, ch, err := a.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := ch.Qos(e.prefetch, 0, false); err != nil {
		return fmt.Errorf("amqp091-go: qos: %w", err)
	}
	e.m.start()
	const tag = "amqp091-bench"
	deliveries, err := ch.ConsumeWithContext(ctx, e.queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("amqp091-go: consume: %w", err)
	}
	for i := 1; i <= e.n; i++ {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
		case <-ctx.Done():
			return fmt.Errorf("amqp091-go: delivery %d: %w", i, ctx.Err())
		}
		if !ok {
			return fmt.Errorf("amqp091-go: delivery %d: the consumer ended", i)
		}
		if i%e.ackEvery == 0 || i == e.n {
			if err := d.Ack(true); err != nil {
				return fmt.Errorf("amqp091-go: ack: %w", err)
			}
		}
	}
	e.m.stop()
	return ch.Cancel(tag, false)
}

// pikaConfirmMode selects how pika keeps the publish-confirm window (see
// the -pika-confirm flag): "ring" waits on the PublishWithConfirm
// Confirmation published window messages earlier (the same sliding window
// as amqp091-go's deferred confirmations), "onconfirm" counts OnConfirm
// notifications, "batch" publishes window messages and then WaitConfirms.
var pikaConfirmMode = "batch"

// amqpConfirmMode selects how amqp091-go keeps the window: "ring" waits on
// the DeferredConfirmation published window messages earlier, "batch"
// publishes window messages and then waits for all of them.
var amqpConfirmMode = "batch"

// pikaConfirmBatch keeps at most window messages outstanding by publishing
// window of them and then waiting for all with WaitConfirms.
func pikaConfirmBatch(ctx context.Context, ch *pika.Channel, e *env) error {
	msg := pika.Message{Body: e.body}
	e.m.start()
	for i := 1; i <= e.n; i++ {
		if err := ch.Publish(ctx, "", e.queue, msg); err != nil {
			return err
		}
		if i%e.window == 0 || i == e.n {
			if err := ch.WaitConfirms(ctx); err != nil {
				return err
			}
		}
	}
	e.m.stop()
	return nil
}

// pikaConfirmCallback keeps a sliding window with Publish and the highest
// tag confirmed through OnConfirm.
func pikaConfirmCallback(ctx context.Context, ch *pika.Channel, e *env) error {
	var confirmed atomic.Uint64
	var nacked atomic.Bool
	wake := make(chan struct{}, 1)
	ch.OnConfirm(func(c pika.ConfirmEvent) {
		if !c.Ack {
			nacked.Store(true)
		}
		for {
			old := confirmed.Load()
			if c.Tag <= old || confirmed.CompareAndSwap(old, c.Tag) {
				break
			}
		}
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	msg := pika.Message{Body: e.body}
	e.m.start()
	wait := func(upTo uint64) error {
		for confirmed.Load() < upTo {
			select {
			case <-wake:
			case <-ch.Done():
				return fmt.Errorf("pika: channel closed: %w", ch.Err())
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if nacked.Load() {
			return errors.New("nacked")
		}
		return nil
	}
	for i := 1; i <= e.n; i++ {
		if i > e.window {
			if err := wait(uint64(i - e.window)); err != nil {
				return err
			}
		}
		if err := ch.Publish(ctx, "", e.queue, msg); err != nil {
			return err
		}
	}
	if err := wait(uint64(e.n)); err != nil {
		return err
	}
	e.m.stop()
	return nil
}
