// Package pikagnet drives the AMQP 0-9-1 protocol engine (package
// github.com/pika-go/pika/engine) from gnet's event loop
// (github.com/panjf2000/gnet/v2): the analogue of Pika's Tornado and
// Twisted adapters, for a program whose network code already runs on gnet.
//
// Threading rule: a Conn's engine belongs to the gnet event loop that owns
// the connection. Handlers run there, and may call the engine directly;
// from any other goroutine, hand work to the loop with Conn.Do. Nothing of
// a Conn needs a lock.
//
// The adapter is thin on purpose: the application speaks engine, receives
// engine.Event values (replies matched to the RequestID of each call,
// deliveries, confirms, closes) and calls engine methods (OpenChannel,
// Call, Publish, Ack, Close, ...), as engine/doc.go describes. The adapter
// does the rest of the driver contract: bytes from gnet to Receive,
// outgoing bytes to gnet, events to the handler, and the engine's
// deadlines (heartbeats, handshake timeout) through gnet's ticker.
//
// Plain TCP only: TLS (amqps) is not supported (gnet has no client TLS).
// It does not recover lost connections: EventClosed is the end.
package pikagnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
)

// Handler receives a connection's events on its event loop, in order. It
// may call c.Engine() directly. EventClosed is the last.
type Handler func(c *Conn, ev engine.Event)

// Client runs AMQP connections on gnet's event loops. Its methods are safe
// for concurrent use.
type Client struct {
	cli *gnet.Client
	h   *events

	mu    sync.Mutex
	conns map[*Conn]struct{}
}

// tickEvery is how often the ticker looks for engine deadlines that came.
const tickEvery = 100 * time.Millisecond

// New starts a gnet client with one event loop (more with
// gnet.WithNumEventLoop or gnet.WithMulticore among opts) and a ticker.
func New(opts ...gnet.Option) (*Client, error) {
	cl := &Client{conns: make(map[*Conn]struct{})}
	cl.h = &events{cl: cl}
	all := append([]gnet.Option{gnet.WithTicker(true), gnet.WithNumEventLoop(1)}, opts...)
	cli, err := gnet.NewClient(cl.h, all...)
	if err != nil {
		return nil, err
	}
	if err := cli.Start(); err != nil {
		return nil, err
	}
	cl.cli = cli
	return cl, nil
}

// Close stops the client's event loops; connections still open are dropped
// (their handlers see EventClosed).
func (cl *Client) Close() error { return cl.cli.Stop() }

// Conn is one AMQP connection on a gnet event loop.
type Conn struct {
	cl      *Client
	gc      gnet.Conn // set by Dial (under cl.mu)
	eng     *engine.Conn
	handler Handler
	out     []byte

	deadline atomic.Int64 // the engine's next deadline, unix nanoseconds; 0: none
	ticking  atomic.Bool  // a tick is queued on the loop
	closed   atomic.Bool
}

// Dial connects to cfg's address (plain TCP; the first of Config.Addrs, or
// Config.Addr) and starts the AMQP handshake on an event loop. handler gets
// EventOpen when the connection is ready, or EventClosed with the error.
// The protocol settings (credentials, vhost, heartbeat, ...) are cfg's, as
// pika.Config.EngineConfig gives them.
func (cl *Client) Dial(ctx context.Context, cfg pika.Config, handler Handler) (*Conn, error) {
	if cfg.TLS != nil {
		return nil, errors.New("pikagnet: TLS is not supported")
	}
	addr := cfg.Addr
	if len(cfg.Addrs) > 0 {
		addr = cfg.Addrs[0]
	}
	if addr == "" {
		addr = "localhost:5672"
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pikagnet: %w", err)
	}
	c := &Conn{cl: cl, eng: engine.New(cfg.EngineConfig()), handler: handler}
	cl.mu.Lock()
	cl.conns[c] = struct{}{}
	cl.mu.Unlock()
	gc, err := cl.cli.EnrollContext(nc, c)
	if err != nil {
		cl.forget(c)
		return nil, fmt.Errorf("pikagnet: %w", err)
	}
	cl.mu.Lock()
	c.gc = gc // OnTick reads it under the lock
	cl.mu.Unlock()
	return c, nil
}

