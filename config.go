package pika

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/pika-go/pika/engine"
)

// Config configures a connection. The zero value is usable: it connects to
// amqp://guest:guest@localhost:5672/ with the defaults stated on each field.
// ParseURL fills a Config from an AMQP URI; fields can be adjusted after.
type Config struct {
	// Addr is the broker's host:port. Default "localhost:5672" (5671 when
	// TLS is set). Ignored when Addrs is set.
	Addr string
	// Addrs lists several brokers' host:port (a cluster). Every connection
	// attempt, the first one included, tries them in order (see
	// ShuffleAddrs) and each host name's every address, until one accepts.
	// Default: just Addr.
	Addrs []string
	// ShuffleAddrs makes each attempt try Addrs in a random order, to
	// spread clients over a cluster. Default false: in order.
	ShuffleAddrs bool
	// Username and Password are the credentials for PLAIN (and AMQPLAIN).
	// Default guest/guest.
	Username, Password string
	// Vhost is the virtual host. Default "/".
	Vhost string
	// Mechanisms lists SASL mechanisms in order of preference; the first one
	// the server offers is used. Default: PLAIN with Username and Password.
	// Use ExternalAuth with a TLS client certificate for EXTERNAL. A
	// mechanism's Start and Challenge run on a goroutine of the library's,
	// never under its lock, one step at a time, and may take their time
	// (HandshakeTimeout bounds the handshake; a step still running then is
	// abandoned, and the next attempt's step waits for it to return).
	Mechanisms []Mechanism

	// Heartbeat is the heartbeat timeout to ask for (rounded up to whole
	// seconds). The connection uses the smaller of it and the broker's
	// proposal (60 s by default on RabbitMQ), or it alone when the broker
	// proposes 0. Default DefaultHeartbeat (10 s): a dead broker or path is
	// detected within 20 to 25 s. NoHeartbeat disables heartbeats.
	Heartbeat time.Duration
	// FrameMax is the largest frame size to ask for. Default 128 KiB.
	FrameMax uint32
	// ChannelMax is the highest channel number to ask for. Default 2047.
	ChannelMax uint16
	// ConnectionName is shown in the broker's management UI and rabbitmqctl
	// list_connections. Default: none.
	ConnectionName string
	// ClientProperties are extra entries for the client properties sent to
	// the broker. Default: none.
	ClientProperties Table
	// MaxBodySize is the largest message body accepted from the broker; a
	// larger one ends the connection with FRAME_ERROR. Default 128 MiB.
	MaxBodySize uint64

	// DialTimeout bounds establishing the transport (TCP and TLS). Default
	// 30 s. The ctx passed to Dial bounds it too.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the AMQP handshake after the transport is up.
	// Default 10 s.
	HandshakeTimeout time.Duration
	// TLS, when set, makes the connection use TLS with this configuration
	// (amqps). Its ServerName defaults to the host of Addr.
	TLS *tls.Config
	// Dial, when set, establishes the transport instead of a TCP dial: any
	// net.Conn works (a unix socket, a proxy, an in-memory pipe). When TLS
	// is also set, the TLS handshake runs over the returned connection.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// BlockingRead takes the connection's socket away from the Go
	// runtime's network poller, on Linux, for TCP connections (not TLS,
	// and not a Dial's connection unless it offers SyscallConn, as
	// *net.TCPConn does, of a non-blocking stream socket); elsewhere,
	// and by package loop, which has I/O of its own, it is ignored. The
	// reader then waits
	// for the broker's bytes in a blocking system call (ppoll) on its own
	// thread and reads with read(2); the writer writes with write(2). Data
	// that arrives wakes the reader's thread alone, instead of a thread in
	// the poller's epoll_wait that then wakes the reader's goroutine: fewer
	// context switches and system calls per socket read. It pays most with
	// ConsumeOptions.Inline handlers, where one thread then reads, decodes,
	// runs the handler and acknowledges. What it costs: an operating
	// system thread per connection, blocked while the connection waits for
	// data (an idle connection too), and a wake-up of that thread every
	// 5 s. Default false. See BENCHMARKS.md (issue 14, "Blocking reads")
	// for what it measured.
	BlockingRead bool
	// ReadLinger, with BlockingRead, makes the reader wait up to this long
	// before its next read after a read that brought at least 1 KiB
	// (several deliveries: the broker sends fast) or a publisher
	// confirmation, unless the read filled its buffer, and while nothing
	// waits for the broker: no reply to a request or to an RPCClient.Call,
	// no close, no end of a connection.blocked or channel.flow that holds
	// publishers, no goroutine waiting for the confirmation of the newest
	// message of a channel still unconfirmed (Confirmation.Wait, a select
	// on Confirmation.Done, WaitConfirms) or for room to publish
	// (MaxUnconfirmed, WriteBufferLimit: a broker may stop reading while
	// its own writes wait for the client to read). Whatever starts to
	// wait ends a linger in progress at once, and so does an ack, nack or
	// reject sent while half or more of the channel's prefetch count is
	// unacknowledged (the broker may be holding deliveries back for it);
	// no linger follows a read during whose handling one was sent. The
	// broker's writes meanwhile pile up in the socket and the next read
	// takes them all: a busy consumer, or a publisher with many
	// confirmations outstanding, costs less CPU per message (fewer reads,
	// fewer thread wake-ups).
	//
	// What it costs: what nobody waits for may reach the application up
	// to ReadLinger later — deliveries, confirmations (those that
	// OnConfirm, PublishOutcomeHooks and a wait for an older message
	// see while newer ones are unconfirmed: the broker is busy with them
	// meanwhile), and the broker's own closes, cancels and returns. A
	// trickle of small deliveries (reads under 1 KiB) is never held back.
	// Without BlockingRead, or off Linux, it is ignored: with the
	// runtime's poller every write of the broker still wakes a thread, and
	// lingering saved nothing (see BENCHMARKS.md). At most MaxReadLinger
	// (longer is taken as that); default 0: read again at once. 1 ms is a
	// good start.
	ReadLinger time.Duration

	// Logger receives the connection's log records; at Debug level every
	// frame in and out, decoded. Default: no logging.
	Logger *slog.Logger

	// BlockedTimeout, when positive, closes a connection that the broker
	// has kept blocked (resource alarm) for longer than this, with
	// ErrBlockedTimeout. Default 0: wait as long as it takes.
	BlockedTimeout time.Duration
	// CloseTimeout bounds the wait for the broker's close-ok in Close when
	// the ctx passed to Close has no deadline. Default 5 s.
	CloseTimeout time.Duration
	// DisableRecovery turns automatic recovery off: a lost connection then
	// closes the Conn for good. Default false: a connection lost without
	// the application asking (network error, heartbeat timeout, broker
	// shutdown) is re-established with its channels, their QoS, confirm and
	// tx modes, the exchanges, queues and bindings declared through it, and
	// its consumers.
	DisableRecovery bool
	// Reconnect decides the delay before each reconnection attempt and when
	// to give up. Default: DefaultBackoff (exponential from 100 ms to 30 s
	// with jitter, forever).
	Reconnect ReconnectStrategy
	// FailWhileRecovering makes calls made while the connection recovers
	// fail at once with ErrRecovering. Default false: they wait, bounded by
	// their ctx, until recovery completes or gives up.
	FailWhileRecovering bool
	// DisableRepublish turns off republishing after a connection loss.
	// By default (when recovery is on), the library keeps a copy of every
	// message published in confirm mode until the broker's verdict, and
	// when the connection is lost first, recovery publishes the copies
	// again, in their original order, on the recovered channel; their
	// Confirmations and WaitConfirms then report the new copies' outcomes.
	// A publisher with confirms thus loses nothing across connection
	// losses, broker restarts and forced closes, with no retry code of its
	// own. This is at-least-once delivery: the broker may have taken a
	// message before the loss, and consumers then see it twice (its
	// Redelivered flag is not set; give messages a MessageID and
	// deduplicate). The copies cost memory, bounded by MaxUnconfirmed
	// messages per channel. With DisableRepublish, messages outstanding at
	// a loss resolve with ErrOutcomeUnknown instead.
	DisableRepublish bool
	// MaxUnconfirmed bounds the messages per channel in confirm mode whose
	// outcome is pending (published and not yet confirmed, or kept for
	// republishing): at the bound, Publish waits, honouring its ctx, for
	// confirmations. It also bounds the memory held for republishing.
	// Default DefaultMaxUnconfirmed (10,000); negative means no bound.
	MaxUnconfirmed int

	// Credentials, when set, is called at every connection attempt (the
	// dial, and each reconnection attempt of a recovery) for the username
	// and password to log in with, for example a fresh OAuth 2 token as
	// the password. They replace Username and Password, and the
	// credentials of the PlainAuth and AMQPlainAuth entries of Mechanisms
	// (an empty username keeps theirs). ctx is the attempt's, bounded by
	// DialTimeout. An error fails the attempt: Dial returns it, and a
	// recovery counts the attempt as failed and tries again as Reconnect
	// decides. A panic in it is turned into such an error ("pika:
	// Config.Credentials panicked: ..."). It runs on a goroutine of the
	// library's and must not call Conn.Close; it must return when ctx
	// ends: one that ignores ctx and blocks delays Conn.Close (and, in
	// package loop, Loop.Run's return) until it returns. Default: none;
	// Username and Password (or the secret last accepted through
	// Conn.UpdateSecret) are used.
	Credentials func(ctx context.Context) (username, password string, err error)
	// SecretRefresh, when positive, makes the Conn get a fresh password
	// from Credentials (required then) every SecretRefresh and hand it to
	// the broker with connection.update-secret (Conn.UpdateSecret), so
	// that an expiring token is replaced before it expires. A failed
	// refresh is logged at Warn level and tried again at the next tick;
	// refreshes are skipped while recovering (the reconnection logs in
	// with a fresh secret anyway). Default 0: no refresh.
	SecretRefresh time.Duration
	// RecoveryFilter selects what recovery restores of the exchanges,
	// queues, bindings and consumers recorded: an entity for which its
	// function returns false is not restored (a consumer excluded ends
	// with ErrNotRecovered). Default: everything recorded is restored.
	RecoveryFilter RecoveryFilter

	// WriteBufferLimit is how many bytes may wait for the socket (those
	// queued on a channel behind a synchronous request in flight included)
	// before Publish blocks (honouring its ctx) until the writer catches
	// up. Default 1 MiB.
	WriteBufferLimit int
	// NotifyBuffer bounds each channel's queue of notifications waiting for
	// their callbacks (OnReturn, OnConfirm, OnCancel, OnFlow, OnClose,
	// OnOrphanDelivery), and the connection's (OnClose, OnBlocked,
	// OnRecovery). The reader never waits for a full queue: Publish on a
	// channel whose queue holds NotifyBuffer notifications waits (honouring
	// its ctx) until its callbacks catch up, and so does recovery before
	// each attempt while the connection's queue is full. Default
	// DefaultNotifyBuffer (1,024).
	NotifyBuffer int

	// Hooks observe the connection: each implements one or more of the
	// hook interfaces (see Hook), looked for once when the Conn is
	// dialled. Default: none, which costs nothing on the hot paths.
	Hooks []Hook
}

