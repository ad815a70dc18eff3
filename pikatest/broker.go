package pikatest

import (
	"context"
	"errors"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/pika-go/pika/pikatest/internal/memconn"
)

// Config configures a [Broker]. The zero Config works: one user guest with
// password guest, one virtual host "/", RabbitMQ's default tuning.
type Config struct {
	// Users maps user names to passwords. Default: {"guest": "guest"}.
	Users map[string]string
	// VHosts lists the virtual hosts; every user may use every one.
	// Default: ["/"].
	VHosts []string
	// Heartbeat is the heartbeat interval the broker proposes in
	// connection.tune; the client's answer decides. Default 60 s, as
	// RabbitMQ; a negative value proposes 0 (no heartbeats).
	Heartbeat time.Duration
	// FrameMax is the largest frame the broker accepts and proposes.
	// Default 131072, as RabbitMQ.
	FrameMax uint32
	// ChannelMax is the highest channel number the broker proposes.
	// Default 2047, as RabbitMQ.
	ChannelMax uint16
	// MaxMessageSize is the largest message body accepted; a larger one
	// closes the channel with 406 as RabbitMQ does. Default 128 MiB.
	MaxMessageSize uint64
	// Addr is the TCP address to listen on. Default "127.0.0.1:0" (a
	// random port). Set it to keep the URL stable across [Broker.Stop]
	// and [Broker.Start] in a long-running server.
	Addr string
}

// Option changes a Config; pass options to [NewBroker].
type Option func(*Config)

// WithUser adds a user that may log in with password.
func WithUser(user, password string) Option {
	return func(c *Config) {
		if c.Users == nil {
			c.Users = map[string]string{}
		}
		c.Users[user] = password
	}
}

// WithVHost adds a virtual host.
func WithVHost(name string) Option {
	return func(c *Config) { c.VHosts = append(c.VHosts, name) }
}

// WithHeartbeat sets [Config.Heartbeat].
func WithHeartbeat(d time.Duration) Option { return func(c *Config) { c.Heartbeat = d } }

// WithFrameMax sets [Config.FrameMax].
func WithFrameMax(n uint32) Option { return func(c *Config) { c.FrameMax = n } }

// WithConfig replaces the whole Config; later options still apply.
func WithConfig(cfg Config) Option { return func(c *Config) { *c = cfg } }

func (c *Config) setDefaults() {
	if len(c.Users) == 0 {
		c.Users = map[string]string{"guest": "guest"}
	}
	if len(c.VHosts) == 0 {
		c.VHosts = []string{"/"}
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 60 * time.Second
	}
	if c.FrameMax == 0 {
		c.FrameMax = 131072
	}
	if c.FrameMax < 4096 {
		c.FrameMax = 4096
	}
	if c.ChannelMax == 0 {
		c.ChannelMax = 2047
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 128 << 20
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
}

// Broker is an in-process AMQP 0-9-1 broker. Its methods are safe for
// concurrent use.
type Broker struct {
	cfg Config

	mu       sync.Mutex
	vhosts   map[string]*vhost
	conns    map[*conn]struct{}
	nextConn uint64
	alarm    bool
	confirm  ConfirmPolicy
	waiters  map[chan struct{}]struct{}
	replies  map[string]*consumer // direct reply-to consumers by token
	ln       net.Listener
	addr     string
	closed   bool
	stopped  bool
	connWG   sync.WaitGroup
	acceptWG sync.WaitGroup
}

// NewBroker starts a broker listening on 127.0.0.1 at a random port and
// closes it when the test ends (t.Cleanup). It fails the test if the broker
// cannot start.
func NewBroker(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	var cfg Config
	for _, o := range opts {
		o(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("pikatest: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// New starts a broker with cfg. Close it with [Broker.Close]. Most tests
// want [NewBroker] instead.
func New(cfg Config) (*Broker, error) {
	cfg.setDefaults()
	b := &Broker{
		cfg:     cfg,
		vhosts:  map[string]*vhost{},
		conns:   map[*conn]struct{}{},
		waiters: map[chan struct{}]struct{}{},
	}
	for _, name := range cfg.VHosts {
		b.vhosts[name] = newVHost(b, name)
	}
	if err := b.listen(cfg.Addr); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Broker) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return errors.New("listen on " + addr + ": " + err.Error())
	}
	b.mu.Lock()
	b.ln = ln
	b.addr = ln.Addr().String()
	b.stopped = false
	b.mu.Unlock()
	b.acceptWG.Add(1)
	go b.acceptLoop(ln)
	return nil
}

func (b *Broker) acceptLoop(ln net.Listener) {
	defer b.acceptWG.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		b.serve(nc)
	}
}

// serve runs a connection on nc; false if the broker is closed or stopped.
func (b *Broker) serve(nc net.Conn) bool {
	b.mu.Lock()
	if b.closed || b.stopped {
		b.mu.Unlock()
		nc.Close()
		return false
	}
	b.nextConn++
	c := newConn(b, nc, b.nextConn)
	b.conns[c] = struct{}{}
	b.connWG.Add(1)
	b.mu.Unlock()
	go c.run()
	return true
}

// Addr returns the host:port the broker listens on.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// URL returns the URL clients dial: amqp://guest:guest@127.0.0.1:PORT/ (with
// the first configured user and virtual host when they are not guest and
// "/").
func (b *Broker) URL() string {
	user, pass := "guest", "guest"
	if _, ok := b.cfg.Users["guest"]; !ok {
		for u, p := range b.cfg.Users {
			if user == "guest" || u < user {
				user, pass = u, p
			}
		}
	} else {
		pass = b.cfg.Users["guest"]
	}
	u := url.URL{Scheme: "amqp", User: url.UserPassword(user, pass), Host: b.Addr(), Path: "/"}
	if v := b.cfg.VHosts[0]; v != "/" {
		u.Path = "/" + url.PathEscape(v)
		u.RawPath = u.Path
	}
	return u.String()
}

// Dial returns a connection to the broker through an in-memory pipe, with
// the signature of pika's Config.Dial, so clients can reach the broker
// without TCP. network and addr are ignored. The pipe behaves like a
// loopback TCP connection (each direction buffers 1 MiB, so writes do not
// wait for the reader; bytes written before a close are still delivered,
// then io.EOF; deadlines work) without its system calls: a test that opens
// many connections runs faster through it.
func (b *Broker) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	client, server := memconn.Pipe("pikatest-client", "pikatest-broker")
	if !b.serve(server) {
		client.Close()
		return nil, errors.New("pikatest: broker is closed or stopped")
	}
	return client, nil
}

// Close stops the broker: it stops listening and cuts every connection
// (without connection.close, as a crashed broker would). Close is
// idempotent.
func (b *Broker) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	ln := b.ln
	conns := b.connList()
	b.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, c := range conns {
		c.cut()
	}
	b.acceptWG.Wait()
	b.connWG.Wait()
	b.mu.Lock()
	for _, vh := range b.vhosts {
		vh.stopTimers()
	}
	b.mu.Unlock()
}

func (b *Broker) connList() []*conn {
	out := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		out = append(out, c)
	}
	return out
}

// unlock releases b.mu after waking the goroutines in [Broker.Wait].
func (b *Broker) unlock() {
	for w := range b.waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
}