func (cl *Client) forget(c *Conn) {
	cl.mu.Lock()
	delete(cl.conns, c)
	cl.mu.Unlock()
}

// Engine returns the connection's engine. Call it only on the event loop:
// in a Handler or a function given to Do.
func (c *Conn) Engine() *engine.Conn { return c.eng }

// Do runs fn on the connection's event loop, with its engine, and then
// does what the driver contract asks after every engine call (writes,
// events, deadline). It is safe from any goroutine; it fails when the
// client is stopping.
func (c *Conn) Do(fn func(eng *engine.Conn)) error {
	return c.gc.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if !c.closed.Load() {
			fn(c.eng)
			c.after(c.gc)
		}
		return nil
	}))
}

// after is step 2 of the driver contract: events to the handler (which
// may call the engine again), outgoing bytes to gnet, the deadline for the
// ticker. On EventClosed it closes the gnet connection after the last
// bytes.
func (c *Conn) after(gc gnet.Conn) {
	for {
		for {
			ev, ok := c.eng.NextEvent()
			if !ok {
				break
			}
			if ev.Kind == engine.EventClosed {
				c.closed.Store(true)
			}
			c.handler(c, ev)
		}
		if c.eng.OutgoingLen() == 0 {
			break
		}
		c.out = c.eng.AppendOutgoing(c.out[:0])
		if _, err := gc.Write(c.out); err != nil && !c.eng.IsClosed() {
			c.eng.Fail(fmt.Errorf("pikagnet: write: %w", err))
		}
		if cap(c.out) > 256<<10 {
			c.out = nil
		}
	}
	if c.eng.IsClosed() {
		c.deadline.Store(0)
		gc.Close()
		return
	}
	if d := c.eng.Deadline(); d.IsZero() {
		c.deadline.Store(0)
	} else {
		c.deadline.Store(d.UnixNano())
	}
}

// events is the gnet.EventHandler of a Client.
type events struct {
	gnet.BuiltinEventEngine
	cl *Client
}

func (h *events) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	c := gc.Context().(*Conn)
	c.eng.Start(time.Now()) // contract 1
	c.after(gc)
	return nil, gnet.None
}

func (h *events) OnTraffic(gc gnet.Conn) gnet.Action {
	c := gc.Context().(*Conn)
	b, _ := gc.Next(-1) // valid until the next read: Receive keeps none of it
	if !c.eng.IsClosed() {
		c.eng.Receive(b) // contract 3
		c.after(gc)
	}
	return gnet.None
}

func (h *events) OnClose(gc gnet.Conn, err error) gnet.Action {
	c := gc.Context().(*Conn)
	if !c.eng.IsClosed() {
		if err == nil {
			err = io.EOF
		}
		c.eng.Fail(fmt.Errorf("pikagnet: connection lost: %w", err)) // contract 3
		c.closed.Store(true)
		for {
			ev, ok := c.eng.NextEvent()
			if !ok {
				break
			}
			c.handler(c, ev)
		}
	}
	h.cl.forget(c)
	return gnet.None
}

// OnTick runs on gnet's ticker goroutine: it queues a Tick on the event
// loop of every connection whose deadline came (contract 3).
func (h *events) OnTick() (time.Duration, gnet.Action) {
	now := time.Now().UnixNano()
	h.cl.mu.Lock()
	var due []*Conn
	for c := range h.cl.conns {
		if d := c.deadline.Load(); d != 0 && d <= now && c.gc != nil && !c.ticking.Load() {
			due = append(due, c)
		}
	}
	h.cl.mu.Unlock()
	for _, c := range due {
		c.ticking.Store(true)
		c.Do(func(eng *engine.Conn) {
			c.ticking.Store(false)
			eng.Tick(time.Now())
		})
	}
	return tickEvery, gnet.None
}