// NoHeartbeat, as Config.Heartbeat, asks the broker for no heartbeats.
const NoHeartbeat = engine.NoHeartbeat

// DefaultHeartbeat is the heartbeat timeout the client asks for when
// Config.Heartbeat is 0.
//
// With a negotiated timeout H, the client sends a heartbeat frame after H/2
// without sending anything, and declares the broker dead after 2H without
// receiving anything (checked every H/2, so between 2H and 2.5H). RabbitMQ
// proposes 60 s, which would leave a dead broker or a silently broken path
// (a NAT or load balancer that dropped the flow) undetected for 2 to 2.5
// minutes, with publishes buffered and consumers idle all that time. 10 s
// detects it within 20 to 25 s and costs one 8-byte frame each way every 5
// s on an idle connection (none on a busy one: any frame counts). Lower is
// not better: a peer whose process is stalled (a long GC pause, an
// overloaded or paused VM) for 2H is closed although it is alive, and
// RabbitMQ's documentation advises against timeouts below about 5 s for
// that reason. The broker uses the negotiated value too, so it also frees a
// dead client's exclusive queues and requeues its unacknowledged messages
// within about the same time.
const DefaultHeartbeat = 10 * time.Second

// Defaults for zero Config fields that the engine does not default itself.
const (
	DefaultDialTimeout      = 30 * time.Second
	DefaultCloseTimeout     = 5 * time.Second
	DefaultWriteBufferLimit = 1 << 20
	DefaultNotifyBuffer     = 1024
	// MaxReadLinger bounds Config.ReadLinger: a longer one is taken as
	// this.
	MaxReadLinger = 50 * time.Millisecond
)

