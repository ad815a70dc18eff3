package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/loop"
)

// loopClient is github.com/pika-go/pika/loop: one Loop running on a
// goroutine of its own for the run, the workload driven by callbacks. Its
// socket takes the descriptor path (epoll), which a counting net.Conn
// would turn into the fallback path: its write and read calls are not
// counted (they show as 0).
type loopClient struct{}

func (loopClient) name() string { return "loop" }

// loopBuffered is the publishers' bound on Conn.Buffered, like pika's
// default WriteBufferLimit.
const loopBuffered = 1 << 20

// loopSession is a Loop running on its own goroutine with one connection
// and channel.
type loopSession struct {
	pending func(error) // the done of the do in progress
	l       *loop.Loop
	c       *loop.Conn
	ch      *loop.Channel
	cancel  context.CancelFunc
	ran     chan error
}

// open starts a Loop, dials and opens a channel (not measured).
func (loopClient) open(ctx context.Context, e *env) (*loopSession, error) {
	l, err := loop.New()
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	s := &loopSession{l: l, cancel: cancel, ran: make(chan error, 1)}
	go func() { s.ran <- l.Run(lctx) }()
	cfg, err := pika.ParseURL(e.url)
	if err == nil {
		cfg.ConnectionName = "loop-bench"
		// As for pika.Conn (see pikaClient): recovery off, like amqp091-go.
		cfg.DisableRecovery = true
		err = s.do(ctx, func(done func(error)) {
			l.DialConfig(cfg, func(c *loop.Conn, err error) {
				if err != nil {
					done(fmt.Errorf("loop: dial: %w", err))
					return
				}
				s.c = c
				// Every workload's wait ends when the connection is lost
				// (the loop does not recover).
				c.OnClose(func(err error) {
					if err != nil {
						s.lost(err)
					}
				})
				c.Channel(func(ch *loop.Channel, err error) {
					s.ch = ch
					done(err)
				})
			})
		})
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// do runs fn on the loop and waits until it calls done (or ctx ends).
func (s *loopSession) do(ctx context.Context, fn func(done func(error))) error {
	result := make(chan error, 1)
	done := func(err error) {
		select {
		case result <- err:
		default:
		}
	}
	if !s.l.Post(func() { s.pending = done; fn(done) }) {
		return fmt.Errorf("loop: the loop stopped")
	}
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lost ends the wait in progress with the connection's loss.
func (s *loopSession) lost(err error) {
	if s.pending != nil {
		s.pending(fmt.Errorf("loop: connection lost: %w", err))
	}
}

// close closes the connection and stops the loop (not measured).
func (s *loopSession) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.do(ctx, func(done func(error)) {
		if s.c == nil {
			done(nil)
			return
		}
		s.c.Close(done)
	})
	s.cancel()
	<-s.ran
}

func (lc loopClient) publish(ctx context.Context, e *env) error {
	s, err := lc.open(ctx, e)
	if err != nil {
		return err
	}
	defer s.close()
	msg := pika.Message{Body: e.body}
	e.m.start()
	err = s.do(ctx, func(done func(error)) {
		sent := 0
		var step func()
		step = func() {
			// Publish until the bytes waiting for the socket reach the
			// bound, then let the loop write and come back.
			for sent < e.n && s.c.Buffered() < loopBuffered {
				if err := s.ch.Publish("", e.queue, msg); err != nil {
					done(fmt.Errorf("loop: publish: %w", err))
					return
				}
				sent++
			}
			if sent < e.n {
				s.l.AfterFunc(time.Microsecond, step)
				return
			}
			done(nil)
		}
		step()
	})
	if err != nil {
		return err
	}
	if e.await != nil {
		if err := e.await(ctx); err != nil {
			return err
		}
	}
	e.m.stop()
	return nil
}

func (lc loopClient) publishConfirm(ctx context.Context, e *env) error {
	s, err := lc.open(ctx, e)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.do(ctx, func(done func(error)) { s.ch.ConfirmSelect(done) }); err != nil {
		return fmt.Errorf("loop: confirm.select: %w", err)
	}
	msg := pika.Message{Body: e.body}
	e.m.start()
	err = s.do(ctx, func(done func(error)) {
		sent, confirmed, outstanding := 0, 0, 0
		var fill func()
		onConfirm := func(err error) {
			if err != nil {
				done(fmt.Errorf("loop: confirmation: %w", err))
				return
			}
			confirmed++
			outstanding--
			if confirmed == e.n {
				done(nil)
				return
			}
			fill()
		}
		// At most e.window messages await their confirmation, and at most
		// Config.MaxUnconfirmed: past that bound the next confirmation
		// fills again.
		fill = func() {
			for sent < e.n && outstanding < e.window {
				if err := s.ch.PublishConfirm("", e.queue, msg, onConfirm); err != nil {
					if errors.Is(err, loop.ErrTooManyUnconfirmed) {
						return
					}
					done(fmt.Errorf("loop: publish: %w", err))
					return
				}
				sent++
				outstanding++
			}
		}
		fill()
	})
	if err != nil {
		return err
	}
	e.m.stop()
	return nil
}

func (lc loopClient) consume(ctx context.Context, e *env) error {
	s, err := lc.open(ctx, e)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.do(ctx, func(done func(error)) {
		s.ch.Qos(pika.QosOptions{PrefetchCount: e.prefetch}, done)
	}); err != nil {
		return fmt.Errorf("loop: qos: %w", err)
	}
	var cons *loop.Consumer
	e.m.start()
	err = s.do(ctx, func(done func(error)) {
		i := 0
		s.ch.Consume(e.queue, loop.ConsumeOptions{}, func(d *loop.Delivery) {
			i++
			if i%e.ackEvery == 0 || i == e.n {
				if err := d.Ack(true); err != nil {
					done(fmt.Errorf("loop: ack: %w", err))
					return
				}
			}
			if i == e.n {
				done(nil)
			}
		}, func(c *loop.Consumer, err error) {
			cons = c
			if err != nil {
				done(fmt.Errorf("loop: consume: %w", err))
			}
		})
	})
	if err != nil {
		return err
	}
	e.m.stop()
	return s.do(ctx, func(done func(error)) { cons.Cancel(done) })
}