// readLingerCap is MaxReadLinger, except in tests that need a linger only
// an event can end.
var readLingerCap = MaxReadLinger

// withDefaults returns a copy of c with defaults applied.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		if c.TLS != nil {
			c.Addr = "localhost:5671"
		} else {
			c.Addr = "localhost:5672"
		}
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.WriteBufferLimit <= 0 {
		c.WriteBufferLimit = DefaultWriteBufferLimit
	}
	c.ReadLinger = min(max(c.ReadLinger, 0), readLingerCap)
	if c.NotifyBuffer <= 0 {
		c.NotifyBuffer = DefaultNotifyBuffer
	}
	if c.Reconnect == nil {
		c.Reconnect = DefaultBackoff
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = engine.DefaultHandshakeTimeout
	}
	if c.MaxUnconfirmed == 0 {
		c.MaxUnconfirmed = DefaultMaxUnconfirmed
	}
	return c
}

// namedMechanism is an application's Mechanism with its name read once,
// outside the connection's lock, for the engine to call under it.
type namedMechanism struct {
	Mechanism
	name string
}

func (m namedMechanism) Name() string { return m.name }

// engineConfig maps c to the engine's configuration. It calls the
// mechanisms' Name, so it runs without the connection's lock.
func (c *Config) engineConfig() engine.Config {
	var mechs []engine.Mechanism
	for _, m := range c.Mechanisms {
		mechs = append(mechs, namedMechanism{Mechanism: m, name: m.Name()})
	}
	return engine.Config{
		Mechanisms:       mechs,
		DeferAuth:        true, // the mechanisms run outside the lock (link.authLocked)
		Username:         c.Username,
		Password:         c.Password,
		Vhost:            c.Vhost,
		ChannelMax:       c.ChannelMax,
		FrameMax:         c.FrameMax,
		Heartbeat:        c.Heartbeat,
		HandshakeTimeout: c.HandshakeTimeout,
		MaxBodySize:      c.MaxBodySize,
		ConnectionName:   c.ConnectionName,
		ClientProperties: c.ClientProperties,
	}
}
